//! Cross-entropy on logits (optionally label-smoothed) and accuracy counts.

use anyhow::Result;
use candle_core::{D, DType, Tensor};

pub use crate::ops::cross_entropy;

/// Number of rows whose largest logit is at the target class.
pub fn correct(logits: &Tensor, targets: &Tensor) -> Result<u64> {
    Ok(correct_on_device(logits, targets)?.to_scalar::<u32>()? as u64)
}

/// [`correct`] as a `u32` scalar left on the logits' device (no transfer).
pub fn correct_on_device(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let pred = logits.argmax(D::Minus1)?;
    Ok(pred.eq(targets)?.to_dtype(DType::U32)?.sum_all()?)
}
