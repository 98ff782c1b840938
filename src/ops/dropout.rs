//! Inverted dropout on the CPU as one candle custom op: the mask is drawn
//! and applied in one parallel pass, kept as bytes for the backward pass,
//! and only the input's gradient is computed (candle's `x * mask` also
//! multiplies out a gradient for the mask).
//!
//! The mask is the one a sequential draw would give: element `i` keeps its
//! value when the `i`-th `f32` of the generator is below `1 - p`. Each chunk
//! of the tensor seeks the ChaCha stream to its own first word, so the
//! numbers do not depend on the thread count, and the generator ends up
//! where a sequential draw leaves it.

use super::cpu;
use crate::rng::Rng;
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rand::Rng as _;
use rayon::prelude::*;
use std::sync::OnceLock;

/// Elements per parallel chunk.
const CHUNK: usize = 1 << 14;

struct Dropout {
    keep: f32,
    scale: f32,
    /// The generator at its position for element 0.
    rng: Rng,
    /// 1 where the element was kept.
    mask: OnceLock<Vec<u8>>,
}

/// `x` with each element zeroed with probability `p` and the others scaled
/// by `1 / (1 - p)`, drawing from `rng`.
pub fn forward(x: &Tensor, p: f32, rng: &mut Rng) -> Result<Tensor> {
    let keep = 1.0 - p;
    let start = rng.get_word_pos();
    let op = Dropout {
        keep,
        scale: 1.0 / keep,
        rng: rng.clone(),
        mask: OnceLock::new(),
    };
    let y = x.contiguous()?.apply_op1(op)?;
    // One 32-bit word per element, as `random::<f32>()` draws.
    rng.set_word_pos(start + x.elem_count() as u128);
    Ok(y)
}

impl CustomOp1 for Dropout {
    fn name(&self) -> &'static str {
        "cnn-dropout"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let _t = crate::profile::scope(|| "dropout forward".to_string());
        let x = cpu::slice(s, l)?;
        let mut y = cpu::uninit(x.len());
        let mut mask = vec![0u8; x.len()];
        let start = self.rng.get_word_pos();
        y.par_chunks_mut(CHUNK)
            .zip(mask.par_chunks_mut(CHUNK))
            .enumerate()
            .for_each(|(i, (ys, ms))| {
                let mut rng = self.rng.clone();
                rng.set_word_pos(start + (i * CHUNK) as u128);
                let xs = &x[i * CHUNK..][..ys.len()];
                for ((y, m), &v) in ys.iter_mut().zip(ms.iter_mut()).zip(xs) {
                    let kept = rng.random::<f32>() < self.keep;
                    *m = kept as u8;
                    *y = if kept { v * self.scale } else { 0.0 };
                }
            });
        let _ = self.mask.set(mask);
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let _t = crate::profile::scope(|| "dropout backward".to_string());
        let mask = self
            .mask
            .get()
            .ok_or_else(|| candle_core::Error::Msg("dropout backward before forward".into()))?;
        let dx = cpu::with_slice(grad, |dy| {
            let mut dx = cpu::uninit(dy.len());
            dx.par_chunks_mut(CHUNK)
                .zip(dy.par_chunks(CHUNK))
                .zip(mask.par_chunks(CHUNK))
                .for_each(|((d, g), m)| {
                    for ((d, &g), &m) in d.iter_mut().zip(g).zip(m) {
                        *d = if m != 0 { g * self.scale } else { 0.0 };
                    }
                });
            Ok(dx)
        })?;
        Ok(Some(Tensor::from_vec(dx, x.shape(), x.device())?))
    }
}
