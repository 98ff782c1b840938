//! Layers that work along the channels of each position of an image, as
//! ConvNeXt (Liu et al. 2022) is built:
//! - `layer_norm2d`: each position's channels normalised to mean 0 and
//!   variance 1, then scaled and shifted per channel (torchvision's
//!   `LayerNorm2d`, which is `nn.LayerNorm(C)` over channels-last data);
//!   tensors `weight`, `bias`;
//! - `channel_linear`: a linear layer applied to each position's channels
//!   (`nn.Linear` on channels-last data, the same as a 1×1 convolution but
//!   with a `[out, in]` weight, so the tensors are PyTorch's);
//! - `layer_scale`: each channel multiplied by a learned factor, starting
//!   small (ConvNeXt's `layer_scale` parameter, `[C, 1, 1]`). In a
//!   state_dict it is a parameter of the block, not a module: its
//!   `torch_name` names the parameter itself (`features.1.0.layer_scale`).

use super::{Cx, Init, Pass, Run, Spec, TensorSpec};
use crate::geometry::{ConvGeometry, Pad4, PaddingMode, Pair, Shape};
use crate::onnx::{Attr, Graph};
use anyhow::Result;
use candle_core::Tensor;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerNorm2d {
    /// Added to the variance before its square root.
    #[serde(default = "default_eps")]
    pub eps: f64,
}

fn default_eps() -> f64 {
    1e-6
}

/// A resolved `layer_norm2d`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LayerNorm2dOp {
    pub channels: usize,
    pub eps: f64,
}

impl Spec for LayerNorm2d {
    type Op = LayerNorm2dOp;
    const TORCH: &'static str = "LayerNorm2d";
    const EXAMPLE: &'static str = r#"{"type": "layer_norm2d", "eps": 1e-6}"#;
    fn resolve(&self, cx: &Cx) -> Result<(LayerNorm2dOp, Shape)> {
        let (c, _, _) = cx.image()?;
        if !(self.eps.is_finite() && self.eps > 0.0) {
            return Err(cx.fail(format!(
                "eps is {}; it must be a small positive number like 1e-6",
                self.eps
            )));
        }
        let op = LayerNorm2dOp {
            channels: c,
            eps: self.eps,
        };
        Ok((op, cx.input))
    }
}

impl Run for LayerNorm2dOp {
    fn tensors(&self) -> Vec<TensorSpec> {
        let t = |name, v| TensorSpec {
            name,
            dims: vec![self.channels],
            trainable: true,
            init: Init::Const(v),
        };
        vec![t("weight", 1.0), t("bias", 0.0)]
    }

    fn forward(&self, x: &Tensor, t: &[Tensor], _: &mut Pass, _: bool) -> Result<Tensor> {
        let c = self.channels;
        let mean = x.mean_keepdim(1)?;
        let centred = x.broadcast_sub(&mean)?;
        let var = centred.sqr()?.mean_keepdim(1)?;
        let normed = centred.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        let w = t[0].reshape((1, c, 1, 1))?;
        let b = t[1].reshape((1, c, 1, 1))?;
        Ok(normed.broadcast_mul(&w)?.broadcast_add(&b)?)
    }

    /// Mean and variance over the channels (`ReduceMean` on axis 1), then
    /// the scale and shift as `[C, 1, 1]` constants.
    fn onnx(&self, g: &mut Graph, x: &str, t: &[Tensor], path: &str) -> Result<String> {
        let c = self.channels;
        let axes = || [("axes", Attr::Ints(vec![1])), ("keepdims", Attr::Int(1))];
        let mean = g.node("ReduceMean", &format!("{path}.mean"), &[x], &axes());
        let centred = g.node("Sub", &format!("{path}.centred"), &[x, &mean], &[]);
        let square = g.node("Mul", &format!("{path}.square"), &[&centred, &centred], &[]);
        let var = g.node("ReduceMean", &format!("{path}.var"), &[&square], &axes());
        let eps = g.floats(&format!("{path}.eps"), &[], &[self.eps as f32]);
        let shifted = g.node("Add", &format!("{path}.var_eps"), &[&var, &eps], &[]);
        let std = g.node("Sqrt", &format!("{path}.std"), &[&shifted], &[]);
        let normed = g.node("Div", &format!("{path}.normed"), &[&centred, &std], &[]);
        let w = g.weight(&format!("{path}.weight"), &t[0].reshape((c, 1, 1))?)?;
        let b = g.weight(&format!("{path}.bias"), &t[1].reshape((c, 1, 1))?)?;
        let scaled = g.node("Mul", &format!("{path}.scaled"), &[&normed, &w], &[]);
        Ok(g.node("Add", path, &[&scaled, &b], &[]))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelLinear {
    pub out_features: usize,
    #[serde(default = "yes")]
    pub bias: bool,
}

fn yes() -> bool {
    true
}

/// A resolved `channel_linear`: the 1×1 convolution it computes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChannelLinearOp {
    pub geometry: ConvGeometry,
}

impl Spec for ChannelLinear {
    type Op = ChannelLinearOp;
    const TORCH: &'static str = "ChannelLinear";
    const EXAMPLE: &'static str = r#"{"type": "channel_linear", "out_features": 16, "bias": true}"#;
    fn resolve(&self, cx: &Cx) -> Result<(ChannelLinearOp, Shape)> {
        let (c, h, w) = cx.image()?;
        if self.out_features == 0 {
            return Err(cx.fail("out_features is 0; give the number of output channels"));
        }
        let one = Pair::square(1);
        let geometry = ConvGeometry {
            in_channels: c,
            out_channels: self.out_features,
            kernel: one,
            stride: one,
            dilation: one,
            padding: Pad4::symmetric(Pair::square(0)),
            padding_mode: PaddingMode::Zeros,
            groups: 1,
            bias: self.bias,
        };
        let out = Shape::Image {
            c: self.out_features,
            h,
            w,
        };
        Ok((ChannelLinearOp { geometry }, out))
    }
}

impl ChannelLinearOp {
    /// The `[out, in]` weight as the convolution's `[out, in, 1, 1]`.
    fn conv_tensors(&self, t: &[Tensor]) -> Result<Vec<Tensor>> {
        let g = &self.geometry;
        let mut out = vec![t[0].reshape((g.out_channels, g.in_channels, 1, 1))?];
        out.extend(t.get(1).cloned());
        Ok(out)
    }
}

impl Run for ChannelLinearOp {
    fn tensors(&self) -> Vec<TensorSpec> {
        let g = &self.geometry;
        let init = Init::Uniform {
            fan_in: g.in_channels,
            scale: 1.0,
        };
        let mut t = vec![TensorSpec {
            name: "weight",
            dims: vec![g.out_channels, g.in_channels],
            trainable: true,
            init,
        }];
        if g.bias {
            t.push(TensorSpec {
                name: "bias",
                dims: vec![g.out_channels],
                trainable: true,
                init,
            });
        }
        t
    }

    fn macs(&self, output: Shape) -> u128 {
        output.elements() * self.geometry.in_channels as u128
    }

    fn fuses_relu(&self) -> bool {
        true
    }

    fn forward(&self, x: &Tensor, t: &[Tensor], pass: &mut Pass, relu: bool) -> Result<Tensor> {
        let conv = self.conv_tensors(t)?;
        self.geometry.forward(x, &conv, pass, relu)
    }

    fn onnx(&self, g: &mut Graph, x: &str, t: &[Tensor], path: &str) -> Result<String> {
        let conv = self.conv_tensors(t)?;
        self.geometry.onnx(g, x, &conv, path)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerScale {
    /// Every factor's starting value (ConvNeXt: 1e-6).
    #[serde(default = "default_scale")]
    pub init: f64,
}

fn default_scale() -> f64 {
    1e-6
}

/// A resolved `layer_scale`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LayerScaleOp {
    pub channels: usize,
    pub init: f64,
}

impl Spec for LayerScale {
    type Op = LayerScaleOp;
    const TORCH: &'static str = "LayerScale";
    const EXAMPLE: &'static str = r#"{"type": "layer_scale", "init": 1e-6}"#;
    fn resolve(&self, cx: &Cx) -> Result<(LayerScaleOp, Shape)> {
        let (c, _, _) = cx.image()?;
        if !self.init.is_finite() {
            return Err(cx.fail(format!("init is {}; give a number such as 1e-6", self.init)));
        }
        let op = LayerScaleOp {
            channels: c,
            init: self.init,
        };
        Ok((op, cx.input))
    }
}

impl Run for LayerScaleOp {
    fn tensors(&self) -> Vec<TensorSpec> {
        vec![TensorSpec {
            name: "weight",
            dims: vec![self.channels, 1, 1],
            trainable: true,
            init: Init::Const(self.init as f32),
        }]
    }

    fn forward(&self, x: &Tensor, t: &[Tensor], _: &mut Pass, _: bool) -> Result<Tensor> {
        Ok(x.broadcast_mul(&t[0])?)
    }

    fn onnx(&self, g: &mut Graph, x: &str, t: &[Tensor], path: &str) -> Result<String> {
        let w = g.weight(&format!("{path}.weight"), &t[0])?;
        Ok(g.node("Mul", path, &[x, &w], &[]))
    }
}
