//! ReLU, and the sum of a residual block's two paths followed by its ReLU,
//! as candle custom ops on the CPU: each is one parallel pass forward and
//! one backward. candle's `relu` runs on one thread and its gradient takes
//! five passes over the data (a zero tensor, a comparison, a conversion, a
//! product and a sum); a residual block's `(y + skip).relu()` adds two more.

use super::cpu;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Elements per parallel chunk.
const CHUNK: usize = 1 << 14;

/// The ReLU's gradient, `dy` where the output `y` is positive and 0
/// elsewhere, as a tensor shaped like `like`.
fn masked_grad(y: &Tensor, dy: &Tensor, like: &Tensor) -> Result<Tensor> {
    let dx = cpu::with_slice(y, |y| {
        cpu::with_slice(dy, |dy| {
            let mut dx = cpu::uninit(dy.len());
            dx.par_chunks_mut(CHUNK)
                .zip(dy.par_chunks(CHUNK))
                .zip(y.par_chunks(CHUNK))
                .for_each(|((d, g), y)| {
                    for ((d, &g), &y) in d.iter_mut().zip(g).zip(y) {
                        *d = if y > 0.0 { g } else { 0.0 };
                    }
                });
            Ok(dx)
        })
    })?;
    Tensor::from_vec(dx, like.shape(), like.device())
}

pub(crate) struct Relu;

impl CustomOp1 for Relu {
    fn name(&self) -> &'static str {
        "cnn-relu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let _t = crate::profile::scope(|| "relu forward".to_string());
        let x = cpu::slice(s, l)?;
        let mut y = cpu::uninit(x.len());
        y.par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK))
            .for_each(|(y, x)| {
                for (y, &x) in y.iter_mut().zip(x) {
                    *y = x.max(0.0);
                }
            });
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let _t = crate::profile::scope(|| "relu backward".to_string());
        Ok(Some(masked_grad(res, grad, x)?))
    }
}

pub(crate) struct AddRelu;

impl CustomOp2 for AddRelu {
    fn name(&self) -> &'static str {
        "cnn-add-relu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let _t = crate::profile::scope(|| "residual add+relu forward".to_string());
        let a = cpu::slice(s1, l1)?;
        let b = cpu::slice(s2, l2)?;
        if l1.shape() != l2.shape() {
            candle_core::bail!(
                "residual sum of shapes {:?} and {:?}",
                l1.shape(),
                l2.shape()
            );
        }
        let mut y = cpu::uninit(a.len());
        y.par_chunks_mut(CHUNK)
            .zip(a.par_chunks(CHUNK))
            .zip(b.par_chunks(CHUNK))
            .for_each(|((y, a), b)| {
                for ((y, &a), &b) in y.iter_mut().zip(a).zip(b) {
                    *y = (a + b).max(0.0);
                }
            });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        a: &Tensor,
        _b: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let _t = crate::profile::scope(|| "residual add+relu backward".to_string());
        let d = masked_grad(res, grad, a)?;
        Ok((Some(d.clone()), Some(d)))
    }
}
