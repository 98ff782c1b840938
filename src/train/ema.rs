//! An exponential moving average of the weights (`training.ema`): a second
//! copy of the network whose every tensor (parameters and batch-norm
//! running statistics, as timm's `ModelEmaV2` averages its state_dict)
//! follows the trained one, `average = d · average + (1 − d) · weights`,
//! every `every` optimizer steps. Evaluation, `best.safetensors` and the
//! history use the average. The decay of update `u` (0-based) is `decay`,
//! or with `warmup` `min(decay, (1 + u) / (10 + u))` (TensorFlow's
//! `ExponentialMovingAverage` with `num_updates`), so the first updates do
//! not keep the initial weights. Everything depends only on the step, and
//! the average is saved in `last.safetensors`, so a resumed run continues
//! it exactly.

use crate::config;
use crate::model::{Model, Weights};
use anyhow::Result;
use candle_core::Tensor;
use std::collections::HashMap;

pub struct Ema {
    settings: config::Ema,
    average: Model,
}

impl Ema {
    /// The average of `model` starting from `initial` (saved by a run being
    /// resumed), or from a copy of the model's own tensors.
    pub fn new(
        settings: config::Ema,
        model: &Model,
        initial: Option<&HashMap<String, Tensor>>,
    ) -> Result<Ema> {
        let own: HashMap<String, Tensor>;
        let values = match initial {
            Some(map) => map,
            None => {
                own = model.tensors().into_iter().collect();
                &own
            }
        };
        let average = Model::new(model.plan(), Weights::Tensors(values), model.device())?;
        Ok(Ema { settings, average })
    }

    /// The averaged network.
    pub fn model(&self) -> &Model {
        &self.average
    }

    /// Moves the average towards `model` after optimizer step `step`.
    pub fn update(&self, model: &Model, step: u64) -> Result<()> {
        let Some(d) = decay_after(&self.settings, step) else {
            return Ok(());
        };
        for ((name, avg), (other, value)) in self.average.vars().zip(model.vars()) {
            debug_assert_eq!(name, other);
            if model.is_frozen(name) {
                continue;
            }
            let (a, x) = (avg.as_tensor(), value.as_tensor());
            if crate::ops::inplace::available(a) {
                // An unchanging value (a fixed scale) stays exactly what it
                // is, not moved by rounding.
                let (decay, rest) = (d as f32, (1.0 - d) as f32);
                let kernel = crate::ops::inplace::Kernel::Ema { decay, rest };
                crate::ops::inplace::update(a, x, x, kernel)?;
            } else {
                avg.set(&((a * d)? + (x.detach() * (1.0 - d))?)?)?;
            }
        }
        Ok(())
    }
}

/// The decay of the update after optimizer step `step` (1-based), or
/// `None` when that step does not update the average.
fn decay_after(settings: &config::Ema, step: u64) -> Option<f64> {
    let every = settings.every.max(1);
    if step == 0 || !step.is_multiple_of(every) {
        return None;
    }
    let u = (step / every - 1) as f64;
    let d = settings.decay;
    Some(if settings.warmup {
        d.min((1.0 + u) / (10.0 + u))
    } else {
        d
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_decay_warms_up_and_updates_every_n_steps() {
        let at = |every, warmup, step| {
            let settings = config::Ema {
                decay: 0.999,
                every,
                warmup,
            };
            decay_after(&settings, step)
        };
        assert_eq!(at(1, false, 1), Some(0.999));
        assert_eq!(at(1, true, 1), Some(0.1));
        assert_eq!(at(1, true, 2), Some(2.0 / 11.0));
        assert_eq!(at(1, true, 100_000), Some(0.999));
        assert_eq!(at(5, true, 4), None);
        assert_eq!(at(5, true, 5), Some(0.1));
        assert_eq!(at(5, true, 10), Some(2.0 / 11.0));
    }
}
