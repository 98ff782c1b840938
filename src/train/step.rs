//! One optimizer step's gradients. On the CPU a batch is cut into
//! micro-batches of about 32 images that run forward and backward on their
//! own threads, with no synchronisation between the layers; their gradients
//! are then added in micro-batch order. The cut depends only on the batch
//! size, never on the thread count, so the numbers are the same with any
//! number of threads. Networks with batch norm (whose statistics need the
//! whole batch, as in PyTorch) and other devices run the batch in one piece;
//! on the CPU each of its layers then spreads over the threads inside the
//! op (images, tiles or planes in tasks whose sizes do not depend on the
//! thread count, their partial sums added in task order). Each part's
//! dropout masks and augmentation come from streams keyed by the step and
//! the part, so a resumed run repeats them exactly. Mixup and CutMix
//! (`super::mix`) pair each image with the one at the mirrored position of
//! its part, with one draw per step.
//!
//! A batch run in one piece, unmixed and unweighted, can leave its loss and
//! accuracy count on the device ([`Reading::OnDevice`]): on a GPU, reading
//! them every step would make the CPU wait for the GPU to finish each step
//! before it queues the next, so the loop reads them for many steps at once
//! (see `train::read_every`).

use super::loss;
use super::mix::{self, Mix};
use crate::config::{Augment, Config, Mixup};
use crate::data::augment::Visit;
use crate::data::{Batcher, ImageSet, Subset};
use crate::distributed::{Group, Part};
use crate::layers::Pass;
use crate::model::Model;
use crate::rng;
use anyhow::{Context, Result};
use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor};
use rayon::prelude::*;
use std::sync::atomic::{AtomicBool, Ordering};

/// Images per micro-batch, roughly.
pub const MICRO_BATCH: usize = 32;

/// What one step computed.
pub struct StepOutput {
    /// Gradients of the batch's loss.
    pub grads: GradStore,
    pub reading: Reading,
    /// In a distributed run: whether rank 0 was asked to stop before this
    /// step's gradients were combined (every rank then stops after it).
    pub stop: Option<bool>,
}

/// A step's loss (the mean, or with class weights the weighted mean) and
/// its images predicted right (under mixup or CutMix each image counts `λ`
/// for its own label and `1 − λ` for its partner's).
pub enum Reading {
    Ready {
        loss: f64,
        correct: f64,
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
    pub fn read_all<'a>(readings: impl Iterator<Item = &'a Reading>) -> Result<Vec<(f64, f64)>> {
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
                    (l as f64, c as f64)
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

/// `indices` cut into `n` nearly equal contiguous pieces, the empty ones
/// left out: a batch run in one piece per rank.
fn split_even(indices: &[u32], n: usize) -> Vec<&[u32]> {
    (0..n)
        .map(|r| {
            let range = crate::distributed::block(r, n, indices.len());
            &indices[range]
        })
        .filter(|p| !p.is_empty())
        .collect()
}

/// The settings a step takes from the config.
pub struct Settings<'a> {
    pub label_smoothing: f64,
    pub augment: &'a Augment,
    /// Keys the step's dropout, augmentation and mixing streams.
    pub seed: u64,
    /// Each class's weight in the loss; `None` when all are 1.
    pub class_weights: Option<Vec<f32>>,
    pub mixup: Option<Mixup>,
    /// The ranks of a distributed run: this process computes its block of
    /// the micro-batches and the sums are combined over the group.
    pub group: Option<&'a Group>,
    /// The run's Ctrl-C / SIGTERM flag: rank 0's goes with the gradients,
    /// so that every rank stops after the same step.
    pub stop: Option<&'a AtomicBool>,
}

impl<'a> Settings<'a> {
    /// The settings of `config`; "balanced" class weights come from the
    /// classes of `train`.
    pub fn of(config: &'a Config, train: &Subset) -> Self {
        let t = &config.training;
        let class_weights = t
            .class_weights
            .as_ref()
            .map(|w| w.resolve(&class_counts(train, config.num_classes)));
        Settings {
            label_smoothing: t.label_smoothing,
            augment: &config.data.augment,
            seed: t.seed,
            class_weights,
            mixup: t.mixup,
            group: None,
            stop: None,
        }
    }
}

/// Images of each class in `subset`.
pub fn class_counts(subset: &Subset, classes: usize) -> Vec<usize> {
    let mut counts = vec![0; classes];
    for &i in &subset.indices {
        if let Some(c) = counts.get_mut(subset.set.labels[i as usize] as usize) {
            *c += 1;
        }
    }
    counts
}

/// One step's batch: which images, and where in the run it is.
#[derive(Clone, Copy)]
pub struct Batch<'a> {
    pub set: &'a ImageSet,
    pub indices: &'a [u32],
    /// The step of the run (0-based): keys dropout, augmentation and mixing.
    pub step: u64,
    /// The epoch (1-based): keys the alternating flip.
    pub epoch: usize,
    /// Leave the loss and count on the device where the batch allows it
    /// (run in one piece, unmixed and unweighted).
    pub defer: bool,
}

/// Forward and backward passes of `batch`, augmented and mixed as the
/// settings say; dropout masks, augmentation and mixing come from the
/// step's streams, the alternating flip from the epoch.
pub fn gradients(
    model: &Model,
    batcher: &Batcher,
    batch: &Batch,
    settings: &Settings,
) -> Result<StepOutput> {
    let Batch {
        set,
        indices,
        step,
        epoch,
        defer,
    } = *batch;
    let (smoothing, augment, seed) = (settings.label_smoothing, settings.augment, settings.seed);
    let in_parts = model.device().is_cpu() && !model.needs_whole_batch();
    let parts = match settings.group {
        Some(g) if !in_parts => split_even(indices, g.size()),
        _ if in_parts => split(indices),
        _ => vec![indices],
    };
    // The micro-batches this process computes: all of them, or its rank's block.
    let mine = settings
        .group
        .map_or(0..parts.len(), |g| g.block(parts.len()));
    let n = indices.len() as f64;
    let mix = settings
        .mixup
        .as_ref()
        .and_then(|m| mix::draw(m, seed, step, set.height, set.width));
    let weights = settings.class_weights.as_deref();
    let weight = |label: u32| weights.map_or(1.0, |w| w[label as usize] as f64);
    // The loss is divided by the sum of the images' weights (n without
    // class weights), as PyTorch's weighted mean does; a mixed image's
    // partner is in its own micro-batch, so mixing leaves the sum alone.
    let norm: f64 = indices
        .iter()
        .map(|&i| weight(set.labels[i as usize] as u32))
        .sum();
    let visit = Visit {
        seed,
        epoch,
        image: 0,
    };
    let alone = settings.group.is_none();
    if alone && defer && parts.len() == 1 && mix.is_none() && weights.is_none() {
        // The streams of part 0, as below.
        let mut dropout = rng::stream(seed, rng::Purpose::Dropout, step << 16);
        let mut augmentation = rng::stream(seed, rng::Purpose::Augment, step << 16);
        let (x, y) = batcher.train_batch(set, indices, augment, &mut augmentation, visit)?;
        let logits = model.logits(&x, Pass::train(&mut dropout))?;
        let loss = loss::cross_entropy(&logits, &y, smoothing)?;
        let correct = loss::correct_on_device(&logits.detach(), &y)?;
        let grads = loss.backward().context("computing gradients")?;
        let loss = loss.detach();
        return Ok(StepOutput {
            grads,
            reading: Reading::OnDevice { loss, correct },
            stop: None,
        });
    }
    let one = |(j, part): (usize, &&[u32])| -> Result<(GradStore, f64, f64)> {
        let stream = (step << 16) | j as u64;
        let mut dropout = rng::stream(seed, rng::Purpose::Dropout, stream);
        let mut augmentation = rng::stream(seed, rng::Purpose::Augment, stream);
        let (x, y) = batcher.train_batch(set, part, augment, &mut augmentation, visit)?;
        let x = match &mix {
            Some(m) => mix::images(&x, m)?,
            None => x,
        };
        let logits = model.logits(&x, Pass::train(&mut dropout))?;
        let (loss, correct) = if mix.is_none() && weights.is_none() {
            // Each part's mean loss, weighted by its share of the batch: the
            // gradients then add up to those of the batch's mean loss.
            let loss = (loss::cross_entropy(&logits, &y, smoothing)? * (part.len() as f64 / n))?;
            (loss, loss::correct(&logits.detach(), &y)? as f64)
        } else {
            soft_loss(&logits, &y, mix.as_ref(), &weight, smoothing, norm)?
        };
        let value = loss.to_scalar::<f32>()? as f64;
        let grads = loss.backward().context("computing gradients")?;
        Ok((grads, value, correct))
    };
    let first = mine.start;
    let parts = &parts[mine];
    let results: Vec<Result<(GradStore, f64, f64)>> = if parts.len() > 1 {
        parts
            .par_iter()
            .enumerate()
            .map(|(k, p)| one((first + k, p)))
            .collect()
    } else {
        parts
            .iter()
            .enumerate()
            .map(|(k, p)| one((first + k, p)))
            .collect()
    };
    if let Some(group) = settings.group {
        let stop = settings.stop.is_some_and(|s| s.load(Ordering::SeqCst));
        return combine(model, group, results, stop);
    }
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
        stop: None,
    })
}

/// This rank's parts added to the other ranks' in part order (see
/// [`Group::chain_sum`]): the step's gradients, loss and count, the same on
/// every rank. Gradients travel flattened in the order of the trainable
/// parameters (a parameter without a gradient counts as zeros).
fn combine(
    model: &Model,
    group: &Group,
    results: Vec<Result<(GradStore, f64, f64)>>,
    stop: bool,
) -> Result<StepOutput> {
    let layout: Vec<&Tensor> = model.trainable().map(|(_, v)| v.as_tensor()).collect();
    let mut mine = Vec::with_capacity(results.len());
    for result in results {
        let (g, loss, correct) = result?;
        let mut grads = Vec::new();
        for t in &layout {
            match g.get(t) {
                Some(grad) => grads.extend(grad.flatten_all()?.to_vec1::<f32>()?),
                None => grads.resize(grads.len() + t.elem_count(), 0.0),
            }
        }
        mine.push(Part {
            grads,
            loss,
            correct,
        });
    }
    let _t = crate::profile::scope(|| "step: gradients over the ranks (waiting included)".into());
    let total = group.chain_sum(mine, stop)?;
    let expected: usize = layout.iter().map(|t| t.elem_count()).sum();
    anyhow::ensure!(
        total.grads.len() == expected,
        "rank {}: the combined gradients hold {} values, the network {expected}: the ranks run different networks",
        group.rank(),
        total.grads.len()
    );
    let mut grads = GradStore::default();
    let mut at = 0;
    for t in layout {
        let n = t.elem_count();
        let g = Tensor::from_slice(&total.grads[at..at + n], t.shape(), t.device())?;
        grads.insert(t, g);
        at += n;
    }
    Ok(StepOutput {
        grads,
        reading: Reading::Ready {
            loss: total.loss,
            correct: total.correct,
        },
        stop: Some(total.stop),
    })
}

/// The loss of a part with class weights or mixing, against soft targets
/// (`λ` of each image's own label and `1 − λ` of its partner's, each
/// smoothed and weighted by its class), divided by the batch's `norm`;
/// and the part's correct predictions, counted against the same shares.
fn soft_loss(
    logits: &Tensor,
    y: &Tensor,
    mix: Option<&Mix>,
    weight: &dyn Fn(u32) -> f64,
    smoothing: f64,
    norm: f64,
) -> Result<(Tensor, f64)> {
    let (m, k) = logits.dims2()?;
    let labels: Vec<u32> = y.to_vec1()?;
    let lam = mix.map_or(1.0, |x| x.lam);
    let mut targets = vec![0f32; m * k];
    for (i, row) in targets.chunks_mut(k).enumerate() {
        let (a, b) = (labels[i], labels[m - 1 - i]);
        loss::add_target(row, a as usize, smoothing, lam * weight(a));
        if mix.is_some() {
            loss::add_target(row, b as usize, smoothing, (1.0 - lam) * weight(b));
        }
    }
    let targets = Tensor::from_vec(targets, (m, k), logits.device())?;
    let loss = loss::soft_cross_entropy(logits, &targets, norm)?;
    let predicted: Vec<u32> = logits
        .detach()
        .argmax(candle_core::D::Minus1)?
        .to_dtype(DType::U32)?
        .to_vec1()?;
    let mut correct = 0.0;
    for (i, &p) in predicted.iter().enumerate() {
        let (a, b) = (labels[i], labels[m - 1 - i]);
        correct += lam * f64::from(u8::from(p == a));
        if mix.is_some() {
            correct += (1.0 - lam) * f64::from(u8::from(p == b));
        }
    }
    Ok((loss, correct))
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
