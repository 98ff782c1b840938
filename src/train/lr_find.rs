//! The learning-rate range test (Leslie Smith, "Cyclical Learning Rates
//! for Training Neural Networks", 2017; Lightning's `lr_find`): training
//! steps with the rate growing exponentially from `start_lr` to `end_lr`,
//! the loss of each recorded and smoothed, stopping early once the
//! smoothed loss passes `stop_factor` times its lowest. The suggestion is
//! the rate where the smoothed loss falls fastest on its way down to its
//! lowest point (Lightning's steepest negative gradient, skipping the first
//! 10 points; unlike Lightning, the points after the lowest are left out,
//! where a loss recovering from a spike also falls).
//! Nothing is written: the network and optimizer are thrown away.

use super::step::{self, Batch, Reading};
use super::{Learner, StepContext, Verdict, epoch_order, frozen_in, steps_per_epoch};
use crate::config::Config;
use crate::data::{Batcher, Subset};
use anyhow::Result;

/// The sweep's settings.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub start_lr: f64,
    pub end_lr: f64,
    pub steps: usize,
    /// Stop when the smoothed loss exceeds this many times its lowest.
    pub stop_factor: f64,
}

/// What the sweep found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Sweep {
    /// The rate of each step taken.
    pub lrs: Vec<f64>,
    /// Each step's batch loss.
    pub losses: Vec<f64>,
    /// The losses smoothed as fastai and Lightning do (an exponential
    /// average with β = 0.98, bias-corrected).
    pub smoothed: Vec<f64>,
    /// Index of the suggested rate in `lrs`, if enough steps were taken.
    pub suggestion: Option<usize>,
    /// Why it stopped before `steps`, if it did.
    pub stopped: Option<String>,
}

/// Leading and trailing points left out of the suggestion (Lightning's).
const SKIP_BEGIN: usize = 10;
const SKIP_END: usize = 1;

/// The rate of step `i` of `s.steps`: `start · (end / start)^(i / (steps − 1))`.
pub fn rate(s: &Settings, i: usize) -> f64 {
    let frac = i as f64 / (s.steps.max(2) - 1) as f64;
    s.start_lr * (s.end_lr / s.start_lr).powf(frac)
}

/// Runs the range test on `learner`, drawing batches of `train` as
/// training would (the config's seed, augmentation and mixing).
pub fn run(
    config: &Config,
    train: &Subset,
    batcher: &Batcher,
    learner: &mut Learner,
    s: &Settings,
    mut on_step: impl FnMut(usize, f64, f64),
) -> Result<Sweep> {
    let t = &config.training;
    let settings = step::Settings::of(config, train);
    let cx = StepContext {
        batcher,
        settings: &settings,
        grad_clip: t.grad_clip,
    };
    let per_epoch = steps_per_epoch(config, train.len())?;
    let plan = learner.model.plan().clone();
    learner.model.set_frozen(&frozen_in(config, &plan, 1)?);
    let mut sweep = Sweep {
        lrs: Vec::new(),
        losses: Vec::new(),
        smoothed: Vec::new(),
        suggestion: None,
        stopped: None,
    };
    let (beta, mut avg, mut lowest) = (0.98f64, 0.0f64, f64::INFINITY);
    let mut order = Vec::new();
    for i in 0..s.steps {
        let epoch = i / per_epoch + 1;
        if i % per_epoch == 0 {
            order = epoch_order(config, train, epoch);
        }
        let at = (i % per_epoch) * t.batch_size;
        let batch = &order[at..(at + t.batch_size).min(order.len())];
        let lr = rate(s, i);
        let batch = Batch {
            set: train.set,
            indices: batch,
            step: i as u64,
            epoch,
            defer: false,
        };
        // Past a divergence the weights are left as they were.
        let mut read = f64::NAN;
        let judge = |loss: f64| {
            read = loss;
            Ok(if loss.is_finite() {
                Verdict::Apply
            } else {
                Verdict::Stop
            })
        };
        let Some(done) = learner.step(&cx, &batch, lr, judge)? else {
            sweep.stopped = Some(format!("the loss became {read} at rate {lr:.3e}"));
            break;
        };
        let loss = Reading::read_all(std::iter::once(&done.reading))?[0].0;
        avg = beta * avg + (1.0 - beta) * loss;
        let smooth = avg / (1.0 - beta.powi(i as i32 + 1));
        sweep.lrs.push(lr);
        sweep.losses.push(loss);
        sweep.smoothed.push(smooth);
        on_step(i + 1, lr, smooth);
        lowest = lowest.min(smooth);
        if i > 0 && smooth > s.stop_factor * lowest {
            sweep.stopped = Some(format!(
                "the smoothed loss {smooth:.4} passed {} times its lowest ({lowest:.4}) at rate {lr:.3e}",
                s.stop_factor
            ));
            break;
        }
    }
    sweep.suggestion = suggest(&sweep.smoothed);
    Ok(sweep)
}

/// Index of the steepest descent of `losses` (central differences, as
/// numpy's `gradient`) among the points after the first 10, up to the
/// lowest one (and before the last); `None` with too few points.
pub fn suggest(losses: &[f64]) -> Option<usize> {
    if losses.len() < SKIP_BEGIN + SKIP_END + 2 {
        return None;
    }
    let lowest = losses
        .iter()
        .enumerate()
        .filter(|(_, l)| l.is_finite())
        .min_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i)?;
    let end = (lowest + 1).min(losses.len() - SKIP_END);
    if end < SKIP_BEGIN + 2 {
        return None;
    }
    let part = &losses[SKIP_BEGIN..end];
    let n = part.len();
    let slope = |i: usize| -> f64 {
        if i == 0 {
            part[1] - part[0]
        } else if i == n - 1 {
            part[n - 1] - part[n - 2]
        } else {
            (part[i + 1] - part[i - 1]) / 2.0
        }
    };
    (0..n)
        .filter(|&i| slope(i).is_finite())
        .min_by(|&a, &b| slope(a).total_cmp(&slope(b)))
        .map(|i| i + SKIP_BEGIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_grow_exponentially_from_start_to_end() {
        let s = Settings {
            start_lr: 1e-6,
            end_lr: 1.0,
            steps: 7,
            stop_factor: 4.0,
        };
        let rates: Vec<f64> = (0..7).map(|i| rate(&s, i)).collect();
        for (got, want) in rates.iter().zip([1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0]) {
            assert!((got / want - 1.0).abs() < 1e-9, "{rates:?}");
        }
    }

    // numpy.gradient of the points after the first 10 and before the last;
    // the minimum is where the curve falls fastest.
    #[test]
    fn the_suggestion_is_the_steepest_descent_after_the_first_points() {
        let mut losses = vec![2.3; 10];
        // Falls slowly, then fast between points 14 and 16, then rises.
        losses.extend([2.3, 2.25, 2.2, 2.1, 1.9, 1.2, 0.8, 0.7, 0.9, 3.0]);
        assert_eq!(suggest(&losses), Some(15));
        assert_eq!(suggest(&losses[..12]), None);
        // After the lowest point, a loss falling back from a spike is no
        // candidate, however steep.
        losses.extend([6.0, 5.0, 2.0, 1.0, 0.75, 9.0]);
        assert_eq!(suggest(&losses), Some(15));
    }
}
