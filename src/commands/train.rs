//! `cnn train`: config + flags → checked plan → data → run directory →
//! training loop → summary on stdout.

use super::{check_dataset_fits, load_config, thousands};
use crate::arch;
use crate::cli::TrainArgs;
use crate::config::{DatasetName, Normalize};
use crate::data::{Batcher, Dataset, Normalization, Splits};
use crate::fsutil::write_atomic;
use crate::model::{Model, Weights};
use crate::optim::Optimizer;
use crate::progress::{Mode, Progress};
use crate::train::{self, RunContext};
use crate::{device, error::InputContext};
use anyhow::Result;
use std::path::{Path, PathBuf};

/// Files a run directory holds; `--force` removes exactly these.
pub const RUN_FILES: &[&str] = &[
    "config.json",
    "history.json",
    "history.csv",
    "last.safetensors",
    "best.safetensors",
];

/// Dedicated flags as `--set` assignments.
fn flag_overrides(args: &TrainArgs) -> Vec<(String, String)> {
    let mut sets = Vec::new();
    let mut push = |path: &str, v: Option<String>| {
        if let Some(v) = v {
            sets.push((path.to_string(), v));
        }
    };
    push("training.epochs", args.epochs.map(|v| v.to_string()));
    push(
        "training.batch_size",
        args.batch_size.map(|v| v.to_string()),
    );
    push("training.optimizer.lr", args.lr.map(|v| v.to_string()));
    push("training.seed", args.seed.map(|v| v.to_string()));
    push("data.limit_train", args.limit_train.map(|v| v.to_string()));
    push("data.limit_test", args.limit_test.map(|v| v.to_string()));
    push(
        "data.dataset",
        args.dataset
            .as_ref()
            .map(|d| serde_json::Value::String(d.clone()).to_string()),
    );
    sets
}

/// Refuses a non-empty run directory unless `force`; touches nothing.
fn check_run_dir(dir: &Path, force: bool) -> Result<()> {
    if dir.exists() && !dir.is_dir() {
        crate::bail_input!(
            "--out {} exists and is not a directory; choose another path",
            dir.display()
        );
    }
    let non_empty = dir.is_dir()
        && std::fs::read_dir(dir)
            .input_context(|| format!("cannot read run directory {}", dir.display()))?
            .next()
            .is_some();
    if non_empty && !force {
        crate::bail_input!(
            "run directory {} already exists and is not empty; nothing was changed. Choose another with \
             --out DIR, or pass --force to replace its run files",
            dir.display()
        );
    }
    Ok(())
}

fn create_run_dir(dir: &Path, force: bool) -> Result<()> {
    std::fs::create_dir_all(dir)
        .input_context(|| format!("cannot create run directory {}", dir.display()))?;
    if force {
        for f in RUN_FILES {
            let p = dir.join(f);
            if p.exists() {
                std::fs::remove_file(&p)
                    .input_context(|| format!("cannot remove {}", p.display()))?;
            }
        }
    }
    Ok(())
}

pub fn run(args: &TrainArgs) -> Result<()> {
    // 1. Settings: config file, then --set, then dedicated flags.
    if let Some(name) = &args.dataset {
        DatasetName::parse(name).map_err(|e| crate::input_error!("--dataset: {e:#}"))?;
    }
    let mut config = load_config(&args.config, &args.sets, &flag_overrides(args))?;
    if let Some(dir) = &args.data_dir {
        config.data.dir = Some(dir.clone());
    }
    let plan = arch::plan(&config)?;
    config.check_settings()?;
    let mut progress = Progress::new(Mode::detect(args.quiet));
    for w in &plan.warnings {
        progress.note(&format!("warning: {w}"));
    }
    let run_dir: PathBuf = args
        .out
        .clone()
        .unwrap_or_else(|| Path::new("runs").join(config.display_name()));
    check_run_dir(&run_dir, args.force)?;
    let device = device::open(args.device)?;

    // 2. Data, split and normalisation.
    let dataset = Dataset::load(
        config.data.dataset,
        args.data_dir.as_deref(),
        config.data.dir.as_deref(),
    )?;
    check_dataset_fits(&config, &dataset)?;
    let splits = Splits::new(&dataset, &config.data, config.training.seed)?;
    let normalization = Normalization::resolve(&config.data.normalize, &splits.train)?;
    config.data.dir = Some(dataset.dir.clone());
    config.data.normalize = Normalize::Given {
        mean: normalization.mean.clone(),
        std: normalization.std.clone(),
    };

    // 3. Run directory with the resolved config, written before training.
    create_run_dir(&run_dir, args.force)?;
    write_atomic(
        &run_dir.join("config.json"),
        config.to_pretty_json().as_bytes(),
    )?;

    // 4. Model and optimizer.
    let model = Model::new(
        &plan,
        Weights::Init {
            seed: config.training.seed,
        },
        &device,
    )?;
    let mut optim = Optimizer::new(model.params().to_vec(), &config.training.optimizer)?;
    progress.note(&format!(
        "training {} ({} parameters) on {}: {} train / {} val / {} test images, {} → {}",
        config.display_name(),
        thousands(plan.params()),
        dataset.name.name(),
        splits.train.len(),
        splits.val.len(),
        splits.test.len(),
        device::describe(&device),
        run_dir.display()
    ));

    // 5. Train.
    let batcher = Batcher::new(&normalization, &device);
    let ctx = RunContext {
        config: &config,
        splits: &splits,
        batcher: &batcher,
        normalization: &normalization,
        classes: &dataset.classes,
        run_dir: &run_dir,
    };
    let outcome = train::fit(&ctx, &model, &mut optim, &mut progress)?;
    progress.finish();

    // 6. Result.
    if !args.quiet {
        let best = &outcome.history[outcome.best_epoch - 1];
        let val = best
            .val_acc
            .map(|a| format!("val acc {:.2}%, ", 100.0 * a))
            .unwrap_or_default();
        println!(
            "best epoch {}/{}: {val}test acc {:.2}% (test loss {:.4})",
            best.epoch,
            outcome.history.len(),
            100.0 * best.test_acc,
            best.test_loss
        );
        println!("run directory: {}", run_dir.display());
        println!(
            "evaluate with: cnn eval --checkpoint {}",
            outcome.best_path.display()
        );
    }
    Ok(())
}
