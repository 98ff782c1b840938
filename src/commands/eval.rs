//! `cnn eval`: rebuild the model from a checkpoint alone (or from a config
//! plus a foreign safetensors file), find the data, report loss, accuracy,
//! top-k accuracy, per-class accuracy, precision, recall and F1 with their
//! macro averages, and the confusion matrix, optionally with test-time
//! augmentation; optionally draw the matrix and the most confident mistakes.

use crate::cli::EvalArgs;
use crate::config::{Config, DatasetName, Tta};
use crate::data::{Batcher, Dataset, ImageSet, LoadOptions, Normalization, Split};
use crate::device;
use crate::plot::{self, grid};
use crate::progress::{Mode, Progress};
use crate::train::eval::{ClassMetrics, Options};
use crate::train::eval::{Evaluation, evaluate};
use anyhow::Result;
use serde_json::json;

/// The most mistakes --mistakes-png draws (8 to a row).
const MAX_MISTAKES: usize = 512;

pub fn run(args: &EvalArgs) -> Result<()> {
    if args.mistakes > MAX_MISTAKES {
        crate::bail_input!(
            "--mistakes {}: show at most {MAX_MISTAKES} mistakes",
            args.mistakes
        );
    }
    if let Some(path) = &args.confusion_png {
        plot::check(path, args.force, "--confusion-png")?;
    }
    if let Some(path) = &args.mistakes_png {
        plot::check(path, args.force, "--mistakes-png")?;
    }
    let device = device::open(args.device.device)?;
    let loaded = super::load_model_in(
        &args.checkpoint,
        args.config.as_deref(),
        &device,
        args.precision,
    )?;
    let config = &loaded.config;
    if args.test_dir.is_some() && config.data.dataset != DatasetName::ImageFolder {
        crate::bail_input!(
            "--test-dir is for image folders, but this model was trained on {}; its test images are \
             found with the training files (see --data-dir)",
            config.data.dataset.name()
        );
    }
    // The test split of a built-in dataset needs only its test files when
    // the checkpoint knows its normalization: a damaged training file does
    // not stop it.
    let test_only = args.split == Split::Test
        && loaded.normalization.is_some()
        && config.data.dataset != DatasetName::ImageFolder;
    // An image folder's labels follow the checkpoint's class names.
    let known = (!loaded.classes.is_empty()).then_some(&loaded.classes[..]);
    let dataset = Dataset::for_config(
        config,
        &LoadOptions {
            data_dir: args.data.data_dir.as_deref(),
            test_dir: args.test_dir.as_deref(),
            no_download: args.data.no_download,
            classes: known,
            quiet: false,
            test_only,
        },
    )?;
    for note in &dataset.notes {
        eprintln!("{note}");
    }
    let classes = match known {
        Some(c) => c.to_vec(),
        None => dataset.classes.clone(),
    };
    let classes = &classes;
    let splits = if test_only {
        crate::data::Splits::test_only(&dataset, &config.data)?
    } else {
        dataset.splits(config)?
    };
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
    let options = Options {
        top_k: args.top_k.unwrap_or(config.training.top_k),
        tta: tta(args, config)?,
    };
    if options.top_k == 0 {
        crate::bail_input!("--top-k 0: give the k of the top-k accuracy, such as 5");
    }
    crate::memory::check_eval(
        loaded.model.plan(),
        batch_size.min(subset.len()),
        crate::memory::Shape::of(&device),
        args.no_memory_check,
    )?;
    let batcher = Batcher::new(&normalization, &device);
    let mut progress = Progress::new(Mode::detect(false));
    progress.start_eval("evaluating", subset.len());
    let started = std::time::Instant::now();
    let eval = evaluate(&loaded.model, subset, &batcher, batch_size, &options, |n| {
        progress.eval_step(n)
    })?;
    let seconds = started.elapsed().as_secs_f64();
    progress.finish();
    let name = config.display_name();
    let split = args.split.name();

    if let Some(path) = &args.confusion_png {
        let figure = grid::ConfusionFigure {
            title: format!(
                "{name}: confusion matrix, {split} split ({} images)",
                eval.result.samples
            ),
            classes: classes.clone(),
            matrix: eval.confusion.clone(),
        };
        plot::save(&figure, path, args.force, "--confusion-png")?;
        eprintln!("wrote {}", path.display());
    }
    if let Some(path) = &args.mistakes_png {
        plot::save(
            &mistakes_grid(&eval, subset.set, classes, args.mistakes, name)?,
            path,
            args.force,
            "--mistakes-png",
        )?;
        eprintln!("wrote {}", path.display());
    }

    let r = &eval.result;
    let per_class = eval.per_class();
    let metrics = eval.class_metrics();
    let avg = eval.macro_average();
    if args.json {
        let per_class: Vec<_> = per_class
            .iter()
            .zip(&metrics)
            .enumerate()
            .map(|(c, (&(n, ok), m))| {
                json!({
                    "class": c,
                    "label": classes.get(c),
                    "samples": n,
                    "correct": ok,
                    "accuracy": if n == 0 { None } else { Some(ok as f64 / n as f64) },
                    "predicted": m.predicted,
                    "precision": m.precision,
                    "recall": m.recall,
                    "f1": m.f1,
                })
            })
            .collect();
        let out = json!({
            "checkpoint": args.checkpoint,
            "model": name,
            "epoch": loaded.epoch,
            "dataset": dataset.name.name(),
            "data_dir": dataset.dir,
            "test_dir": dataset.test_dir,
            "split": split,
            "samples": r.samples,
            "correct": r.correct,
            "loss": r.loss,
            "accuracy": r.accuracy,
            "top_k": r.top_k,
            "top_k_accuracy": r.top_k_accuracy,
            "macro": {"precision": avg.precision, "recall": avg.recall, "f1": avg.f1},
            "tta": options.tta,
            "classes": classes,
            "eval_seconds": seconds,
            "images_per_second": r.samples as f64 / seconds.max(1e-9),
            "per_class": per_class,
            "confusion": eval.confusion,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let epoch = loaded
        .epoch
        .map(|e| format!(", epoch {e}"))
        .unwrap_or_default();
    println!("checkpoint  {} ({name}{epoch})", args.checkpoint.display());
    // Test images of an image folder may come from their own folder.
    let source = match (&dataset.test_dir, args.split) {
        (Some(t), Split::Test) => t,
        _ => &dataset.dir,
    };
    println!(
        "data        {split} split of {}: {} images ({})",
        dataset.name.name(),
        r.samples,
        source.display()
    );
    println!("loss        {:.4}", r.loss);
    println!(
        "accuracy    {:.2}% ({}/{})",
        100.0 * r.accuracy,
        r.correct,
        r.samples
    );
    println!("top-{}       {:.2}%", r.top_k, 100.0 * r.top_k_accuracy);
    println!(
        "macro       precision {:.4}, recall {:.4}, F1 {:.4} (unweighted means over the classes)",
        avg.precision, avg.recall, avg.f1
    );
    if let Some(t) = &options.tta {
        println!("tta         logits averaged over {}", describe_tta(t));
    }
    println!();
    print!("{}", per_class_table(classes, &per_class, &metrics));
    println!();
    print!("{}", confusion_table(classes, &eval.confusion));
    Ok(())
}

/// The test-time augmentation of this evaluation: `--no-tta` none,
/// `--tta` alone the config's or flip + translate 1, `--tta JSON` that;
/// else the config's `data.tta`.
fn tta(args: &EvalArgs, config: &Config) -> Result<Option<Tta>> {
    if args.no_tta {
        return Ok(None);
    }
    let Some(given) = &args.tta else {
        return Ok(config.data.tta);
    };
    let tta = if given.trim().is_empty() {
        config.data.tta.unwrap_or(Tta {
            flip: true,
            translate: 1,
        })
    } else {
        serde_json::from_str::<Tta>(given).map_err(|e| {
            crate::input_error!(
                "--tta {given}: {e}; give JSON like '{{\"flip\": true, \"translate\": 1}}'"
            )
        })?
    };
    tta.check(config.input_shape)
        .map_err(|e| crate::input_error!("--tta: {e:#}"))?;
    Ok(Some(tta))
}

fn describe_tta(t: &Tta) -> String {
    let mut views = vec!["the image"];
    if t.flip {
        views.push("its mirror");
    }
    let mut out = views.join(" and ");
    if t.translate > 0 {
        out.push_str(&format!(
            ", half and half with copies shifted by {} pixel(s) up-left and down-right",
            t.translate
        ));
    }
    out
}

fn per_class_table(
    classes: &[String],
    per_class: &[(u64, u64)],
    metrics: &[ClassMetrics],
) -> String {
    let width = classes
        .iter()
        .map(|c| c.chars().count())
        .max()
        .unwrap_or(5)
        .max(5);
    let mut out = format!(
        "{:<width$}  {:>7}  {:>8}  {:>9}  {:>6}  {:>6}\n",
        "class", "images", "accuracy", "precision", "recall", "F1"
    );
    for (c, (&(n, ok), m)) in per_class.iter().zip(metrics).enumerate() {
        let acc = if n == 0 {
            "-".to_string()
        } else {
            format!("{:.2}%", 100.0 * ok as f64 / n as f64)
        };
        out.push_str(&format!(
            "{:<width$}  {n:>7}  {acc:>8}  {:>9.4}  {:>6.4}  {:>6.4}\n",
            classes[c], m.precision, m.recall, m.f1
        ));
    }
    out
}

/// Rows are true classes, columns predicted ones.
fn confusion_table(classes: &[String], m: &[Vec<u64>]) -> String {
    let label_w = classes
        .iter()
        .map(|c| c.chars().count())
        .max()
        .unwrap_or(1)
        .max(4);
    let cell_w = m
        .iter()
        .flatten()
        .map(|v| v.to_string().len())
        .max()
        .unwrap_or(1)
        .max(
            classes
                .iter()
                .map(|c| c.chars().count().min(6))
                .max()
                .unwrap_or(1),
        );
    let mut out = String::from("confusion matrix (rows: true class, columns: predicted class)\n");
    out.push_str(&format!("{:>label_w$}", ""));
    for c in classes {
        let short: String = c.chars().take(6).collect();
        out.push_str(&format!(" {short:>cell_w$}"));
    }
    out.push('\n');
    for (t, row) in m.iter().enumerate() {
        out.push_str(&format!("{:>label_w$}", classes[t]));
        for v in row {
            out.push_str(&format!(" {v:>cell_w$}"));
        }
        out.push('\n');
    }
    out
}

/// The `n` most confident mistakes, with their true and predicted labels.
fn mistakes_grid(
    eval: &Evaluation,
    set: &ImageSet,
    classes: &[String],
    n: usize,
    model: &str,
) -> Result<grid::Grid> {
    let tiles: Vec<grid::Tile> = eval
        .worst_mistakes(n)
        .into_iter()
        .map(|p| -> Result<grid::Tile> {
            let label = |c: u32| {
                classes
                    .get(c as usize)
                    .cloned()
                    .unwrap_or_else(|| c.to_string())
            };
            let mut tile = grid::Tile::from_bytes(
                &set.pixels_of(p.image as usize)?,
                set.channels,
                set.height,
                set.width,
                format!(
                    "{} → {} {:.0}%",
                    label(p.target),
                    label(p.predicted),
                    100.0 * p.confidence
                ),
            );
            tile.alert = true;
            Ok(tile)
        })
        .collect::<Result<_>>()?;
    let count = tiles.len();
    let rows = tiles
        .chunks(8)
        .map(|c| grid::Row {
            label: None,
            tiles: c.to_vec(),
        })
        .collect();
    Ok(grid::Grid {
        title: format!("{model}: the {count} most confident mistakes"),
        rows,
        cell: 112,
        scale: grid::Scale::Gray,
        note: Some("caption: true label → predicted label, with the predicted probability".into()),
        labels_left: false,
    })
}
