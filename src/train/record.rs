//! What a run leaves behind as it goes: `steps.csv`, TensorBoard events,
//! the progress display, the `last`/`best` checkpoints and the history
//! files, kept apart from the training loop, which only reports what
//! happened.
//!
//! The order of the writes is what makes a crash harmless: the step log
//! may run ahead of `last.safetensors` (resume drops the extra rows), never
//! behind it; at the end of an epoch `best` is written before `last` (which
//! records the new best) and the history after both, so a crash anywhere in
//! between resumes from the previous `last` and redoes identical work.

use super::RunContext;
use crate::checkpoint::{self, Meta};
use crate::history::{self, EpochRecord, StepLog};
use crate::model::Model;
use crate::optim::Optimizer;
use crate::profile;
use crate::progress::Progress;
use crate::run_dir;
use crate::run_state::RunState;
use crate::tensorboard::EventWriter;
use anyhow::{Context, Result};

pub struct Recorder<'a> {
    ctx: &'a RunContext<'a>,
    progress: &'a mut Progress,
    steps: StepLog,
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
        let events = if ctx.config.training.tensorboard {
            Some(EventWriter::create(&dir.join(run_dir::TENSORBOARD))?)
        } else {
            None
        };
        Ok(Recorder {
            steps: StepLog::open(dir, state.step)?,
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

    /// One optimizer step: its loss, the batch's accuracy and the rate.
    pub fn step(
        &mut self,
        state: &RunState,
        epoch: usize,
        loss: f64,
        accuracy: f64,
        lr: f64,
    ) -> Result<()> {
        self.steps.push(state.step, epoch, loss, accuracy, lr)?;
        if let Some(ev) = &mut self.events {
            let scalars = [("step/loss", loss), ("step/accuracy", accuracy), ("lr", lr)];
            ev.scalars(state.step, &scalars)?;
        }
        let p = &state.partial;
        self.progress.step(
            p.seen,
            p.loss_sum / p.seen as f64,
            p.correct as f64 / p.seen as f64,
            p.seen as f64 / p.seconds.max(1e-9),
        );
        Ok(())
    }

    /// Writes `last.safetensors` mid-epoch (every N steps, or when stopped),
    /// the logs first.
    pub fn checkpoint(
        &mut self,
        model: &Model,
        optim: &Optimizer,
        state: &RunState,
        epoch: usize,
    ) -> Result<()> {
        self.flush()?;
        self.save_last(model, optim, state, epoch)
    }

    /// A finished epoch (already judged into `state`): its line, events,
    /// checkpoints and history.
    pub fn epoch(
        &mut self,
        record: &EpochRecord,
        is_best: bool,
        model: &Model,
        optim: &Optimizer,
        state: &RunState,
    ) -> Result<()> {
        self.progress
            .finish_epoch(record, self.ctx.config.training.epochs);
        if let Some(ev) = &mut self.events {
            let mut scalars = vec![
                ("epoch", record.epoch as f64),
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
        super::ensure_finite(self.ctx, model, record.epoch, state)?;
        if is_best {
            let meta = meta(self.ctx, state, None);
            checkpoint::save(&self.ctx.run_dir.best(), &meta, &model.tensors())
                .context("saving best.safetensors")?;
        }
        self.flush()?;
        self.save_last(model, optim, state, record.epoch)?;
        history::write(self.ctx.run_dir.path(), &state.history)
    }

    fn flush(&mut self) -> Result<()> {
        self.steps.flush()?;
        if let Some(ev) = &mut self.events {
            ev.flush()?;
        }
        Ok(())
    }

    /// Weights, optimizer state and the run state.
    fn save_last(
        &self,
        model: &Model,
        optim: &Optimizer,
        state: &RunState,
        epoch: usize,
    ) -> Result<()> {
        let _t = profile::scope(|| "checkpoint: last".to_string());
        super::ensure_finite(self.ctx, model, epoch, state)?;
        let mut tensors = model.tensors();
        tensors.extend(optim.state_tensors());
        checkpoint::save(
            &self.ctx.run_dir.last(),
            &meta(self.ctx, state, Some(state)),
            &tensors,
        )
        .context("saving last.safetensors")
    }
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
