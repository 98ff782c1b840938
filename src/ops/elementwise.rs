//! ReLU, the sum of a residual block's two paths followed by its ReLU, and
//! the exact GELU, as candle custom ops on the CPU: each is one parallel pass
//! forward and one backward. candle's `relu` runs on one thread and its
//! gradient takes five passes over the data (a zero tensor, a comparison, a
//! conversion, a product and a sum); a residual block's `(y + skip).relu()`
//! adds two more. candle's `gelu_erf` also runs on one thread, and its
//! gradient takes a dozen passes with an `erf` and an `exp` in f64 per
//! element: on the airbench-shaped CIFAR-10 net it was 60% of a step.

use super::cpu;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Elements per parallel chunk.
const CHUNK: usize = 1 << 14;

/// A gradient computed chunk by chunk in parallel: `f(v, dy, dx)` over
/// matching chunks of `v` (the op's input or output) and `dy`, shaped like
/// `like`.
fn gradient(
    v: &Tensor,
    dy: &Tensor,
    like: &Tensor,
    f: impl Fn(&[f32], &[f32], &mut [f32]) + Sync,
) -> Result<Tensor> {
    let dx = cpu::with_slice(v, |v| {
        cpu::with_slice(dy, |dy| {
            let mut dx = cpu::uninit(dy.len());
            dx.par_chunks_mut(CHUNK)
                .zip(dy.par_chunks(CHUNK))
                .zip(v.par_chunks(CHUNK))
                .for_each(|((d, g), v)| f(v, g, d));
            Ok(dx)
        })
    })?;
    Tensor::from_vec(dx, like.shape(), like.device())
}

/// The ReLU's gradient, `dy` where the output `y` is positive and 0
/// elsewhere, as a tensor shaped like `like`.
fn masked_grad(y: &Tensor, dy: &Tensor, like: &Tensor) -> Result<Tensor> {
    gradient(y, dy, like, |y, g, d| {
        for ((d, &g), &y) in d.iter_mut().zip(g).zip(y) {
            *d = if y > 0.0 { g } else { 0.0 };
        }
    })
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

/// The activations of MobileNet and EfficientNet, each one parallel pass
/// forward and one backward: as candle expressions, `clamp` keeps two
/// full-size intermediates per call and its gradient a dozen (masks,
/// conversions, a broadcast scalar's gradient), which made MobileNetV2 at
/// 224 px run out of 24 GB at batch 64.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pointwise {
    /// min(max(x, 0), 6).
    Relu6,
    /// min(max(x/6 + 1/2, 0), 1).
    Hardsigmoid,
    /// x · hardsigmoid(x).
    Hardswish,
    /// x · σ(x).
    Silu,
}

impl Pointwise {
    #[inline(always)]
    fn value(self, x: f32) -> f32 {
        match self {
            Pointwise::Relu6 => x.clamp(0.0, 6.0),
            Pointwise::Hardsigmoid => (x / 6.0 + 0.5).clamp(0.0, 1.0),
            Pointwise::Hardswish => x * (x + 3.0).clamp(0.0, 6.0) / 6.0,
            Pointwise::Silu => x * silu::sigmoid(x),
        }
    }

    /// The derivative at `x`, with PyTorch's choices at the kinks (0 at
    /// both ends of ReLU6's and the hard sigmoid's slopes; hard-swish's
    /// middle piece up to 3 inclusive).
    #[inline(always)]
    fn slope(self, x: f32) -> f32 {
        match self {
            Pointwise::Relu6 => {
                if x > 0.0 && x < 6.0 {
                    1.0
                } else {
                    0.0
                }
            }
            Pointwise::Hardsigmoid => {
                if x > -3.0 && x < 3.0 {
                    1.0 / 6.0
                } else {
                    0.0
                }
            }
            Pointwise::Hardswish => {
                if x < -3.0 {
                    0.0
                } else if x <= 3.0 {
                    x / 3.0 + 0.5
                } else {
                    1.0
                }
            }
            Pointwise::Silu => {
                let s = silu::sigmoid(x);
                s * (1.0 + x * (1.0 - s))
            }
        }
    }

    fn label(self) -> &'static str {
        match self {
            Pointwise::Relu6 => "relu6",
            Pointwise::Hardsigmoid => "hardsigmoid",
            Pointwise::Hardswish => "hardswish",
            Pointwise::Silu => "silu",
        }
    }
}

impl CustomOp1 for Pointwise {
    fn name(&self) -> &'static str {
        match self {
            Pointwise::Relu6 => "cnn-relu6",
            Pointwise::Hardsigmoid => "cnn-hardsigmoid",
            Pointwise::Hardswish => "cnn-hardswish",
            Pointwise::Silu => "cnn-silu",
        }
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let _t = crate::profile::scope(|| format!("{} forward", self.label()));
        let x = cpu::slice(s, l)?;
        let mut y = cpu::uninit(x.len());
        let op = *self;
        y.par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK))
            .for_each(|(y, x)| match op {
                // The exponential vectorised (f32::exp is a libm call).
                Pointwise::Silu => silu::forward(x, y),
                _ => {
                    for (y, &x) in y.iter_mut().zip(x) {
                        *y = op.value(x);
                    }
                }
            });
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let _t = crate::profile::scope(|| format!("{} backward", self.label()));
        let op = *self;
        let dx = gradient(x, grad, x, |x, g, d| match op {
            Pointwise::Silu => silu::backward(x, g, d),
            _ => {
                for ((d, &g), &x) in d.iter_mut().zip(g).zip(x) {
                    *d = g * op.slope(x);
                }
            }
        })?;
        Ok(Some(dx))
    }
}

pub(crate) struct Gelu;

impl CustomOp1 for Gelu {
    fn name(&self) -> &'static str {
        "cnn-gelu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let _t = crate::profile::scope(|| "gelu forward".to_string());
        let x = cpu::slice(s, l)?;
        let mut y = cpu::uninit(x.len());
        y.par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK))
            .for_each(|(y, x)| gelu::forward(x, y));
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let _t = crate::profile::scope(|| "gelu backward".to_string());
        Ok(Some(gradient(x, grad, x, gelu::backward)?))
    }
}

/// SiLU(x) = x·σ(x) and its derivative σ(x)·(1 + x·(1 − σ(x))), with
/// σ(x) from e^(−|x|) (the GELU's exponential, so no overflow), branch-free
/// so that the loops vectorise.
mod silu {
    use super::gelu::exp_nonpositive;
    use crate::ops::kernels::simd;

    #[inline(always)]
    pub(super) fn sigmoid(x: f32) -> f32 {
        let e = exp_nonpositive(-x.abs());
        let r = 1.0 / (1.0 + e);
        if x >= 0.0 { r } else { e * r }
    }

    simd! {
        pub fn forward(x: &[f32], y: &mut [f32]) {
            for (y, &x) in y.iter_mut().zip(x) {
                *y = x * sigmoid(x);
            }
        }
    }

    simd! {
        pub fn backward(x: &[f32], dy: &[f32], dx: &mut [f32]) {
            for ((d, &g), &x) in dx.iter_mut().zip(dy).zip(x) {
                let s = sigmoid(x);
                *d = g * (s * (1.0 + x * (1.0 - s)));
            }
        }
    }
}

/// GELU(x) = x·Φ(x) = x·(1 + erf(x/√2))/2 and its derivative
/// Φ(x) + x·φ(x), branch-free so that the loops vectorise. erf comes from
/// Abramowitz and Stegun's 7.1.26 (absolute error under 1.5e-7, so GELU's
/// is under 1e-6 for |x| < 8), written as erfc(|z|) = t·P(t)·e^(−z²), which
/// is also the left tail 1 + erf(z) for z < 0; e^(−x²/2) is shared by erf
/// and φ.
mod gelu {
    use crate::ops::kernels::simd;
    use std::f32::consts::{FRAC_1_SQRT_2, LOG2_E};

    /// 1/√(2π).
    const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;

    /// e^v for v ≤ 0 (down to the smallest normal float, 0 below): with
    /// v = n·ln 2 + r and |r| ≤ ln 2 / 2, e^r by its Taylor series to r^7
    /// (relative error under 1e-8) and 2^n from the exponent bits.
    #[inline(always)]
    pub(super) fn exp_nonpositive(v: f32) -> f32 {
        // Adding 1.5·2^23 rounds to an integer.
        const ROUND: f32 = 12_582_912.0;
        const LN2_HI: f32 = 0.693_145_75;
        const LN2_LO: f32 = 1.428_606_8e-6;
        let v = v.max(-87.0);
        let n = (v * LOG2_E + ROUND) - ROUND;
        let r = (v - n * LN2_HI) - n * LN2_LO;
        let mut p = 1.0 / 5040.0;
        for c in [
            1.0 / 720.0,
            1.0 / 120.0,
            1.0 / 24.0,
            1.0 / 6.0,
            0.5,
            1.0,
            1.0,
        ] {
            p = p * r + c;
        }
        p * f32::from_bits(((n as i32 + 127) << 23) as u32)
    }

    /// (1 + erf(x/√2), e^(−x²/2)).
    #[inline(always)]
    fn parts(x: f32) -> (f32, f32) {
        const P: f32 = 0.327_591_1;
        const A: [f32; 5] = [
            1.061_405_4,
            -1.453_152,
            1.421_413_8,
            -0.284_496_74,
            0.254_829_6,
        ];
        let t = 1.0 / (1.0 + P * (x * FRAC_1_SQRT_2).abs());
        let mut poly = 0.0;
        for a in A {
            poly = (poly + a) * t;
        }
        let e = exp_nonpositive(-0.5 * x * x);
        let tail = poly * e;
        (if x < 0.0 { tail } else { 2.0 - tail }, e)
    }

    simd! {
        pub fn forward(x: &[f32], y: &mut [f32]) {
            for (y, &x) in y.iter_mut().zip(x) {
                *y = 0.5 * x * parts(x).0;
            }
        }
    }

    simd! {
        pub fn backward(x: &[f32], dy: &[f32], dx: &mut [f32]) {
            for ((d, &g), &x) in dx.iter_mut().zip(dy).zip(x) {
                let (cdf2, e) = parts(x);
                *d = g * (0.5 * cdf2 + x * e * FRAC_1_SQRT_2PI);
            }
        }
    }
}
