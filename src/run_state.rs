//! Where a run stands, saved in the metadata of `last.safetensors` so that
//! `cnn train --resume` continues bit for bit: epochs and steps done, the
//! running sums of the epoch in progress, the history, the best monitored
//! value, the early-stopping count and where `reduce_on_plateau` stands.
//! Random numbers need no saved state: every stream is derived from the
//! seed and the epoch or step (see `rng`).

use crate::config::{EarlyStopping, Monitor};
use crate::history::EpochRecord;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    /// Epochs completed (trained, evaluated, written).
    pub epochs_done: usize,
    /// Optimizer steps taken over the whole run.
    pub step: u64,
    /// Batches of epoch `epochs_done + 1` already trained.
    pub batches_done: usize,
    /// Training sums of the epoch in progress.
    pub partial: Partial,
    pub history: Vec<EpochRecord>,
    /// The best monitored value so far and its epoch.
    pub best: Option<Best>,
    /// Epochs since the monitored value last improved.
    pub epochs_without_improvement: usize,
    /// Early stopping ended the run.
    pub stopped_early: bool,
    /// How the random numbers are derived (for readers of the file).
    pub rng: String,
    /// The `reduce_on_plateau` schedule's state.
    #[serde(default)]
    pub plateau: Plateau,
    /// Drawn when the run starts and kept for its life, in its checkpoints
    /// and `status.json`: `--resume` refuses a `last.safetensors` of
    /// another run. Empty for runs from before run ids.
    #[serde(default)]
    pub run_id: String,
    /// The ranks of a distributed run (`--distributed`); absent for one
    /// process. Batch-norm networks resume on as many.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ranks: Option<usize>,
}

/// Where a `reduce_on_plateau` schedule stands (PyTorch's
/// `ReduceLROnPlateau` state).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Plateau {
    /// The rate after the reductions so far; `None` before the first.
    pub lr: Option<f64>,
    /// The best monitored value so far.
    pub best: Option<f64>,
    /// Epochs since it last improved.
    pub bad_epochs: usize,
    /// Epochs of cooldown left.
    pub cooldown: usize,
}

/// 128 random bits as hex, from the OS's generator (not the run's seed: two
/// runs of one config are still two runs).
fn new_run_id() -> String {
    use rand::Rng as _;
    let bits: u128 = rand::rng().random();
    format!("{bits:032x}")
}

/// Running sums of the epoch in progress.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Partial {
    pub loss_sum: f64,
    /// Images predicted right (fractions of images under mixup or CutMix).
    pub correct: f64,
    pub seen: usize,
    /// Seconds spent in training steps so far (before a resume too).
    pub seconds: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Best {
    pub epoch: usize,
    pub value: f64,
}

pub const RNG_SCHEME: &str = "ChaCha8 streams keyed by (seed, purpose): split once, shuffle per epoch, dropout and augmentation per step";

impl RunState {
    pub fn new() -> Self {
        RunState {
            rng: RNG_SCHEME.to_string(),
            run_id: new_run_id(),
            ..Default::default()
        }
    }

    /// Counts a trained batch of `images` into the epoch in progress;
    /// `seconds` is the epoch's training time so far.
    pub fn count_step(&mut self, images: usize, loss: f64, correct: f64, seconds: f64) {
        self.step += 1;
        self.batches_done += 1;
        let p = &mut self.partial;
        p.loss_sum += loss * images as f64;
        p.correct += correct;
        p.seen += images;
        p.seconds = seconds;
    }

    /// Closes the epoch of `record`: judged against the monitored metric
    /// (see [`RunState::judge`]), added to the history, and the sums of the
    /// epoch in progress cleared. Returns whether it is the new best.
    pub fn finish_epoch(
        &mut self,
        record: &EpochRecord,
        monitor: Monitor,
        early: Option<&EarlyStopping>,
    ) -> bool {
        // An epoch without evaluation (training.eval_every) is not judged.
        let is_best = record.test_acc.is_some() && self.judge(record, monitor, early);
        self.history.push(record.clone());
        self.epochs_done = record.epoch;
        self.batches_done = 0;
        self.partial = Partial::default();
        is_best
    }

    /// Records a finished epoch against the monitored metric: returns
    /// whether it is the new best, and updates the early-stopping count.
    pub fn judge(
        &mut self,
        record: &EpochRecord,
        monitor: Monitor,
        early: Option<&EarlyStopping>,
    ) -> bool {
        let value = monitored(record, monitor);
        let min_delta = early.map_or(0.0, |e| e.min_delta);
        let improved = match self.best {
            None => value.is_finite(),
            Some(b) if monitor.higher_is_better() => value > b.value + min_delta,
            Some(b) => value < b.value - min_delta,
        };
        // `best.safetensors` follows any improvement; min_delta only decides
        // what counts for patience.
        let is_best = match self.best {
            None => value.is_finite(),
            Some(b) if monitor.higher_is_better() => value > b.value,
            Some(b) => value < b.value,
        };
        if improved {
            self.epochs_without_improvement = 0;
        } else {
            self.epochs_without_improvement += 1;
        }
        if is_best {
            self.best = Some(Best {
                epoch: record.epoch,
                value,
            });
        }
        // Patience 0 stops at the first epoch that does not improve (as
        // Keras does), never at one that does.
        if let Some(e) = early
            && self.epochs_without_improvement >= e.patience.max(1)
        {
            self.stopped_early = true;
        }
        is_best
    }
}

/// The monitored value of an epoch; without a validation split, validation
/// metrics fall back to the training ones.
pub fn monitored(r: &EpochRecord, monitor: Monitor) -> f64 {
    match monitor {
        Monitor::ValAcc => r.val_acc.unwrap_or(r.train_acc),
        Monitor::ValLoss => r.val_loss.unwrap_or(r.train_loss),
        Monitor::TrainAcc => r.train_acc,
        Monitor::TrainLoss => r.train_loss,
        Monitor::ValMacroF1 => r.val_macro_f1.unwrap_or(f64::NAN),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(epoch: usize, val_loss: f64) -> EpochRecord {
        EpochRecord {
            epoch,
            lr: 0.1,
            train_loss: 1.0,
            train_acc: 0.5,
            val_loss: Some(val_loss),
            val_acc: Some(1.0 - val_loss),
            test_loss: Some(1.0),
            test_acc: Some(0.5),
            epoch_seconds: 1.0,
            images_per_second: 1.0,
            val_macro_f1: None,
            test_macro_f1: None,
            val_top_k_acc: None,
            test_top_k_acc: None,
            precision: Default::default(),
        }
    }

    // Keras EarlyStopping(monitor="val_loss", patience=2, min_delta=0.01):
    // 0.50, 0.45 (better), 0.445 (within min_delta: not better), 0.449 (worse) → stop after epoch 4.
    #[test]
    fn early_stopping_counts_epochs_without_improvement() {
        let mut s = RunState::new();
        let es = EarlyStopping {
            patience: 2,
            min_delta: 0.01,
        };
        let mut stopped_at = None;
        for (e, v) in [0.50, 0.45, 0.445, 0.449, 0.3].into_iter().enumerate() {
            s.judge(&record(e + 1, v), Monitor::ValLoss, Some(&es));
            if s.stopped_early {
                stopped_at = Some(e + 1);
                break;
            }
        }
        assert_eq!(stopped_at, Some(4));
        // The best checkpoint still took 0.445, a real (if small) improvement.
        assert_eq!(s.best.unwrap().epoch, 3);
    }

    // Patience 0 (Keras's): stop at the first epoch that does not improve,
    // never at one that does (the probe saw a stop after an improving epoch 1).
    #[test]
    fn patience_zero_stops_at_the_first_epoch_without_improvement() {
        let mut s = RunState::new();
        let es = EarlyStopping {
            patience: 0,
            min_delta: 0.0,
        };
        for (e, v) in [0.5, 0.4, 0.3].into_iter().enumerate() {
            s.judge(&record(e + 1, v), Monitor::ValLoss, Some(&es));
            assert!(!s.stopped_early, "stopped after improving epoch {}", e + 1);
        }
        s.judge(&record(4, 0.35), Monitor::ValLoss, Some(&es));
        assert!(s.stopped_early);
    }

    #[test]
    fn accuracy_improves_upwards() {
        let mut s = RunState::new();
        assert!(s.judge(&record(1, 0.5), Monitor::ValAcc, None));
        assert!(s.judge(&record(2, 0.4), Monitor::ValAcc, None));
        assert!(!s.judge(&record(3, 0.45), Monitor::ValAcc, None));
        assert_eq!(s.best.unwrap().epoch, 2);
        assert!(!s.stopped_early);
    }
}
