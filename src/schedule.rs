//! Learning-rate schedules, as pure functions of where training is (epoch
//! and step), so a resumed run needs no scheduler state: step, multistep,
//! exponential and cosine change the rate once per epoch, as PyTorch's
//! schedulers do when stepped per epoch; one-cycle changes it every step;
//! an optional linear warmup runs in front of any of them, step by step.
//! `reduce_on_plateau` alone depends on the metrics: its state is in the
//! run state ([`Plateau`]), updated once per epoch by [`after_epoch`].

use crate::config::{Anneal, LrSchedule, Monitor, ScheduleKind, TrainingConfig};
use crate::run_state::Plateau;

/// Where training is: `epoch` is 0-based, `step` counts optimizer steps of
/// the whole run, `steps_per_epoch` and `epochs` give the run's length;
/// `reduced` is the rate `reduce_on_plateau` has come down to, if it has.
#[derive(Debug, Clone, Copy)]
pub struct Position {
    pub epoch: usize,
    pub step: u64,
    pub steps_per_epoch: usize,
    pub epochs: usize,
    pub reduced: Option<f64>,
}

/// Whole epochs of warmup: `reduce_on_plateau` judges the epochs after them.
pub fn warmup_epochs(s: &LrSchedule) -> usize {
    s.warmup_epochs.ceil() as usize
}

/// The end of `epoch` for a `reduce_on_plateau` schedule: once its warm-up
/// is over, the epoch's value of the schedule's monitor (else the run's,
/// `value` reads it from the epoch's record) is judged by [`plateau_step`].
/// Returns the note to show when the rate was reduced.
pub fn after_epoch(
    t: &TrainingConfig,
    state: &mut Plateau,
    epoch: usize,
    value: impl Fn(Monitor) -> f64,
    current: f64,
) -> Option<String> {
    let ScheduleKind::ReduceOnPlateau { monitor, .. } = &t.lr_schedule.kind else {
        return None;
    };
    if epoch <= warmup_epochs(&t.lr_schedule) {
        return None;
    }
    let monitor: Monitor = monitor.unwrap_or(t.monitor);
    let higher = monitor.higher_is_better();
    plateau_step(&t.lr_schedule, state, value(monitor), higher, current).then(|| {
        format!(
            "reduce_on_plateau: {} has not improved; learning rate now {:e}",
            monitor.name(),
            state.lr.unwrap_or(current)
        )
    })
}

/// Judges a finished epoch's monitored `value` for a `reduce_on_plateau`
/// schedule, as PyTorch's `ReduceLROnPlateau.step` does (threshold mode
/// "rel"): after more than `patience` epochs without improvement the rate
/// (`current`, or the last reduced one) is multiplied by `factor`, not
/// below `min_lr`, and `cooldown` epochs follow in which nothing counts.
/// Returns whether it reduced the rate. Other schedules: nothing.
pub fn plateau_step(
    s: &LrSchedule,
    state: &mut Plateau,
    value: f64,
    higher_is_better: bool,
    current: f64,
) -> bool {
    let ScheduleKind::ReduceOnPlateau {
        factor,
        patience,
        cooldown,
        min_lr,
        threshold,
        ..
    } = &s.kind
    else {
        return false;
    };
    let better = match state.best {
        None => !value.is_nan(),
        Some(best) if higher_is_better => value > best * (1.0 + threshold),
        Some(best) => value < best * (1.0 - threshold),
    };
    if better {
        state.best = Some(value);
        state.bad_epochs = 0;
    } else {
        state.bad_epochs += 1;
    }
    if state.cooldown > 0 {
        state.cooldown -= 1;
        state.bad_epochs = 0;
    }
    if state.bad_epochs > *patience {
        let old = state.lr.unwrap_or(current);
        let new = (old * factor).max(*min_lr);
        state.cooldown = *cooldown;
        state.bad_epochs = 0;
        // PyTorch skips changes smaller than its eps (1e-8).
        if old - new > 1e-8 {
            state.lr = Some(new);
            return true;
        }
    }
    false
}

/// The learning rate for the step at `pos`, given the optimizer's base rate.
pub fn lr(s: &LrSchedule, base: f64, pos: Position) -> f64 {
    let spe = pos.steps_per_epoch.max(1) as f64;
    // Warmup: linear over the first `warmup_epochs`, counted in steps.
    let warmup_steps = (s.warmup_epochs * spe).round();
    let in_warmup = (pos.step as f64) < warmup_steps;
    let warmup_epochs_whole = s.warmup_epochs.ceil() as usize;
    // The main schedule starts counting after the warmup.
    let epoch = pos.epoch.saturating_sub(warmup_epochs_whole);
    let main = match &s.kind {
        ScheduleKind::Constant => base,
        ScheduleKind::ReduceOnPlateau { .. } => pos.reduced.unwrap_or(base),
        ScheduleKind::Step { step_size, gamma } => {
            base * gamma.powi((epoch / step_size.max(&1)) as i32)
        }
        ScheduleKind::Multistep { milestones, gamma } => {
            base * gamma.powi(milestones.iter().filter(|&&m| m <= epoch).count() as i32)
        }
        ScheduleKind::Exponential { gamma } => base * gamma.powi(epoch as i32),
        ScheduleKind::Cosine { t_max, eta_min } => {
            let t_max = t_max.unwrap_or(pos.epochs.saturating_sub(warmup_epochs_whole).max(1));
            let t = epoch.min(t_max) as f64;
            eta_min
                + (base - eta_min) * (1.0 + (std::f64::consts::PI * t / t_max as f64).cos()) / 2.0
        }
        ScheduleKind::OneCycle {
            max_lr,
            pct_start,
            div_factor,
            final_div_factor,
            anneal_strategy,
        } => {
            // PyTorch's OneCycleLR (three_phase=False).
            let max_lr = max_lr.unwrap_or(base);
            let initial = max_lr / div_factor;
            let min_lr = initial / final_div_factor;
            let total = (pos.epochs * pos.steps_per_epoch).max(2) as f64;
            let up_end = pct_start * total - 1.0;
            let down_end = total - 1.0;
            let t = (pos.step as f64).min(down_end);
            let anneal = |from: f64, to: f64, frac: f64| match anneal_strategy {
                Anneal::Cos => to + (from - to) / 2.0 * (1.0 + (std::f64::consts::PI * frac).cos()),
                Anneal::Linear => from + (to - from) * frac,
            };
            if t <= up_end {
                anneal(initial, max_lr, t / up_end.max(1e-9))
            } else {
                anneal(max_lr, min_lr, (t - up_end) / (down_end - up_end).max(1e-9))
            }
        }
    };
    if in_warmup {
        let frac = pos.step as f64 / warmup_steps.max(1.0);
        main * (s.warmup_start_factor + (1.0 - s.warmup_start_factor) * frac)
    } else {
        main
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sched(kind: ScheduleKind) -> LrSchedule {
        LrSchedule {
            kind,
            warmup_epochs: 0.0,
            warmup_start_factor: 0.1,
        }
    }

    fn at(s: &LrSchedule, epoch: usize, step_in_epoch: u64) -> f64 {
        let spe = 10;
        lr(
            s,
            0.1,
            Position {
                epoch,
                step: epoch as u64 * spe as u64 + step_in_epoch,
                steps_per_epoch: spe,
                epochs: 10,
                reduced: None,
            },
        )
    }

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-12 * b.abs().max(1.0), "{a} vs {b}");
    }

    // torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5), lr 0.1:
    // epochs 0-2 → 0.1, 3-5 → 0.05, 6-8 → 0.025, 9 → 0.0125
    #[test]
    fn step_decays_every_step_size_epochs() {
        let s = sched(ScheduleKind::Step {
            step_size: 3,
            gamma: 0.5,
        });
        for (e, want) in [
            (0, 0.1),
            (2, 0.1),
            (3, 0.05),
            (5, 0.05),
            (6, 0.025),
            (9, 0.0125),
        ] {
            close(at(&s, e, 7), want);
        }
    }

    // MultiStepLR(milestones=[2, 5], gamma=0.1): 0.1, 0.1, 0.01, 0.01, 0.01, 0.001
    #[test]
    fn multistep_decays_at_milestones() {
        let s = sched(ScheduleKind::Multistep {
            milestones: vec![2, 5],
            gamma: 0.1,
        });
        for (e, want) in [
            (0, 0.1),
            (1, 0.1),
            (2, 0.01),
            (4, 0.01),
            (5, 0.001),
            (9, 0.001),
        ] {
            close(at(&s, e, 0), want);
        }
    }

    // ExponentialLR(gamma=0.9): 0.1 · 0.9^epoch
    #[test]
    fn exponential_multiplies_each_epoch() {
        let s = sched(ScheduleKind::Exponential { gamma: 0.9 });
        close(at(&s, 0, 5), 0.1);
        close(at(&s, 3, 5), 0.1 * 0.729);
    }

    // CosineAnnealingLR(T_max=10, eta_min=0.001): epoch 5 is the midpoint,
    // 0.001 + 0.099·(1+cos(π/2))/2 = 0.0505; epoch 0 is 0.1.
    #[test]
    fn cosine_follows_half_a_cosine() {
        let s = sched(ScheduleKind::Cosine {
            t_max: Some(10),
            eta_min: 0.001,
        });
        close(at(&s, 0, 3), 0.1);
        close(at(&s, 5, 3), 0.0505);
        close(at(&s, 10, 0), 0.001);
    }

    // Linear warmup over 2 epochs (20 steps) from 0.1·lr, then the schedule.
    #[test]
    fn warmup_ramps_linearly_then_hands_over() {
        let mut s = sched(ScheduleKind::Step {
            step_size: 1,
            gamma: 0.5,
        });
        s.warmup_epochs = 2.0;
        close(at(&s, 0, 0), 0.01);
        close(at(&s, 1, 0), 0.1 * (0.1 + 0.9 * 0.5));
        // After the warmup the step schedule starts from its own epoch 0.
        close(at(&s, 2, 0), 0.1);
        close(at(&s, 3, 0), 0.05);
    }

    // OneCycleLR(max_lr=0.1, total_steps=100, pct_start=0.3, div_factor=25,
    // final_div_factor=1e4): starts at 0.004, peaks at 0.1 on step 29,
    // ends at 4e-7 on step 99.
    #[test]
    fn one_cycle_matches_pytorch_endpoints() {
        let s = sched(ScheduleKind::OneCycle {
            max_lr: None,
            pct_start: 0.3,
            div_factor: 25.0,
            final_div_factor: 1e4,
            anneal_strategy: Anneal::Cos,
        });
        close(at(&s, 0, 0), 0.004);
        close(at(&s, 2, 9), 0.1);
        close(at(&s, 9, 9), 4e-7);
        assert!(at(&s, 1, 0) > 0.004 && at(&s, 1, 0) < 0.1);
    }

    // The same with anneal_strategy="linear": 0.004 + 0.096·10/29 on step
    // 10, halfway down (0.1 + 4e-7)/2 on step 64.
    #[test]
    fn linear_one_cycle_matches_pytorch() {
        let s = sched(ScheduleKind::OneCycle {
            max_lr: None,
            pct_start: 0.3,
            div_factor: 25.0,
            final_div_factor: 1e4,
            anneal_strategy: Anneal::Linear,
        });
        close(at(&s, 0, 0), 0.004);
        close(at(&s, 1, 0), 0.004 + 0.096 * 10.0 / 29.0);
        close(at(&s, 2, 9), 0.1);
        close(at(&s, 6, 4), (0.1 + 4e-7) / 2.0);
        close(at(&s, 9, 9), 4e-7);
    }

    // torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=0.5,
    // patience=1, cooldown=1, min_lr=0.02), lr 0.1, stepped with
    // 1.0, 0.9, then 0.95 eight times → the rate after each: 0.1, 0.1, 0.1,
    // 0.05 (2 bad epochs), 0.05 (cooldown), 0.05, 0.025, 0.025, 0.025, 0.02 (min_lr).
    #[test]
    fn reduce_on_plateau_matches_pytorch() {
        let s = LrSchedule {
            kind: ScheduleKind::ReduceOnPlateau {
                monitor: None,
                factor: 0.5,
                patience: 1,
                cooldown: 1,
                min_lr: 0.02,
                threshold: 1e-4,
            },
            warmup_epochs: 0.0,
            warmup_start_factor: 0.1,
        };
        let mut state = Plateau::default();
        let mut rates = Vec::new();
        for v in [1.0, 0.9, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95] {
            plateau_step(&s, &mut state, v, false, 0.1);
            let pos = Position {
                epoch: 0,
                step: 0,
                steps_per_epoch: 10,
                epochs: 10,
                reduced: state.lr,
            };
            rates.push(lr(&s, 0.1, pos));
        }
        let want = [0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025, 0.025, 0.025, 0.02];
        for (got, want) in rates.iter().zip(want) {
            close(*got, want);
        }
        // An accuracy improves upwards.
        let mut state = Plateau::default();
        for v in [0.5, 0.6, 0.59, 0.58, 0.57] {
            plateau_step(&s, &mut state, v, true, 0.1);
        }
        assert_eq!(state.best, Some(0.6));
        assert_eq!(state.lr, Some(0.05));
    }
}
