//! `conv2d`: 2-D convolution with stride, padding (explicit, `"same"`,
//! `"valid"`, any padding mode), dilation and groups; PyTorch's `Conv2d`.

use super::{Cx, Init, Pass, Run, Spec, TensorSpec};
use crate::geometry::{ConvGeometry, Pad4, Padding, PaddingMode, Pair, Shape};
use crate::onnx::{Attr, Graph};
use crate::ops;
use anyhow::Result;
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Conv2d {
    /// Optional: checked against the input when given.
    #[serde(default)]
    pub in_channels: Option<usize>,
    pub out_channels: usize,
    pub kernel_size: Pair,
    #[serde(default = "one")]
    pub stride: Pair,
    #[serde(default = "no_padding")]
    pub padding: Padding,
    #[serde(default = "one")]
    pub dilation: Pair,
    #[serde(default = "one_group")]
    pub groups: usize,
    #[serde(default = "yes")]
    pub bias: bool,
    #[serde(default)]
    pub padding_mode: PaddingMode,
    /// How fresh weights are drawn: PyTorch's default, or from the
    /// training images (patch whitening, first layer only).
    #[serde(default)]
    pub init: ConvInit,
}

/// How a conv2d layer's fresh weights are made.
// The settings-less kinds are empty struct variants, not unit ones: serde
// ignores unknown fields beside the tag of a unit variant even under
// deny_unknown_fields, and a misspelt setting must not pass unnoticed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "snake_case",
    deny_unknown_fields,
    expecting = r#"an object like {"type": "dirac"} (default, dirac or patch_whitening)"#
)]
pub enum ConvInit {
    /// PyTorch's: uniform in ±1/√fan_in.
    Default {},
    /// PyTorch's, then the first `min(out_channels, in_channels)` filters
    /// made the identity (`torch.nn.init.dirac_`): the layer starts by
    /// passing those channels through, an implicit residual (airbench).
    Dirac {},
    /// airbench's patch whitening: the filters are the eigenvectors of the
    /// covariance of the kernel-sized patches of `images` training images
    /// (chosen with the seed), each divided by √(eigenvalue + `eps`), the
    /// largest first, and then the same negated: `out_channels` must be
    /// even and at most twice the patch size (channels × kernel).
    PatchWhitening {
        #[serde(default = "whitening_eps")]
        eps: f64,
        #[serde(default = "whitening_images")]
        images: usize,
    },
}

impl Default for ConvInit {
    fn default() -> Self {
        ConvInit::Default {}
    }
}

fn whitening_eps() -> f64 {
    5e-4
}
fn whitening_images() -> usize {
    5000
}

/// A resolved conv2d layer: its geometry and how it is initialised.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConvLayer {
    pub geometry: ConvGeometry,
    pub init: ConvInit,
}

fn one() -> Pair {
    Pair::square(1)
}
fn no_padding() -> Padding {
    Padding::Explicit(Pair::square(0))
}
fn one_group() -> usize {
    1
}
fn yes() -> bool {
    true
}

impl Spec for Conv2d {
    type Op = ConvLayer;
    const TORCH: &'static str = "Conv2d";
    const EXAMPLE: &'static str =
        r#"{"type": "conv2d", "out_channels": 8, "kernel_size": 3, "padding": 1}"#;

    fn resolve(&self, cx: &Cx) -> Result<(ConvLayer, Shape)> {
        let (c, h, w) = cx.image()?;
        if let Some(given) = self.in_channels
            && given != c
        {
            return Err(cx.fail(format!(
                "in_channels is {given} but {} {c} channels ({}); remove in_channels or set it to {c}",
                cx.source(),
                cx.input
            )));
        }
        if self.out_channels == 0 {
            return Err(cx.fail("out_channels is 0; it must be at least 1"));
        }
        cx.at_least_one("kernel_size", self.kernel_size)?;
        cx.at_least_one("stride", self.stride)?;
        cx.at_least_one("dilation", self.dilation)?;
        let groups = self.groups;
        if groups == 0 || !c.is_multiple_of(groups) || !self.out_channels.is_multiple_of(groups) {
            return Err(cx.fail(format!(
                "groups is {groups}; it must divide both in_channels ({c}) and out_channels ({})",
                self.out_channels
            )));
        }
        if let Padding::Explicit(p) = self.padding {
            cx.not_huge("padding", p)?;
        }
        let (k, d) = (self.kernel_size, self.dilation);
        let span = Pair {
            h: d.h * (k.h - 1) + 1,
            w: d.w * (k.w - 1) + 1,
        };
        let padding = match self.padding {
            Padding::Explicit(p) => Pad4::symmetric(p),
            Padding::Valid => Pad4::default(),
            Padding::Same => {
                if self.stride != Pair::square(1) {
                    return Err(cx.fail(format!(
                        "padding \"same\" needs stride 1 (stride is {}); give the padding as a number",
                        self.stride
                    )));
                }
                let (th, tw) = (span.h - 1, span.w - 1);
                Pad4 {
                    top: th / 2,
                    bottom: th - th / 2,
                    left: tw / 2,
                    right: tw - tw / 2,
                }
            }
        };
        check_padding_mode(cx, self.padding_mode, padding, h, w)?;
        let (ph, pw) = (
            h + padding.top + padding.bottom,
            w + padding.left + padding.right,
        );
        if span.h > ph || span.w > pw {
            return Err(cx.fail(format!(
                "the {}×{} kernel{} does not fit the {h}×{w} input with padding {padding}; \
                 use a smaller kernel_size, more padding, or less pooling before it",
                k.h,
                k.w,
                if d == Pair::square(1) {
                    String::new()
                } else {
                    format!(" (dilation {d})")
                },
            )));
        }
        let geom = ConvGeometry {
            in_channels: c,
            out_channels: self.out_channels,
            kernel: k,
            stride: self.stride,
            dilation: d,
            padding,
            padding_mode: self.padding_mode,
            groups,
            bias: self.bias,
        };
        let out = Shape::Image {
            c: self.out_channels,
            h: (ph - span.h) / self.stride.h + 1,
            w: (pw - span.w) / self.stride.w + 1,
        };
        match self.init {
            ConvInit::PatchWhitening { eps, images } => check_whitening(cx, &geom, eps, images)?,
            ConvInit::Dirac {} if groups != 1 => {
                return Err(cx.fail(format!(
                    "init dirac needs groups 1 (it has {groups}); remove groups or the init"
                )));
            }
            _ => {}
        }
        let layer = ConvLayer {
            geometry: geom,
            init: self.init,
        };
        Ok((layer, out))
    }
}

/// Patch whitening needs the network's input (the first layer), and as
/// many filters as it can make.
fn check_whitening(cx: &Cx, g: &ConvGeometry, eps: f64, images: usize) -> Result<()> {
    if cx.depth > 0 || cx.prev.is_some() {
        return Err(cx.fail(
            "init patch_whitening computes the filters from the input images, so it is only for \
             the first layer of the network; move the layer first or remove init",
        ));
    }
    let size = g.in_channels * g.kernel.h * g.kernel.w;
    if g.groups != 1 || g.dilation != Pair::square(1) {
        return Err(
            cx.fail("init patch_whitening needs groups 1 and dilation 1; remove them or the init")
        );
    }
    if !g.out_channels.is_multiple_of(2) || g.out_channels > 2 * size {
        return Err(cx.fail(format!(
            "init patch_whitening makes filters in pairs (each eigenvector of the {size}-value patches \
             and its negation), so out_channels must be even and at most {}; it is {}",
            2 * size,
            g.out_channels
        )));
    }
    if !(eps.is_finite() && eps > 0.0) {
        return Err(cx.fail(format!(
            "init.eps is {eps}; it must be a small positive number like 5e-4"
        )));
    }
    if images == 0 {
        return Err(cx.fail("init.images is 0; use some training images, such as 5000"));
    }
    Ok(())
}

/// Reflect padding must stay inside the input (less than its size), and
/// replicate or circular padding at most its size.
fn check_padding_mode(cx: &Cx, mode: PaddingMode, p: Pad4, h: usize, w: usize) -> Result<()> {
    if mode == PaddingMode::Zeros {
        return Ok(());
    }
    let reflect = usize::from(mode == PaddingMode::Reflect);
    if p.top.max(p.bottom) <= h.saturating_sub(reflect)
        && p.left.max(p.right) <= w.saturating_sub(reflect)
    {
        return Ok(());
    }
    let most = if mode == PaddingMode::Reflect {
        "less than the input's height and width"
    } else {
        "at most the input's height and width"
    };
    Err(cx.fail(format!(
        "padding of {} (top, bottom, left, right) is too large for padding_mode \"{}\" on a {h}×{w} \
         input: it needs padding {most}; lower the padding or use padding_mode \"zeros\"",
        [p.top, p.bottom, p.left, p.right].map(|v| v.to_string()).join(", "),
        mode.name()
    )))
}

impl Run for ConvLayer {
    fn tensors(&self) -> Vec<TensorSpec> {
        let mut t = self.geometry.tensors();
        if self.init == (ConvInit::Dirac {})
            && let Init::Uniform { fan_in, .. } = t[0].init
        {
            t[0].init = Init::Dirac { fan_in };
        }
        t
    }
    fn macs(&self, output: Shape) -> u128 {
        self.geometry.macs(output)
    }
    fn fuses_relu(&self) -> bool {
        true
    }
    fn check_device(&self, device: &Device) -> Result<()> {
        self.geometry.check_device(device)
    }
    fn forward(&self, x: &Tensor, t: &[Tensor], pass: &mut Pass, relu: bool) -> Result<Tensor> {
        self.geometry.forward(x, t, pass, relu)
    }
    fn onnx(&self, g: &mut Graph, x: &str, t: &[Tensor], path: &str) -> Result<String> {
        self.geometry.onnx(g, x, t, path)
    }
}

impl Run for ConvGeometry {
    fn tensors(&self) -> Vec<TensorSpec> {
        let fan_in = (self.in_channels / self.groups) * self.kernel.h * self.kernel.w;
        let init = Init::Uniform { fan_in, scale: 1.0 };
        let mut t = vec![TensorSpec {
            name: "weight",
            dims: vec![
                self.out_channels,
                self.in_channels / self.groups,
                self.kernel.h,
                self.kernel.w,
            ],
            trainable: true,
            init,
        }];
        if self.bias {
            t.push(TensorSpec {
                name: "bias",
                dims: vec![self.out_channels],
                trainable: true,
                init,
            });
        }
        t
    }

    fn macs(&self, output: Shape) -> u128 {
        let per_output = (self.in_channels / self.groups) as u128
            * self.kernel.h as u128
            * self.kernel.w as u128;
        output.elements() * per_output
    }

    fn fuses_relu(&self) -> bool {
        true
    }

    fn check_device(&self, device: &Device) -> Result<()> {
        ops::check_conv_supported(self, device)
    }

    fn forward(&self, x: &Tensor, t: &[Tensor], pass: &mut Pass, relu: bool) -> Result<Tensor> {
        let bf16 = pass.precision() == crate::precision::Precision::Bf16;
        ops::conv2d_in(x, &t[0], t.get(1), self, relu, bf16)
    }

    /// `Conv`, with zero padding as its `pads`; other padding modes are a
    /// `Pad` node before it (circular as slices joined around the input).
    fn onnx(&self, g: &mut Graph, x: &str, t: &[Tensor], path: &str) -> Result<String> {
        let p = self.padding;
        let (input, pads) = match self.padding_mode {
            PaddingMode::Zeros => (x.to_string(), [p.top, p.left, p.bottom, p.right]),
            mode => (onnx_pad(g, x, p, mode, path), [0; 4]),
        };
        let weight = g.weight(&format!("{path}.weight"), &t[0])?;
        let bias = match t.get(1) {
            Some(b) => Some(g.weight(&format!("{path}.bias"), b)?),
            None => None,
        };
        let mut inputs = vec![input.as_str(), weight.as_str()];
        inputs.extend(bias.as_deref());
        let pair = |p: Pair| Attr::Ints(vec![p.h as i64, p.w as i64]);
        let attrs = [
            ("kernel_shape", pair(self.kernel)),
            ("strides", pair(self.stride)),
            ("dilations", pair(self.dilation)),
            ("group", Attr::Int(self.groups as i64)),
            ("pads", Attr::Ints(pads.map(|v| v as i64).to_vec())),
        ];
        Ok(g.node("Conv", path, &inputs, &attrs))
    }
}

/// Pads the `N×C×H×W` value `x` as `mode` says: `Pad` with mode `reflect`
/// or `edge` (replicate); circular padding (`Pad`'s `wrap` needs opset 19)
/// as the last rows put before and the first rows after, then the same
/// for columns.
fn onnx_pad(g: &mut Graph, x: &str, p: Pad4, mode: PaddingMode, path: &str) -> String {
    let name = format!("{path}.pad");
    if p.is_zero() {
        return x.to_string();
    }
    let onnx_mode = match mode {
        PaddingMode::Reflect => "reflect",
        PaddingMode::Replicate => "edge",
        PaddingMode::Zeros => "constant",
        PaddingMode::Circular => {
            let mut y = x.to_string();
            for (axis, before, after) in [(2, p.top, p.bottom), (3, p.left, p.right)] {
                if before + after == 0 {
                    continue;
                }
                let axes = g.ints(&format!("{name}.axes"), &[axis]);
                let mut slice = |from: i64, to: i64| {
                    let starts = g.ints(&format!("{name}.starts"), &[from]);
                    let ends = g.ints(&format!("{name}.ends"), &[to]);
                    g.node("Slice", &name, &[&y, &starts, &ends, &axes], &[])
                };
                let mut parts = Vec::new();
                if before > 0 {
                    parts.push(slice(-(before as i64), i64::MAX));
                }
                parts.push(y.clone());
                if after > 0 {
                    parts.push(slice(0, after as i64));
                }
                let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
                y = g.node("Concat", &name, &refs, &[("axis", Attr::Int(axis))]);
            }
            return y;
        }
    };
    let pads = [0, 0, p.top, p.left, 0, 0, p.bottom, p.right].map(|v| v as i64);
    let pads = g.ints(&format!("{name}s"), &pads);
    g.node("Pad", &name, &[x, &pads], &[("mode", Attr::Str(onnx_mode))])
}
