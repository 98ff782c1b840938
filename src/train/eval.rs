//! Evaluation of a model on a subset, in batches, without keeping gradients:
//! loss, accuracy, top-k accuracy, the confusion matrix (and from it each
//! class's precision, recall and F1) and every image's prediction;
//! optionally with test-time augmentation (`data.tta`): the logits averaged
//! over mirrored and shifted copies of each image.

use super::loss;
use crate::config::Tta;
use crate::data::{Batcher, Subset};
use crate::geometry::{Pad4, PaddingMode};
use crate::model::Model;
use anyhow::Result;
use candle_core::Tensor;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct EvalResult {
    pub samples: usize,
    pub correct: u64,
    /// Mean cross-entropy per image.
    pub loss: f64,
    /// Fraction correct.
    pub accuracy: f64,
    /// The k of `top_k_accuracy`.
    pub top_k: usize,
    /// Fraction of images whose class is among the k highest scores.
    pub top_k_accuracy: f64,
    /// The mean of the classes' F1 scores (see [`Evaluation::class_metrics`]).
    pub macro_f1: f64,
}

/// How to evaluate: the k of the top-k accuracy and the test-time
/// augmentation, if any.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Options {
    pub top_k: usize,
    pub tta: Option<Tta>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            top_k: 5,
            tta: None,
        }
    }
}

/// Precision, recall and F1 of one class.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ClassMetrics {
    /// Images of this class.
    pub support: u64,
    /// Images predicted as this class.
    pub predicted: u64,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
}

/// Unweighted means over the classes that occur (as truth or prediction).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MacroAverage {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
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
    /// Each class's precision (right among those predicted as it), recall
    /// (found among its images) and F1 (their harmonic mean), from the
    /// confusion matrix. A ratio with nothing to count is 0, as
    /// scikit-learn's `zero_division=0` makes it.
    pub fn class_metrics(&self) -> Vec<ClassMetrics> {
        class_metrics(&self.confusion)
    }

    /// The macro averages over the classes present in the truth or the
    /// predictions (scikit-learn's default labels).
    pub fn macro_average(&self) -> MacroAverage {
        macro_average(&self.confusion)
    }

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

fn class_metrics(confusion: &[Vec<u64>]) -> Vec<ClassMetrics> {
    let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    (0..confusion.len())
        .map(|c| {
            let tp = confusion[c][c];
            let support: u64 = confusion[c].iter().sum();
            let predicted: u64 = confusion.iter().map(|row| row[c]).sum();
            let (precision, recall) = (ratio(tp, predicted), ratio(tp, support));
            let f1 = if precision + recall == 0.0 {
                0.0
            } else {
                2.0 * precision * recall / (precision + recall)
            };
            ClassMetrics {
                support,
                predicted,
                precision,
                recall,
                f1,
            }
        })
        .collect()
}

fn macro_average(confusion: &[Vec<u64>]) -> MacroAverage {
    let present: Vec<ClassMetrics> = class_metrics(confusion)
        .into_iter()
        .filter(|m| m.support > 0 || m.predicted > 0)
        .collect();
    let n = present.len();
    let mean = |f: fn(&ClassMetrics) -> f64| {
        if n == 0 {
            f64::NAN
        } else {
            present.iter().map(f).sum::<f64>() / n as f64
        }
    };
    MacroAverage {
        precision: mean(|m| m.precision),
        recall: mean(|m| m.recall),
        f1: mean(|m| m.f1),
    }
}

/// The logits of a batch `x`, averaged over the views `tta` asks for: the
/// image and its mirror (`flip`), and with `translate` n, half and half
/// with the mean of the images shifted by n pixels up-left and down-right
/// (the borders filled by reflection), each mirrored too with `flip`.
/// airbench's test-time augmentation at `translate` 1.
pub fn logits(model: &Model, x: &Tensor, tta: Option<&Tta>) -> Result<Tensor> {
    let eval = || crate::layers::Pass::eval();
    let Some(tta) = tta else {
        return Ok(model.logits(x, eval())?.detach());
    };
    let mirrored = |x: &Tensor| -> Result<Tensor> {
        let plain = model.logits(x, eval())?.detach();
        if !tta.flip {
            return Ok(plain);
        }
        let flipped = model.logits(&x.flip(&[3])?, eval())?.detach();
        Ok(((plain + flipped)? * 0.5)?)
    };
    let centre = mirrored(x)?;
    let t = tta.translate;
    if t == 0 {
        return Ok(centre);
    }
    let (_, _, h, w) = x.dims4()?;
    let padded = crate::ops::pad2d(
        x,
        Pad4::symmetric(crate::geometry::Pair::square(t)),
        PaddingMode::Reflect,
    )?;
    let up_left = padded.narrow(2, 0, h)?.narrow(3, 0, w)?.contiguous()?;
    let down_right = padded
        .narrow(2, 2 * t, h)?
        .narrow(3, 2 * t, w)?
        .contiguous()?;
    let shifted = ((mirrored(&up_left)? + mirrored(&down_right)?)? * 0.5)?;
    Ok(((centre + shifted)? * 0.5)?)
}

/// Runs the model over `subset` in batches of `batch_size`; `on_batch` gets
/// the number of images done so far.
pub fn evaluate(
    model: &Model,
    subset: &Subset,
    batcher: &Batcher,
    batch_size: usize,
    options: &Options,
    mut on_batch: impl FnMut(usize),
) -> Result<Evaluation> {
    let classes = model.plan().num_classes;
    let k = options.top_k.max(1);
    let mut confusion = vec![vec![0u64; classes]; classes];
    let mut predictions = Vec::with_capacity(subset.len());
    let mut loss_sum = 0.0f64;
    let mut correct = 0u64;
    let mut in_top_k = 0u64;
    let mut done = 0usize;
    let mut chunks = subset.indices.chunks(batch_size.max(1)).peekable();
    while let Some(chunk) = chunks.next() {
        if let Some(next) = chunks.peek() {
            subset.set.prefetch(next, false);
        }
        let (x, y) = batcher.batch(subset.set, chunk)?;
        let logits = logits(model, &x, options.tta.as_ref())?;
        let l = loss::cross_entropy(&logits, &y, 0.0)?.to_scalar::<f32>()? as f64;
        loss_sum += l * chunk.len() as f64;
        let rows = logits.to_dtype(candle_core::DType::F32)?.to_vec2::<f32>()?;
        for ((row, &image), target) in rows.iter().zip(chunk).zip(y.to_vec1::<u32>()?) {
            let (predicted, confidence) = top(row);
            confusion[target as usize][predicted as usize] += 1;
            correct += u64::from(predicted == target);
            in_top_k += u64::from(rank(row, target as usize) < k);
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
            top_k: k,
            top_k_accuracy: mean(in_top_k as f64),
            macro_f1: macro_average(&confusion).f1,
        },
        confusion,
        predictions,
    })
}

/// How many classes rank before `target` in a row of logits: those with a
/// higher score, and those with the same score and a lower index (as
/// `argmax` breaks ties). 0 when it is the prediction.
pub fn rank(logits: &[f32], target: usize) -> usize {
    let v = logits[target];
    logits
        .iter()
        .enumerate()
        .filter(|&(i, &x)| x > v || (x == v && i < target))
        .count()
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

#[cfg(test)]
mod tests {
    use super::*;

    // sklearn.metrics.precision_recall_fscore_support(y_true, y_pred,
    // average=None / "macro", zero_division=0) for
    //   y_true = [0, 0, 0, 1, 1, 2], y_pred = [0, 0, 1, 1, 2, 2]
    // precision [1, .5, .5], recall [2/3, .5, 1], f1 [.8, .5, 2/3];
    // macro precision 2/3, recall 13/18, f1 0.6555...
    #[test]
    fn precision_recall_and_f1_match_scikit_learn() {
        let confusion = vec![vec![2, 1, 0], vec![0, 1, 1], vec![0, 0, 1]];
        let m = class_metrics(&confusion);
        let close = |a: f64, b: f64| assert!((a - b).abs() < 1e-12, "{a} vs {b}");
        for (c, (p, r, f)) in [
            (1.0, 2.0 / 3.0, 0.8),
            (0.5, 0.5, 0.5),
            (0.5, 1.0, 2.0 / 3.0),
        ]
        .into_iter()
        .enumerate()
        {
            close(m[c].precision, p);
            close(m[c].recall, r);
            close(m[c].f1, f);
        }
        let avg = macro_average(&confusion);
        close(avg.precision, 2.0 / 3.0);
        close(avg.recall, 13.0 / 18.0);
        close(avg.f1, (0.8 + 0.5 + 2.0 / 3.0) / 3.0);
        // A class neither present nor predicted does not count; one never
        // predicted counts with precision 0.
        let confusion = vec![vec![3, 1, 0], vec![2, 0, 0], vec![0, 0, 0]];
        let avg = macro_average(&confusion);
        // class 0: p 3/5, r 3/4, f1 2/3; class 1: p 0, r 0, f1 0.
        close(avg.f1, (2.0 / 3.0) / 2.0);
    }

    #[test]
    fn rank_counts_the_classes_before_the_target_with_argmax_ties() {
        let row = [0.1, 0.7, 0.7, -1.0];
        assert_eq!(rank(&row, 1), 0);
        assert_eq!(rank(&row, 2), 1);
        assert_eq!(rank(&row, 0), 2);
        assert_eq!(rank(&row, 3), 3);
        assert_eq!(top(&row).0, 1);
    }
}
