//! What training changes and the one step that changes it: a
//! [`Learner`] (the network, its optimizer, the average of its weights) and
//! [`Learner::step`] (set the rate → gradients → clip → apply → average),
//! which the training loop and the learning-rate range test both take.

use super::ema::Ema;
use super::step;
use crate::config::GradClip;
use crate::data::Batcher;
use crate::model::Model;
use crate::optim::Optimizer;
use crate::profile;
use anyhow::Result;
use candle_core::Tensor;
use candle_core::backprop::GradStore;

/// What training changes: the network, its optimizer and, with
/// `training.ema`, the average of its weights.
pub struct Learner {
    pub model: Model,
    pub optim: Optimizer,
    pub ema: Option<Ema>,
}

/// What one step needs besides its batch: where images become tensors,
/// the step's settings from the config, and the clipping.
pub struct StepContext<'a> {
    pub batcher: &'a Batcher,
    pub settings: &'a step::Settings<'a>,
    pub grad_clip: Option<GradClip>,
}

/// A step's loss read before its update: go on, or leave the weights as
/// they were and stop (`lr-find` past its divergence).
pub enum Verdict {
    Apply,
    Stop,
}

/// What a step did.
pub struct Stepped {
    /// Its loss and count, read or still on the device.
    pub reading: step::Reading,
    /// The gradients' norm before clipping.
    pub grad_norm: GradNorm,
    /// In a distributed run: every rank stops after this step (rank 0 was
    /// asked to).
    pub stop: Option<bool>,
}

impl Learner {
    /// One optimizer step, the one `fit` and `lr-find` take: set the rate,
    /// compute the gradients of `batch`, let `judge` see the loss when it is
    /// read now (a divergence is an error there, or a stop), clip, apply,
    /// and move the average of the weights. `None` when judged to stop.
    pub fn step(
        &mut self,
        cx: &StepContext,
        batch: &step::Batch,
        lr: f64,
        judge: impl FnOnce(f64) -> Result<Verdict>,
    ) -> Result<Option<Stepped>> {
        self.optim.set_lr(lr);
        let t = profile::scope(|| "step: forward + backward".to_string());
        let mut out = step::gradients(&self.model, cx.batcher, batch, cx.settings)?;
        drop(t);
        if let step::Reading::Ready { loss, .. } = out.reading
            && let Verdict::Stop = judge(loss)?
        {
            return Ok(None);
        }
        let _t = profile::scope(|| "step: optimizer".to_string());
        let grad_norm = clip_gradients(&self.model, &mut out.grads, cx.grad_clip)?;
        self.optim.apply(&out.grads)?;
        if let Some(ema) = &self.ema {
            ema.update(&self.model, batch.step + 1)?;
        }
        Ok(Some(Stepped {
            reading: out.reading,
            grad_norm,
            stop: out.stop,
        }))
    }

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

/// A step's gradient norm before clipping: read (the CPU), or an `f32`
/// scalar left on the device until the loop reads the steps' losses.
pub enum GradNorm {
    Ready(f64),
    OnDevice(Tensor),
}

impl GradNorm {
    /// The values of `norms`, in order, with one transfer for all those
    /// still on the device.
    pub fn read_all<'a>(norms: impl Iterator<Item = &'a GradNorm>) -> Result<Vec<f64>> {
        let norms: Vec<&GradNorm> = norms.collect();
        let on_device: Vec<Tensor> = norms
            .iter()
            .filter_map(|n| match n {
                GradNorm::OnDevice(t) => Some(t.reshape(1)),
                GradNorm::Ready(_) => None,
            })
            .collect::<candle_core::Result<_>>()?;
        let mut read = if on_device.is_empty() {
            Vec::new()
        } else {
            Tensor::cat(&on_device, 0)?.to_vec1::<f32>()?
        }
        .into_iter();
        Ok(norms
            .iter()
            .map(|n| match n {
                GradNorm::Ready(v) => *v,
                GradNorm::OnDevice(_) => read.next().expect("one value per norm") as f64,
            })
            .collect())
    }
}

/// The global L2 norm of the gradients of `model`'s parameters, then the
/// clipping of `clip` applied to them: all scaled by `max_norm / (norm +
/// 1e-6)` when the norm is above `max_norm` (PyTorch's
/// `clip_grad_norm_`), or each value clamped to `±max_value`. Returns the
/// norm before clipping. On the CPU the norm is summed in the parameters'
/// order, in f64, so the same on any thread count; on other devices it is
/// computed there and left there, so that the CPU does not wait for the
/// device at every step.
pub fn clip_gradients(
    model: &Model,
    grads: &mut GradStore,
    clip: Option<GradClip>,
) -> Result<GradNorm> {
    let vars: Vec<&Tensor> = model
        .params()
        .iter()
        .map(|(_, v)| v.as_tensor())
        .filter(|t| grads.get(t).is_some())
        .collect();
    let list: Vec<Tensor> = vars.iter().map(|t| grads.get(t).unwrap().clone()).collect();
    let (norm, clipped) = if model.device().is_cpu() {
        let (norm, clipped) = clip_read(&list, clip)?;
        (GradNorm::Ready(norm), clipped)
    } else {
        let (norm, clipped) = clip_on_device(&list, clip)?;
        (GradNorm::OnDevice(norm), clipped)
    };
    for (t, g) in vars.into_iter().zip(clipped) {
        if let Some(g) = g {
            grads.insert(t, g);
        }
    }
    Ok(norm)
}

/// [`clip_gradients`] on the CPU: the norm read and summed in f64; the
/// clipped gradients (`None` where one is unchanged).
fn clip_read(grads: &[Tensor], clip: Option<GradClip>) -> Result<(f64, Vec<Option<Tensor>>)> {
    let mut sum = 0.0f64;
    for g in grads {
        // Read in place: a copy of every gradient at every step costs the
        // small networks several per cent of their speed.
        sum += if g.dtype() == candle_core::DType::F32 {
            crate::ops::cpu::with_slice(g, |s| Ok(crate::ops::cpu::sum_squares(s)))?
        } else {
            let values = g.flatten_all()?.to_dtype(candle_core::DType::F32)?;
            crate::ops::cpu::sum_squares(&values.to_vec1::<f32>()?)
        };
    }
    let norm = sum.sqrt();
    let Some(clip) = clip else {
        return Ok((norm, vec![None; grads.len()]));
    };
    let clipped = grads
        .iter()
        .map(|g| match (clip.max_norm, clip.max_value) {
            (Some(max), _) => {
                let coef = max / (norm + 1e-6);
                (coef < 1.0).then(|| g * coef).transpose()
            }
            (None, Some(v)) => g.clamp(-v, v).map(Some),
            (None, None) => Ok(None),
        })
        .collect::<candle_core::Result<_>>()?;
    Ok((norm, clipped))
}

/// [`clip_gradients`] on a device: the norm as an `f32` scalar there, the
/// scale `min(1, max_norm / (norm + 1e-6))` applied there too.
fn clip_on_device(
    grads: &[Tensor],
    clip: Option<GradClip>,
) -> Result<(Tensor, Vec<Option<Tensor>>)> {
    use candle_core::DType;
    let squares: Vec<Tensor> = grads
        .iter()
        .map(|g| g.to_dtype(DType::F32)?.sqr()?.sum_all()?.reshape(1))
        .collect::<candle_core::Result<_>>()?;
    let norm = match grads.first() {
        Some(_) => Tensor::cat(&squares, 0)?.sum_all()?.sqrt()?,
        None => Tensor::new(0f32, &candle_core::Device::Cpu)?,
    };
    let Some(clip) = clip else {
        return Ok((norm, vec![None; grads.len()]));
    };
    let clipped = match (clip.max_norm, clip.max_value) {
        (Some(max), _) => {
            let coef = ((norm.affine(1.0, 1e-6)?.recip()? * max)?).clamp(0f32, 1f32)?;
            grads
                .iter()
                .map(|g| g.broadcast_mul(&coef.to_dtype(g.dtype())?).map(Some))
                .collect::<candle_core::Result<_>>()?
        }
        (None, Some(v)) => grads
            .iter()
            .map(|g| g.clamp(-v, v).map(Some))
            .collect::<candle_core::Result<_>>()?,
        (None, None) => vec![None; grads.len()],
    };
    Ok((norm, clipped))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::GradClip;
    use candle_core::Device;

    fn grads() -> Vec<Tensor> {
        let a = Tensor::new(&[3.0f32, -4.0, 0.5], &Device::Cpu).unwrap();
        let b = Tensor::new(&[[1.0f32, -2.0], [0.25, 6.0]], &Device::Cpu).unwrap();
        vec![a, b]
    }

    fn values(t: &[Option<Tensor>], original: &[Tensor]) -> Vec<f32> {
        t.iter()
            .zip(original)
            .flat_map(|(c, g)| {
                c.as_ref()
                    .unwrap_or(g)
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap()
            })
            .collect()
    }

    /// The device's form (as a GPU runs it, here on the CPU) gives the norm
    /// and clipped gradients of the CPU's.
    #[test]
    fn clipping_on_the_device_matches_the_cpu() {
        let g = grads();
        let norm = (9.0f64 + 16.0 + 0.25 + 1.0 + 4.0 + 0.0625 + 36.0).sqrt();
        for clip in [
            None,
            Some(GradClip {
                max_norm: Some(1.0),
                max_value: None,
            }),
            Some(GradClip {
                max_norm: Some(100.0),
                max_value: None,
            }),
            Some(GradClip {
                max_norm: None,
                max_value: Some(0.5),
            }),
        ] {
            let (n_cpu, c_cpu) = clip_read(&g, clip).unwrap();
            let (n_dev, c_dev) = clip_on_device(&g, clip).unwrap();
            assert!((n_cpu - norm).abs() < 1e-12);
            assert!((n_dev.to_scalar::<f32>().unwrap() as f64 - norm).abs() < 1e-5);
            let (a, b) = (values(&c_cpu, &g), values(&c_dev, &g));
            for (x, y) in a.iter().zip(&b) {
                assert!((x - y).abs() < 1e-6, "{clip:?}: {a:?} vs {b:?}");
            }
            if let Some(max) = clip.and_then(|c| c.max_norm) {
                let clipped: f64 = a.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt();
                assert!(clipped <= max.min(norm) + 1e-5, "{clipped}");
            }
        }
        let read = GradNorm::read_all(
            [
                GradNorm::Ready(2.0),
                GradNorm::OnDevice(Tensor::new(3f32, &Device::Cpu).unwrap()),
            ]
            .iter(),
        )
        .unwrap();
        assert_eq!(read, vec![2.0, 3.0]);
    }
}
