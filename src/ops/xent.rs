//! Softmax cross-entropy on the CPU in one pass: the mean loss of
//! `logits [n, k]` against class indices `targets [n]` (u32), with optional
//! label smoothing; the backward recomputes the softmax row by row and writes
//! `(softmax - target distribution) · g / n` without intermediate tensors.

use super::cpu;
use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};

pub struct SoftmaxCrossEntropy {
    /// Label smoothing ε: the target is `(1-ε)·one_hot + ε/k`.
    pub smoothing: f32,
}

fn targets<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [u32]> {
    let data = s.as_slice::<u32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("cross-entropy targets must be contiguous"),
    }
}

/// `(max, log Σ exp(x - max))` of one row.
#[inline]
fn log_sum_exp(row: &[f32]) -> (f32, f32) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = row.iter().map(|&v| (v - max).exp()).sum();
    (max, sum.ln())
}

impl SoftmaxCrossEntropy {
    fn check(&self, logits: &Layout, targets: &[u32]) -> Result<(usize, usize)> {
        let (n, k) = logits.shape().dims2()?;
        if targets.len() != n {
            candle_core::bail!(
                "cross-entropy: {n} rows of logits but {} targets",
                targets.len()
            );
        }
        if let Some(t) = targets.iter().find(|&&t| t as usize >= k) {
            candle_core::bail!("cross-entropy: target class {t} is outside the {k} classes");
        }
        Ok((n, k))
    }
}

impl CustomOp2 for SoftmaxCrossEntropy {
    fn name(&self) -> &'static str {
        "cnn-softmax-cross-entropy"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let _t = crate::profile::scope(|| "cross-entropy forward".to_string());
        let x = cpu::slice(s1, l1)?;
        let t = targets(s2, l2)?;
        let (n, k) = self.check(l1, t)?;
        let eps = self.smoothing as f64;
        let mut total = 0f64;
        for (row, &target) in x.chunks(k).zip(t) {
            let (max, lse) = log_sum_exp(row);
            // -log p_j = max + lse - x_j
            let nll = (max + lse - row[target as usize]) as f64;
            let loss = if eps > 0.0 {
                let mean_nll = row.iter().map(|&v| (max + lse - v) as f64).sum::<f64>() / k as f64;
                (1.0 - eps) * nll + eps * mean_nll
            } else {
                nll
            };
            total += loss;
        }
        let mean = if n == 0 {
            f32::NAN
        } else {
            (total / n as f64) as f32
        };
        Ok((CpuStorage::F32(vec![mean]), Shape::from(())))
    }

    fn bwd(
        &self,
        logits: &Tensor,
        targets_t: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let logits = logits.contiguous()?;
        let _t = crate::profile::scope(|| "cross-entropy backward".to_string());
        let g = grad.to_scalar::<f32>()?;
        let t: Vec<u32> = targets_t.to_vec1()?;
        let (n, k) = logits.dims2()?;
        let scale = g / n.max(1) as f32;
        let eps = self.smoothing;
        let mut dx = cpu::to_vec(&logits)?;
        for (row, &target) in dx.chunks_mut(k).zip(&t) {
            let (max, lse) = log_sum_exp(row);
            for v in row.iter_mut() {
                *v = ((*v - max - lse).exp() - eps / k as f32) * scale;
            }
            row[target as usize] -= (1.0 - eps) * scale;
        }
        Ok((Some(Tensor::from_vec(dx, (n, k), logits.device())?), None))
    }
}
