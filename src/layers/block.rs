//! Blocks: layers that hold lists of layers.
//!
//! - `residual`: its `layers` run on the input and their output is added to
//!   the shortcut's (the input itself, or its own short `shortcut` list such
//!   as a strided 1×1 conv and batch norm), optionally followed by an
//!   `activation` (He et al. 2016). In PyTorch: a module with
//!   `layers = nn.Sequential(...)` and `shortcut = nn.Sequential(...)`, so the
//!   tensors are named `layers.5.layers.0.weight`, `layers.5.shortcut.0.weight`.
//! - `concat`: parallel `branches` on the same input, joined along the
//!   channels (Inception-style); an empty branch passes the input through.
//!   In PyTorch: `branches = nn.ModuleList([nn.Sequential(...), ...])`.
//! - `gate`: the input times what its `layers` make of it, one factor per
//!   channel (`[C, 1, 1]`, broadcast over the image) or per value: with a
//!   global pooling, two 1×1 convolutions and a sigmoid, squeeze-and-
//!   excitation (Hu et al. 2018; torchvision's `SqueezeExcitation`, in
//!   MobileNetV3 and EfficientNet). In PyTorch: `layers = nn.Sequential(...)`
//!   and `x * layers(x)`.
//!
//! Blocks nest; every error names the path down to the layer at fault.

use super::{Cx, Layer, Node, Op, Pass, Run, Spec, decode_list, onnx_list, run_list};
use crate::geometry::Shape;
use crate::onnx::{Attr, Graph};
use anyhow::Result;
use candle_core::Tensor;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Residual {
    /// The block's own layers.
    pub layers: Vec<Layer>,
    /// Layers on the shortcut; absent: the identity.
    pub shortcut: Option<Vec<Layer>>,
    /// An activation after the addition, by its type (`"relu"`).
    pub activation: Option<String>,
}

impl<'de> Deserialize<'de> for Residual {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            layers: Vec<Value>,
            #[serde(default)]
            shortcut: Option<Vec<Value>>,
            #[serde(default)]
            activation: Option<String>,
        }
        let raw = Raw::deserialize(d)?;
        let list = |name: &str, v| decode_list(name, v).map_err(serde::de::Error::custom);
        Ok(Residual {
            layers: list("layers", raw.layers)?,
            shortcut: raw.shortcut.map(|s| list("shortcut", s)).transpose()?,
            activation: raw.activation,
        })
    }
}

/// A resolved residual block.
#[derive(Debug, Clone, PartialEq)]
pub struct ResidualOp {
    pub body: Vec<Node>,
    /// `None`: the identity.
    pub shortcut: Option<Vec<Node>>,
    pub activation: Option<Box<Op>>,
}

impl Spec for Residual {
    type Op = ResidualOp;
    const TORCH: &'static str = "Residual";
    const EXAMPLE: &'static str = r#"{"type": "residual", "layers": [{"type": "conv2d", "out_channels": 8, "kernel_size": 3, "padding": 1}], "activation": "relu"}"#;

    fn resolve(&self, cx: &Cx) -> Result<(ResidualOp, Shape)> {
        if self.layers.is_empty() {
            return Err(cx.fail(
                "`layers` is empty; a residual block adds the output of at least one layer to its \
                 shortcut (for nothing at all, remove the block)",
            ));
        }
        let body = cx.plan_list("layers", &self.layers, cx.input)?;
        let out = body.last().map_or(cx.input, |n| n.output);
        let (shortcut, skip) = match &self.shortcut {
            None => (None, cx.input),
            Some(list) if list.is_empty() => {
                return Err(cx.fail(
                    "`shortcut` is empty; leave it out for the identity shortcut, or list its layers",
                ));
            }
            Some(list) => {
                let nodes = cx.plan_list("shortcut", list, cx.input)?;
                let s = nodes.last().map_or(cx.input, |n| n.output);
                (Some(nodes), s)
            }
        };
        if out != skip {
            let what = if shortcut.is_some() {
                "its shortcut outputs"
            } else {
                "its identity shortcut passes the input,"
            };
            return Err(cx.fail(format!(
                "the block's layers output {out} but {what} {skip}; the two are added, so they must \
                 have the same shape. {}",
                projection_hint(cx.input, out)
            )));
        }
        let activation = match &self.activation {
            None => None,
            Some(name) => Some(Box::new(activation(cx, name)?)),
        };
        let op = ResidualOp {
            body,
            shortcut,
            activation,
        };
        Ok((op, out))
    }
}

/// How to make a shortcut from `input` to `out`.
fn projection_hint(input: Shape, out: Shape) -> String {
    match (input, out) {
        (Shape::Image { h, w, .. }, Shape::Image { c, h: oh, w: ow })
            if oh > 0 && ow > 0 && h % oh == 0 && w % ow == 0 && h / oh == w / ow =>
        {
            format!(
                "Add a projection shortcut: \"shortcut\": [{{\"type\": \"conv2d\", \"out_channels\": {c}, \
                 \"kernel_size\": 1, \"stride\": {}, \"bias\": false}}, {{\"type\": \"batch_norm2d\"}}]",
                h / oh
            )
        }
        _ => "Give the block a \"shortcut\" list whose output has that shape, or keep the layers' \
              output at the input's shape"
            .to_string(),
    }
}

/// The activation named `name`, a kind without required settings that
/// keeps the shape.
fn activation(cx: &Cx, name: &str) -> Result<Op> {
    let layer: Option<Layer> = serde_json::from_value(serde_json::json!({ "type": name })).ok();
    let resolved = layer.and_then(|l| l.resolve(cx).ok()).map(|(op, _)| op);
    match resolved {
        Some(op) if op.run().is_activation() => Ok(op),
        _ => Err(cx.fail(format!(
            "activation is \"{name}\"; give an activation such as \"relu\", \"leaky_relu\", \"gelu\", \
             \"silu\", \"hardswish\", \"sigmoid\" or \"tanh\", or leave it out"
        ))),
    }
}

impl Run for ResidualOp {
    fn children(&self) -> Vec<&[Node]> {
        let mut lists = vec![self.body.as_slice()];
        if let Some(s) = &self.shortcut {
            lists.push(s);
        }
        lists
    }

    fn macs(&self, _: Shape) -> u128 {
        self.children()
            .iter()
            .flat_map(|l| l.iter())
            .map(|n| n.macs)
            .sum()
    }

    fn fuses_relu(&self) -> bool {
        true
    }

    fn forward(&self, x: &Tensor, t: &[Tensor], pass: &mut Pass, relu: bool) -> Result<Tensor> {
        let split = count(&self.body);
        let y = run_list(&self.body, &t[..split], x, pass, self.body.len())?;
        let skip = match &self.shortcut {
            Some(list) => run_list(list, &t[split..], x, pass, list.len())?,
            None => x.clone(),
        };
        // The sum and a ReLU after it run as one op (a second ReLU would
        // change nothing).
        let out = match self.activation.as_deref() {
            Some(Op::Relu(_)) => return crate::ops::add_relu(&y, &skip),
            None if relu => return crate::ops::add_relu(&y, &skip),
            None => (y + skip)?,
            Some(act) => act.run().forward(&(y + skip)?, &[], pass, false)?,
        };
        Ok(if relu { crate::ops::relu(&out)? } else { out })
    }

    /// The layers and the shortcut as their own nodes, `Add`, then the
    /// activation's node.
    fn onnx(&self, g: &mut Graph, x: &str, t: &[Tensor], path: &str) -> Result<String> {
        let split = count(&self.body);
        let y = onnx_list(&self.body, &t[..split], g, x, self.body.len())?;
        let skip = match &self.shortcut {
            Some(list) => onnx_list(list, &t[split..], g, x, list.len())?,
            None => x.to_string(),
        };
        let Some(act) = &self.activation else {
            return Ok(g.node("Add", path, &[&y, &skip], &[]));
        };
        let sum = g.node("Add", &format!("{path}.add"), &[&y, &skip], &[]);
        act.run().onnx(g, &sum, &[], path)
    }
}

/// Tensors of a list of nodes.
fn count(nodes: &[Node]) -> usize {
    nodes.iter().map(|n| n.tensor_count).sum()
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Concat {
    /// Lists of layers run side by side on the block's input.
    pub branches: Vec<Vec<Layer>>,
}

impl<'de> Deserialize<'de> for Concat {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            branches: Vec<Vec<Value>>,
        }
        let raw = Raw::deserialize(d)?;
        let branches = raw
            .branches
            .into_iter()
            .enumerate()
            .map(|(i, b)| decode_list(&format!("branches.{i}"), b))
            .collect::<Result<_, _>>()
            .map_err(serde::de::Error::custom)?;
        Ok(Concat { branches })
    }
}

/// A resolved concat block.
#[derive(Debug, Clone, PartialEq)]
pub struct ConcatOp {
    pub branches: Vec<Vec<Node>>,
}

impl Spec for Concat {
    type Op = ConcatOp;
    const TORCH: &'static str = "Concat";
    const EXAMPLE: &'static str = r#"{"type": "concat", "branches": [[{"type": "conv2d", "out_channels": 4, "kernel_size": 1}], [{"type": "conv2d", "out_channels": 4, "kernel_size": 3, "padding": 1}]]}"#;

    fn resolve(&self, cx: &Cx) -> Result<(ConcatOp, Shape)> {
        if self.branches.len() < 2 {
            return Err(cx.fail(format!(
                "`branches` has {} branch(es); a concat joins at least 2 (a branch may be [] to pass \
                 the input through)",
                self.branches.len()
            )));
        }
        let mut branches = Vec::with_capacity(self.branches.len());
        let mut shapes = Vec::with_capacity(self.branches.len());
        for (i, b) in self.branches.iter().enumerate() {
            let nodes = cx.plan_list(&format!("branches.{i}"), b, cx.input)?;
            shapes.push(nodes.last().map_or(cx.input, |n| n.output));
            branches.push(nodes);
        }
        let listed = || {
            shapes
                .iter()
                .enumerate()
                .map(|(i, s)| format!("branch {i}: {s}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let images = shapes
            .iter()
            .filter(|s| matches!(s, Shape::Image { .. }))
            .count();
        if images != 0 && images != shapes.len() {
            return Err(cx.fail(format!(
                "some branches output images and others vectors ({}); end every branch alike",
                listed()
            )));
        }
        let out = match shapes[0] {
            Shape::Image { h, w, .. } => {
                let mut channels = 0;
                for s in &shapes {
                    match *s {
                        Shape::Image { c, h: bh, w: bw } if (bh, bw) == (h, w) => channels += c,
                        _ => {
                            return Err(cx.fail(format!(
                                "the branches are joined along the channels, so every branch must output \
                                 the same height and width ({}); give the branches the same strides and \
                                 pooling, and padding that keeps the size (\"same\")",
                                listed()
                            )));
                        }
                    }
                }
                Shape::Image { c: channels, h, w }
            }
            Shape::Flat(_) => Shape::Flat(shapes.iter().map(|s| s.elements() as usize).sum()),
        };
        Ok((ConcatOp { branches }, out))
    }
}

impl Run for ConcatOp {
    fn children(&self) -> Vec<&[Node]> {
        self.branches.iter().map(Vec::as_slice).collect()
    }

    fn macs(&self, _: Shape) -> u128 {
        self.branches.iter().flatten().map(|n| n.macs).sum()
    }

    fn forward(&self, x: &Tensor, t: &[Tensor], pass: &mut Pass, _: bool) -> Result<Tensor> {
        let mut outs = Vec::with_capacity(self.branches.len());
        let mut at = 0;
        for b in &self.branches {
            let n = count(b);
            outs.push(run_list(b, &t[at..at + n], x, pass, b.len())?);
            at += n;
        }
        Ok(Tensor::cat(&outs, 1)?)
    }

    /// Each branch as its own nodes, then `Concat` along the channels.
    fn onnx(&self, g: &mut Graph, x: &str, t: &[Tensor], path: &str) -> Result<String> {
        let mut outs = Vec::with_capacity(self.branches.len());
        let mut at = 0;
        for b in &self.branches {
            let n = count(b);
            outs.push(onnx_list(b, &t[at..at + n], g, x, b.len())?);
            at += n;
        }
        let refs: Vec<&str> = outs.iter().map(String::as_str).collect();
        Ok(g.node("Concat", path, &refs, &[("axis", Attr::Int(1))]))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Gate {
    /// The layers that compute the factors from the block's input.
    pub layers: Vec<Layer>,
}

impl<'de> Deserialize<'de> for Gate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            layers: Vec<Value>,
        }
        let raw = Raw::deserialize(d)?;
        let layers = decode_list("layers", raw.layers).map_err(serde::de::Error::custom)?;
        Ok(Gate { layers })
    }
}

/// A resolved gate block.
#[derive(Debug, Clone, PartialEq)]
pub struct GateOp {
    pub body: Vec<Node>,
}

impl Spec for Gate {
    type Op = GateOp;
    const TORCH: &'static str = "Gate";
    const EXAMPLE: &'static str = r#"{"type": "gate", "layers": [{"type": "adaptive_avg_pool2d", "output_size": 1}, {"type": "conv2d", "out_channels": 2, "kernel_size": 1}, {"type": "relu"}, {"type": "conv2d", "out_channels": 8, "kernel_size": 1}, {"type": "sigmoid"}]}"#;

    fn resolve(&self, cx: &Cx) -> Result<(GateOp, Shape)> {
        let (c, h, w) = cx.image()?;
        if self.layers.is_empty() {
            return Err(cx.fail(
                "`layers` is empty; a gate multiplies its input by what its layers compute (for \
                 squeeze-and-excitation: adaptive_avg_pool2d to 1, conv2d, relu, conv2d, sigmoid)",
            ));
        }
        let body = cx.plan_list("layers", &self.layers, cx.input)?;
        let out = body.last().map_or(cx.input, |n| n.output);
        match out {
            Shape::Image {
                c: gc,
                h: gh,
                w: gw,
            } if gc == c && ((gh, gw) == (1, 1) || (gh, gw) == (h, w)) => {}
            _ => {
                return Err(cx.fail(format!(
                    "the gate's layers output {out}, but the input is {}; they must give one factor \
                     per channel ({c}×1×1, e.g. pooled to 1 and a last 1×1 conv2d of {c} channels) \
                     or per value ({c}×{h}×{w})",
                    cx.input
                )));
            }
        }
        Ok((GateOp { body }, cx.input))
    }
}

impl Run for GateOp {
    fn children(&self) -> Vec<&[Node]> {
        vec![self.body.as_slice()]
    }

    /// Its layers' (the multiplication by the factors is not counted, as
    /// torchinfo and the papers count a network's multiply-adds).
    fn macs(&self, _: Shape) -> u128 {
        self.body.iter().map(|n| n.macs).sum()
    }

    fn forward(&self, x: &Tensor, t: &[Tensor], pass: &mut Pass, _: bool) -> Result<Tensor> {
        let g = run_list(&self.body, t, x, pass, self.body.len())?;
        Ok(x.broadcast_mul(&g)?)
    }

    /// The layers as their own nodes, then `Mul` (broadcasting the factors).
    fn onnx(&self, g: &mut Graph, x: &str, t: &[Tensor], path: &str) -> Result<String> {
        let factors = onnx_list(&self.body, t, g, x, self.body.len())?;
        Ok(g.node("Mul", path, &[x, &factors], &[]))
    }
}
