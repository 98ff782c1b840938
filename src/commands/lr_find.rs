//! `cnn lr-find`: the learning-rate range test (`train::lr_find`) on a
//! config's model and data: a table or `--json` on stdout, `--plot` of the
//! loss against the rate with the suggestion marked. It makes no run
//! directory and writes nothing else.

use super::train::{new_model, source_weights};
use crate::cli::LrFindArgs;
use crate::data::{Batcher, Dataset, LoadOptions, Normalization};
use crate::device;
use crate::optim::Optimizer;
use crate::plot::{self, chart::LrFindChart};
use crate::progress::{Mode, Progress};
use crate::settings::{self, Resolved};
use crate::train::Learner;
use crate::train::lr_find::{self, Settings};
use anyhow::Result;
use serde_json::json;

pub fn run(args: &LrFindArgs) -> Result<()> {
    if let Some(p) = &args.plot {
        plot::check(p, args.force, "--plot")?;
    }
    let (start, end) = (args.start_lr, args.end_lr);
    if !(start.is_finite() && start > 0.0 && end.is_finite() && end > start) {
        crate::bail_input!(
            "--start-lr {start} and --end-lr {end}: give positive rates with the start below the end, \
             such as --start-lr 1e-7 --end-lr 10"
        );
    }
    if args.steps < 20 {
        crate::bail_input!(
            "--steps {}: the sweep needs at least 20 steps to suggest a rate (100 is usual)",
            args.steps
        );
    }
    let Resolved {
        mut config, plan, ..
    } = settings::new_run(
        &args.config,
        &args.choices.sets,
        &(&args.choices, &args.data),
    )?;
    let device = device::open(args.device.device)?;
    let transfer = source_weights(&mut config, &plan)?;
    let mut progress = Progress::new(Mode::detect(args.quiet));
    let dataset = Dataset::for_config(
        &config,
        &LoadOptions {
            data_dir: args.data.data_dir.as_deref(),
            test_dir: None,
            no_download: args.data.no_download,
            classes: None,
            quiet: args.quiet,
            test_only: false,
        },
    )?;
    for note in &dataset.notes {
        progress.note(note);
    }
    let splits = dataset.splits(&config)?;
    let normalization = Normalization::resolve(&config.data.normalize, &splits.train)?;
    let model = new_model(
        &config,
        &plan,
        &splits,
        &normalization,
        transfer.as_ref(),
        &device,
        &mut progress,
    )?;
    let optim = Optimizer::for_run(&plan, model.params().to_vec(), &config.training)?;
    let mut learner = Learner {
        model,
        optim,
        ema: None,
    };
    let settings = Settings {
        start_lr: start,
        end_lr: end,
        steps: args.steps,
        stop_factor: 4.0,
    };
    let batcher = Batcher::new(&normalization, &device);
    progress.note(&format!(
        "lr-find: {} on {} training images, rate {start:e} to {end:e} over at most {} steps of {}",
        config.display_name(),
        splits.train.len(),
        args.steps,
        config.training.batch_size
    ));
    progress.start_eval("sweeping", args.steps);
    let sweep = lr_find::run(
        &config,
        &splits.train,
        &batcher,
        &mut learner,
        &settings,
        |i, _, _| progress.eval_step(i),
    )?;
    progress.finish();
    let suggested = sweep.suggestion.map(|i| sweep.lrs[i]);
    if let Some(path) = &args.plot {
        let chart = LrFindChart {
            title: format!("{}: learning-rate range test", config.display_name()),
            lrs: sweep.lrs.clone(),
            losses: sweep.losses.clone(),
            smoothed: sweep.smoothed.clone(),
            suggestion: sweep.suggestion,
        };
        plot::save(&chart, path, args.force, "--plot")?;
        progress.note(&format!("wrote {}", path.display()));
    }
    if args.json {
        let out = json!({
            "model": config.display_name(),
            "optimizer": config.training.optimizer.kind.name(),
            "batch_size": config.training.batch_size,
            "start_lr": start,
            "end_lr": end,
            "steps": sweep.lrs.len(),
            "stopped_early": sweep.stopped,
            "suggested_lr": suggested,
            "lrs": sweep.lrs,
            "losses": sweep.losses,
            "smoothed_losses": sweep.smoothed,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    if let Some(why) = &sweep.stopped {
        println!("stopped after {} steps: {why}", sweep.lrs.len());
    }
    let lowest = sweep
        .smoothed
        .iter()
        .enumerate()
        .min_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, l)| (sweep.lrs[i], *l));
    if let Some((lr, loss)) = lowest {
        println!("lowest smoothed loss {loss:.4} at rate {lr:.3e}");
    }
    match suggested {
        Some(lr) => println!(
            "suggested learning rate: {lr:.3e} (where the smoothed loss falls fastest); try it with \
             --lr {lr:.1e}"
        ),
        None => println!(
            "no suggestion: the sweep took only {} steps before it stopped; lower --end-lr or raise \
             --steps",
            sweep.lrs.len()
        ),
    }
    Ok(())
}
