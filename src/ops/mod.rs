//! Tensor operations the model needs beyond candle-nn's modules: convolution
//! with every padding mode and asymmetric padding, pooling with padding,
//! batch norm, linear layers, seeded dropout and cross-entropy. Each picks
//! the fastest implementation available for the tensor's device.

pub(crate) mod batchnorm;
pub mod bf16;
pub mod conv;
pub mod cpu;
pub(crate) mod direct;
pub(crate) mod dropout;
pub(crate) mod elementwise;
pub(crate) mod inplace;
pub mod kernels;
pub(crate) mod linear;
pub(crate) mod pool;
pub(crate) mod simd;
pub mod winograd;
pub(crate) mod xent;

use crate::geometry::{ConvGeometry, Pad4, PaddingMode, PoolGeometry};
use crate::rng::Rng;
use anyhow::Result;
pub use batchnorm::BatchNormParams;
use candle_core::{DType, Device, Tensor};
use rand::Rng as _;

/// Whether the project's CPU kernels handle this tensor (else candle's ops
/// do, as on CUDA). `CNN_KERNELS=candle` sends the CPU through candle's ops
/// too: the code path other devices take, testable without a GPU.
pub fn native(x: &Tensor) -> bool {
    !candle_only() && x.device().is_cpu() && x.dtype() == DType::F32
}

/// `CNN_KERNELS=candle`, or inside [`with_candle_ops`]: candle's operations
/// only, on every device.
pub fn candle_only() -> bool {
    kernels::get().candle_only || CANDLE_HERE.get()
}

thread_local! {
    /// Set by [`with_candle_ops`].
    static CANDLE_HERE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with candle's operations instead of the CPU kernels on this
/// thread (as `CNN_KERNELS=candle` does for the whole process): the path a
/// GPU takes, next to the kernels in one process.
pub fn with_candle_ops<T>(f: impl FnOnce() -> T) -> T {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            CANDLE_HERE.set(self.0);
        }
    }
    let _reset = Reset(CANDLE_HERE.replace(true));
    f()
}

/// Refuses geometries the implementation for `device` does not handle:
/// candle's convolution (used off the CPU) takes one stride and dilation.
pub fn check_conv_supported(g: &ConvGeometry, device: &Device) -> Result<()> {
    if !device.is_cpu() && (g.stride.h != g.stride.w || g.dilation.h != g.dilation.w) {
        crate::bail_input!(
            "different vertical and horizontal stride or dilation ({} / {}) is only supported on the CPU; use one number for each",
            g.stride,
            g.dilation
        );
    }
    Ok(())
}

/// 2-D convolution, `x: [n, c, h, w]`, `weight: [o, c/groups, kh, kw]`,
/// followed by a ReLU when `relu` is set.
pub fn conv2d(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    g: &ConvGeometry,
    relu: bool,
) -> Result<Tensor> {
    conv2d_in(x, weight, bias, g, relu, false)
}

/// [`conv2d`], with bf16 products when `bf16` (`training.precision`): the
/// input and weights rounded to bf16, their products summed in f32, and
/// the gradient flowing back rounded too; the output and bias stay f32.
pub fn conv2d_in(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    g: &ConvGeometry,
    relu: bool,
    bf16: bool,
) -> Result<Tensor> {
    let (x, g) = if g.padding_mode == PaddingMode::Zeros {
        (x.clone(), *g)
    } else {
        let padded = pad2d(x, g.padding, g.padding_mode)?;
        (
            padded,
            ConvGeometry {
                padding: Pad4::default(),
                ..*g
            },
        )
    };
    if native(&x) {
        // In bf16 the operands go in rounded (saved so by the op for its
        // backward pass), the output gradient is rounded inside.
        let (x, weight) = if bf16 {
            (round_bf16(&x)?, round_bf16(weight)?)
        } else {
            (x, weight.clone())
        };
        let weight = &weight;
        let op = conv::Conv {
            geom: g,
            relu,
            bf16,
        };
        return Ok(match bias {
            Some(b) => x.apply_op3(weight, b, conv::ConvBias(op))?,
            None => x.apply_op2(weight, conv::ConvNoBias(op))?,
        });
    }
    if bf16 {
        return candle_conv2d(&through_bf16(&x)?, &through_bf16(weight)?, bias, &g, relu);
    }
    candle_conv2d(&x, weight, bias, &g, relu)
}

/// `x` rounded to bf16 values on the CPU (one parallel pass), the gradient
/// passed through unchanged.
pub fn round_bf16(x: &Tensor) -> Result<Tensor> {
    Ok(x.contiguous()?.apply_op1(bf16::Round)?)
}

/// `x` rounded to bf16 and back to f32 with candle's ops: its gradient is
/// rounded the same way on the way back. What candle's devices do for
/// `bf16` (the CPU kernels round inside their own ops).
pub fn through_bf16(x: &Tensor) -> Result<Tensor> {
    Ok(x.to_dtype(DType::BF16)?.to_dtype(DType::F32)?)
}

/// The algorithms the CPU kernels run a [`conv2d`] of `g` with on an input
/// of `[c, h, w]`, forward and backward (with the input's gradient when
/// `need_dx`); `None` when candle's operations run it (`CNN_KERNELS=candle`).
pub fn conv2d_algorithms(
    g: &ConvGeometry,
    [c, h, w]: [usize; 3],
    need_dx: bool,
    bf16: bool,
) -> Option<[String; 2]> {
    if candle_only() {
        return None;
    }
    // Other padding modes pad first, then convolve without padding.
    let (g, h, w) = if g.padding_mode == PaddingMode::Zeros {
        (*g, h, w)
    } else {
        let p = g.padding;
        let unpadded = ConvGeometry {
            padding: Pad4::default(),
            ..*g
        };
        (unpadded, h + p.top + p.bottom, w + p.left + p.right)
    };
    conv::Conv {
        geom: g,
        relu: false,
        bf16,
    }
    .algorithms([c, h, w], need_dx)
    .ok()
}

/// [`conv2d`] from candle's own ops (zero padding only): what runs off the
/// CPU, and the reference the CPU kernels are tested against.
pub fn candle_conv2d(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    g: &ConvGeometry,
    relu: bool,
) -> Result<Tensor> {
    let x = x.clone();
    let p = g.padding;
    let symmetric = p.top == p.bottom && p.left == p.right && p.top == p.left;
    let (x, pad) = if symmetric {
        (x, p.top)
    } else {
        (pad2d(&x, p, PaddingMode::Zeros)?, 0)
    };
    let y = x.conv2d(weight, pad, g.stride.h, g.dilation.h, g.groups)?;
    let y = match bias {
        Some(b) => y.broadcast_add(&b.reshape((1, b.dim(0)?, 1, 1))?)?,
        None => y,
    };
    Ok(if relu { y.relu()? } else { y })
}

/// Fully connected layer `y = x·Wᵀ + b` on `x: [n, in]`, `weight: [out, in]`,
/// followed by a ReLU when `relu` is set.
pub fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, relu: bool) -> Result<Tensor> {
    linear_in(x, weight, bias, relu, false)
}

/// [`linear`], with bf16 products when `bf16` (as [`conv2d_in`]).
pub fn linear_in(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    relu: bool,
    bf16: bool,
) -> Result<Tensor> {
    if !native(x) && bf16 {
        return candle_linear(&through_bf16(x)?, &through_bf16(weight)?, bias, relu);
    }
    if native(x) {
        let (x, weight) = if bf16 {
            (round_bf16(x)?, round_bf16(weight)?)
        } else {
            (x.clone(), weight.clone())
        };
        let (x, weight) = (&x, &weight);
        let op = linear::Linear { relu, bf16 };
        return Ok(match bias {
            Some(b) => x.apply_op3(weight, b, linear::LinearBias(op))?,
            None => x.apply_op2(weight, linear::LinearNoBias(op))?,
        });
    }
    candle_linear(x, weight, bias, relu)
}

/// [`linear`] from candle's ops.
pub fn candle_linear(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    relu: bool,
) -> Result<Tensor> {
    let y = x.matmul(&weight.t()?)?;
    let y = match bias {
        Some(b) => y.broadcast_add(b)?,
        None => y,
    };
    Ok(if relu { y.relu()? } else { y })
}

/// Batch normalization of `x: [batch, features, ...]` (batch_norm1d and
/// 2d), followed by a ReLU when `relu` is set. Training (`train`) uses the
/// batch's statistics and updates the running ones in `p`; evaluation uses
/// the running ones.
pub fn batch_norm(x: &Tensor, p: &BatchNormParams, train: bool, relu: bool) -> Result<Tensor> {
    if native(x) {
        return batchnorm::forward(x, p, train, relu, false);
    }
    candle_batch_norm(x, p, train, relu)
}

/// Whether [`batch_norm_max_pool`] fuses this pooling into the batch norm:
/// 2×2 windows at stride 2 without padding.
pub fn fuses_into_batch_norm(g: &PoolGeometry) -> bool {
    g.kernel.h == 2
        && g.kernel.w == 2
        && g.stride == g.kernel
        && g.padding.h == 0
        && g.padding.w == 0
}

/// [`batch_norm`] (and ReLU) followed by the max pooling `g`, `x: [n, c,
/// h, w]`. On the CPU a 2×2 pooling at stride 2 runs inside the batch
/// norm's output pass: the full-size output is never stored, and its
/// gradient never formed.
pub fn batch_norm_max_pool(
    x: &Tensor,
    p: &BatchNormParams,
    train: bool,
    relu: bool,
    g: &PoolGeometry,
) -> Result<Tensor> {
    if native(x) && fuses_into_batch_norm(g) && x.rank() == 4 && x.dim(2)? >= 2 && x.dim(3)? >= 2 {
        return batchnorm::forward(x, p, train, relu, true);
    }
    max_pool2d(&batch_norm(x, p, train, relu)?, g)
}

/// [`batch_norm`] from candle-nn's `BatchNorm` (which shares `p`'s running
/// statistics and updates them in training): what runs off the CPU, and the
/// reference the CPU op is tested against.
pub fn candle_batch_norm(
    x: &Tensor,
    p: &BatchNormParams,
    train: bool,
    relu: bool,
) -> Result<Tensor> {
    let (mean, var) = (p.running_mean.as_tensor(), p.running_var.as_tensor());
    let bn = match (&p.weight, &p.bias) {
        (Some(w), Some(b)) => candle_nn::BatchNorm::new_with_momentum(
            p.features,
            mean.clone(),
            var.clone(),
            w.clone(),
            b.clone(),
            p.eps,
            p.momentum,
        )?,
        _ => candle_nn::BatchNorm::new_no_bias_with_momentum(
            p.features,
            mean.clone(),
            var.clone(),
            p.eps,
            p.momentum,
        )?,
    };
    // Contiguous, as the CPU op's output: candle's is a transposed view,
    // which some ops (index_select in pooling) refuse.
    let y = candle_core::ModuleT::forward_t(&bn, x, train)?.contiguous()?;
    Ok(if relu { y.relu()? } else { y })
}

/// Mean cross-entropy of `logits [n, k]` against class indices `targets [n]`
/// (u32). With smoothing ε the target is `(1-ε)·one_hot + ε/k`, as in PyTorch.
pub fn cross_entropy(logits: &Tensor, targets: &Tensor, smoothing: f64) -> Result<Tensor> {
    if native(logits) {
        let op = xent::SoftmaxCrossEntropy {
            smoothing: smoothing as f32,
        };
        return Ok(logits.apply_op2(&targets.contiguous()?, op)?);
    }
    candle_cross_entropy(logits, targets, smoothing)
}

/// [`cross_entropy`] from candle's ops.
pub fn candle_cross_entropy(logits: &Tensor, targets: &Tensor, smoothing: f64) -> Result<Tensor> {
    let logp = candle_nn::ops::log_softmax(logits, candle_core::D::Minus1)?;
    let nll = candle_nn::loss::nll(&logp, targets)?;
    if smoothing == 0.0 {
        return Ok(nll);
    }
    let uniform = (logp.mean(candle_core::D::Minus1)?.mean_all()? * -1.0)?;
    Ok(((nll * (1.0 - smoothing))? + (uniform * smoothing)?)?)
}

/// Pads the two spatial dimensions with the given mode.
pub fn pad2d(x: &Tensor, p: Pad4, mode: PaddingMode) -> Result<Tensor> {
    if p.is_zero() {
        return Ok(x.clone());
    }
    if mode == PaddingMode::Zeros {
        return Ok(x
            .pad_with_zeros(2, p.top, p.bottom)?
            .pad_with_zeros(3, p.left, p.right)?);
    }
    let (_, _, h, w) = x.dims4()?;
    let rows = pad_indices(h, p.top, p.bottom, mode);
    let cols = pad_indices(w, p.left, p.right, mode);
    let rows = Tensor::from_vec(rows, h + p.top + p.bottom, x.device())?;
    let cols = Tensor::from_vec(cols, w + p.left + p.right, x.device())?;
    Ok(x.index_select(&rows, 2)?.index_select(&cols, 3)?)
}

/// Source index of every padded position along one axis of length `n`.
fn pad_indices(n: usize, before: usize, after: usize, mode: PaddingMode) -> Vec<u32> {
    let n = n as i64;
    (-(before as i64)..n + after as i64)
        .map(|i| {
            let j = match mode {
                PaddingMode::Replicate | PaddingMode::Zeros => i.clamp(0, n - 1),
                PaddingMode::Reflect => {
                    let period = 2 * (n - 1).max(1);
                    let m = i.rem_euclid(period);
                    if m < n { m } else { period - m }
                }
                PaddingMode::Circular => i.rem_euclid(n),
            };
            j as u32
        })
        .collect()
}

/// Max pooling; padded positions never win.
pub fn max_pool2d(x: &Tensor, g: &PoolGeometry) -> Result<Tensor> {
    if native(x) {
        let op = pool::Pool::new(pool::Kind::Max, *g, x.track_op());
        return Ok(x.apply_op1(op)?);
    }
    candle_max_pool2d(x, g)
}

/// [`max_pool2d`] from candle's ops, for devices without our kernels and
/// as a test reference. Built from window slices and a `max` reduction rather
/// than candle's `max_pool2d`, whose backward needs stride = kernel and
/// scales the gradient by 1/(kh·kw) (candle 0.11). Ties share the gradient.
pub fn candle_max_pool2d(x: &Tensor, g: &PoolGeometry) -> Result<Tensor> {
    let x = if g.padding.h > 0 || g.padding.w > 0 {
        // Pad with a value below every input so padding never wins the max.
        let floor = (x.flatten_all()?.min(0)?.to_scalar::<f32>()? - 1.0) as f64;
        let shifted = (x - floor)?;
        (pad2d(&shifted, Pad4::symmetric(g.padding), PaddingMode::Zeros)? + floor)?
    } else {
        x.clone()
    };
    Ok(Tensor::stack(&windows(&x, g)?, 0)?.max(0)?)
}

/// Average pooling; padded positions count as zeros (PyTorch's
/// `count_include_pad=True`).
pub fn avg_pool2d(x: &Tensor, g: &PoolGeometry) -> Result<Tensor> {
    if native(x) {
        return Ok(x.apply_op1(pool::Pool::new(pool::Kind::Avg, *g, false))?);
    }
    candle_avg_pool2d(x, g)
}

/// [`avg_pool2d`] from candle's ops (see [`candle_max_pool2d`]).
pub fn candle_avg_pool2d(x: &Tensor, g: &PoolGeometry) -> Result<Tensor> {
    let x = pad2d(x, Pad4::symmetric(g.padding), PaddingMode::Zeros)?;
    let area = (g.kernel.h * g.kernel.w) as f64;
    Ok((Tensor::stack(&windows(&x, g)?, 0)?.sum(0)? / area)?)
}

/// For each offset inside the pooling window, the `[n, c, oh, ow]` tensor of
/// the input values at that offset of every window (no padding: pad first).
fn windows(x: &Tensor, g: &PoolGeometry) -> Result<Vec<Tensor>> {
    let (_, _, h, w) = x.dims4()?;
    let oh = (h - g.kernel.h) / g.stride.h + 1;
    let ow = (w - g.kernel.w) / g.stride.w + 1;
    let index = |offset: usize, stride: usize, n: usize| -> Result<Tensor> {
        let v: Vec<u32> = (0..n).map(|i| (i * stride + offset) as u32).collect();
        Ok(Tensor::from_vec(v, n, x.device())?)
    };
    let mut out = Vec::with_capacity(g.kernel.h * g.kernel.w);
    for ky in 0..g.kernel.h {
        let rows = x.index_select(&index(ky, g.stride.h, oh)?, 2)?;
        for kx in 0..g.kernel.w {
            out.push(rows.index_select(&index(kx, g.stride.w, ow)?, 3)?);
        }
    }
    Ok(out)
}

/// `max(x, 0)`.
pub fn relu(x: &Tensor) -> Result<Tensor> {
    if native(x) {
        return Ok(x.contiguous()?.apply_op1(elementwise::Relu)?);
    }
    Ok(x.relu()?)
}

/// The exact GELU, `x·(1 + erf(x/√2))/2`.
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    if native(x) {
        return Ok(x.contiguous()?.apply_op1(elementwise::Gelu)?);
    }
    Ok(x.gelu_erf()?)
}

/// MobileNet's and EfficientNet's activations: `relu6`, `hardsigmoid`,
/// `hardswish` and `silu` by name, as one pass each way on the CPU.
pub fn pointwise(x: &Tensor, kind: &str) -> Result<Tensor> {
    use elementwise::Pointwise as P;
    let op = match kind {
        "relu6" => P::Relu6,
        "hardsigmoid" => P::Hardsigmoid,
        "hardswish" => P::Hardswish,
        "silu" => P::Silu,
        other => anyhow::bail!("no pointwise activation {other}"),
    };
    if native(x) {
        return Ok(x.contiguous()?.apply_op1(op)?);
    }
    let hard_sigmoid = |x: &Tensor| x.affine(1.0 / 6.0, 0.5)?.clamp(0f32, 1f32);
    Ok(match op {
        P::Relu6 => x.clamp(0f32, 6f32)?,
        P::Hardsigmoid => hard_sigmoid(x)?,
        P::Hardswish => (x * hard_sigmoid(x)?)?,
        P::Silu => x.silu()?,
    })
}

/// `max(a + b, 0)`: a residual block's two paths joined, then its ReLU.
pub fn add_relu(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if native(a) && a.dims() == b.dims() {
        return Ok(a
            .contiguous()?
            .apply_op2(&b.contiguous()?, elementwise::AddRelu)?);
    }
    Ok((a + b)?.relu()?)
}

/// Inverted dropout with a mask drawn from the project's generator: each
/// element is kept (and scaled by `1 / (1 - p)`) when its draw is below
/// `1 - p`.
pub fn dropout(x: &Tensor, p: f32, rng: &mut Rng) -> Result<Tensor> {
    if native(x) {
        return Ok(dropout::forward(x, p, rng)?);
    }
    candle_dropout(x, p, rng)
}

/// [`dropout`] from candle's ops (the same mask).
pub fn candle_dropout(x: &Tensor, p: f32, rng: &mut Rng) -> Result<Tensor> {
    let keep = 1.0 - p;
    let scale = 1.0 / keep;
    let mask: Vec<f32> = (0..x.elem_count())
        .map(|_| {
            if rng.random::<f32>() < keep {
                scale
            } else {
                0.0
            }
        })
        .collect();
    let mask = Tensor::from_vec(mask, x.shape(), &Device::Cpu)?.to_device(x.device())?;
    Ok((x * mask)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pad_indices_follow_pytorch_modes() {
        assert_eq!(
            pad_indices(4, 2, 2, PaddingMode::Reflect),
            vec![2, 1, 0, 1, 2, 3, 2, 1]
        );
        assert_eq!(
            pad_indices(4, 2, 2, PaddingMode::Replicate),
            vec![0, 0, 0, 1, 2, 3, 3, 3]
        );
        assert_eq!(
            pad_indices(4, 2, 2, PaddingMode::Circular),
            vec![2, 3, 0, 1, 2, 3, 0, 1]
        );
    }
}
