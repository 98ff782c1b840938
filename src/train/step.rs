//! One optimizer step's gradients. On the CPU a batch is cut into
//! micro-batches of about 32 images that run forward and backward on their
//! own threads, with no synchronisation between the layers; their gradients
//! are then added in micro-batch order. The cut depends only on the batch
//! size, never on the thread count, so the numbers are the same with any
//! number of threads. Networks with batch norm (whose statistics need the
//! whole batch) and other devices run the batch in one piece. Each part's
//! dropout masks and augmentation come from streams keyed by the step and
//! the part, so a resumed run repeats them exactly.
//!
//! A batch run in one piece can leave its loss and accuracy count on the
//! device ([`Reading::OnDevice`]): on a GPU, reading them every step would
//! make the CPU wait for the GPU to finish each step before it queues the
//! next, so the loop reads them for many steps at once (see
//! `train::read_every`).

use super::loss;
use crate::config::{Augment, Config};
use crate::data::{Batcher, ImageSet};
use crate::layers::Pass;
use crate::model::Model;
use crate::rng;
use anyhow::{Context, Result};
use candle_core::Tensor;
use candle_core::backprop::GradStore;
use rayon::prelude::*;

/// Images per micro-batch, roughly.
pub const MICRO_BATCH: usize = 32;

/// What one step computed.
pub struct StepOutput {
    /// Gradients of the batch's mean loss.
    pub grads: GradStore,
    pub reading: Reading,
}

/// A step's mean loss and number of correctly classified images.
pub enum Reading {
    Ready {
        loss: f64,
        correct: u64,
    },
    /// Scalars on the device (an `f32` loss and a `u32` count), not yet read.
    OnDevice {
        loss: Tensor,
        correct: Tensor,
    },
}

impl Reading {
    /// The values of `readings`, in order, with one transfer per kind of
    /// value for all those still on the device.
    pub fn read_all<'a>(readings: impl Iterator<Item = &'a Reading>) -> Result<Vec<(f64, u64)>> {
        let readings: Vec<&Reading> = readings.collect();
        let (mut losses, mut counts) = (Vec::new(), Vec::new());
        for r in &readings {
            if let Reading::OnDevice { loss, correct } = r {
                losses.push(loss.reshape(1)?);
                counts.push(correct.reshape(1)?);
            }
        }
        let (losses, counts) = if losses.is_empty() {
            (Vec::new(), Vec::new())
        } else {
            (
                Tensor::cat(&losses, 0)?.to_vec1::<f32>()?,
                Tensor::cat(&counts, 0)?.to_vec1::<u32>()?,
            )
        };
        let mut on_device = losses.into_iter().zip(counts);
        Ok(readings
            .iter()
            .map(|r| match r {
                Reading::Ready { loss, correct } => (*loss, *correct),
                Reading::OnDevice { .. } => {
                    let (l, c) = on_device
                        .next()
                        .expect("one value per reading on the device");
                    (l as f64, c as u64)
                }
            })
            .collect())
    }
}

/// `indices` cut into `ceil(n / MICRO_BATCH)` nearly equal parts.
fn split(indices: &[u32]) -> Vec<&[u32]> {
    let parts = indices.len().div_ceil(MICRO_BATCH).max(1);
    let (base, extra) = (indices.len() / parts, indices.len() % parts);
    let mut out = Vec::with_capacity(parts);
    let mut at = 0;
    for j in 0..parts {
        let len = base + usize::from(j < extra);
        out.push(&indices[at..at + len]);
        at += len;
    }
    out
}

/// The settings a step takes from the config.
pub struct Settings<'a> {
    pub label_smoothing: f64,
    pub augment: &'a Augment,
    /// Keys the step's dropout and augmentation streams.
    pub seed: u64,
}

impl<'a> Settings<'a> {
    pub fn of(config: &'a Config) -> Self {
        Settings {
            label_smoothing: config.training.label_smoothing,
            augment: &config.data.augment,
            seed: config.training.seed,
        }
    }
}

/// Forward and backward passes of the batch `indices` of `set`, augmented
/// as the settings say; dropout masks and augmentation come from the
/// `step`'s streams. With `defer`, a batch run in one piece leaves its loss
/// and count on the device.
pub fn gradients(
    model: &Model,
    batcher: &Batcher,
    set: &ImageSet,
    indices: &[u32],
    settings: &Settings,
    step: u64,
    defer: bool,
) -> Result<StepOutput> {
    let (smoothing, augment, seed) = (settings.label_smoothing, settings.augment, settings.seed);
    let parts = if model.device().is_cpu() && !model.needs_whole_batch() {
        split(indices)
    } else {
        vec![indices]
    };
    let n = indices.len() as f64;
    if defer && parts.len() == 1 {
        let mut dropout = rng::stream(seed, rng::Purpose::Dropout, step << 16);
        let mut augmentation = rng::stream(seed, rng::Purpose::Augment, step << 16);
        let (x, y) = batcher.train_batch(set, indices, augment, &mut augmentation)?;
        let logits = model.logits(&x, Pass::train(&mut dropout))?;
        let loss = loss::cross_entropy(&logits, &y, smoothing)?;
        let correct = loss::correct_on_device(&logits.detach(), &y)?;
        let grads = loss.backward().context("computing gradients")?;
        let loss = loss.detach();
        return Ok(StepOutput {
            grads,
            reading: Reading::OnDevice { loss, correct },
        });
    }
    let one = |(j, part): (usize, &&[u32])| -> Result<(GradStore, f64, u64)> {
        let stream = (step << 16) | j as u64;
        let mut dropout = rng::stream(seed, rng::Purpose::Dropout, stream);
        let mut augmentation = rng::stream(seed, rng::Purpose::Augment, stream);
        let (x, y) = batcher.train_batch(set, part, augment, &mut augmentation)?;
        let logits = model.logits(&x, Pass::train(&mut dropout))?;
        // Each part's mean loss, weighted by its share of the batch: the
        // gradients then add up to those of the batch's mean loss.
        let loss = (loss::cross_entropy(&logits, &y, smoothing)? * (part.len() as f64 / n))?;
        let value = loss.to_scalar::<f32>()? as f64;
        let correct = loss::correct(&logits.detach(), &y)?;
        let grads = loss.backward().context("computing gradients")?;
        Ok((grads, value, correct))
    };
    let results: Vec<Result<(GradStore, f64, u64)>> = if parts.len() > 1 {
        parts.par_iter().enumerate().map(one).collect()
    } else {
        parts.iter().enumerate().map(one).collect()
    };
    let mut results = results.into_iter();
    let (mut grads, mut total, mut correct) = results.next().expect("at least one part")?;
    for result in results {
        let (g, l, c) = result?;
        total += l;
        correct += c;
        for (_, var) in model.params() {
            let t = var.as_tensor();
            if let (Some(sum), Some(part)) = (grads.get(t), g.get(t)) {
                let added = (sum + part)?;
                grads.insert(t, added);
            }
        }
    }
    Ok(StepOutput {
        grads,
        reading: Reading::Ready {
            loss: total,
            correct,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_split_into_nearly_equal_parts_whatever_the_threads() {
        let idx: Vec<u32> = (0..100).collect();
        let sizes: Vec<usize> = split(&idx).iter().map(|p| p.len()).collect();
        assert_eq!(sizes, vec![25, 25, 25, 25]);
        let idx: Vec<u32> = (0..64).collect();
        assert_eq!(split(&idx).len(), 2);
        let idx: Vec<u32> = (0..5).collect();
        assert_eq!(
            split(&idx).iter().map(|p| p.len()).collect::<Vec<_>>(),
            vec![5]
        );
    }
}
