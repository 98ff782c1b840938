//! The training loop: epochs of seeded shuffled batches, an optimizer step
//! per batch, then validation and test passes, the history files and the
//! `last`/`best` checkpoints. Reporting goes through [`Progress`].

pub mod eval;
pub mod loss;

use crate::checkpoint::{self, Meta};
use crate::config::Config;
use crate::data::{Batcher, Normalization, Splits};
use crate::history::{self, EpochRecord};
use crate::model::Model;
use crate::optim::Optimizer;
use crate::progress::Progress;
use crate::rng;
use anyhow::{Context, Result};
use eval::{EvalResult, evaluate};
use rand::seq::SliceRandom;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Everything a run needs besides the model and optimizer.
pub struct RunContext<'a> {
    pub config: &'a Config,
    pub splits: &'a Splits<'a>,
    pub batcher: &'a Batcher,
    pub normalization: &'a Normalization,
    pub classes: &'a [String],
    pub run_dir: &'a Path,
}

/// How a finished run went.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub history: Vec<EpochRecord>,
    /// The epoch saved as `best.safetensors`.
    pub best_epoch: usize,
    pub best_path: PathBuf,
    pub last_path: PathBuf,
}

/// The metric that picks `best.safetensors`: validation accuracy, or training
/// accuracy when the run has no validation split.
fn monitored(r: &EpochRecord) -> f64 {
    r.val_acc.unwrap_or(r.train_acc)
}

pub fn fit(
    ctx: &RunContext,
    model: &Model,
    optim: &mut Optimizer,
    progress: &mut Progress,
) -> Result<Outcome> {
    let cfg = &ctx.config.training;
    let data_cfg = &ctx.config.data;
    let train = &ctx.splits.train;
    let batch_size = cfg.batch_size;
    let steps_per_epoch = if data_cfg.drop_last {
        train.len() / batch_size
    } else {
        train.len().div_ceil(batch_size)
    };
    if steps_per_epoch == 0 {
        crate::bail_input!(
            "the training split has {} images, fewer than one batch of {batch_size}, and data.drop_last is true; \
             lower training.batch_size or set data.drop_last=false",
            train.len()
        );
    }
    let last_path = ctx.run_dir.join("last.safetensors");
    let best_path = ctx.run_dir.join("best.safetensors");
    let mut history: Vec<EpochRecord> = Vec::with_capacity(cfg.epochs);
    let mut best: Option<(usize, f64)> = None;

    for epoch in 1..=cfg.epochs {
        // 1. This epoch's order and dropout stream, both derived from the seed.
        let mut order = train.indices.clone();
        if data_cfg.shuffle {
            order.shuffle(&mut rng::stream(
                cfg.seed,
                rng::Purpose::Shuffle,
                epoch as u64,
            ));
        }
        model.set_dropout_rng(rng::stream(cfg.seed, rng::Purpose::Dropout, epoch as u64));

        // 2. One pass over the training images.
        progress.start_epoch(epoch, cfg.epochs, train.len());
        let started = Instant::now();
        let (mut loss_sum, mut correct, mut seen) = (0.0f64, 0u64, 0usize);
        for chunk in order.chunks(batch_size).take(steps_per_epoch) {
            let (x, y) = ctx.batcher.batch(train.set, chunk)?;
            let logits = model.logits(&x, true)?;
            let loss = loss::cross_entropy(&logits, &y, cfg.label_smoothing)?;
            optim.backward_step(&loss)?;
            let l = loss.to_scalar::<f32>()? as f64;
            if !l.is_finite() {
                anyhow::bail!(
                    "the loss became {l} at epoch {epoch}, step {} (training diverged); lower the learning rate \
                     (training.optimizer.lr is {}); the checkpoints on disk are from the last finite epoch",
                    optim.steps(),
                    optim.lr()
                );
            }
            loss_sum += l * chunk.len() as f64;
            correct += loss::correct(&logits.detach(), &y)?;
            seen += chunk.len();
            let secs = started.elapsed().as_secs_f64();
            progress.step(
                seen,
                loss_sum / seen as f64,
                correct as f64 / seen as f64,
                seen as f64 / secs.max(1e-9),
            );
        }
        let epoch_seconds = started.elapsed().as_secs_f64();

        // 3. Validation and test passes.
        let eval_bs = data_cfg.eval_batch_size;
        let val: Option<EvalResult> = if ctx.splits.val.is_empty() {
            None
        } else {
            progress.start_eval("validating", ctx.splits.val.len());
            Some(evaluate(
                model,
                &ctx.splits.val,
                ctx.batcher,
                eval_bs,
                |n| progress.eval_step(n),
            )?)
        };
        progress.start_eval("testing", ctx.splits.test.len());
        let test = evaluate(model, &ctx.splits.test, ctx.batcher, eval_bs, |n| {
            progress.eval_step(n)
        })?;

        let record = EpochRecord {
            epoch,
            lr: optim.lr(),
            train_loss: loss_sum / seen.max(1) as f64,
            train_acc: correct as f64 / seen.max(1) as f64,
            val_loss: val.map(|v| v.loss),
            val_acc: val.map(|v| v.accuracy),
            test_loss: test.loss,
            test_acc: test.accuracy,
            epoch_seconds,
            images_per_second: seen as f64 / epoch_seconds.max(1e-9),
        };
        progress.finish_epoch(&record, cfg.epochs);
        history.push(record.clone());

        // 4. Files: history first, then `last`, then `best` if it improved.
        history::write(ctx.run_dir, &history)?;
        let meta = Meta {
            config: ctx.config.clone(),
            epoch,
            step: optim.steps(),
            metrics: Some(record.clone()),
            normalization: ctx.normalization.clone(),
            classes: ctx.classes.to_vec(),
            dataset: data_cfg.dataset.name().to_string(),
        };
        let mut tensors = model.tensors();
        tensors.extend(optim.state_tensors());
        checkpoint::save(&last_path, &meta, &tensors).context("saving last.safetensors")?;
        let score = monitored(&record);
        if best.is_none_or(|(_, b)| score > b) {
            best = Some((epoch, score));
            checkpoint::save(&best_path, &meta, &model.tensors())
                .context("saving best.safetensors")?;
        }
    }
    Ok(Outcome {
        history,
        best_epoch: best.map(|b| b.0).unwrap_or(0),
        best_path,
        last_path,
    })
}
