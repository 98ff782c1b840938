//! Cross-entropy on logits (optionally label-smoothed) and accuracy counts.

use anyhow::Result;
use candle_core::{D, DType, Tensor};

/// Mean cross-entropy of `logits [n, k]` against class indices `targets [n]`.
/// With smoothing ε the target is `(1-ε)·one_hot + ε/k`, as in PyTorch.
pub fn cross_entropy(logits: &Tensor, targets: &Tensor, smoothing: f64) -> Result<Tensor> {
    let logp = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let nll = candle_nn::loss::nll(&logp, targets)?;
    if smoothing == 0.0 {
        return Ok(nll);
    }
    let uniform = (logp.mean(D::Minus1)?.mean_all()? * -1.0)?;
    Ok(((nll * (1.0 - smoothing))? + (uniform * smoothing)?)?)
}

/// Number of rows whose largest logit is at the target class.
pub fn correct(logits: &Tensor, targets: &Tensor) -> Result<u64> {
    let pred = logits.argmax(D::Minus1)?;
    Ok(pred
        .eq(targets)?
        .to_dtype(DType::U32)?
        .sum_all()?
        .to_scalar::<u32>()? as u64)
}
