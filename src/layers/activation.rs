//! Element-wise activations (`relu`, `leaky_relu`, `sigmoid`, `tanh`,
//! `gelu`, and MobileNet's and EfficientNet's `relu6`, `hardsigmoid`,
//! `hardswish`, `silu`) and the output activations `softmax` and `log_softmax`, which
//! may only end a network; PyTorch's modules of the same names.

use super::{Cx, Pass, Run, Spec};
use crate::geometry::Shape;
use crate::onnx::{Attr, Graph};
use anyhow::Result;
use candle_core::Tensor;
use serde::{Deserialize, Serialize};

/// An activation without settings: its config entry is also what runs.
/// `x => ...` is its forward pass, `(g, x, path) => ...` its ONNX form.
macro_rules! plain_activation {
    ($(#[$doc:meta])* $name:ident, $torch:literal, $example:literal, $x:ident => $apply:expr,
     ($g:ident, $ox:ident, $path:ident) => $onnx:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct $name {}

        impl Spec for $name {
            type Op = $name;
            const TORCH: &'static str = $torch;
            const EXAMPLE: &'static str = $example;
            fn resolve(&self, cx: &Cx) -> Result<($name, Shape)> {
                Ok((*self, cx.input))
            }
        }

        impl Run for $name {
            fn is_activation(&self) -> bool {
                true
            }
            fn forward(&self, $x: &Tensor, _: &[Tensor], _: &mut Pass, _: bool) -> Result<Tensor> {
                Ok($apply)
            }
            fn onnx(&self, $g: &mut Graph, $ox: &str, _: &[Tensor], $path: &str) -> Result<String> {
                Ok($onnx)
            }
        }
    };
}

plain_activation!(
    /// max(x, 0).
    Relu, "ReLU", r#"{"type": "relu"}"#, x => crate::ops::relu(x)?,
    (g, x, path) => g.node("Relu", path, &[x], &[])
);
plain_activation!(
    /// 1 / (1 + e^-x).
    Sigmoid, "Sigmoid", r#"{"type": "sigmoid"}"#, x => candle_nn::ops::sigmoid(x)?,
    (g, x, path) => g.node("Sigmoid", path, &[x], &[])
);
plain_activation!(
    Tanh, "Tanh", r#"{"type": "tanh"}"#, x => x.tanh()?,
    (g, x, path) => g.node("Tanh", path, &[x], &[])
);
plain_activation!(
    /// The exact (erf) GELU, PyTorch's default.
    Gelu, "GELU", r#"{"type": "gelu"}"#, x => crate::ops::gelu(x)?,
    (g, x, path) => onnx_gelu(g, x, path)
);

plain_activation!(
    /// min(max(x, 0), 6) (MobileNet).
    Relu6, "ReLU6", r#"{"type": "relu6"}"#, x => crate::ops::pointwise(x, "relu6")?,
    (g, x, path) => onnx_clip(g, x, path, 0.0, 6.0)
);
plain_activation!(
    /// min(max(x/6 + 1/2, 0), 1), the piecewise-linear sigmoid (MobileNetV3).
    Hardsigmoid, "Hardsigmoid", r#"{"type": "hardsigmoid"}"#, x => crate::ops::pointwise(x, "hardsigmoid")?,
    (g, x, path) => onnx_hard_sigmoid(g, x, path)
);
plain_activation!(
    /// x · hardsigmoid(x) (MobileNetV3).
    Hardswish, "Hardswish", r#"{"type": "hardswish"}"#, x => crate::ops::pointwise(x, "hardswish")?,
    (g, x, path) => {
        let gate = onnx_hard_sigmoid(g, x, &format!("{path}.gate"));
        g.node("Mul", path, &[x, &gate], &[])
    }
);
plain_activation!(
    /// x · sigmoid(x), also called swish (EfficientNet).
    Silu, "SiLU", r#"{"type": "silu"}"#, x => crate::ops::pointwise(x, "silu")?,
    (g, x, path) => {
        let gate = g.node("Sigmoid", &format!("{path}.gate"), &[x], &[]);
        g.node("Mul", path, &[x, &gate], &[])
    }
);

/// `Clip` between two constants (opset 13 takes them as inputs).
fn onnx_clip(g: &mut Graph, x: &str, path: &str, lo: f32, hi: f32) -> String {
    let min = g.floats(&format!("{path}.min"), &[], &[lo]);
    let max = g.floats(&format!("{path}.max"), &[], &[hi]);
    g.node("Clip", path, &[x, &min, &max], &[])
}

/// ONNX's `HardSigmoid` with PyTorch's slope and offset (1/6, 1/2).
fn onnx_hard_sigmoid(g: &mut Graph, x: &str, path: &str) -> String {
    let attrs = [
        ("alpha", Attr::Float(1.0 / 6.0)),
        ("beta", Attr::Float(0.5)),
    ];
    g.node("HardSigmoid", path, &[x], &attrs)
}

/// x·(1 + erf(x/√2))/2 from `Div`, `Erf`, `Add` and `Mul` (opset 20's
/// `Gelu` is too new for many runtimes).
fn onnx_gelu(g: &mut Graph, x: &str, path: &str) -> String {
    let sqrt2 = g.floats(&format!("{path}.sqrt2"), &[], &[std::f32::consts::SQRT_2]);
    let one = g.floats(&format!("{path}.one"), &[], &[1.0]);
    let half = g.floats(&format!("{path}.half"), &[], &[0.5]);
    let scaled = g.node("Div", &format!("{path}.scaled"), &[x, &sqrt2], &[]);
    let erf = g.node("Erf", &format!("{path}.erf"), &[&scaled], &[]);
    let plus = g.node("Add", &format!("{path}.plus_one"), &[&erf, &one], &[]);
    let times = g.node("Mul", &format!("{path}.times_x"), &[x, &plus], &[]);
    g.node("Mul", path, &[&times, &half], &[])
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeakyRelu {
    #[serde(default = "default_slope")]
    pub negative_slope: f64,
}

fn default_slope() -> f64 {
    0.01
}

impl Spec for LeakyRelu {
    type Op = LeakyRelu;
    const TORCH: &'static str = "LeakyReLU";
    const EXAMPLE: &'static str = r#"{"type": "leaky_relu", "negative_slope": 0.1}"#;
    fn resolve(&self, cx: &Cx) -> Result<(LeakyRelu, Shape)> {
        if !self.negative_slope.is_finite() {
            return Err(cx.fail("negative_slope must be a finite number (default 0.01)"));
        }
        Ok((*self, cx.input))
    }
}

impl Run for LeakyRelu {
    fn is_activation(&self) -> bool {
        true
    }
    fn forward(&self, x: &Tensor, _: &[Tensor], _: &mut Pass, _: bool) -> Result<Tensor> {
        Ok(candle_nn::ops::leaky_relu(x, self.negative_slope)?)
    }
    fn onnx(&self, g: &mut Graph, x: &str, _: &[Tensor], path: &str) -> Result<String> {
        let alpha = Attr::Float(self.negative_slope as f32);
        Ok(g.node("LeakyRelu", path, &[x], &[("alpha", alpha)]))
    }
}

/// Softmax and log-softmax take the vector of class scores.
fn scores_only(cx: &Cx) -> Result<(), anyhow::Error> {
    if let Shape::Image { .. } = cx.input {
        return Err(cx.fail(format!(
            "needs the vector of class scores but {} an image of {}; put it after the last linear layer",
            cx.source(),
            cx.input
        )));
    }
    Ok(())
}

/// Class probabilities. Cross-entropy applies log-softmax itself, so the
/// loss is taken before this layer (see `arch`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Softmax {}

impl Spec for Softmax {
    type Op = Softmax;
    const TORCH: &'static str = "Softmax";
    const EXAMPLE: &'static str = r#"{"type": "softmax"}"#;
    fn resolve(&self, cx: &Cx) -> Result<(Softmax, Shape)> {
        scores_only(cx)?;
        Ok((*self, cx.input))
    }
}

impl Run for Softmax {
    fn forward(&self, x: &Tensor, _: &[Tensor], _: &mut Pass, _: bool) -> Result<Tensor> {
        Ok(candle_nn::ops::softmax_last_dim(x)?)
    }
    fn onnx(&self, g: &mut Graph, x: &str, _: &[Tensor], path: &str) -> Result<String> {
        Ok(g.node("Softmax", path, &[x], &[("axis", Attr::Int(-1))]))
    }
}

/// Log-probabilities (as the seed notebooks end their networks).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSoftmax {}

impl Spec for LogSoftmax {
    type Op = LogSoftmax;
    const TORCH: &'static str = "LogSoftmax";
    const EXAMPLE: &'static str = r#"{"type": "log_softmax"}"#;
    fn resolve(&self, cx: &Cx) -> Result<(LogSoftmax, Shape)> {
        scores_only(cx)?;
        Ok((*self, cx.input))
    }
}

impl Run for LogSoftmax {
    fn forward(&self, x: &Tensor, _: &[Tensor], _: &mut Pass, _: bool) -> Result<Tensor> {
        Ok(candle_nn::ops::log_softmax(x, candle_core::D::Minus1)?)
    }
    fn onnx(&self, g: &mut Graph, x: &str, _: &[Tensor], path: &str) -> Result<String> {
        Ok(g.node("LogSoftmax", path, &[x], &[("axis", Attr::Int(-1))]))
    }
}
