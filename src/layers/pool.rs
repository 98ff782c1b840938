//! `max_pool2d` and `avg_pool2d`: pooling over windows with stride and
//! padding; PyTorch's `MaxPool2d` and `AvgPool2d` (which counts padding as
//! zeros, `count_include_pad=True`).

use super::{Cx, Pass, Run, Spec};
use crate::geometry::{Pair, PoolGeometry, Shape};
use crate::ops;
use anyhow::Result;
use candle_core::Tensor;
use serde::{Deserialize, Serialize};

/// The settings both kinds take.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pool2d {
    pub kernel_size: Pair,
    /// Defaults to the kernel size, as in PyTorch.
    #[serde(default)]
    pub stride: Option<Pair>,
    #[serde(default = "zero")]
    pub padding: Pair,
}

fn zero() -> Pair {
    Pair::square(0)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MaxPool2d(pub Pool2d);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AvgPool2d(pub Pool2d);

/// A resolved pooling layer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PoolOp {
    pub geom: PoolGeometry,
    pub max: bool,
}

impl Spec for MaxPool2d {
    type Op = PoolOp;
    const TORCH: &'static str = "MaxPool2d";
    const EXAMPLE: &'static str = r#"{"type": "max_pool2d", "kernel_size": 2}"#;
    fn resolve(&self, cx: &Cx) -> Result<(PoolOp, Shape)> {
        resolve(&self.0, cx, true)
    }
}

impl Spec for AvgPool2d {
    type Op = PoolOp;
    const TORCH: &'static str = "AvgPool2d";
    const EXAMPLE: &'static str = r#"{"type": "avg_pool2d", "kernel_size": 2}"#;
    fn resolve(&self, cx: &Cx) -> Result<(PoolOp, Shape)> {
        resolve(&self.0, cx, false)
    }
}

fn resolve(pool: &Pool2d, cx: &Cx, max: bool) -> Result<(PoolOp, Shape)> {
    let (c, h, w) = cx.image()?;
    cx.at_least_one("kernel_size", pool.kernel_size)?;
    let k = pool.kernel_size;
    let s = pool.stride.unwrap_or(k);
    cx.at_least_one("stride", s)?;
    let p = pool.padding;
    cx.not_huge("padding", p)?;
    if p.h * 2 > k.h || p.w * 2 > k.w {
        return Err(cx.fail(format!(
            "padding {p} is more than half the kernel size {k}; use padding at most {}",
            Pair {
                h: k.h / 2,
                w: k.w / 2
            }
        )));
    }
    let (ph, pw) = (h + 2 * p.h, w + 2 * p.w);
    if k.h > ph || k.w > pw {
        return Err(cx.fail(format!(
            "the {}×{} window does not fit the {h}×{w} input ({}); use a smaller kernel_size \
             or remove a pooling layer before it",
            k.h,
            k.w,
            cx.source()
        )));
    }
    let out = Shape::Image {
        c,
        h: (ph - k.h) / s.h + 1,
        w: (pw - k.w) / s.w + 1,
    };
    let geom = PoolGeometry {
        kernel: k,
        stride: s,
        padding: p,
    };
    Ok((PoolOp { geom, max }, out))
}

impl Run for PoolOp {
    fn forward(&self, x: &Tensor, _: &[Tensor], _: &mut Pass, _: bool) -> Result<Tensor> {
        if self.max {
            ops::max_pool2d(x, &self.geom)
        } else {
            ops::avg_pool2d(x, &self.geom)
        }
    }
}
