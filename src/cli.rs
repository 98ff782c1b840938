//! Command-line types (clap derive) and nothing else: doc comments become
//! `--help`. Turning these into settings happens in `commands`.

use crate::data::Split;
use crate::device::DeviceSpec;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "cnn",
    version,
    about = "Train and evaluate convolutional neural networks described in JSON",
    long_about = "Train and evaluate convolutional neural networks described in JSON.\n\n\
        A config lists the layers (conv2d, pooling, linear, activations, dropout, batch norm) \
        and the training and data settings; cnn checks it, builds the network with candle, \
        trains it on the CPU or a CUDA GPU and writes self-describing safetensors checkpoints \
        and a metrics history into a run directory.",
    after_help = "Examples:\n  \
        cnn train --config configs/lenet.json --data-dir ../shared/data/mnist\n  \
        cnn eval --checkpoint runs/lenet/best.safetensors\n  \
        cnn summary --config configs/three-conv.json\n\n\
        Exit codes: 0 ok, 1 failure, 2 bad usage, config or input, 130 interrupted."
)]
pub struct Cli {
    /// Worker threads for CPU math (default: all cores; also RAYON_NUM_THREADS).
    #[arg(long, global = true, value_name = "N")]
    pub threads: Option<usize>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train a network from a config and write a run directory.
    #[command(after_help = "Examples:\n  \
        cnn train --config configs/lenet.json --data-dir ../shared/data/mnist\n  \
        cnn train --config configs/oneconv.json --epochs 1 --out runs/quick --limit-train 5000\n  \
        cnn train --config configs/lenet.json --set training.optimizer.type=sgd \\\n      \
        --set training.optimizer.momentum=0.9 --lr 0.05\n  \
        cnn train --config configs/lenet.json --dataset fashion-mnist --device cuda\n  \
        cnn train --resume runs/lenet --epochs 20\n\n\
        The run directory (default runs/<config name>) receives config.json, history.json, \
        history.csv, steps.csv, last.safetensors and best.safetensors. Ctrl-C saves and exits 130; \
        --resume continues from there.")]
    Train(TrainArgs),
    /// Evaluate a checkpoint on the test (or validation, or training) split.
    #[command(after_help = "Examples:\n  \
        cnn eval --checkpoint runs/lenet/best.safetensors\n  \
        cnn eval --checkpoint runs/lenet/best.safetensors --split val --json\n  \
        cnn eval --checkpoint torch_lenet.safetensors --config configs/lenet.json")]
    Eval(EvalArgs),
    /// Show each layer's output shape, parameters and multiply-adds.
    #[command(after_help = "Examples:\n  \
        cnn summary --config configs/lenet.json\n  \
        cnn summary --config configs/three-conv.json --json")]
    Summary(SummaryArgs),
    /// Compare runs: one row per run of a sweep (or of any run directories)
    /// with the parameters that vary and the best validation accuracy.
    #[command(after_help = "Examples:\n  \
        cnn report sweeps/lr-batch\n  \
        cnn report sweeps/lr-batch --sort test_acc --csv results.csv\n  \
        cnn report runs/ --json\n\n\
        A sweep directory (scripts/sweep.sh) lists its points in manifest.json, whose varied \
        parameters become columns; for a plain directory of run directories the columns are \
        the config fields that differ between the runs. Accuracies in --json and --csv are \
        fractions; best_val_acc is the highest validation accuracy and test_acc the test \
        accuracy at that epoch (at the last epoch when there is no validation split).")]
    Report(ReportArgs),
}

#[derive(Debug, Args)]
#[command(allow_negative_numbers = true)]
pub struct TrainArgs {
    /// Architecture and training config (JSON).
    #[arg(short, long, value_name = "FILE", required_unless_present = "resume")]
    pub config: Option<PathBuf>,

    /// Continue the run in RUN_DIR from its last.safetensors, exactly where
    /// it stopped (same config; --epochs may extend it).
    #[arg(long, value_name = "RUN_DIR")]
    pub resume: Option<PathBuf>,

    /// Also write last.safetensors every N optimizer steps, so that a crash
    /// loses at most N steps (overrides training.checkpoint_every).
    #[arg(long, value_name = "N")]
    pub checkpoint_every: Option<u64>,

    /// Run directory to create (default: runs/<config name>).
    #[arg(short, long, value_name = "RUN_DIR")]
    pub out: Option<PathBuf>,

    /// Replace the files of an existing, non-empty run directory.
    #[arg(long)]
    pub force: bool,

    /// Directory holding the dataset files (default: see README, "Data").
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Dataset to train on: mnist or fashion-mnist (overrides data.dataset).
    #[arg(long, value_name = "NAME")]
    pub dataset: Option<String>,

    /// cpu, cuda, cuda:N or auto (CUDA when available).
    #[arg(long, default_value = "auto", value_name = "DEVICE")]
    pub device: DeviceSpec,

    /// Number of epochs (overrides training.epochs).
    #[arg(long, value_name = "N")]
    pub epochs: Option<usize>,

    /// Images per training step (overrides training.batch_size).
    #[arg(long, value_name = "N")]
    pub batch_size: Option<usize>,

    /// Learning rate (overrides training.optimizer.lr).
    #[arg(long, value_name = "X")]
    pub lr: Option<f64>,

    /// Seed for initialisation, split, shuffling and dropout (overrides training.seed).
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,

    /// Train on only the first N training images.
    #[arg(long, value_name = "N")]
    pub limit_train: Option<usize>,

    /// Test on only the first N test images.
    #[arg(long, value_name = "N")]
    pub limit_test: Option<usize>,

    /// Override any config field by its dotted path, e.g.
    /// `--set training.optimizer.lr=0.01` or `--set layers.0.out_channels=32`.
    /// Repeatable.
    #[arg(long = "set", value_name = "PATH=VALUE")]
    pub sets: Vec<String>,

    /// Print nothing but errors.
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Checkpoint written by `cnn train` (or any safetensors file with --config).
    #[arg(long, value_name = "FILE")]
    pub checkpoint: PathBuf,

    /// Config describing the weights, for files that are not cnn checkpoints
    /// (e.g. a PyTorch state_dict saved with safetensors).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Directory holding the dataset files (default: where training found them).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Which split to evaluate.
    #[arg(long, value_enum, default_value = "test")]
    pub split: Split,

    /// cpu, cuda, cuda:N or auto.
    #[arg(long, default_value = "auto", value_name = "DEVICE")]
    pub device: DeviceSpec,

    /// Images per forward pass (default: data.eval_batch_size of the config).
    #[arg(long, value_name = "N")]
    pub batch_size: Option<usize>,

    /// Print one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct SummaryArgs {
    /// Architecture config (JSON).
    #[arg(short, long, value_name = "FILE")]
    pub config: PathBuf,

    /// Override config fields as in `cnn train`.
    #[arg(long = "set", value_name = "PATH=VALUE")]
    pub sets: Vec<String>,

    /// Print one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Sweep directories (made by scripts/sweep.sh), directories of run
    /// directories, or run directories.
    #[arg(value_name = "DIR", required = true)]
    pub dirs: Vec<PathBuf>,

    /// Order of the rows: best_val_acc, test_acc (best first), seconds,
    /// epochs, run, status, or a varied parameter (by path or column name).
    #[arg(long, value_name = "COLUMN", default_value = "best_val_acc")]
    pub sort: String,

    /// Print a JSON array of objects on stdout instead of the table.
    #[arg(long)]
    pub json: bool,

    /// Also write the rows to FILE as CSV.
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,
}
