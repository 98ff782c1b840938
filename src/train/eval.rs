//! Evaluation of a model on a subset, in batches, without keeping gradients:
//! loss, accuracy, the confusion matrix and every image's prediction.

use super::loss;
use crate::data::{Batcher, Subset};
use crate::model::Model;
use anyhow::Result;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct EvalResult {
    pub samples: usize,
    pub correct: u64,
    /// Mean cross-entropy per image.
    pub loss: f64,
    /// Fraction correct.
    pub accuracy: f64,
}

/// One image's prediction: the class with the highest probability.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prediction {
    /// Index of the image in its [`crate::data::ImageSet`].
    pub image: u32,
    pub target: u32,
    pub predicted: u32,
    /// Probability of the predicted class.
    pub confidence: f32,
}

/// What [`evaluate`] finds.
#[derive(Debug, Clone)]
pub struct Evaluation {
    pub result: EvalResult,
    /// `confusion[true][predicted]` counts.
    pub confusion: Vec<Vec<u64>>,
    /// In the order of the subset.
    pub predictions: Vec<Prediction>,
}

impl Evaluation {
    /// `(samples, correct)` of each true class.
    pub fn per_class(&self) -> Vec<(u64, u64)> {
        self.confusion
            .iter()
            .enumerate()
            .map(|(c, row)| (row.iter().sum(), row[c]))
            .collect()
    }

    /// The `n` wrong predictions made with the highest confidence.
    pub fn worst_mistakes(&self, n: usize) -> Vec<Prediction> {
        let mut wrong: Vec<Prediction> = self
            .predictions
            .iter()
            .filter(|p| p.predicted != p.target)
            .copied()
            .collect();
        wrong.sort_by(|a, b| {
            b.confidence
                .total_cmp(&a.confidence)
                .then(a.image.cmp(&b.image))
        });
        wrong.truncate(n);
        wrong
    }
}

/// Runs the model over `subset` in batches of `batch_size`; `on_batch` gets
/// the number of images done so far.
pub fn evaluate(
    model: &Model,
    subset: &Subset,
    batcher: &Batcher,
    batch_size: usize,
    mut on_batch: impl FnMut(usize),
) -> Result<Evaluation> {
    let classes = model.plan().num_classes;
    let mut confusion = vec![vec![0u64; classes]; classes];
    let mut predictions = Vec::with_capacity(subset.len());
    let mut loss_sum = 0.0f64;
    let mut correct = 0u64;
    let mut done = 0usize;
    for chunk in subset.indices.chunks(batch_size.max(1)) {
        let (x, y) = batcher.batch(subset.set, chunk)?;
        let logits = model.logits(&x, crate::layers::Pass::eval())?.detach();
        let l = loss::cross_entropy(&logits, &y, 0.0)?.to_scalar::<f32>()? as f64;
        loss_sum += l * chunk.len() as f64;
        let rows = logits.to_dtype(candle_core::DType::F32)?.to_vec2::<f32>()?;
        for ((row, &image), target) in rows.iter().zip(chunk).zip(y.to_vec1::<u32>()?) {
            let (predicted, confidence) = top(row);
            confusion[target as usize][predicted as usize] += 1;
            correct += u64::from(predicted == target);
            predictions.push(Prediction {
                image,
                target,
                predicted,
                confidence,
            });
        }
        done += chunk.len();
        on_batch(done);
    }
    let n = subset.len();
    let mean = |x: f64| if n == 0 { f64::NAN } else { x / n as f64 };
    Ok(Evaluation {
        result: EvalResult {
            samples: n,
            correct,
            loss: mean(loss_sum),
            accuracy: mean(correct as f64),
        },
        confusion,
        predictions,
    })
}

/// The most likely class of a row of logits and its softmax probability
/// (the first one on ties, as `argmax` does).
pub fn top(logits: &[f32]) -> (u32, f32) {
    let (best, max) =
        logits
            .iter()
            .enumerate()
            .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &v)| {
                if v > bv { (i, v) } else { (bi, bv) }
            });
    let sum: f32 = logits.iter().map(|&v| (v - max).exp()).sum();
    (best as u32, 1.0 / sum)
}
