//! `cnn eval`: rebuild the model from a checkpoint alone (or from a config
//! plus a foreign safetensors file), find the data, report loss and accuracy.

use super::check_dataset_fits;
use crate::arch;
use crate::checkpoint;
use crate::cli::EvalArgs;
use crate::config::{Config, DatasetName};
use crate::data::{Batcher, Dataset, LoadOptions, Normalization, Splits, class_names};
use crate::device;
use crate::model::{Model, Weights};
use crate::progress::{Mode, Progress};
use crate::train::eval::evaluate;
use anyhow::{Context, Result};
use serde_json::json;
use std::collections::HashMap;

/// What `eval` needs from a weights file.
struct Loaded {
    config: Config,
    weights: HashMap<String, candle_core::Tensor>,
    normalization: Option<Normalization>,
    classes: Vec<String>,
    epoch: Option<usize>,
}

fn load(args: &EvalArgs) -> Result<Loaded> {
    match &args.config {
        None => {
            let ck = checkpoint::load(&args.checkpoint)?;
            Ok(Loaded {
                classes: ck.meta.classes.clone(),
                normalization: Some(ck.meta.normalization.clone()),
                epoch: Some(ck.meta.epoch),
                config: ck.meta.config,
                weights: ck.weights,
            })
        }
        Some(path) => {
            let config = Config::load(path)?;
            let plan = arch::plan(&config)?;
            let (_, tensors) = checkpoint::read_raw(&args.checkpoint)?;
            let weights = checkpoint::import_foreign(tensors, &plan).with_context(|| {
                format!(
                    "{} does not fit config {}",
                    args.checkpoint.display(),
                    path.display()
                )
            })?;
            Ok(Loaded {
                classes: class_names(config.data.dataset),
                normalization: None,
                epoch: None,
                config,
                weights,
            })
        }
    }
}

pub fn run(args: &EvalArgs) -> Result<()> {
    let loaded = load(args)?;
    let config = &loaded.config;
    let plan = arch::plan(config).context("the checkpoint's config")?;
    let device = device::open(args.device)?;
    let model = Model::new(&plan, Weights::Tensors(&loaded.weights), &device)
        .with_context(|| format!("checkpoint {}", args.checkpoint.display()))?;

    if args.test_dir.is_some() && config.data.dataset != DatasetName::ImageFolder {
        crate::bail_input!(
            "--test-dir is for image folders, but this model was trained on {}; its test images are \
             found with the training files (see --data-dir)",
            config.data.dataset.name()
        );
    }
    // An image folder's labels follow the checkpoint's class names.
    let known = (!loaded.classes.is_empty()).then_some(&loaded.classes[..]);
    let dataset = Dataset::load(
        config,
        &LoadOptions {
            data_dir: args.data_dir.as_deref(),
            test_dir: args.test_dir.as_deref(),
            no_download: args.no_download,
            classes: known,
            quiet: false,
        },
    )?;
    for note in &dataset.notes {
        eprintln!("{note}");
    }
    check_dataset_fits(config, &dataset)?;
    let classes = match known {
        Some(c) => c.to_vec(),
        None => dataset.classes.clone(),
    };
    let splits = Splits::new(&dataset, &config.data, config.training.seed)?;
    let normalization = match &loaded.normalization {
        Some(n) => n.clone(),
        None => Normalization::resolve(&config.data.normalize, &splits.train)?,
    };
    let subset = splits.get(args.split);
    if subset.is_empty() {
        crate::bail_input!(
            "the {} split is empty (data.val_size is 0 in this run's config); choose --split test or train",
            args.split.name()
        );
    }
    let batch_size = args.batch_size.unwrap_or(config.data.eval_batch_size);
    if batch_size == 0 {
        crate::bail_input!("--batch-size 0: use a positive batch size");
    }
    let batcher = Batcher::new(&normalization, &device);
    let mut progress = Progress::new(Mode::detect(false));
    progress.start_eval("evaluating", subset.len());
    let result = evaluate(&model, subset, &batcher, batch_size, |n| {
        progress.eval_step(n)
    })?;
    progress.finish();

    let name = config.display_name();
    if args.json {
        let out = json!({
            "checkpoint": args.checkpoint,
            "model": name,
            "epoch": loaded.epoch,
            "dataset": dataset.name.name(),
            "data_dir": dataset.dir,
            "split": args.split.name(),
            "samples": result.samples,
            "correct": result.correct,
            "loss": result.loss,
            "accuracy": result.accuracy,
            "classes": classes,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        let epoch = loaded
            .epoch
            .map(|e| format!(", epoch {e}"))
            .unwrap_or_default();
        println!("checkpoint  {} ({name}{epoch})", args.checkpoint.display());
        println!(
            "data        {} split of {}: {} images ({})",
            args.split.name(),
            dataset.name.name(),
            result.samples,
            dataset.dir.display()
        );
        println!("classes     {} ({})", classes.join(", "), classes.len());
        println!("loss        {:.4}", result.loss);
        println!(
            "accuracy    {:.2}% ({}/{})",
            100.0 * result.accuracy,
            result.correct,
            result.samples
        );
    }
    Ok(())
}
