//! `flatten` (an image to a vector, PyTorch's `Flatten`) and `linear` (a
//! fully connected layer `y = x·Wᵀ + b`, PyTorch's `Linear`).

use super::{Cx, Init, Op, Pass, Run, Spec, TensorSpec};
use crate::geometry::Shape;
use crate::onnx::{Attr, Graph};
use crate::ops;
use anyhow::Result;
use candle_core::Tensor;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Flatten {}

impl Spec for Flatten {
    type Op = Flatten;
    const TORCH: &'static str = "Flatten";
    const EXAMPLE: &'static str = r#"{"type": "flatten"}"#;
    fn resolve(&self, cx: &Cx) -> Result<(Flatten, Shape)> {
        let n = cx.input.elements().min(usize::MAX as u128) as usize;
        Ok((*self, Shape::Flat(n)))
    }
}

impl Run for Flatten {
    fn forward(&self, x: &Tensor, _: &[Tensor], _: &mut Pass, _: bool) -> Result<Tensor> {
        Ok(x.flatten_from(1)?)
    }
    fn onnx(&self, g: &mut Graph, x: &str, _: &[Tensor], path: &str) -> Result<String> {
        Ok(g.node("Flatten", path, &[x], &[("axis", Attr::Int(1))]))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Linear {
    /// Optional: checked against the input when given.
    #[serde(default)]
    pub in_features: Option<usize>,
    pub out_features: usize,
    #[serde(default = "yes")]
    pub bias: bool,
    /// Multiply the freshly drawn weights by this. A network whose logits
    /// are scaled by `s` (airbench's output `× 1/9`) trains the same as one
    /// with `init_scale: s` and a `param_groups` entry for this layer with
    /// `lr_scale: s²`.
    #[serde(default = "unit")]
    pub init_scale: f64,
}

fn yes() -> bool {
    true
}
fn unit() -> f64 {
    1.0
}

/// A resolved linear layer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinearOp {
    pub in_features: usize,
    pub out_features: usize,
    pub bias: bool,
    pub init_scale: f32,
}

impl Spec for Linear {
    type Op = LinearOp;
    const TORCH: &'static str = "Linear";
    const EXAMPLE: &'static str = r#"{"type": "linear", "out_features": 10}"#;

    fn resolve(&self, cx: &Cx) -> Result<(LinearOp, Shape)> {
        let n = match cx.input {
            Shape::Flat(n) => n,
            img @ Shape::Image { .. } => {
                return Err(cx.fail(format!(
                    "needs a feature vector but {} an image of {img} = {} values; add {{\"type\": \"flatten\"}} before it",
                    cx.source(),
                    img.elements()
                )));
            }
        };
        if let Some(given) = self.in_features
            && given != n
        {
            // After a flatten, show the image it came from.
            let from = match cx.prev() {
                Some(p)
                    if matches!(p.op, Op::Flatten(_)) && matches!(p.input, Shape::Image { .. }) =>
                {
                    format!("{} = {n}", p.input)
                }
                _ => n.to_string(),
            };
            return Err(cx.fail(format!(
                "in_features is {given} but {} {from}; remove in_features or set it to {n}",
                cx.source()
            )));
        }
        if self.out_features == 0 {
            return Err(cx.fail("out_features is 0; it must be at least 1"));
        }
        if !(self.init_scale.is_finite() && self.init_scale > 0.0 && self.init_scale <= 100.0) {
            return Err(cx.fail(format!(
                "init_scale is {}; it must be a positive number up to 100, such as 0.111 (1 leaves \
                 PyTorch's init; larger scales make outputs that overflow before training starts)",
                self.init_scale
            )));
        }
        let op = LinearOp {
            in_features: n,
            out_features: self.out_features,
            bias: self.bias,
            init_scale: self.init_scale as f32,
        };
        Ok((op, Shape::Flat(self.out_features)))
    }
}

impl Run for LinearOp {
    fn tensors(&self) -> Vec<TensorSpec> {
        let fan_in = self.in_features;
        let mut t = vec![TensorSpec {
            name: "weight",
            dims: vec![self.out_features, self.in_features],
            trainable: true,
            init: Init::Uniform {
                fan_in,
                scale: self.init_scale,
            },
        }];
        if self.bias {
            t.push(TensorSpec {
                name: "bias",
                dims: vec![self.out_features],
                trainable: true,
                init: Init::Uniform { fan_in, scale: 1.0 },
            });
        }
        t
    }

    fn macs(&self, _: Shape) -> u128 {
        self.in_features as u128 * self.out_features as u128
    }

    fn fuses_relu(&self) -> bool {
        true
    }

    fn forward(&self, x: &Tensor, t: &[Tensor], pass: &mut Pass, relu: bool) -> Result<Tensor> {
        let bf16 = pass.precision() == crate::precision::Precision::Bf16;
        ops::linear_in(x, &t[0], t.get(1), relu, bf16)
    }

    /// `Gemm` with the weight transposed, as PyTorch exports `Linear`.
    fn onnx(&self, g: &mut Graph, x: &str, t: &[Tensor], path: &str) -> Result<String> {
        let weight = g.weight(&format!("{path}.weight"), &t[0])?;
        let mut inputs = vec![x, weight.as_str()];
        let bias = match t.get(1) {
            Some(b) => Some(g.weight(&format!("{path}.bias"), b)?),
            None => None,
        };
        inputs.extend(bias.as_deref());
        Ok(g.node("Gemm", path, &inputs, &[("transB", Attr::Int(1))]))
    }
}
