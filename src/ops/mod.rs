//! Tensor operations the model needs beyond candle-nn's modules: convolution
//! with every padding mode and asymmetric padding, pooling with padding, and
//! seeded dropout. Each picks the fastest implementation available for the
//! tensor's device.

use crate::arch::{ConvGeometry, Pad4, PoolGeometry};
use crate::config::PaddingMode;
use crate::rng::Rng;
use anyhow::Result;
use candle_core::{Device, Tensor};
use rand::Rng as _;

/// Refuses geometries no implementation handles.
pub fn check_conv_supported(g: &ConvGeometry) -> Result<()> {
    if g.stride.h != g.stride.w || g.dilation.h != g.dilation.w {
        crate::bail_input!(
            "different vertical and horizontal stride or dilation ({} / {}) is not supported yet; use one number",
            g.stride,
            g.dilation
        );
    }
    Ok(())
}

/// 2-D convolution, `x: [n, c, h, w]`, `weight: [o, c/groups, kh, kw]`.
pub fn conv2d(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    g: &ConvGeometry,
) -> Result<Tensor> {
    let p = g.padding;
    let symmetric = p.top == p.bottom && p.left == p.right && p.top == p.left;
    let (x, pad) = if g.padding_mode == PaddingMode::Zeros && symmetric {
        (x.clone(), p.top)
    } else {
        (pad2d(x, p, g.padding_mode)?, 0)
    };
    let y = x.conv2d(weight, pad, g.stride.h, g.dilation.h, g.groups)?;
    Ok(match bias {
        Some(b) => y.broadcast_add(&b.reshape((1, b.dim(0)?, 1, 1))?)?,
        None => y,
    })
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

pub fn max_pool2d(x: &Tensor, g: &PoolGeometry) -> Result<Tensor> {
    let x = if g.padding.h > 0 || g.padding.w > 0 {
        // Pad with a value below every input so padding never wins the max.
        let floor = (x.flatten_all()?.min(0)?.to_scalar::<f32>()? - 1.0) as f64;
        let shifted = (x - floor)?;
        (pad2d(&shifted, Pad4::symmetric(g.padding), PaddingMode::Zeros)? + floor)?
    } else {
        x.clone()
    };
    Ok(x.max_pool2d_with_stride((g.kernel.h, g.kernel.w), (g.stride.h, g.stride.w))?)
}

/// Average pooling; padded positions count as zeros (PyTorch's
/// `count_include_pad=True`).
pub fn avg_pool2d(x: &Tensor, g: &PoolGeometry) -> Result<Tensor> {
    let x = pad2d(x, Pad4::symmetric(g.padding), PaddingMode::Zeros)?;
    Ok(x.avg_pool2d_with_stride((g.kernel.h, g.kernel.w), (g.stride.h, g.stride.w))?)
}

/// Inverted dropout with a mask drawn from the project's generator.
pub fn dropout(x: &Tensor, p: f32, rng: &mut Rng) -> Result<Tensor> {
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
