//! What a run leaves behind as it goes: `steps.csv`, TensorBoard events,
//! the progress display, the `last`/`best` checkpoints and the history
//! files, kept apart from the training loop, which only reports what
//! happened.
//!
//! The order of the writes is what makes a crash harmless: the step log
//! may run ahead of `last.safetensors` (resume drops the extra rows), never
//! behind it; at the end of an epoch `best` (and the kept `best-<epoch>`
//! and `epoch-<epoch>` files) are written before `last` (which records the
//! new best) and the history after both, so a crash anywhere in between
//! resumes from the previous `last` and redoes identical work. A kept file
//! that falls out of the best `keep_best` is deleted only after the file
//! that replaces it is whole.

use super::{Learner, RunContext};
use crate::checkpoint::{self, Meta};
use crate::history::{self, EpochRecord, StepLog, StepRow};
use crate::profile;
use crate::progress::Progress;
use crate::run_dir;
use crate::run_state::RunState;
use crate::tensorboard::EventWriter;
use anyhow::{Context, Result};

pub struct Recorder<'a> {
    ctx: &'a RunContext<'a>,
    progress: &'a mut Progress,
    /// `None` on the ranks of a distributed run other than rank 0, which
    /// write nothing.
    steps: Option<StepLog>,
    events: Option<EventWriter>,
}

impl<'a> Recorder<'a> {
    /// Opens the step log (keeping its rows up to the run's step) and, when
    /// the config asks for them, the TensorBoard events.
    pub fn open(
        ctx: &'a RunContext<'a>,
        progress: &'a mut Progress,
        state: &RunState,
    ) -> Result<Self> {
        let dir = ctx.run_dir.path();
        if !ctx.writes() {
            return Ok(Recorder {
                steps: None,
                events: None,
                ctx,
                progress,
            });
        }
        let events = if ctx.config.training.tensorboard {
            Some(EventWriter::create(&dir.join(run_dir::TENSORBOARD))?)
        } else {
            None
        };
        Ok(Recorder {
            steps: Some(StepLog::open(dir, state.step)?),
            events,
            ctx,
            progress,
        })
    }

    pub fn progress(&mut self) -> &mut Progress {
        self.progress
    }

    pub fn start_epoch(&mut self, epoch: usize, images: usize, state: &RunState) {
        let epochs = self.ctx.config.training.epochs;
        self.progress
            .start_epoch(epoch, epochs, images, state.partial.seen);
    }

    /// One optimizer step: its loss, the batch's accuracy, the rate and the
    /// gradients' norm before clipping.
    pub fn step(
        &mut self,
        state: &RunState,
        epoch: usize,
        loss: f64,
        accuracy: f64,
        lr: f64,
        grad_norm: f64,
    ) -> Result<()> {
        if let Some(steps) = &mut self.steps {
            steps.push(&StepRow {
                step: state.step,
                epoch,
                loss,
                accuracy,
                lr,
                grad_norm,
            })?;
        }
        if let Some(ev) = &mut self.events {
            let scalars = [
                ("step/loss", loss),
                ("step/accuracy", accuracy),
                ("lr", lr),
                ("step/grad_norm", grad_norm),
            ];
            ev.scalars(state.step, &scalars)?;
        }
        let p = &state.partial;
        self.progress.step(
            p.seen,
            p.loss_sum / p.seen as f64,
            p.correct / p.seen as f64,
            p.seen as f64 / p.seconds.max(1e-9),
        );
        Ok(())
    }

    /// Writes `last.safetensors` mid-epoch (every N steps, or when stopped),
    /// the logs first.
    pub fn checkpoint(&mut self, learner: &Learner, state: &RunState, epoch: usize) -> Result<()> {
        if !self.ctx.writes() {
            return Ok(());
        }
        self.flush()?;
        self.save_last(learner, state, epoch)
    }

    /// A finished epoch (already judged into `state`): its line, events,
    /// checkpoints and history.
    pub fn epoch(
        &mut self,
        record: &EpochRecord,
        is_best: bool,
        learner: &Learner,
        state: &RunState,
    ) -> Result<()> {
        self.progress
            .finish_epoch(record, self.ctx.config.training.epochs);
        if !self.ctx.writes() {
            return Ok(());
        }
        if let Some(ev) = &mut self.events {
            let mut scalars = vec![
                ("epoch", record.epoch as f64),
                ("train/loss", record.train_loss),
                ("train/accuracy", record.train_acc),
                ("images_per_second", record.images_per_second),
            ];
            if let (Some(l), Some(a)) = (record.test_loss, record.test_acc) {
                scalars.extend([("test/loss", l), ("test/accuracy", a)]);
            }
            if let (Some(l), Some(a)) = (record.val_loss, record.val_acc) {
                scalars.extend([("val/loss", l), ("val/accuracy", a)]);
            }
            for (name, v) in [
                ("val/macro_f1", record.val_macro_f1),
                ("test/macro_f1", record.test_macro_f1),
                ("val/top_k_accuracy", record.val_top_k_acc),
                ("test/top_k_accuracy", record.test_top_k_acc),
            ] {
                if let Some(v) = v {
                    scalars.push((name, v));
                }
            }
            ev.scalars(state.step, &scalars)?;
        }
        let model = learner.evaluated();
        super::ensure_finite(self.ctx, &learner.model, record.epoch, state)?;
        super::ensure_finite(self.ctx, model, record.epoch, state)?;
        let run_dir = self.ctx.run_dir;
        let t = &self.ctx.config.training;
        let save = |path: &std::path::Path| -> Result<()> {
            let meta = meta(self.ctx, state, None);
            checkpoint::save(path, &meta, &model.tensors())
                .with_context(|| format!("saving {}", path.display()))
        };
        if is_best {
            save(&run_dir.best())?;
        }
        if t.keep_every_epochs > 0 && record.epoch.is_multiple_of(t.keep_every_epochs) {
            save(&run_dir.epoch_file(record.epoch))?;
        }
        if t.keep_best > 0 {
            let kept = best_epochs(&state.history, t.monitor, t.keep_best);
            if kept.contains(&record.epoch) {
                save(&run_dir.best_of(record.epoch))?;
            }
            // Only now, with the new file whole, the ones it pushed out.
            for old in run_dir.kept_best() {
                if !kept.contains(&old) {
                    let path = run_dir.best_of(old);
                    std::fs::remove_file(&path)
                        .with_context(|| format!("removing {}", path.display()))?;
                }
            }
        }
        self.flush()?;
        self.save_last(learner, state, record.epoch)?;
        history::write(self.ctx.run_dir.path(), &state.history)
    }

    fn flush(&mut self) -> Result<()> {
        if let Some(steps) = &mut self.steps {
            steps.flush()?;
        }
        if let Some(ev) = &mut self.events {
            ev.flush()?;
        }
        Ok(())
    }

    /// Weights, optimizer state and the run state.
    fn save_last(&self, learner: &Learner, state: &RunState, epoch: usize) -> Result<()> {
        let _t = profile::scope(|| "checkpoint: last".to_string());
        super::ensure_finite(self.ctx, &learner.model, epoch, state)?;
        let tensors = learner.last_tensors();
        checkpoint::save(
            &self.ctx.run_dir.last(),
            &meta(self.ctx, state, Some(state)),
            &tensors,
        )
        .context("saving last.safetensors")
    }
}

/// The epochs of the `k` best monitored values of `history` (the earlier
/// epoch first among equal values; values that are not numbers never).
pub fn best_epochs(
    history: &[EpochRecord],
    monitor: crate::config::Monitor,
    k: usize,
) -> Vec<usize> {
    let mut ranked: Vec<(f64, usize)> = history
        .iter()
        .map(|r| (crate::run_state::monitored(r, monitor), r.epoch))
        .filter(|(v, _)| v.is_finite())
        .collect();
    ranked.sort_by(|a, b| {
        let order = if monitor.higher_is_better() {
            b.0.total_cmp(&a.0)
        } else {
            a.0.total_cmp(&b.0)
        };
        order.then(a.1.cmp(&b.1))
    });
    ranked.into_iter().take(k).map(|(_, e)| e).collect()
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
        run_id: (!state.run_id.is_empty()).then(|| state.run_id.clone()),
    }
}
