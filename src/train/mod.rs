//! The training loop: epochs of seeded shuffled (and optionally augmented)
//! batches, an optimizer step per batch, then validation and test passes, the history files and the
//! `last`/`best` checkpoints. Everything the loop depends on is either in
//! [`RunState`] (saved in `last.safetensors`) or derived from the seed, so a
//! run resumed from any checkpoint continues exactly as if never stopped.

pub mod ema;
pub mod eval;
mod learner;
pub(crate) mod loss;
pub mod lr_find;
pub(crate) mod mix;
mod record;
pub(crate) mod step;
pub mod transfer;

use crate::arch::Plan;
use crate::config::Config;
use crate::data::{Batcher, Normalization, Splits};
use crate::distributed::Group;
use crate::error::Interrupted;
use crate::history::EpochRecord;
use crate::model::Model;
use crate::progress::Progress;
use crate::rng;
use crate::run_dir::RunDir;
pub use crate::run_state::RunState;
use crate::run_state::monitored;
use crate::schedule::{self, Position};
use anyhow::Result;
use eval::{EvalResult, evaluate};
pub use learner::{GradNorm, Learner, StepContext, Stepped, Verdict, clip_gradients};
use rand::Rng as _;
use rand::seq::SliceRandom;
use record::Recorder;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;
pub use step::MICRO_BATCH;

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
    /// The ranks of a distributed run (`--distributed`); `None` for one process.
    pub group: Option<&'a Group>,
}

impl RunContext<'_> {
    /// Whether this process writes the run directory and evaluates: the
    /// only process, or rank 0 of a distributed run.
    pub fn writes(&self) -> bool {
        self.group.is_none_or(|g| g.is_leader())
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

/// The parameters frozen in `epoch` (1-based) by `training.freeze` (or
/// `training.fine_tune`).
pub fn frozen_in(config: &Config, plan: &Plan, epoch: usize) -> Result<BTreeSet<String>> {
    let (freeze, unfreeze_after) = match config.training.fine_tune {
        Some(f) => (crate::optim::fine_tune_layers(plan).0, Some(f.head_epochs)),
        None => (
            config.training.freeze.clone(),
            config.training.unfreeze_after,
        ),
    };
    if unfreeze_after.is_some_and(|n| epoch > n) {
        return Ok(BTreeSet::new());
    }
    freeze_list(plan, &freeze)
}

/// What `training.fine_tune` does to this network, in one line.
pub fn fine_tune_note(config: &Config, plan: &Plan) -> Option<String> {
    let f = config.training.fine_tune?;
    let (body, head) = crate::optim::fine_tune_layers(plan);
    let head = head?;
    let node = plan.layers.iter().find(|n| n.index.to_string() == head)?;
    Some(format!(
        "fine-tuning: epoch{} 1{} train{} the head alone (layer {head}, {}), the {} layers before it \
         frozen; then every layer, the first at the learning rate × {}, rising to the full rate at \
         the head{}",
        if f.head_epochs == 1 { "" } else { "s" },
        if f.head_epochs == 1 {
            String::new()
        } else {
            format!("–{}", f.head_epochs)
        },
        if f.head_epochs == 1 { "s" } else { "" },
        node.kind,
        body.len(),
        f.lr_ratio,
        if f.freeze_bn_stats {
            "; batch-norm statistics kept as loaded"
        } else {
            ""
        }
    ))
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
    let plan = learner.model.plan().clone();
    learner
        .model
        .set_bn_stats_frozen(cfg.fine_tune.is_some_and(|f| f.freeze_bn_stats));
    let mut settings = step::Settings::of(ctx.config, &ctx.splits.train);
    settings.group = ctx.group;
    settings.stop = ctx.stop;
    let steps = Steps {
        ctx,
        settings: &settings,
        per_epoch: steps_per_epoch(ctx.config, ctx.splits.train.len())?,
        read_every: read_every(&learner.model),
    };
    let mut record = Recorder::open(ctx, progress, &state)?;
    while state.epochs_done < cfg.epochs && !state.stopped_early {
        let epoch = state.epochs_done + 1;
        // 1. What is frozen in this epoch.
        learner
            .model
            .set_frozen(&frozen_in(ctx.config, &plan, epoch)?);
        // 2. Its training steps not yet done.
        steps.run(learner, &mut state, &mut record, epoch)?;
        // 3. Validation and test passes (of the average, with an EMA), after
        //    every eval_every-th epoch and the last.
        let lr = learner.optim.lr();
        let passes = epoch.is_multiple_of(cfg.eval_every.max(1)) || epoch >= cfg.epochs;
        let done = match ctx.writes() {
            true => Some(evaluate_epoch(
                ctx,
                learner.evaluated(),
                record.progress(),
                epoch,
                lr,
                &state,
                passes,
            )?),
            false => None,
        };
        // In a distributed run every rank judges rank 0's record, and stops
        // when rank 0 was asked to.
        let (done, stop) = match ctx.group {
            Some(group) => share_epoch(group, done, stop_requested(ctx))?,
            None => (done.expect("one process evaluates"), stop_requested(ctx)),
        };
        // 4. The epoch judged (the plateau rule, best, early stopping) and written.
        let monitor = |m| monitored(&done, m);
        if let Some(note) = schedule::after_epoch(cfg, &mut state.plateau, epoch, monitor, lr) {
            record.progress().note(&note);
        }
        let is_best = state.finish_epoch(&done, cfg.monitor, cfg.early_stopping.as_ref());
        record.epoch(&done, is_best, learner, &state)?;
        if state.stopped_early {
            record.progress().note(&format!(
                "early stopping: {} has not improved for {} epoch(s) (best {:.4} at epoch {})",
                judged(ctx, cfg.monitor).name(),
                state.epochs_without_improvement,
                state.best.map_or(f64::NAN, |b| b.value),
                state.best.map_or(0, |b| b.epoch)
            ));
        }
        if stop && state.epochs_done < cfg.epochs && !state.stopped_early {
            return Err(interrupted_error(ctx, epoch + 1, &state));
        }
    }
    Ok(Outcome {
        best_epoch: state.best.map_or(0, |b| b.epoch),
        history: state.history,
        stopped_early: state.stopped_early,
    })
}

/// Rank 0's epoch record and stop flag, on every rank.
fn share_epoch(
    group: &Group,
    record: Option<EpochRecord>,
    stop: bool,
) -> Result<(EpochRecord, bool)> {
    let bytes = record.map(|r| serde_json::to_vec(&(r, stop))).transpose()?;
    let bytes = group.share(bytes)?;
    serde_json::from_slice(&bytes)
        .map_err(|e| anyhow::anyhow!("rank 0's epoch record did not arrive whole: {e}"))
}

/// The metric judged for `monitor`: the training one in its place when the
/// run has no validation split.
pub fn judged(ctx: &RunContext, monitor: crate::config::Monitor) -> crate::config::Monitor {
    if ctx.splits.val.is_empty() {
        monitor.without_validation()
    } else {
        monitor
    }
}

/// Whether Ctrl-C or SIGTERM asked the run to stop.
fn stop_requested(ctx: &RunContext) -> bool {
    ctx.stop.is_some_and(|s| s.load(Ordering::SeqCst))
}

/// The training steps of a run's epochs.
struct Steps<'a> {
    ctx: &'a RunContext<'a>,
    settings: &'a step::Settings<'a>,
    per_epoch: usize,
    /// Steps whose losses are read from the device at once.
    read_every: usize,
}

impl Steps<'_> {
    /// The steps of `epoch` not yet done, in the epoch's order (derived
    /// from the seed and the epoch), each counted and recorded when its
    /// loss is read; a checkpoint every `checkpoint_every` steps and at an
    /// interruption.
    fn run(
        &self,
        learner: &mut Learner,
        state: &mut RunState,
        record: &mut Recorder,
        epoch: usize,
    ) -> Result<()> {
        let ctx = self.ctx;
        let (cfg, train) = (&ctx.config.training, &ctx.splits.train);
        let order = epoch_order(ctx.config, train, epoch);
        record.start_epoch(epoch, train.len(), state);
        let clock = (Instant::now(), state.partial.seconds);
        let cx = StepContext {
            batcher: ctx.batcher,
            settings: self.settings,
            grad_clip: cfg.grad_clip,
        };
        // Steps whose loss is still on the device: counted and recorded, in
        // order, when read (every `read_every` steps, before a checkpoint and
        // at the end of the epoch).
        let mut pending: Vec<Pending> = Vec::new();
        // The random resized crop cuts from the photo itself.
        let whole = ctx.config.data.augment.random_resized_crop.is_some();
        let mut batches = order
            .chunks(cfg.batch_size)
            .take(self.per_epoch)
            .skip(state.batches_done)
            .peekable();
        while let Some(indices) = batches.next() {
            // Photos streamed from their files: the next batch's are decoded
            // while this one trains.
            if let Some(next) = batches.peek() {
                train.set.prefetch(next, whole);
            }
            let step = state.step + pending.len() as u64;
            let position = Position {
                epoch: epoch - 1,
                step,
                steps_per_epoch: self.per_epoch,
                epochs: cfg.epochs,
                reduced: state.plateau.lr,
            };
            let lr = schedule::lr(&cfg.lr_schedule, cfg.optimizer.lr, position);
            let batch = step::Batch {
                set: train.set,
                indices,
                step,
                epoch,
                defer: self.read_every > 1,
            };
            let judge = |loss| check_loss(ctx, epoch, state, loss, lr).map(|()| Verdict::Apply);
            let done = learner
                .step(&cx, &batch, lr, judge)?
                .expect("training applies every step it does not fail");
            // Distributed: rank 0's flag, as every rank saw it with the gradients.
            let interrupted = done.stop.unwrap_or_else(|| stop_requested(ctx));
            pending.push(Pending {
                images: indices.len(),
                reading: done.reading,
                lr,
                grad_norm: done.grad_norm,
            });
            let save = interrupted
                || (cfg.checkpoint_every > 0 && (step + 1).is_multiple_of(cfg.checkpoint_every));
            if save || pending.len() >= self.read_every {
                settle(ctx, &mut pending, state, record, epoch, clock)?;
            }
            if save {
                record.checkpoint(learner, state, epoch)?;
            }
            if interrupted {
                return Err(interrupted_error(ctx, epoch, state));
            }
        }
        settle(ctx, &mut pending, state, record, epoch, clock)
    }
}

/// How many steps' losses are read from the device at once: every step on
/// the CPU, where they are read as they are made anyway, and every 32 on a
/// GPU, so that the CPU queues the next steps while the GPU works instead of
/// waiting for each. `CNN_READ_EVERY=N` sets it (1 reads every step, as on
/// the CPU; N > 1 on the CPU keeps a batch run in one piece on the device
/// until read, which is how the GPU path is tested without a GPU). The
/// numbers do not depend on it; only when a divergence is noticed does.
fn read_every(model: &Model) -> usize {
    static ENV: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
    let env = ENV.get_or_init(|| {
        let v = std::env::var("CNN_READ_EVERY").ok()?;
        match v.trim().parse::<usize>() {
            Ok(n) if n >= 1 => Some(n),
            _ => {
                eprintln!("warning: CNN_READ_EVERY={v:?} is not a whole number of steps, 1 or more; ignored");
                None
            }
        }
    });
    env.unwrap_or(if model.device().is_cpu() { 1 } else { 32 })
}

/// A step done whose loss and count may still be on the device.
struct Pending {
    images: usize,
    reading: step::Reading,
    lr: f64,
    /// The gradients' norm before clipping.
    grad_norm: GradNorm,
}

/// Reads the pending steps' losses (one transfer), then checks, counts and
/// records each in order, as if it had been read at its step.
fn settle(
    ctx: &RunContext,
    pending: &mut Vec<Pending>,
    state: &mut RunState,
    record: &mut Recorder,
    epoch: usize,
    (started, seconds_before): (Instant, f64),
) -> Result<()> {
    if pending.is_empty() {
        return Ok(());
    }
    let values = step::Reading::read_all(pending.iter().map(|p| &p.reading))?;
    let norms = GradNorm::read_all(pending.iter().map(|p| &p.grad_norm))?;
    // After the read, which waits for the device: the time the steps took.
    let seconds = seconds_before + started.elapsed().as_secs_f64();
    for ((p, (loss, correct)), grad_norm) in pending.drain(..).zip(values).zip(norms) {
        check_loss(ctx, epoch, state, loss, p.lr)?;
        state.count_step(p.images, loss, correct, seconds);
        let accuracy = correct / p.images as f64;
        record.step(state, epoch, loss, accuracy, p.lr, grad_norm)?;
    }
    Ok(())
}

/// A loss that is not finite, or above `training.max_loss`, ends the run.
fn check_loss(ctx: &RunContext, epoch: usize, state: &RunState, loss: f64, lr: f64) -> Result<()> {
    let max_loss = ctx.config.training.max_loss;
    if !loss.is_finite() || max_loss.is_some_and(|m| loss > m) {
        return Err(diverged(ctx, epoch, state, loss, lr));
    }
    Ok(())
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

/// The validation and test passes at the end of `epoch` (unless
/// `run_passes` is false), and the epoch's record with the training sums of
/// `state`.
fn evaluate_epoch(
    ctx: &RunContext,
    model: &Model,
    progress: &mut Progress,
    epoch: usize,
    lr: f64,
    state: &RunState,
    run_passes: bool,
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
    let val = match ctx.splits.val.is_empty() || !run_passes {
        true => None,
        false => Some(pass("validating", &ctx.splits.val)?),
    };
    let test = match run_passes {
        true => Some(pass("testing", &ctx.splits.test)?),
        false => None,
    };
    let p = &state.partial;
    Ok(EpochRecord {
        epoch,
        lr,
        train_loss: p.loss_sum / p.seen.max(1) as f64,
        train_acc: p.correct / p.seen.max(1) as f64,
        val_loss: val.map(|v| v.loss),
        val_acc: val.map(|v| v.accuracy),
        test_loss: test.map(|t| t.loss),
        test_acc: test.map(|t| t.accuracy),
        epoch_seconds: p.seconds,
        images_per_second: p.seen as f64 / p.seconds.max(1e-9),
        val_macro_f1: val.map(|v| v.macro_f1),
        test_macro_f1: test.map(|t| t.macro_f1),
        val_top_k_acc: val.map(|v| v.top_k_accuracy),
        test_top_k_acc: test.map(|t| t.top_k_accuracy),
        precision: ctx.config.training.precision,
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
         (training.lr_schedule.warmup_epochs){}. {}",
        state.batches_done + 1,
        state.step + 1,
        also_suspect(ctx.config),
        checkpoints_left(ctx.run_dir)
    )
}

/// The other settings that scale the loss or the steps, when set: where a
/// divergence may come from besides the rate.
fn also_suspect(config: &Config) -> String {
    let t = &config.training;
    let mut suspects = Vec::new();
    let top = t
        .param_groups
        .iter()
        .map(|g| g.lr_scale)
        .fold(1f64, f64::max);
    if top > 1.0 {
        suspects.push(format!("training.param_groups (lr_scale up to {top})"));
    }
    if let Some(crate::config::ClassWeights::Given(w)) = &t.class_weights {
        let hi = w.iter().copied().fold(0f64, f64::max);
        if hi > 1.0 {
            suspects.push(format!("training.class_weights (up to {hi})"));
        }
    }
    let value = config.to_value();
    let scaled: Vec<String> = value["layers"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
        .filter_map(|(i, l)| {
            let s = l.get("init_scale")?.as_f64()?;
            (s > 1.0).then(|| format!("layers.{i}.init_scale ({s})"))
        })
        .collect();
    suspects.extend(scaled);
    if suspects.is_empty() {
        String::new()
    } else {
        format!("; also check {}", suspects.join(", "))
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn config(fine_tune: serde_json::Value) -> Config {
        Config::from_value(serde_json::json!({
            "input_shape": [3, 8, 8], "num_classes": 2,
            "training": {"epochs": 3, "fine_tune": fine_tune},
            "layers": [
                {"type": "conv2d", "out_channels": 4, "kernel_size": 3},
                {"type": "batch_norm2d"}, {"type": "relu"},
                {"type": "conv2d", "out_channels": 4, "kernel_size": 3},
                {"type": "global_avg_pool2d"},
                {"type": "linear", "out_features": 2}
            ]
        }))
        .unwrap()
    }

    #[test]
    fn fine_tune_trains_the_head_alone_then_every_layer_at_rates_falling_to_the_first() {
        let c = config(serde_json::json!({"head_epochs": 2, "lr_ratio": 0.001}));
        c.check_settings().unwrap();
        let plan = crate::arch::plan(&c).unwrap();
        let frozen: Vec<String> = frozen_in(&c, &plan, 1).unwrap().into_iter().collect();
        assert_eq!(
            frozen,
            [
                "layers.0.bias",
                "layers.0.weight",
                "layers.1.bias",
                "layers.1.weight",
                "layers.3.bias",
                "layers.3.weight"
            ]
        );
        assert_eq!(frozen_in(&c, &plan, 2).unwrap().len(), 6);
        assert!(frozen_in(&c, &plan, 3).unwrap().is_empty());
        // Three layers before the head: 0.001, 0.01, 0.1 of the rate; the head all of it.
        let groups = crate::optim::param_groups(&c.training, &plan);
        let scales: Vec<(String, f64)> = groups
            .iter()
            .map(|g| (g.layers.as_ref().unwrap()[0].clone(), g.lr_scale))
            .collect();
        assert_eq!(scales.len(), 3);
        for ((layer, scale), (want_layer, want)) in
            scales.iter().zip([("0", 1e-3), ("1", 1e-2), ("3", 1e-1)])
        {
            assert_eq!(layer, want_layer);
            assert!((scale - want).abs() < 1e-12, "{layer}: {scale}");
        }
        let note = fine_tune_note(&c, &plan).unwrap();
        assert!(
            note.contains("epochs 1–2 train the head alone (layer 5, linear)"),
            "{note}"
        );
        assert!(
            note.contains("the 3 layers before it frozen") && note.contains("× 0.001"),
            "{note}"
        );
    }

    #[test]
    fn fine_tune_is_checked_against_the_run() {
        let message = |c: Config| format!("{:#}", c.check_settings().unwrap_err());
        let c = config(serde_json::json!({"head_epochs": 3}));
        assert!(
            message(c)
                .contains("training.fine_tune.head_epochs is 3 but the run has only 3 epochs")
        );
        let c = config(serde_json::json!({"lr_ratio": 0}));
        assert!(message(c).contains("training.fine_tune.lr_ratio is 0"));
        let mut c = config(serde_json::json!({}));
        c.training.freeze = vec!["0".into()];
        assert!(
            message(c).contains(
                "remove training.freeze, training.unfreeze_after and training.param_groups"
            )
        );
    }
}
