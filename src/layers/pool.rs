//! `max_pool2d` and `avg_pool2d`: pooling over windows with stride and
//! padding; PyTorch's `MaxPool2d` and `AvgPool2d` (which counts padding as
//! zeros, `count_include_pad=True`).

use super::{Cx, Pass, Run, Spec};
use crate::geometry::{Pair, PoolGeometry, Shape};
use crate::onnx::{Attr, Graph};
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

    /// `MaxPool` (padding never wins), or `AveragePool` counting the
    /// padding as zeros.
    fn onnx(&self, g: &mut Graph, x: &str, _: &[Tensor], path: &str) -> Result<String> {
        Ok(onnx_pool(g, x, path, &self.geom, self.max))
    }
}

fn onnx_pool(g: &mut Graph, x: &str, path: &str, geom: &PoolGeometry, max: bool) -> String {
    let pair = |p: Pair| vec![p.h as i64, p.w as i64];
    let p = geom.padding;
    let mut attrs = vec![
        ("kernel_shape", Attr::Ints(pair(geom.kernel))),
        ("strides", Attr::Ints(pair(geom.stride))),
        (
            "pads",
            Attr::Ints([p.h, p.w, p.h, p.w].map(|v| v as i64).to_vec()),
        ),
    ];
    if max {
        g.node("MaxPool", path, &[x], &attrs)
    } else {
        attrs.push(("count_include_pad", Attr::Int(1)));
        g.node("AveragePool", path, &[x], &attrs)
    }
}

/// A global pooling as `ReduceMean` or `ReduceMax` over height and width,
/// N×C×H×W → N×C in one node (`GlobalAveragePool` would keep 1×1 and need
/// a `Flatten`, and fewer runtimes read it).
fn onnx_global(g: &mut Graph, op: &str, x: &str, path: &str) -> String {
    let attrs = [("axes", Attr::Ints(vec![2, 3])), ("keepdims", Attr::Int(0))];
    g.node(op, path, &[x], &attrs)
}

/// `global_avg_pool2d`: the mean of each channel, N×C×H×W → N×C (Keras'
/// `GlobalAveragePooling2D`; PyTorch's `AdaptiveAvgPool2d(1)` + `Flatten`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlobalAvgPool2d {}

/// `global_max_pool2d`: the maximum of each channel, N×C×H×W → N×C.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlobalMaxPool2d {}

impl Spec for GlobalAvgPool2d {
    type Op = GlobalAvgPool2d;
    const TORCH: &'static str = "AdaptiveAvgPool2d";
    const EXAMPLE: &'static str = r#"{"type": "global_avg_pool2d"}"#;
    fn resolve(&self, cx: &Cx) -> Result<(Self, Shape)> {
        let (c, _, _) = cx.image()?;
        Ok((*self, Shape::Flat(c)))
    }
}

impl Run for GlobalAvgPool2d {
    fn forward(&self, x: &Tensor, _: &[Tensor], _: &mut Pass, _: bool) -> Result<Tensor> {
        Ok(x.flatten_from(2)?.mean(2)?.contiguous()?)
    }
    fn onnx(&self, g: &mut Graph, x: &str, _: &[Tensor], path: &str) -> Result<String> {
        Ok(onnx_global(g, "ReduceMean", x, path))
    }
}

impl Spec for GlobalMaxPool2d {
    type Op = GlobalMaxPool2d;
    const TORCH: &'static str = "AdaptiveMaxPool2d";
    const EXAMPLE: &'static str = r#"{"type": "global_max_pool2d"}"#;
    fn resolve(&self, cx: &Cx) -> Result<(Self, Shape)> {
        let (c, _, _) = cx.image()?;
        Ok((*self, Shape::Flat(c)))
    }
}

impl Run for GlobalMaxPool2d {
    fn forward(&self, x: &Tensor, _: &[Tensor], _: &mut Pass, _: bool) -> Result<Tensor> {
        Ok(x.flatten_from(2)?.max(2)?.contiguous()?)
    }
    fn onnx(&self, g: &mut Graph, x: &str, _: &[Tensor], path: &str) -> Result<String> {
        Ok(onnx_global(g, "ReduceMax", x, path))
    }
}

/// `adaptive_avg_pool2d`: averages over windows chosen so the output is
/// `output_size` whatever the input, as PyTorch's `AdaptiveAvgPool2d`
/// (window i spans ⌊i·n/out⌋ to ⌈(i+1)·n/out⌉).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdaptiveAvgPool2d {
    pub output_size: Pair,
}

/// A resolved adaptive pooling: the input's spatial size is known.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdaptiveOp {
    pub input: Pair,
    pub output: Pair,
}

impl Spec for AdaptiveAvgPool2d {
    type Op = AdaptiveOp;
    const TORCH: &'static str = "AdaptiveAvgPool2d";
    const EXAMPLE: &'static str = r#"{"type": "adaptive_avg_pool2d", "output_size": 2}"#;
    fn resolve(&self, cx: &Cx) -> Result<(AdaptiveOp, Shape)> {
        let (c, h, w) = cx.image()?;
        let o = self.output_size;
        cx.at_least_one("output_size", o)?;
        if o.h > h || o.w > w {
            return Err(cx.fail(format!(
                "output_size is {o} but the input is only {h}×{w}; pool to at most {h}×{w}, or remove \
                 a pooling layer before it"
            )));
        }
        let op = AdaptiveOp {
            input: Pair { h, w },
            output: o,
        };
        Ok((op, Shape::Image { c, h: o.h, w: o.w }))
    }
}

impl AdaptiveOp {
    /// The plain average pooling that computes this, when the windows are
    /// equal.
    fn equal_windows(&self) -> Option<PoolGeometry> {
        let (i, o) = (self.input, self.output);
        (i.h % o.h == 0 && i.w % o.w == 0).then(|| {
            let k = Pair {
                h: i.h / o.h,
                w: i.w / o.w,
            };
            PoolGeometry {
                kernel: k,
                stride: k,
                padding: Pair::square(0),
            }
        })
    }
}

/// Window `j` of `out` over `n` values: ⌊j·n/out⌋ to ⌈(j+1)·n/out⌉.
fn span(j: usize, n: usize, out: usize) -> (usize, usize) {
    (j * n / out, ((j + 1) * n).div_ceil(out))
}

/// The `n × out` matrix whose column `j` averages window `j` of `n` values.
fn averaging(n: usize, out: usize) -> Vec<f32> {
    let mut m = vec![0f32; n * out];
    for j in 0..out {
        let (from, to) = span(j, n, out);
        for i in from..to {
            m[i * out + j] = 1.0 / (to - from) as f32;
        }
    }
    m
}

impl Run for AdaptiveOp {
    fn forward(&self, x: &Tensor, _: &[Tensor], _: &mut Pass, _: bool) -> Result<Tensor> {
        let (i, o) = (self.input, self.output);
        if let Some(geom) = self.equal_windows() {
            return ops::avg_pool2d(x, &geom);
        }
        let mut rows = Vec::with_capacity(o.h);
        for r in 0..o.h {
            let (top, bottom) = span(r, i.h, o.h);
            let band = x.narrow(2, top, bottom - top)?;
            let mut cells = Vec::with_capacity(o.w);
            for c in 0..o.w {
                let (left, right) = span(c, i.w, o.w);
                let cell = band.narrow(3, left, right - left)?;
                cells.push(cell.flatten_from(2)?.mean_keepdim(2)?);
            }
            rows.push(Tensor::cat(&cells, 2)?);
        }
        let (n, ch) = (x.dim(0)?, x.dim(1)?);
        Ok(Tensor::stack(&rows, 2)?.reshape((n, ch, o.h, o.w))?)
    }

    /// `AveragePool` for equal windows; otherwise the mean over each window
    /// as two products with averaging matrices (rows, then columns:
    /// `A_h · x · A_wᵀ`), which holds for any windows.
    fn onnx(&self, g: &mut Graph, x: &str, _: &[Tensor], path: &str) -> Result<String> {
        if let Some(geom) = self.equal_windows() {
            return Ok(onnx_pool(g, x, path, &geom, false));
        }
        let (i, o) = (self.input, self.output);
        let cols = g.floats(
            &format!("{path}.column_weights"),
            &[i.w, o.w],
            &averaging(i.w, o.w),
        );
        let by_cols = g.node("MatMul", &format!("{path}.columns"), &[x, &cols], &[]);
        // The transpose of the averaging matrix, o.h × i.h.
        let m = averaging(i.h, o.h);
        let rows_t: Vec<f32> = (0..o.h)
            .flat_map(|j| (0..i.h).map(move |r| (r, j)))
            .map(|(r, j)| m[r * o.h + j])
            .collect();
        let rows = g.floats(&format!("{path}.row_weights"), &[o.h, i.h], &rows_t);
        Ok(g.node("MatMul", path, &[&rows, &by_cols], &[]))
    }
}
