//! Cross-entropy on logits (optionally label-smoothed) and accuracy counts;
//! and the general form the training loss takes with class weights or
//! mixed images: soft targets, one distribution per image.

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

/// `Σ_ic T_ic · (−log softmax(logits)_ic) / norm`: cross-entropy against
/// the rows of `targets` (`[n, k]`, each a weighted distribution), divided
/// by `norm`. With one-hot rows and `norm` = n this is the plain mean.
pub fn soft_cross_entropy(logits: &Tensor, targets: &Tensor, norm: f64) -> Result<Tensor> {
    let log_p = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    Ok(((targets * log_p)?.sum_all()?.neg()? / norm)?)
}

/// The target distribution of one label: `1 - ε` on it and `ε / k`
/// spread over all `k` classes, scaled by `weight`, added into `row`.
pub fn add_target(row: &mut [f32], label: usize, smoothing: f64, weight: f64) {
    let k = row.len();
    let spread = (weight * smoothing / k as f64) as f32;
    if spread != 0.0 {
        for v in row.iter_mut() {
            *v += spread;
        }
    }
    row[label] += (weight * (1.0 - smoothing)) as f32;
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn soft_targets_of_one_hot_rows_give_the_plain_cross_entropy() {
        let logits = Tensor::new(&[[1.0f32, 2.0, 0.5], [0.2, -1.0, 3.0]], &Device::Cpu).unwrap();
        let y = Tensor::new(&[1u32, 2], &Device::Cpu).unwrap();
        for smoothing in [0.0, 0.1] {
            let mut t = vec![0f32; 6];
            add_target(&mut t[..3], 1, smoothing, 1.0);
            add_target(&mut t[3..], 2, smoothing, 1.0);
            let t = Tensor::from_vec(t, (2, 3), &Device::Cpu).unwrap();
            let soft = soft_cross_entropy(&logits, &t, 2.0)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            let hard = cross_entropy(&logits, &y, smoothing)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!((soft - hard).abs() < 1e-6, "{soft} vs {hard}");
        }
    }
}
