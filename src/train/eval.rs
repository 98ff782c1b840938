//! Evaluation of a model on a subset, in batches, without keeping gradients.

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

/// Runs the model over `subset` in batches of `batch_size`; `on_batch` gets
/// the number of images done so far.
pub fn evaluate(
    model: &Model,
    subset: &Subset,
    batcher: &Batcher,
    batch_size: usize,
    mut on_batch: impl FnMut(usize),
) -> Result<EvalResult> {
    let mut loss_sum = 0.0f64;
    let mut correct = 0u64;
    let mut done = 0usize;
    for chunk in subset.indices.chunks(batch_size.max(1)) {
        let (x, y) = batcher.batch(subset.set, chunk)?;
        let logits = model.logits(&x, false)?.detach();
        let l = loss::cross_entropy(&logits, &y, 0.0)?.to_scalar::<f32>()? as f64;
        loss_sum += l * chunk.len() as f64;
        correct += loss::correct(&logits, &y)?;
        done += chunk.len();
        on_batch(done);
    }
    let n = subset.len();
    Ok(EvalResult {
        samples: n,
        correct,
        loss: if n == 0 {
            f64::NAN
        } else {
            loss_sum / n as f64
        },
        accuracy: if n == 0 {
            f64::NAN
        } else {
            correct as f64 / n as f64
        },
    })
}
