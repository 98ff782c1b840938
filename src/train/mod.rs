//! The training loop: epochs of seeded shuffled (and optionally augmented)
//! batches, an optimizer step per batch, then validation and test passes, the history files and the
//! `last`/`best` checkpoints. Everything the loop depends on is either in
//! [`RunState`] (saved in `last.safetensors`) or derived from the seed, so a
//! run resumed from any checkpoint continues exactly as if never stopped.

pub mod ema;
pub mod eval;
pub(crate) mod loss;
pub mod lr_find;
mod record;
pub(crate) mod step;
pub mod transfer;

use crate::arch::Plan;
use crate::config::{Config, Monitor, ScheduleKind};
use crate::data::{Batcher, Normalization, Splits};
use crate::error::Interrupted;
use crate::history::EpochRecord;
use crate::model::Model;
use crate::optim::Optimizer;
use crate::progress::Progress;
use crate::run_dir::RunDir;
pub use crate::run_state::RunState;
use crate::run_state::monitored;
use crate::schedule::{self, Position};
use crate::{profile, rng};
use anyhow::Result;
use candle_core::Tensor;
use candle_core::backprop::GradStore;
use ema::Ema;
use eval::{EvalResult, evaluate};
use rand::Rng as _;
use rand::seq::SliceRandom;
use record::Recorder;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// Everything a run needs besides the model and optimizer.
pub struct RunContext<'a> {
    pub config: &'a Config,
    pub splits: &'a Splits<'a>,
    pub batcher: &'a Batcher,
    pub normalization: &'a Normalization,
    pub classes: &'a [String],
    pub run_dir: &'a RunDir,
    /// Set by Ctrl-C / SIGTERM: finish the step, save, stop.
    pub stop: Option<&'a AtomicBool>,
}

/// What training changes: the network, its optimizer and, with
/// `training.ema`, the average of its weights.
pub struct Learner {
    pub model: Model,
    pub optim: Optimizer,
    pub ema: Option<Ema>,
}

impl Learner {
    /// The network evaluation uses: the average with `training.ema`, else
    /// the trained one.
    pub fn evaluated(&self) -> &Model {
        self.ema.as_ref().map_or(&self.model, |e| e.model())
    }

    /// What `last.safetensors` holds: the evaluated network as `layers.*`
    /// (what every reader of a checkpoint takes), with an average also the
    /// trained weights as `raw.layers.*`, and the optimizer's state.
    pub fn last_tensors(&self) -> Vec<(String, Tensor)> {
        let mut tensors = self.evaluated().tensors();
        if self.ema.is_some() {
            tensors.extend(
                self.model
                    .tensors()
                    .into_iter()
                    .map(|(n, t)| (format!("{}{n}", crate::checkpoint::RAW), t)),
            );
        }
        tensors.extend(self.optim.state_tensors());
        tensors
    }
}

/// How a finished run went.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub history: Vec<EpochRecord>,
    /// The epoch saved as `best.safetensors`.
    pub best_epoch: usize,
    pub stopped_early: bool,
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

/// The parameters `training.freeze` names; every entry must name a layer
/// or a tensor of `plan`.
pub fn freeze_list(plan: &Plan, freeze: &[String]) -> Result<BTreeSet<String>> {
    let mut names = BTreeSet::new();
    for (i, entry) in freeze.iter().enumerate() {
        match plan.params_at(entry) {
            Some(list) if !list.is_empty() => names.extend(list),
            Some(_) => crate::bail_input!(
                "training.freeze.{i} is \"{entry}\", a layer without parameters; list layers with \
                 weights (conv2d, linear, batch norm) or remove it"
            ),
            None => crate::bail_input!(
                "training.freeze.{i} is \"{entry}\", which names no layer or parameter of the network; \
                 its layers are {}",
                plan.layer_paths()
            ),
        }
    }
    Ok(names)
}

/// The parameters frozen in `epoch` (1-based) by `training.freeze`.
pub fn frozen_in(config: &Config, plan: &Plan, epoch: usize) -> Result<BTreeSet<String>> {
    let t = &config.training;
    if t.unfreeze_after.is_some_and(|n| epoch > n) {
        return Ok(BTreeSet::new());
    }
    freeze_list(plan, &t.freeze)
}

/// Trains from `state` (fresh or resumed) until the configured number of
/// epochs, early stopping or an interruption.
pub fn fit(
    ctx: &RunContext,
    learner: &mut Learner,
    progress: &mut Progress,
    mut state: RunState,
) -> Result<Outcome> {
    let cfg = &ctx.config.training;
    let train = &ctx.splits.train;
    let steps_per_epoch = steps_per_epoch(ctx.config, train.len())?;
    let settings = step::Settings::of(ctx.config, train);
    let plan = learner.model.plan().clone();
    let mut record = Recorder::open(ctx, progress, &state)?;
    let stop_requested = || ctx.stop.is_some_and(|s| s.load(Ordering::SeqCst));

    while state.epochs_done < cfg.epochs && !state.stopped_early {
        let epoch = state.epochs_done + 1;
        // 1. This epoch's order, derived from the seed and the epoch, and
        //    what is frozen in it.
        let order = epoch_order(ctx.config, train, epoch);
        let frozen = frozen_in(ctx.config, &plan, epoch)?;
        learner.model.set_frozen(&frozen);

        // 2. The training steps not yet done.
        record.start_epoch(epoch, train.len(), &state);
        let started = Instant::now();
        let seconds_before = state.partial.seconds;
        let batches = order.chunks(cfg.batch_size).take(steps_per_epoch);
        for batch in batches.skip(state.batches_done) {
            let position = Position {
                epoch: epoch - 1,
                step: state.step,
                steps_per_epoch,
                epochs: cfg.epochs,
                reduced: state.plateau.lr,
            };
            let lr = schedule::lr(&cfg.lr_schedule, cfg.optimizer.lr, position);
            learner.optim.set_lr(lr);
            let t = profile::scope(|| "step: forward + backward".to_string());
            let mut out = step::gradients(
                &learner.model,
                ctx.batcher,
                train.set,
                batch,
                &settings,
                state.step,
                epoch,
            )?;
            drop(t);
            if !out.loss.is_finite() || cfg.max_loss.is_some_and(|m| out.loss > m) {
                return Err(diverged(ctx, epoch, &state, out.loss, lr));
            }
            let t = profile::scope(|| "step: optimizer".to_string());
            let grad_norm = clip_gradients(&learner.model, &mut out.grads, cfg.grad_clip)?;
            learner.optim.apply(&out.grads)?;
            if let Some(ema) = &learner.ema {
                ema.update(&learner.model, state.step + 1)?;
            }
            drop(t);
            let seconds = seconds_before + started.elapsed().as_secs_f64();
            state.count_step(batch.len(), out.loss, out.correct, seconds);
            let accuracy = out.correct / batch.len() as f64;
            record.step(&state, epoch, out.loss, accuracy, lr, grad_norm)?;
            let interrupted = stop_requested();
            if interrupted
                || (cfg.checkpoint_every > 0 && state.step.is_multiple_of(cfg.checkpoint_every))
            {
                record.checkpoint(learner, &state, epoch)?;
            }
            if interrupted {
                return Err(interrupted_error(ctx, epoch, &state));
            }
        }

        // 3. Validation and test passes (of the average, with an EMA).
        let lr = learner.optim.lr();
        let done = evaluate_epoch(
            ctx,
            learner.evaluated(),
            record.progress(),
            epoch,
            lr,
            &state,
        )?;

        // 4. The epoch counted, judged and written.
        if let ScheduleKind::ReduceOnPlateau { monitor, .. } = &cfg.lr_schedule.kind
            && epoch > schedule::warmup_epochs(&cfg.lr_schedule)
        {
            let monitor: Monitor = monitor.unwrap_or(cfg.monitor);
            let value = monitored(&done, monitor);
            let higher = monitor.higher_is_better();
            if schedule::plateau_step(&cfg.lr_schedule, &mut state.plateau, value, higher, lr) {
                record.progress().note(&format!(
                    "reduce_on_plateau: {} has not improved; learning rate now {:e}",
                    monitor.name(),
                    state.plateau.lr.unwrap_or(lr)
                ));
            }
        }
        let is_best = state.finish_epoch(&done, cfg.monitor, cfg.early_stopping.as_ref());
        record.epoch(&done, is_best, learner, &state)?;
        if state.stopped_early {
            record.progress().note(&format!(
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
        stopped_early: state.stopped_early,
    })
}

/// The global L2 norm of the gradients of `model`'s parameters (summed in
/// their order, in f64, so the same on any thread count), then the
/// clipping of `clip` applied to them: all scaled by `max_norm / (norm +
/// 1e-6)` when the norm is above `max_norm` (PyTorch's
/// `clip_grad_norm_`), or each value clamped to `±max_value`. Returns the
/// norm before clipping.
pub fn clip_gradients(
    model: &Model,
    grads: &mut GradStore,
    clip: Option<crate::config::GradClip>,
) -> Result<f64> {
    let mut sum = 0.0f64;
    for (_, var) in model.params() {
        if let Some(g) = grads.get(var.as_tensor()) {
            let values = g
                .flatten_all()?
                .to_dtype(candle_core::DType::F32)?
                .to_vec1::<f32>()?;
            sum += values.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>();
        }
    }
    let norm = sum.sqrt();
    let Some(clip) = clip else {
        return Ok(norm);
    };
    for (_, var) in model.params() {
        let t = var.as_tensor();
        let Some(g) = grads.get(t) else { continue };
        let clipped = match (clip.max_norm, clip.max_value) {
            (Some(max), _) => {
                let coef = max / (norm + 1e-6);
                if coef >= 1.0 {
                    continue;
                }
                (g * coef)?
            }
            (None, Some(v)) => g.clamp(-v, v)?,
            (None, None) => continue,
        };
        grads.insert(t, clipped);
    }
    Ok(norm)
}

/// The order of the training images in `epoch`: shuffled by a stream of
/// the seed and the epoch (or as stored, without `data.shuffle`); with the
/// balanced sampler, as many draws with replacement, each class equally
/// likely.
pub fn epoch_order(config: &Config, train: &crate::data::Subset, epoch: usize) -> Vec<u32> {
    let seed = config.training.seed;
    if config.data.sampler == crate::config::Sampler::Balanced {
        return balanced_order(train, config.num_classes, seed, epoch);
    }
    let mut order = train.indices.clone();
    if config.data.shuffle {
        order.shuffle(&mut rng::stream(seed, rng::Purpose::Shuffle, epoch as u64));
    }
    order
}

/// `subset.len()` images drawn with replacement, each with probability
/// proportional to `1 / (images of its class)`: a class, uniformly among
/// those present, then an image of it, uniformly.
pub fn balanced_order(
    subset: &crate::data::Subset,
    classes: usize,
    seed: u64,
    epoch: usize,
) -> Vec<u32> {
    let mut by_class: Vec<Vec<u32>> = vec![Vec::new(); classes];
    for &i in &subset.indices {
        if let Some(list) = by_class.get_mut(subset.set.labels[i as usize] as usize) {
            list.push(i);
        }
    }
    by_class.retain(|l| !l.is_empty());
    let mut r = rng::stream(seed, rng::Purpose::Sample, epoch as u64);
    (0..subset.len())
        .map(|_| {
            let list = &by_class[r.random_range(0..by_class.len())];
            list[r.random_range(0..list.len())]
        })
        .collect()
}

/// The validation and test passes at the end of `epoch`, and the epoch's
/// record with the training sums of `state`.
fn evaluate_epoch(
    ctx: &RunContext,
    model: &Model,
    progress: &mut Progress,
    epoch: usize,
    lr: f64,
    state: &RunState,
) -> Result<EpochRecord> {
    let eval_bs = ctx.config.data.eval_batch_size;
    let options = eval::Options {
        top_k: ctx.config.training.top_k,
        tta: ctx.config.data.tta,
    };
    let mut pass = |what: &str, subset: &crate::data::Subset| -> Result<EvalResult> {
        progress.start_eval(what, subset.len());
        let eval = evaluate(model, subset, ctx.batcher, eval_bs, &options, |n| {
            progress.eval_step(n)
        })?;
        Ok(eval.result)
    };
    let val = match ctx.splits.val.is_empty() {
        true => None,
        false => Some(pass("validating", &ctx.splits.val)?),
    };
    let test = pass("testing", &ctx.splits.test)?;
    let p = &state.partial;
    Ok(EpochRecord {
        epoch,
        lr,
        train_loss: p.loss_sum / p.seen.max(1) as f64,
        train_acc: p.correct / p.seen.max(1) as f64,
        val_loss: val.map(|v| v.loss),
        val_acc: val.map(|v| v.accuracy),
        test_loss: test.loss,
        test_acc: test.accuracy,
        epoch_seconds: p.seconds,
        images_per_second: p.seen as f64 / p.seconds.max(1e-9),
        val_macro_f1: val.map(|v| v.macro_f1),
        test_macro_f1: Some(test.macro_f1),
        val_top_k_acc: val.map(|v| v.top_k_accuracy),
        test_top_k_acc: Some(test.top_k_accuracy),
    })
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
fn checkpoints_left(run_dir: &RunDir) -> String {
    let dir = run_dir.path().display();
    if run_dir.has_checkpoint() {
        format!("The checkpoints in {dir} are from before, with finite weights")
    } else {
        format!(
            "No checkpoint was written: it diverged before the first save ({dir} holds the config and steps.csv)"
        )
    }
}

fn interrupted_error(ctx: &RunContext, epoch: usize, state: &RunState) -> anyhow::Error {
    anyhow::Error::new(Interrupted(format!(
        "interrupted in epoch {epoch} after step {} of the run; saved {}. Resume with: cnn train --resume {}",
        state.step,
        ctx.run_dir.last().display(),
        ctx.run_dir.path().display()
    )))
}
