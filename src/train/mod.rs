//! The training loop: epochs of seeded shuffled (and optionally augmented)
//! batches, an optimizer step per batch, then validation and test passes, the history files and the
//! `last`/`best` checkpoints. Everything the loop depends on is either in
//! [`RunState`] (saved in `last.safetensors`) or derived from the seed, so a
//! run resumed from any checkpoint continues exactly as if never stopped.

pub mod eval;
pub mod loss;
pub mod state;
pub mod step;

use crate::checkpoint::{self, Meta};
use crate::config::Config;
use crate::data::{Batcher, Normalization, Splits};
use crate::error::Interrupted;
use crate::history::{self, EpochRecord, StepLog};
use crate::model::Model;
use crate::optim::Optimizer;
use crate::progress::Progress;
use crate::schedule::{self, Position};
use crate::tensorboard::EventWriter;
use crate::{profile, rng};
use anyhow::{Context, Result};
use eval::{EvalResult, evaluate};
use rand::seq::SliceRandom;
pub use state::RunState;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// Everything a run needs besides the model and optimizer.
pub struct RunContext<'a> {
    pub config: &'a Config,
    pub splits: &'a Splits<'a>,
    pub batcher: &'a Batcher,
    pub normalization: &'a Normalization,
    pub classes: &'a [String],
    pub run_dir: &'a Path,
    /// Set by Ctrl-C / SIGTERM: finish the step, save, stop.
    pub stop: Option<&'a AtomicBool>,
}

/// How a finished run went.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub history: Vec<EpochRecord>,
    /// The epoch saved as `best.safetensors`.
    pub best_epoch: usize,
    pub best_path: PathBuf,
    pub last_path: PathBuf,
    pub stopped_early: bool,
}

pub fn last_path(run_dir: &Path) -> PathBuf {
    run_dir.join("last.safetensors")
}
pub fn best_path(run_dir: &Path) -> PathBuf {
    run_dir.join("best.safetensors")
}

/// Training batches per epoch.
pub fn steps_per_epoch(config: &Config, train_images: usize) -> Result<usize> {
    let bs = config.training.batch_size;
    let steps = if config.data.drop_last {
        train_images / bs
    } else {
        train_images.div_ceil(bs)
    };
    if steps == 0 {
        crate::bail_input!(
            "the training split has {train_images} images, fewer than one batch of {bs}, and data.drop_last is true; \
             lower training.batch_size or set data.drop_last=false"
        );
    }
    Ok(steps)
}

/// Trains from `state` (fresh or resumed) until the configured number of
/// epochs, early stopping or an interruption.
pub fn fit(
    ctx: &RunContext,
    model: &Model,
    optim: &mut Optimizer,
    progress: &mut Progress,
    mut state: RunState,
) -> Result<Outcome> {
    let cfg = &ctx.config.training;
    let data_cfg = &ctx.config.data;
    let train = &ctx.splits.train;
    let batch_size = cfg.batch_size;
    let steps_per_epoch = steps_per_epoch(ctx.config, train.len())?;
    let base_lr = cfg.optimizer.lr;
    let mut steps = StepLog::open(ctx.run_dir, state.step)?;
    let mut events = if cfg.tensorboard {
        Some(EventWriter::create(&ctx.run_dir.join("tensorboard"))?)
    } else {
        None
    };
    let stop_requested = || ctx.stop.is_some_and(|s| s.load(Ordering::SeqCst));

    while state.epochs_done < cfg.epochs && !state.stopped_early {
        let epoch = state.epochs_done + 1;
        // 1. This epoch's order, derived from the seed and the epoch.
        let mut order = train.indices.clone();
        if data_cfg.shuffle {
            order.shuffle(&mut rng::stream(
                cfg.seed,
                rng::Purpose::Shuffle,
                epoch as u64,
            ));
        }

        // 2. The training steps not yet done.
        progress.start_epoch(epoch, cfg.epochs, train.len(), state.partial.seen);
        let started = Instant::now();
        let seconds_before = state.partial.seconds;
        for chunk in order
            .chunks(batch_size)
            .take(steps_per_epoch)
            .skip(state.batches_done)
        {
            let lr = schedule::lr(
                &cfg.lr_schedule,
                base_lr,
                Position {
                    epoch: epoch - 1,
                    step: state.step,
                    steps_per_epoch,
                    epochs: cfg.epochs,
                },
            );
            optim.set_lr(lr);
            let t = profile::scope(|| "step: forward + backward".to_string());
            let out = step::gradients(
                model,
                ctx.batcher,
                train.set,
                chunk,
                cfg.label_smoothing,
                &data_cfg.augment,
                cfg.seed,
                state.step,
            )?;
            drop(t);
            let (l, correct) = (out.loss, out.correct);
            if !l.is_finite() || cfg.max_loss.is_some_and(|m| l > m) {
                return Err(diverged(ctx, epoch, &state, l, lr));
            }
            let t = profile::scope(|| "step: optimizer".to_string());
            optim.apply(&out.grads)?;
            drop(t);
            state.step += 1;
            state.batches_done += 1;
            let p = &mut state.partial;
            p.loss_sum += l * chunk.len() as f64;
            p.correct += correct;
            p.seen += chunk.len();
            p.seconds = seconds_before + started.elapsed().as_secs_f64();
            let batch_acc = correct as f64 / chunk.len() as f64;
            steps.push(state.step, epoch, l, batch_acc, lr)?;
            if let Some(ev) = &mut events {
                let scalars = [("step/loss", l), ("step/accuracy", batch_acc), ("lr", lr)];
                ev.scalars(state.step, &scalars)?;
            }
            progress.step(
                p.seen,
                p.loss_sum / p.seen as f64,
                p.correct as f64 / p.seen as f64,
                p.seen as f64 / p.seconds.max(1e-9),
            );
            let interrupted = stop_requested();
            if interrupted
                || (cfg.checkpoint_every > 0 && state.step.is_multiple_of(cfg.checkpoint_every))
            {
                // The step log first: it may run ahead of the checkpoint
                // (resume drops the extra rows), never behind it.
                steps.flush()?;
                if let Some(ev) = &mut events {
                    ev.flush()?;
                }
                save_last(ctx, model, optim, &state, epoch)?;
            }
            if interrupted {
                return Err(interrupted_error(ctx, epoch, &state));
            }
        }

        // 3. Validation and test passes.
        let eval_bs = data_cfg.eval_batch_size;
        let val: Option<EvalResult> = if ctx.splits.val.is_empty() {
            None
        } else {
            progress.start_eval("validating", ctx.splits.val.len());
            let eval = evaluate(model, &ctx.splits.val, ctx.batcher, eval_bs, |n| {
                progress.eval_step(n)
            })?;
            Some(eval.result)
        };
        progress.start_eval("testing", ctx.splits.test.len());
        let test = evaluate(model, &ctx.splits.test, ctx.batcher, eval_bs, |n| {
            progress.eval_step(n)
        })?
        .result;
        let p = &state.partial;
        let record = EpochRecord {
            epoch,
            lr: optim.lr(),
            train_loss: p.loss_sum / p.seen.max(1) as f64,
            train_acc: p.correct as f64 / p.seen.max(1) as f64,
            val_loss: val.map(|v| v.loss),
            val_acc: val.map(|v| v.accuracy),
            test_loss: test.loss,
            test_acc: test.accuracy,
            epoch_seconds: p.seconds,
            images_per_second: p.seen as f64 / p.seconds.max(1e-9),
        };
        progress.finish_epoch(&record, cfg.epochs);
        if let Some(ev) = &mut events {
            let mut scalars = vec![
                ("epoch", epoch as f64),
                ("train/loss", record.train_loss),
                ("train/accuracy", record.train_acc),
                ("test/loss", record.test_loss),
                ("test/accuracy", record.test_acc),
                ("images_per_second", record.images_per_second),
            ];
            if let (Some(l), Some(a)) = (record.val_loss, record.val_acc) {
                scalars.extend([("val/loss", l), ("val/accuracy", a)]);
            }
            ev.scalars(state.step, &scalars)?;
        }

        // 4. Files. `best` first, then `last` (which records the new best),
        //    then the history: a crash anywhere in between resumes from the
        //    previous `last` and redoes identical work.
        let is_best = state.judge(&record, cfg.monitor, cfg.early_stopping.as_ref());
        state.history.push(record.clone());
        state.epochs_done = epoch;
        state.batches_done = 0;
        state.partial = Default::default();
        ensure_finite(ctx, model, epoch, &state)?;
        if is_best {
            let meta = meta(ctx, &state, None);
            checkpoint::save(&best_path(ctx.run_dir), &meta, &model.tensors())
                .context("saving best.safetensors")?;
        }
        steps.flush()?;
        if let Some(ev) = &mut events {
            ev.flush()?;
        }
        save_last(ctx, model, optim, &state, epoch)?;
        history::write(ctx.run_dir, &state.history)?;
        if state.stopped_early {
            progress.note(&format!(
                "early stopping: {} has not improved for {} epoch(s) (best {:.4} at epoch {})",
                cfg.monitor.name(),
                state.epochs_without_improvement,
                state.best.map_or(f64::NAN, |b| b.value),
                state.best.map_or(0, |b| b.epoch)
            ));
        }
        if stop_requested() && state.epochs_done < cfg.epochs && !state.stopped_early {
            return Err(interrupted_error(ctx, epoch + 1, &state));
        }
    }
    Ok(Outcome {
        best_epoch: state.best.map_or(0, |b| b.epoch),
        history: state.history,
        best_path: best_path(ctx.run_dir),
        last_path: last_path(ctx.run_dir),
        stopped_early: state.stopped_early,
    })
}

/// Checkpoint metadata; `run` (the resumable state) goes into `last` only.
fn meta(ctx: &RunContext, state: &RunState, run: Option<&RunState>) -> Meta {
    Meta {
        config: ctx.config.clone(),
        epoch: state.epochs_done,
        step: state.step,
        metrics: state.history.last().cloned(),
        normalization: ctx.normalization.clone(),
        classes: ctx.classes.to_vec(),
        dataset: ctx.config.data.dataset.name().to_string(),
        state: run.cloned(),
    }
}

/// Writes `last.safetensors`: weights, optimizer state and the run state.
fn save_last(
    ctx: &RunContext,
    model: &Model,
    optim: &Optimizer,
    state: &RunState,
    epoch: usize,
) -> Result<()> {
    let _t = profile::scope(|| "checkpoint: last".to_string());
    ensure_finite(ctx, model, epoch, state)?;
    let mut tensors = model.tensors();
    tensors.extend(optim.state_tensors());
    checkpoint::save(
        &last_path(ctx.run_dir),
        &meta(ctx, state, Some(state)),
        &tensors,
    )
    .context("saving last.safetensors")
}

/// Refuses to save weights that are no longer finite (a divergence the loss
/// has not shown yet): the checkpoints on disk stay the last finite ones.
fn ensure_finite(ctx: &RunContext, model: &Model, epoch: usize, state: &RunState) -> Result<()> {
    for (name, var) in model.params() {
        let values = var.as_tensor().flatten_all()?.to_vec1::<f32>()?;
        if let Some(bad) = values.iter().find(|v| !v.is_finite()) {
            anyhow::bail!(
                "training diverged in epoch {epoch} by step {}: {name} holds {bad}; lower the learning rate \
                 (training.optimizer.lr is {}). {}",
                state.step,
                ctx.config.training.optimizer.lr,
                checkpoints_left(ctx.run_dir)
            );
        }
    }
    Ok(())
}

fn diverged(ctx: &RunContext, epoch: usize, state: &RunState, loss: f64, lr: f64) -> anyhow::Error {
    let why = match ctx.config.training.max_loss {
        Some(max) if loss.is_finite() => {
            format!("reached {loss:.4e}, above training.max_loss = {max}")
        }
        _ => format!("became {loss}"),
    };
    anyhow::anyhow!(
        "training diverged: the loss {why} at epoch {epoch}, step {} of the epoch (step {} of the run) \
         with learning rate {lr:e}; lower it (training.optimizer.lr, --lr) or add a warmup \
         (training.lr_schedule.warmup_epochs). {}",
        state.batches_done + 1,
        state.step + 1,
        checkpoints_left(ctx.run_dir)
    )
}

/// What a diverged run leaves: its last finite checkpoints, or none yet.
fn checkpoints_left(run_dir: &Path) -> String {
    if last_path(run_dir).exists() || best_path(run_dir).exists() {
        format!(
            "The checkpoints in {} are from before, with finite weights",
            run_dir.display()
        )
    } else {
        format!(
            "No checkpoint was written: it diverged before the first save ({} holds the config and steps.csv)",
            run_dir.display()
        )
    }
}

fn interrupted_error(ctx: &RunContext, epoch: usize, state: &RunState) -> anyhow::Error {
    anyhow::Error::new(Interrupted(format!(
        "interrupted in epoch {epoch} after step {} of the run; saved {}. Resume with: cnn train --resume {}",
        state.step,
        last_path(ctx.run_dir).display(),
        ctx.run_dir.display()
    )))
}
