//! Command-line types (clap derive) and nothing else: doc comments become
//! `--help`. Turning these into settings happens in `commands`.

use crate::data::Split;
use crate::data::convert::Fit;
use crate::device::DeviceSpec;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use serde::{Deserialize, Serialize};
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

/// Parses the process's arguments (exiting with clap's message and code 2
/// on a usage error), noting which flags of a new run were given.
pub fn parse() -> Cli {
    let matches = command().get_matches();
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if let Command::Train(args) = &mut cli.command
        && let Some(train) = matches.subcommand_matches("train")
    {
        let cmd = train_command();
        // In the order they were given.
        let mut given: Vec<(usize, String)> = cmd
            .get_arguments()
            .filter(|a| is_new_run(&cmd, a))
            .filter(|a| train.value_source(a.get_id().as_str()) == Some(ValueSource::CommandLine))
            .filter_map(|a| {
                let at = train.index_of(a.get_id().as_str()).unwrap_or(usize::MAX);
                a.get_long().map(|l| (at, format!("--{l}")))
            })
            .collect();
        given.sort();
        args.new_run_flags = given.into_iter().map(|(_, f)| f).collect();
    }
    cli
}

use clap::parser::ValueSource;

/// `cnn` as clap builds it, with the long `--version` (the commit, the
/// features built in and the CPU kernels this machine will run).
pub fn command() -> clap::Command {
    Cli::command().long_version(long_version())
}

/// What `cnn --version` says, as `rg --version` does: the version and
/// commit, the optional features, and the kernels picked here.
pub fn long_version() -> String {
    let commit = env!("CNN_GIT_COMMIT");
    let commit = if commit.is_empty() {
        String::new()
    } else {
        format!(" (rev {commit})")
    };
    let features: Vec<&str> = [
        (cfg!(feature = "cuda"), "cuda"),
        (cfg!(feature = "cudnn"), "cudnn"),
        (cfg!(feature = "mpi"), "mpi"),
    ]
    .into_iter()
    .filter_map(|(on, name)| on.then_some(name))
    .collect();
    let f = crate::ops::kernels::get().features;
    let cpu: Vec<&str> = [
        (f.avx2, "avx2"),
        (f.fma, "fma"),
        (f.avx512f, "avx512f"),
        (f.avx512_bf16, "avx512_bf16"),
        (f.amx_bf16, "amx_bf16"),
    ]
    .into_iter()
    .filter_map(|(on, name)| on.then_some(name))
    .collect();
    format!(
        "{}{commit}\n\nfeatures: {}\nCPU: {}\nkernels: {}",
        env!("CARGO_PKG_VERSION"),
        if features.is_empty() {
            "none (CPU only; scripts/build-cuda.sh builds CUDA, --features mpi distributed runs)"
                .to_string()
        } else {
            features.join(", ")
        },
        if cpu.is_empty() {
            "baseline x86-64".to_string()
        } else {
            cpu.join(" ")
        },
        crate::ops::kernels::get().describe()
    )
}

/// `cnn train` as clap builds it for a command line (groups filled in,
/// global flags propagated).
pub fn train_command() -> clap::Command {
    let mut cli = Cli::command();
    cli.build();
    cli.find_subcommand("train")
        .expect("cnn has a train subcommand")
        .clone()
}

/// Whether an argument of `cnn train` belongs to a new run only: the
/// `new_run` group, and the flags [`RunChoices`] shares with lr-find (its
/// own group). A resumed run refuses them.
fn is_new_run(train: &clap::Command, arg: &clap::Arg) -> bool {
    train
        .get_groups()
        .filter(|g| g.get_id() == "new_run" || g.get_id() == "RunChoices")
        .flat_map(|g| g.get_args())
        .any(|id| id == arg.get_id())
}

/// The long flags of `cnn train` that a resumed run keeps: those outside the
/// new run's groups, `--resume` and hidden flags (for sweeps that resume
/// their points, and the message that lists them).
pub fn resumable_train_flags() -> Vec<String> {
    let train = train_command();
    train
        .get_arguments()
        .filter(|a| resumable(&train, a))
        .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
        .collect()
}

fn resumable(train: &clap::Command, a: &clap::Arg) -> bool {
    !is_new_run(train, a) && a.get_id() != "resume" && a.get_id() != "help" && !a.is_hide_set()
}

/// The flags of a new `cnn train` given after a sweep's `--`, parsed as
/// `cnn train` parses them (a repeated flag: the last wins), and the flags
/// among them that a sweep sets itself (`--config`, `--out`, `--force`,
/// `--resume`, `--show-config`), which the caller refuses.
pub fn parse_train_flags(args: &[String]) -> Result<(TrainFlags, Vec<String>), clap::Error> {
    let argv = ["cnn", "train"]
        .into_iter()
        .map(String::from)
        .chain(args.iter().cloned());
    let matches = Cli::command()
        .mut_subcommand("train", |t| {
            t.args_override_self(true).mut_arg("config", |a| {
                a.required_unless_present(clap::builder::Resettable::<clap::Id>::Reset)
            })
        })
        .try_get_matches_from(argv)?;
    let matches = matches
        .subcommand_matches("train")
        .expect("the train subcommand was given");
    let train = train_command();
    let own: Vec<String> = ["config", "out", "force", "resume", "show_config"]
        .into_iter()
        .filter(|id| matches.value_source(id) == Some(ValueSource::CommandLine))
        .filter_map(|id| train.get_arguments().find(|a| a.get_id() == id))
        .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
        .collect();
    Ok((TrainFlags::from_arg_matches(matches)?, own))
}

impl TrainFlags {
    /// The `cnn train` arguments that give these flags (defaults left
    /// out), in the order `cnn train --help` lists them.
    pub fn to_args(&self) -> Vec<String> {
        self.args_where(|_, _| true)
    }

    /// [`TrainFlags::to_args`] of the flags a resumed run keeps (see
    /// [`resumable_train_flags`]).
    pub fn resume_args(&self) -> Vec<String> {
        self.args_where(resumable)
    }

    /// The arguments of the flags `keep` keeps, read from clap's
    /// declaration and these values as JSON (a field per argument id), so a
    /// flag added to `cnn train` follows without another line here.
    fn args_where(&self, keep: impl Fn(&clap::Command, &clap::Arg) -> bool) -> Vec<String> {
        let values = serde_json::to_value(self).expect("flags serialise");
        let train = train_command();
        let mut out = Vec::new();
        for arg in train.get_arguments().filter(|a| keep(&train, a)) {
            let (Some(long), Some(value)) = (arg.get_long(), values.get(arg.get_id().as_str()))
            else {
                continue;
            };
            let flag = format!("--{long}");
            let text = |v: &serde_json::Value| match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let default: Vec<String> = arg
                .get_default_values()
                .iter()
                .map(|d| d.to_string_lossy().into_owned())
                .collect();
            match value {
                serde_json::Value::Null | serde_json::Value::Bool(false) => {}
                serde_json::Value::Bool(true) => out.push(flag),
                serde_json::Value::Array(items) => {
                    for v in items {
                        out.extend([flag.clone(), text(v)]);
                    }
                }
                v if default == [text(v)] => {}
                v => out.extend([flag, text(v)]),
            }
        }
        out
    }
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
        cnn train --config configs/cifar10-cnn.json --data-dir data/cifar-10-batches-bin\n  \
        cnn train --config my.json --dataset imagefolder --data-dir photos/  (photos/<class>/*.jpg)\n  \
        cnn train --resume runs/lenet --epochs 20\n\n\
        The run directory (default runs/<config name>) receives config.json, history.json, \
        history.csv, steps.csv, last.safetensors and best.safetensors. Ctrl-C saves and exits 130; \
        --resume continues from there.")]
    Train(TrainArgs),
    /// Evaluate a checkpoint on the test (or validation, or training) split.
    #[command(after_help = "Examples:\n  \
        cnn eval --checkpoint runs/lenet/best.safetensors\n  \
        cnn eval --checkpoint runs/lenet/best.safetensors --split val --json\n  \
        cnn eval --checkpoint runs/digits/best.safetensors --test-dir held-back/\n  \
        cnn eval --checkpoint runs/lenet/best.safetensors --confusion-png confusion.png --mistakes-png mistakes.png\n  \
        cnn eval --checkpoint runs/cifar/best.safetensors --tta --top-k 3\n  \
        cnn eval --checkpoint torch_lenet.safetensors --config configs/lenet.json")]
    Eval(EvalArgs),
    /// Classify image files (PNG, JPEG, BMP, PGM) with a checkpoint.
    #[command(after_help = "Examples:\n  \
        cnn predict --checkpoint runs/lenet/best.safetensors digit.png photo-of-a-7.jpg\n  \
        cnn predict --checkpoint runs/lenet/best.safetensors --top 3 --json scans/*.png\n  \
        cnn predict --checkpoint runs/lenet/best.safetensors --jsonl scans/\n  \
        find scans -name '*.png' | cnn predict --checkpoint runs/lenet/best.safetensors --jsonl -\n\n\
        Images are decoded on all cores and classified in batches of --batch-size; results come \
        in input order as each batch is done.\n\n\
        Images of any size are made to look like the training data: grayscale or RGB as the \
        model takes, dark-on-light drawings inverted for MNIST-like data, and resized as --preprocess \
        says (default: crop for a config with data.resize {\"shorter_side\": N}, digit for mnist, fit \
        for fashion-mnist, stretch otherwise); see the book, Commands: predict (docs/src/guide/commands.md).")]
    Predict(PredictArgs),
    /// Show each layer's output shape, parameters and multiply-adds.
    #[command(after_help = "Examples:\n  \
        cnn summary --config configs/lenet.json\n  \
        cnn summary --config configs/three-conv.json --json")]
    Summary(SummaryArgs),
    /// Write a checkpoint's network as an ONNX model (opset 13), to run with
    /// ONNX Runtime or any other ONNX runtime.
    #[command(after_help = "Examples:\n  \
        cnn export --checkpoint runs/lenet/best.safetensors -o lenet.onnx\n  \
        cnn export --checkpoint runs/lenet/best.safetensors -o lenet.onnx --softmax --force\n\n\
        The model takes float32 pixels scaled to [0, 1] (byte / 255), shaped [batch, channels, \
        height, width] with any batch size, and normalises them itself. Its output is the class \
        scores (logits), or the probabilities with --softmax; the class names are in its metadata \
        (\"classes\"). See the book, Commands: export (docs/src/guide/commands.md).")]
    Export(ExportArgs),
    /// Make a PyTorch state_dict of torchvision or timm (saved with
    /// safetensors) into a cnn checkpoint, by the config's torch_name table.
    #[command(after_help = "Examples:\n  \
        cnn import --from torchvision --config configs/zoo/resnet18.json resnet18.safetensors -o resnet18.ckpt.safetensors\n  \
        cnn import --from timm --config configs/zoo/resnet50.json resnet50.a1_in1k.safetensors -o r50.safetensors --classes classes.txt\n\n\
        The state_dict comes from Python: safetensors.torch.save_file(torchvision.models.resnet18(\
        weights=\"DEFAULT\").state_dict(), \"resnet18.safetensors\"). Every tensor is mapped by the \
        torch_name of its layer (no guessing by order); what is missing, unexpected or mis-shaped is \
        listed and nothing is written. The checkpoint records the config, its data.normalize (the \
        mean and std the weights were trained with), the class names (ImageNet's 1,000 for a \
        1000-class config unless --classes says otherwise) and data.resize, the evaluation \
        transform; eval, predict, export and train --init-from take it like any checkpoint.")]
    Import(ImportArgs),
    /// Draw loss, accuracy and learning rate per epoch of one or more runs.
    #[command(after_help = "Examples:\n  \
        cnn plot runs/lenet -o lenet.png\n  \
        cnn plot runs/lenet runs/three-conv runs/oneconv -o compare.svg --title \"Seed models\"\n\n\
        Colour tells runs apart; solid lines are training, dashed validation, dotted test.")]
    Plot(PlotArgs),
    /// Compare runs: one row per run of a sweep (or of any run directories)
    /// with the parameters that vary and the best validation accuracy.
    #[command(after_help = "Examples:\n  \
        cnn report sweeps/lr-batch\n  \
        cnn report sweeps/lr-batch --sort test_acc --csv results.csv\n  \
        cnn report runs/ --json\n  \
        cnn report sweeps/lr-batch --plot val-acc.png\n\n\
        A sweep directory (scripts/sweep.sh) lists its points in manifest.json, whose varied \
        parameters become columns; for a plain directory of run directories the columns are \
        the config fields that differ between the runs. Accuracies in --json and --csv are \
        fractions; best_val_acc is the highest validation accuracy and test_acc the test \
        accuracy at that epoch (at the last epoch when there is no validation split).")]
    Report(ReportArgs),
    /// Find a learning rate: train for a few hundred steps with the rate
    /// growing exponentially and suggest where the loss falls fastest.
    #[command(after_help = "Examples:\n  \
        cnn lr-find --config configs/lenet.json --data-dir ../shared/data/mnist --plot lr.png\n  \
        cnn lr-find --config configs/resnet9-cifar10.json --start-lr 1e-5 --end-lr 1 --steps 200 --json\n\n\
        Leslie Smith's range test (as Lightning's lr_find): it uses the config's model, optimizer, \
        batch size, augmentation and data, stops early once the smoothed loss passes 4 times its \
        lowest, and writes nothing but --plot: no run directory is made or touched. The suggestion \
        is a starting point (Lightning's heuristic); a rate somewhat below the loss minimum is the \
        usual choice.")]
    LrFind(LrFindArgs),
    /// The model behind scripts/sweep.sh: plan a grid of `cnn train` runs,
    /// run or resume one point, and report each point's state.
    #[command(after_help = "Examples:\n  \
        cnn sweep plan --base configs/mlp.json --out sweeps/lr training.optimizer.lr=0.01,0.001 -- --epochs 2\n  \
        cnn --threads 2 sweep point sweeps/lr 0\n  \
        cnn sweep state sweeps/lr\n  \
        cnn sweep summary sweeps/lr\n\n\
        scripts/sweep.sh calls these and hands the points to GNU parallel or a Slurm job array; \
        see the book, Sweeps (docs/src/guide/sweeps.md).")]
    Sweep(SweepArgs),
    /// Draw the learned kernels of a conv layer.
    #[command(after_help = "Examples:\n  \
        cnn filters --checkpoint runs/lenet/best.safetensors -o filters.png\n  \
        cnn filters --checkpoint runs/three-conv/best.safetensors --layer 2 -o conv2.png")]
    Filters(FiltersArgs),
    /// Draw the activation maps of every conv layer for one image, or apply a fixed filter.
    #[command(after_help = "Examples:\n  \
        cnn feature-maps --checkpoint runs/lenet/best.safetensors --index 0 -o maps.png\n  \
        cnn feature-maps --checkpoint runs/lenet/best.safetensors --image my-digit.png -o maps.png\n  \
        cnn feature-maps --kernel vertical-edge --data-dir ../shared/data/mnist -o edges.png\n  \
        cnn feature-maps --kernel my-kernel.json --dataset fashion-mnist -o filtered.png")]
    FeatureMaps(FeatureMapsArgs),
    /// Draw a labelled grid of dataset images.
    #[command(after_help = "Examples:\n  \
        cnn samples --data-dir ../shared/data/mnist -o mnist.png\n  \
        cnn samples --dataset fashion-mnist --count 48 --seed 3 -o fashion.png\n  \
        cnn samples --config configs/cifar10-cnn.json --augmented -o augmented.png")]
    Samples(SamplesArgs),
    /// Print a shell's completion script for cnn (bash, zsh, fish,
    /// powershell, elvish).
    #[command(after_help = "Examples:\n  \
        source <(cnn completions bash)\n  \
        cnn completions zsh > ~/.zfunc/_cnn\n  \
        cnn completions fish > ~/.config/fish/completions/cnn.fish")]
    Completions(CompletionsArgs),
    /// Write cnn's man pages (cnn.1 and one per command) into a folder,
    /// or print cnn.1.
    #[command(after_help = "Examples:\n  \
        cnn man --out-dir ~/.local/share/man/man1 && man cnn-train\n  \
        cnn man | man -l -")]
    Man(ManArgs),
    /// Check that a device computes what the CPU kernels compute: every
    /// layer's output and every gradient of one training step of each config.
    #[command(after_help = "Examples:\n  \
        cnn check-device --device cuda --config configs/lenet.json --config configs/resnet20-cifar10.json\n  \
        cnn check-device --device cpu --config configs/cifar10-cnn.json --json\n\n\
        The same weights, batch (random, seeded) and dropout masks run on DEVICE with candle's \
        operations and on the CPU with cnn's kernels; each layer output and each gradient must agree to \
        a relative 5e-3 for outputs and 3e-2 for gradients (norm of the difference / norm of the CPU's). --device cpu compares candle's operations on the \
        CPU, the path a GPU takes. Exit 1 when anything differs beyond that.")]
    CheckDevice(CheckDeviceArgs),
    /// The book's generated reference pages (docs/src/reference/), as
    /// markdown: `cli` or `config`.
    #[command(hide = true)]
    Reference(ReferenceArgs),
}

#[derive(Debug, Args)]
#[command(allow_negative_numbers = true)]
pub struct LrFindArgs {
    /// Architecture and training config (JSON).
    #[arg(short, long, value_name = "FILE")]
    pub config: PathBuf,

    /// The rate of the first step.
    #[arg(long, value_name = "X", default_value_t = 1e-7)]
    pub start_lr: f64,

    /// The rate of the last step.
    #[arg(long, value_name = "X", default_value_t = 10.0)]
    pub end_lr: f64,

    /// Steps of the sweep (at most; it stops early when the loss diverges).
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub steps: usize,

    /// Draw the loss against the learning rate, the suggestion marked (.png or .svg).
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,

    /// Print one JSON object on stdout: the rates, losses and suggestion.
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub choices: RunChoices,

    #[command(flatten)]
    pub data: DataArgs,

    #[command(flatten)]
    pub device: DeviceArg,

    /// Print nothing but the result and errors.
    #[arg(short, long)]
    pub quiet: bool,
    /// Replace the output file if it exists (never a file of a run directory).
    #[arg(long)]
    pub force: bool,
}

/// `--device`, as train, lr-find, eval, predict and check-device take it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Args, Serialize, Deserialize)]
pub struct DeviceArg {
    /// cpu, cuda, cuda:N or auto (CUDA when available).
    #[arg(long, default_value = "auto", value_name = "DEVICE")]
    pub device: DeviceSpec,
}

/// Where a command finds its dataset.
#[derive(Debug, Clone, Default, PartialEq, Args, Serialize, Deserialize)]
pub struct DataArgs {
    /// Directory holding the dataset files (default: see the book, "Data";
    /// for a checkpoint, where its training found them); for an image
    /// folder, the folder with one sub-folder per class.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Never download a dataset from the Hugging Face Hub; use local files
    /// and files already in the hub's cache only.
    #[arg(long)]
    pub no_download: bool,
}

/// The flags of a new run that `train` and `lr-find` share: each changes
/// the config (applied after `--set`, so they win), and a resumed run
/// refuses them.
#[derive(Debug, Clone, Default, PartialEq, Args, Serialize, Deserialize)]
pub struct RunChoices {
    /// Override any config field by its dotted path, e.g.
    /// `--set training.optimizer.lr=0.01` or `--set layers.0.out_channels=32`.
    /// Repeatable.
    #[arg(long = "set", value_name = "PATH=VALUE")]
    pub sets: Vec<String>,

    /// Dataset to train on: mnist, fashion-mnist, cifar10 or imagefolder
    /// (overrides data.dataset).
    #[arg(long, value_name = "NAME")]
    pub dataset: Option<String>,

    /// Images per training step (overrides training.batch_size).
    #[arg(long, value_name = "N")]
    pub batch_size: Option<usize>,

    /// Seed for initialisation, split, shuffling and dropout (overrides training.seed).
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,

    /// Fine-tune: start from the weights of this checkpoint (or PyTorch
    /// state_dict) wherever a tensor's name and shape match (overrides
    /// training.init_from).
    #[arg(long, value_name = "FILE")]
    pub init_from: Option<PathBuf>,

    /// Train on only the first N training images.
    #[arg(long, value_name = "N")]
    pub limit_train: Option<usize>,

    /// A classifier of N classes: sets num_classes and the width of the
    /// last linear layer, the head (which --init-from then leaves to the
    /// seed when the file's head has another width).
    #[arg(long, value_name = "N")]
    pub num_classes: Option<usize>,

    /// What convolutions and linear layers multiply: fp32, or bf16 (bf16
    /// products summed in f32; overrides training.precision).
    #[arg(long, value_name = "fp32|bf16")]
    pub precision: Option<crate::config::Precision>,
}

#[derive(Debug, Args)]
pub struct SweepArgs {
    #[command(subcommand)]
    pub command: SweepCommand,
}

#[derive(Debug, Subcommand)]
pub enum SweepCommand {
    /// Check every point of a grid (or of a random sample of it), then write
    /// SWEEP_DIR/manifest.json and commands.tsv; a different sweep in
    /// SWEEP_DIR is refused.
    Plan(SweepPlanArgs),
    /// Bring one point to done: start it, skip it (done, or run by another
    /// sweep), resume it (killed or interrupted) or retry it (failed). Exit
    /// 0 done, 1 failed, 130 interrupted. The global --threads goes to its
    /// `cnn train`.
    Point(SweepPointArgs),
    /// One line per point: INDEX, NAME, STATE (new, done, running, killed,
    /// interrupted, failed or unreadable) and the first line of its message,
    /// tab-separated.
    State(SweepStateArgs),
    /// The report of the sweep, a count of its points by state and the
    /// failures; exit 1 unless every point is done.
    Summary(SweepSummaryArgs),
}

#[derive(Debug, Args)]
pub struct SweepPlanArgs {
    /// The config every point starts from.
    #[arg(long, value_name = "CONFIG")]
    pub base: Option<PathBuf>,

    /// The sweep directory: manifest.json, commands.tsv, runs/NAME/, logs/.
    #[arg(long, value_name = "SWEEP_DIR")]
    pub out: Option<PathBuf>,

    /// Draw only K distinct points of the grid ...
    #[arg(long, value_name = "K")]
    pub random: Option<u64>,

    /// ... with this seed: same seed, same points on any machine.
    #[arg(long, value_name = "S", default_value_t = 0)]
    pub seed: u64,

    /// Check every point and print its command (INDEX, NAME, COMMAND,
    /// tab-separated); write nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// A config path as `--set` takes it and its values; commas inside
    /// [...], {...} or "..." do not split.
    #[arg(value_name = "KEY=V1,V2,...")]
    pub axes: Vec<String>,

    /// Arguments given to every `cnn train` (after --).
    #[arg(last = true, value_name = "TRAIN_ARGS")]
    pub train: Vec<String>,
}

#[derive(Debug, Args)]
pub struct SweepPointArgs {
    /// Times a failed point is tried again in this call (never after a
    /// bad-input failure, exit 2, of its own).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub retries: u32,

    /// Run the point as one distributed run of N ranks (its train flags
    /// hold --distributed mpi): started by `srun --kill-on-bad-exit=1 -n N`
    /// inside a Slurm job, else by `mpirun -n N`; CNN_LAUNCHER replaces the
    /// launcher (`CNN_LAUNCHER="srun --mpi=pmix"`), which is given `-n N`.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub ranks: usize,

    /// The sweep directory (made by `cnn sweep plan`).
    #[arg(value_name = "SWEEP_DIR")]
    pub dir: PathBuf,

    /// The point's index in manifest.json.
    #[arg(value_name = "INDEX")]
    pub index: usize,
}

#[derive(Debug, Args)]
pub struct SweepStateArgs {
    /// The sweep directory (made by `cnn sweep plan`).
    #[arg(value_name = "SWEEP_DIR")]
    pub dir: PathBuf,

    /// Only these points (default: all).
    #[arg(value_name = "INDEX")]
    pub indices: Vec<usize>,
}

#[derive(Debug, Args)]
pub struct SweepSummaryArgs {
    /// The sweep directory (made by `cnn sweep plan`).
    #[arg(value_name = "SWEEP_DIR")]
    pub dir: PathBuf,
}

/// The flags of a new run (the `new_run` group and [`RunChoices`]) would
/// change the model, the data or the run directory, so `--resume` refuses
/// them (and a sweep's resumed points drop them). Every other flag also
/// applies to a resumed run.
#[derive(Debug, Args)]
#[command(allow_negative_numbers = true)]
pub struct TrainArgs {
    /// Architecture and training config (JSON).
    #[arg(
        short,
        long,
        value_name = "FILE",
        required_unless_present = "resume",
        group = "new_run"
    )]
    pub config: Option<PathBuf>,

    /// Continue the run in RUN_DIR from its last.safetensors, exactly where
    /// it stopped, with the config it stored. Only --epochs (to extend it),
    /// --checkpoint-every, --device, --data-dir, --no-download,
    /// --no-memory-check, --fresh-optimizer, --threads and --quiet may be
    /// given with it.
    #[arg(long, value_name = "RUN_DIR")]
    pub resume: Option<PathBuf>,

    /// Run directory to create (default: runs/<config name>).
    #[arg(short, long, value_name = "RUN_DIR", group = "new_run")]
    pub out: Option<PathBuf>,

    /// Replace the files of an existing, non-empty run directory.
    #[arg(long, group = "new_run")]
    pub force: bool,

    /// Print the resolved config (the file, then --set, then the flags,
    /// checked) as JSON on stdout and exit without training.
    #[arg(long, hide = true)]
    pub show_config: bool,

    #[command(flatten)]
    pub flags: TrainFlags,

    /// The flags of a new run given on the command line, as typed
    /// (`--lr`); filled by [`parse`].
    #[arg(skip)]
    pub new_run_flags: Vec<String>,
}

/// Every flag of `cnn train` but the run's identity (`--config`, `--out`,
/// `--force`, `--resume`): what a sweep gives each of its runs, stored in
/// its manifest as these values rather than as argument strings.
#[derive(Debug, Clone, Default, PartialEq, Args, Serialize, Deserialize)]
#[command(group(clap::ArgGroup::new("new_run").multiple(true)))]
#[serde(default)]
pub struct TrainFlags {
    /// Also write last.safetensors every N optimizer steps, so that a crash
    /// loses at most N steps (overrides training.checkpoint_every).
    #[arg(long, value_name = "N")]
    pub checkpoint_every: Option<u64>,

    #[command(flatten)]
    #[serde(flatten)]
    pub data: DataArgs,

    #[command(flatten)]
    #[serde(flatten)]
    pub device: DeviceArg,

    /// Number of epochs (overrides training.epochs).
    #[arg(long, value_name = "N")]
    pub epochs: Option<usize>,

    #[command(flatten)]
    #[serde(flatten)]
    pub choices: RunChoices,

    /// Learning rate (overrides training.optimizer.lr).
    #[arg(long, value_name = "X", group = "new_run")]
    pub lr: Option<f64>,

    /// Test on only the first N test images.
    #[arg(long, value_name = "N", group = "new_run")]
    pub limit_test: Option<usize>,

    /// Train even when the run's memory estimate (weights, optimizer state,
    /// activations of a batch) exceeds the memory available to this process
    /// (MemAvailable, cgroup and ulimit -v limits).
    #[arg(long)]
    pub no_memory_check: bool,

    /// With --resume: continue from a last.safetensors that has no optimizer
    /// state (written by another tool, or stripped), with the optimizer
    /// started afresh. The run then no longer repeats an uninterrupted one.
    // Needs --resume: checked at run time rather than by clap, so that a
    // sweep can pass it on to the resumes of its points.
    #[arg(long)]
    pub fresh_optimizer: bool,

    /// Print nothing but errors.
    #[arg(short, long)]
    pub quiet: bool,

    /// Spread the run over the processes of an MPI job, one per rank, each
    /// taking its share of every batch: `mpirun -n 4 cnn train
    /// --distributed mpi ...` (`srun -n 4 ...` under Slurm). Without
    /// batch norm the checkpoints have the same bits as one process's; rank
    /// 0 writes the run directory and evaluates. Needs a build with
    /// `--features mpi`; see the book's "One run on many processes".
    #[arg(long, value_enum, value_name = "ENGINE")]
    pub distributed: Option<crate::distributed::Engine>,
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

    #[command(flatten)]
    pub data: DataArgs,

    /// Image folders: evaluate on this folder (one sub-folder per class,
    /// named as in training) as the test split.
    #[arg(long, value_name = "DIR")]
    pub test_dir: Option<PathBuf>,

    /// Which split to evaluate.
    #[arg(long, value_enum, default_value = "test")]
    pub split: Split,

    #[command(flatten)]
    pub device: DeviceArg,

    /// Images per forward pass (default: data.eval_batch_size of the config).
    #[arg(long, value_name = "N")]
    pub batch_size: Option<usize>,

    /// Print one JSON object on stdout.
    #[arg(long)]
    pub json: bool,

    /// Draw the confusion matrix (.png or .svg).
    #[arg(long, value_name = "FILE")]
    pub confusion_png: Option<PathBuf>,

    /// Draw the most confident mistakes with true and predicted labels.
    #[arg(long, value_name = "FILE")]
    pub mistakes_png: Option<PathBuf>,

    /// How many mistakes --mistakes-png shows.
    #[arg(long, value_name = "N", default_value_t = 24)]
    pub mistakes: usize,

    /// Evaluate even when a batch's memory estimate exceeds the memory
    /// available to this process.
    #[arg(long)]
    pub no_memory_check: bool,

    /// The k of the top-k accuracy (default: training.top_k of the config, 5).
    #[arg(long, value_name = "K")]
    pub top_k: Option<usize>,

    /// Test-time augmentation: average the logits over copies of each image.
    /// Alone: the config's data.tta, or else {"flip": true, "translate": 1};
    /// or give the settings as JSON, e.g. --tta '{"translate": 1}'.
    #[arg(long, value_name = "JSON", num_args = 0..=1, default_missing_value = "",
          conflicts_with = "no_tta")]
    pub tta: Option<String>,

    /// Evaluate without the test-time augmentation the config's data.tta asks for.
    #[arg(long)]
    pub no_tta: bool,

    /// Evaluate in fp32 or bf16 (default: the precision the checkpoint
    /// was trained in).
    #[arg(long, value_name = "fp32|bf16")]
    pub precision: Option<crate::config::Precision>,
    /// Replace the output file if it exists (never a file of a run directory).
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct CheckDeviceArgs {
    /// Config files to check (repeatable).
    #[arg(short, long = "config", value_name = "FILE", required = true)]
    pub configs: Vec<PathBuf>,

    #[command(flatten)]
    pub device: DeviceArg,

    /// Images in the checked batch.
    #[arg(long, default_value_t = 8, value_name = "N")]
    pub batch_size: usize,

    /// Seeds the weights, the batch and the dropout masks.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub seed: u64,

    /// Print one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum, value_name = "SHELL")]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write cnn.1 and cnn-COMMAND.1 here (default: print cnn.1 on stdout).
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,

    /// Replace man pages that are already there.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct ReferenceArgs {
    /// Which page.
    #[arg(value_parser = ["cli", "config"], value_name = "PAGE")]
    pub page: String,
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

    /// Show the kernels of this precision (overrides training.precision).
    #[arg(long, value_name = "fp32|bf16")]
    pub precision: Option<crate::config::Precision>,
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

    /// Also draw every run's validation accuracy per epoch on one chart
    /// (FILE ends in .png or .svg).
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,
    /// Replace the output file if it exists (never a file of a run directory).
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct PlotArgs {
    /// Run directories (each holding a history.json).
    #[arg(required = true, value_name = "RUN_DIR")]
    pub runs: Vec<PathBuf>,

    /// Picture to write: .png or .svg.
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,

    /// Title above the charts (default: the run names).
    #[arg(long)]
    pub title: Option<String>,
    /// Replace the output file if it exists (never a file of a run directory).
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct PredictArgs {
    /// Checkpoint written by `cnn train`.
    #[arg(long, value_name = "FILE")]
    pub checkpoint: PathBuf,

    /// Image files, folders of images (searched recursively, in name
    /// order), or `-` to read file names from standard input, one per line.
    #[arg(required = true, value_name = "IMAGE|DIR|-")]
    pub images: Vec<PathBuf>,

    /// How many of the most likely classes to show.
    #[arg(long, value_name = "K", default_value_t = 1)]
    pub top: usize,

    /// How images are fitted to the input size (default: the config's
    /// data.resize, else by dataset).
    #[arg(long, value_enum)]
    pub preprocess: Option<Fit>,

    #[command(flatten)]
    pub device: DeviceArg,

    /// Print a JSON array of {path, class, label, top} objects on stdout
    /// once every image is done.
    #[arg(long, conflicts_with = "jsonl")]
    pub json: bool,

    /// Print one {path, class, label, top} JSON object per line, each
    /// batch as soon as it is done (for pipelines).
    #[arg(long)]
    pub jsonl: bool,

    /// Images decoded (on all cores) and classified together.
    #[arg(long, value_name = "N", default_value_t = 256)]
    pub batch_size: usize,

    /// Classify in fp32 or bf16 (default: the precision the checkpoint
    /// was trained in).
    #[arg(long, value_name = "fp32|bf16")]
    pub precision: Option<crate::config::Precision>,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The state_dict: a safetensors file of the source's tensor names
    /// (`conv1.weight`, `layer1.0.bn1.running_var`, `fc.bias`).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// Whose names the file has.
    #[arg(long, value_enum, value_name = "SOURCE")]
    pub from: crate::interop::Source,

    /// The architecture, whose layers name their modules (`torch_name`),
    /// such as configs/zoo/resnet18.json.
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,

    /// The cnn checkpoint to write.
    #[arg(short, long, visible_alias = "output", value_name = "FILE")]
    pub out: PathBuf,

    /// Class names, one per line in label order (default: ImageNet's
    /// 1,000 for a 1000-class config, else the label numbers).
    #[arg(long, value_name = "FILE")]
    pub classes: Option<PathBuf>,

    /// Replace the output file if it exists.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Checkpoint written by `cnn train`.
    #[arg(long, value_name = "FILE")]
    pub checkpoint: PathBuf,

    /// The ONNX file to write.
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,

    /// End the model with a softmax: its output is then the class
    /// probabilities (`probabilities`) instead of the scores (`logits`).
    #[arg(long)]
    pub softmax: bool,

    /// What to write: an ONNX model, or the weights as a torchvision or
    /// timm state_dict (safetensors, by the config's torch_name table),
    /// which `model.load_state_dict(safetensors.torch.load_file(FILE))`
    /// takes. Default: onnx, or torchvision for a .safetensors output.
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub format: Option<ExportFormat>,

    /// Replace the output file if it exists.
    #[arg(long)]
    pub force: bool,
}

/// What `cnn export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// An ONNX model (opset 13) with the normalisation and class names.
    Onnx,
    /// A state_dict of torchvision's names (safetensors).
    Torchvision,
    /// A state_dict of timm's names (safetensors).
    Timm,
}

#[derive(Debug, Args)]
pub struct FiltersArgs {
    /// Checkpoint written by `cnn train`.
    #[arg(long, value_name = "FILE")]
    pub checkpoint: PathBuf,

    /// The conv2d layer: its index in the config's layer list, or its path
    /// inside a block such as 5.layers.0 (default: the first conv2d).
    #[arg(long, value_name = "N|PATH")]
    pub layer: Option<String>,

    /// Picture to write: .png or .svg.
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    /// Replace the output file if it exists (never a file of a run directory).
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct FeatureMapsArgs {
    /// Checkpoint written by `cnn train` (optional with --kernel).
    #[arg(long, value_name = "FILE")]
    pub checkpoint: Option<PathBuf>,

    /// An image file to look at (made to look like the training data).
    #[arg(long, value_name = "IMG", conflicts_with = "index")]
    pub image: Option<PathBuf>,

    /// The N-th image of --split instead of a file.
    #[arg(long, value_name = "N")]
    pub index: Option<usize>,

    /// Which split --index (and --kernel's samples) come from.
    #[arg(long, value_enum, default_value = "test")]
    pub split: Split,

    /// Apply a fixed filter instead: vertical-edge, horizontal-edge, or a file
    /// with the kernel as JSON rows ([[-1,0,1],...]) or rows of numbers.
    #[arg(long, value_name = "KERNEL")]
    pub kernel: Option<String>,

    /// How many sample images --kernel filters.
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub count: usize,

    /// Dataset for --kernel without a checkpoint (default: mnist).
    #[arg(long, value_name = "NAME")]
    pub dataset: Option<String>,

    #[command(flatten)]
    pub data: DataArgs,

    /// Picture to write: .png or .svg.
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    /// Replace the output file if it exists (never a file of a run directory).
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct SamplesArgs {
    /// Dataset to show (default: the config's, else mnist).
    #[arg(long, value_name = "NAME")]
    pub dataset: Option<String>,

    /// A config whose data section says which dataset and where.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(flatten)]
    pub data: DataArgs,

    /// Training or test images.
    #[arg(long, value_enum, default_value = "train")]
    pub split: Split,

    /// How many images (default 32; 8 with --augmented).
    #[arg(long, value_name = "N")]
    pub count: Option<usize>,

    /// Show each image beside N augmented copies, drawn as training draws
    /// them from the config's data.augment section (default N: 7).
    #[arg(long, value_name = "N", num_args = 0..=1, default_missing_value = "7",
          requires = "config")]
    pub augmented: Option<usize>,

    /// Seed for picking the images.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub seed: u64,

    /// Picture to write: .png or .svg.
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    /// Replace the output file if it exists (never a file of a run directory).
    #[arg(long)]
    pub force: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resume_keeps_exactly_the_flags_outside_the_new_run_group() {
        let kept = resumable_train_flags();
        for flag in [
            "--epochs",
            "--no-download",
            "--data-dir",
            "--device",
            "--quiet",
        ] {
            assert!(
                kept.iter().any(|k| k == flag),
                "{flag} missing from {kept:?}"
            );
        }
        for flag in ["--lr", "--set", "--config", "--out", "--force", "--resume"] {
            assert!(!kept.iter().any(|k| k == flag), "{flag} kept: {kept:?}");
        }
        Cli::command().debug_assert();
    }
}
