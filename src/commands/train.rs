//! `cnn train`: config + flags → checked plan → data → run directory →
//! training loop → summary on stdout.

use super::{check_dataset_fits, load_config, thousands};
use crate::arch;
use crate::cli::TrainArgs;
use crate::config::Config;
use crate::config::{DatasetName, Normalize};
use crate::data::{Batcher, Dataset, LoadOptions, Normalization, Splits};
use crate::error::exit;
use crate::fsutil::write_atomic;
use crate::model::{Model, Weights};
use crate::optim::Optimizer;
use crate::progress::{Mode, Progress};
use crate::train::{self, RunContext};
use crate::{checkpoint, status};
use crate::{device, error::InputContext};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

/// Files a run directory holds; `--force` removes exactly these.
pub const RUN_FILES: &[&str] = &[
    "config.json",
    "history.json",
    "history.csv",
    "steps.csv",
    "status.json",
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
        "training.checkpoint_every",
        args.checkpoint_every.map(|v| v.to_string()),
    );
    push(
        "data.dataset",
        args.dataset
            .as_ref()
            .map(|d| serde_json::Value::String(d.clone()).to_string()),
    );
    sets
}

/// Where and how `train` finds its data.
fn load_options<'a>(args: &'a TrainArgs, classes: Option<&'a [String]>) -> LoadOptions<'a> {
    LoadOptions {
        data_dir: args.data_dir.as_deref(),
        test_dir: None,
        no_download: args.no_download,
        classes,
        quiet: args.quiet,
    }
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
        // The old run's TensorBoard events would mix with the new ones.
        if let Ok(entries) = std::fs::read_dir(dir.join("tensorboard")) {
            for entry in entries.flatten() {
                if entry
                    .file_name()
                    .to_string_lossy()
                    .starts_with("events.out.tfevents.")
                {
                    std::fs::remove_file(entry.path())
                        .input_context(|| format!("cannot remove {}", entry.path().display()))?;
                }
            }
        }
    }
    Ok(())
}

pub fn run(args: &TrainArgs) -> Result<()> {
    let stop = interrupt_flag()?;
    match &args.resume {
        Some(dir) => resume(args, dir, &stop),
        None => fresh(args, &stop),
    }
}

/// Ctrl-C and SIGTERM set the returned flag: the loop finishes its step,
/// saves and stops. A second signal exits at once (files are written
/// atomically, so nothing is left half-written).
fn interrupt_flag() -> Result<Arc<AtomicBool>> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    use signal_hook::flag;
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [SIGINT, SIGTERM] {
        // Registered first, so it sees the flag before the second handler sets it.
        flag::register_conditional_shutdown(sig, exit::INTERRUPTED, Arc::clone(&stop))?;
        flag::register(sig, Arc::clone(&stop))?;
    }
    Ok(stop)
}

/// A new run: config and flags, a new run directory, fresh weights.
fn fresh(args: &TrainArgs, stop: &AtomicBool) -> Result<()> {
    // 1. Settings: config file, then --set, then dedicated flags.
    let Some(config_path) = &args.config else {
        crate::bail_input!("cnn train needs --config FILE (or --resume RUN_DIR to continue a run)");
    };
    if let Some(name) = &args.dataset {
        DatasetName::parse(name).map_err(|e| crate::input_error!("--dataset: {e:#}"))?;
    }
    let mut config = load_config(config_path, &args.sets, &flag_overrides(args))?;
    if let Some(dir) = &args.data_dir {
        config.data.dir = Some(dir.clone());
    }
    let t = &mut config.training;
    let warmup = crate::schedule::fit_warmup(&mut t.lr_schedule, t.epochs);
    let plan = arch::plan(&config)?;
    config.check_settings()?;
    let mut progress = Progress::new(Mode::detect(args.quiet));
    for w in plan.warnings.iter().chain(&warmup) {
        progress.note(&format!("warning: {w}"));
    }
    let run_dir: PathBuf = match &args.out {
        Some(out) => out.clone(),
        None => {
            let name = config.display_name();
            let plain = Path::new(name)
                .file_name()
                .is_some_and(|f| f == std::ffi::OsStr::new(name));
            if !plain || name.contains('\\') {
                crate::bail_input!(
                    "the config's \"name\" ({name:?}) cannot name a directory under runs/ (it holds a path \
                     separator or is . or ..); pass --out RUN_DIR or give the config a plain name"
                );
            }
            Path::new("runs").join(name)
        }
    };
    check_run_dir(&run_dir, args.force)?;
    let device = device::open(args.device)?;

    // 2. Data, split and normalisation; the config records what they came
    //    to (directories, split sizes, statistics) so that eval and resume
    //    rebuild exactly the same.
    let dataset = Dataset::load(&config, &load_options(args, None))?;
    for note in &dataset.notes {
        progress.note(note);
    }
    check_dataset_fits(&config, &dataset)?;
    let splits = Splits::new(&dataset, &config.data, config.training.seed)?;
    train::steps_per_epoch(&config, splits.train.len())?;
    let normalization = Normalization::resolve(&config.data.normalize, &splits.train)?;
    config.data.dir = (!dataset.from_hub).then(|| dataset.dir.clone());
    if let Some(t) = &config.data.test_dir {
        config.data.test_dir = Some(t.canonicalize().unwrap_or_else(|_| t.clone()));
    }
    splits.record_sizes(&mut config.data);
    config.data.normalize = Normalize::Given {
        mean: normalization.mean.clone(),
        std: normalization.std.clone(),
    };

    // 3. Run directory with the resolved config, written before training.
    create_run_dir(&run_dir, args.force)?;
    let started = status::start(&run_dir)?;
    let result = (|| {
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
        let optim = Optimizer::new(model.params().to_vec(), &config.training.optimizer)?;
        let what = "training";
        train_and_report(
            args,
            what,
            &config,
            &dataset,
            &splits,
            &normalization,
            &run_dir,
            &model,
            optim,
            train::RunState::new(),
            stop,
            &mut progress,
        )
    })();
    status::finish(&run_dir, &started, &result);
    result.map(|_| ())
}

/// Flags that would change a resumed run, with the reason each is refused.
fn refused_on_resume(args: &TrainArgs) -> Vec<&'static str> {
    let mut refused = Vec::new();
    let mut check = |set: bool, flag: &'static str| {
        if set {
            refused.push(flag);
        }
    };
    check(args.config.is_some(), "--config");
    check(!args.sets.is_empty(), "--set");
    check(args.lr.is_some(), "--lr");
    check(args.batch_size.is_some(), "--batch-size");
    check(args.seed.is_some(), "--seed");
    check(args.dataset.is_some(), "--dataset");
    check(args.limit_train.is_some(), "--limit-train");
    check(args.limit_test.is_some(), "--limit-test");
    check(args.out.is_some(), "--out");
    check(args.force, "--force");
    refused
}

/// Continues the run in `dir` from its `last.safetensors`.
fn resume(args: &TrainArgs, dir: &Path, stop: &AtomicBool) -> Result<()> {
    let refused = refused_on_resume(args);
    if !refused.is_empty() {
        crate::bail_input!(
            "--resume continues {} exactly as it was configured, so {} cannot be used with it (it would change \
             the model, the data or the run directory). Start a new run with --config and --out instead; \
             --epochs, --checkpoint-every, --device, --data-dir, --no-download, --threads and --quiet are allowed",
            dir.display(),
            refused.join(", ")
        );
    }
    if !dir.exists() {
        crate::bail_input!("--resume {}: no such run directory", dir.display());
    }
    if !dir.is_dir() {
        crate::bail_input!(
            "--resume {}: this is a file, not a run directory; give the directory a run was written to",
            dir.display()
        );
    }
    let started = status::start(dir)?;
    let result = resume_in(args, dir, stop);
    status::finish(dir, &started, &result);
    result.map(|_| ())
}

/// Refuses a last.safetensors that another run wrote (copied in by hand, say):
/// resuming from it would replace this run's best checkpoint and history.
fn same_run(dir: &Path, last: &Path, stored: &Config) -> Result<()> {
    let path = dir.join("config.json");
    if !path.is_file() {
        return Ok(());
    }
    let recorded = Config::load(&path).context("the run's config.json")?;
    let differs = if recorded.input_shape != stored.input_shape
        || recorded.num_classes != stored.num_classes
    {
        Some("input shape or classes")
    } else if recorded.layers != stored.layers {
        Some("layers")
    } else if recorded.training.seed != stored.training.seed
        || recorded.data.dataset != stored.data.dataset
    {
        Some("seed or dataset")
    } else {
        None
    };
    if let Some(what) = differs {
        crate::bail_input!(
            "{} does not belong to this run: its {what} differ from {}. The directory mixes files of two runs; \
             nothing was changed. Put the checkpoint back in its own run directory, or start a new run with \
             --config and --out",
            last.display(),
            path.display()
        );
    }
    Ok(())
}

fn resume_in(args: &TrainArgs, dir: &Path, stop: &AtomicBool) -> Result<Option<String>> {
    let last = train::last_path(dir);
    if !last.is_file() {
        crate::bail_input!(
            "--resume {}: the run directory has no last.safetensors, so there is nothing to resume from \
             (the run was never checkpointed); start it again with --config and --out",
            dir.display()
        );
    }
    let ck = checkpoint::load(&last).context("reading the checkpoint to resume from")?;
    let Some(state) = ck.meta.state.clone() else {
        crate::bail_input!(
            "{} holds no training state (it is not a run's last.safetensors); resume from a run directory",
            last.display()
        );
    };
    same_run(dir, &last, &ck.meta.config)?;
    let mut config = ck.meta.config.clone();
    if let Some(epochs) = args.epochs {
        if epochs < state.epochs_done {
            crate::bail_input!(
                "--epochs {epochs}: {} has already trained {} epochs; give at least that many",
                dir.display(),
                state.epochs_done
            );
        }
        config.training.epochs = epochs;
    }
    if let Some(n) = args.checkpoint_every {
        config.training.checkpoint_every = n;
    }
    let mut progress = Progress::new(Mode::detect(args.quiet));
    if state.stopped_early || state.epochs_done >= config.training.epochs {
        let why = if state.stopped_early {
            "stopped early".to_string()
        } else {
            format!("finished all {} epochs", state.epochs_done)
        };
        progress.note(&format!(
            "nothing to resume: {} {why}; pass a larger --epochs to train further",
            dir.display()
        ));
        return Ok(Some(format!("nothing to resume: {why}")));
    }
    config.check_settings()?;
    let plan = arch::plan(&config).context("the config stored in the checkpoint")?;
    let device = device::open(args.device)?;
    let dataset = Dataset::load(&config, &load_options(args, Some(&ck.meta.classes)))?;
    for note in &dataset.notes {
        progress.note(note);
    }
    check_dataset_fits(&config, &dataset)?;
    let splits = Splits::new(&dataset, &config.data, config.training.seed)?;
    let normalization = ck.meta.normalization.clone();
    let model = Model::new(&plan, Weights::Tensors(&ck.weights), &device)
        .with_context(|| format!("checkpoint {}", last.display()))?;
    let mut optim = Optimizer::new(model.params().to_vec(), &config.training.optimizer)?;
    optim
        .load_state(&ck.optimizer, state.step)
        .with_context(|| format!("optimizer state in {}", last.display()))?;
    write_atomic(&dir.join("config.json"), config.to_pretty_json().as_bytes())?;
    crate::history::write(dir, &state.history)?;
    let what = format!(
        "resuming at epoch {}, step {} of the run",
        state.epochs_done + 1,
        state.step
    );
    train_and_report(
        args,
        &what,
        &config,
        &dataset,
        &splits,
        &normalization,
        dir,
        &model,
        optim,
        state,
        stop,
        &mut progress,
    )
}

/// Runs the loop and prints the result.
#[allow(clippy::too_many_arguments)]
fn train_and_report(
    args: &TrainArgs,
    what: &str,
    config: &Config,
    dataset: &Dataset,
    splits: &Splits,
    normalization: &Normalization,
    run_dir: &Path,
    model: &Model,
    mut optim: Optimizer,
    state: train::RunState,
    stop: &AtomicBool,
    progress: &mut Progress,
) -> Result<Option<String>> {
    let device = model.device();
    progress.note(&format!(
        "{what}: {} ({} parameters) on {}: {} train / {} val / {} test images, {} → {}",
        config.display_name(),
        thousands(model.plan().params()),
        dataset.name.name(),
        splits.train.len(),
        splits.val.len(),
        splits.test.len(),
        device::describe(device),
        run_dir.display()
    ));
    let batcher = Batcher::new(normalization, device);
    let ctx = RunContext {
        config,
        splits,
        batcher: &batcher,
        normalization,
        classes: &dataset.classes,
        run_dir,
        stop: Some(stop),
    };
    crate::profile::enable_from_env();
    let result = train::fit(&ctx, model, &mut optim, progress, state);
    progress.finish();
    if let Some(table) = crate::profile::report() {
        eprintln!("time per phase and op (CNN_PROFILE):\n{table}");
    }
    let outcome = result?;

    if !args.quiet {
        let best = outcome
            .history
            .iter()
            .find(|r| r.epoch == outcome.best_epoch)
            .or(outcome.history.last());
        if let Some(best) = best {
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
        }
        println!("run directory: {}", run_dir.display());
        println!(
            "evaluate with: cnn eval --checkpoint {}",
            outcome.best_path.display()
        );
    }
    Ok(outcome.stopped_early.then(|| {
        format!(
            "stopped early after epoch {}: {} had not improved for {} epoch(s)",
            outcome.history.len(),
            config.training.monitor.name(),
            config
                .training
                .early_stopping
                .as_ref()
                .map_or(0, |e| e.patience)
        )
    }))
}
