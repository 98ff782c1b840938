//! `dropout`: zeroes each value with probability `p` in training and scales
//! the rest by 1/(1-p) (inverted dropout, PyTorch's `Dropout`); nothing in
//! evaluation. Masks come from the step's seeded generator.

use super::{Cx, Pass, Run, Spec};
use crate::geometry::Shape;
use crate::onnx::Graph;
use anyhow::Result;
use candle_core::Tensor;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dropout {
    /// Probability of zeroing a value during training.
    #[serde(default = "half")]
    pub p: f64,
}

fn half() -> f64 {
    0.5
}

impl Spec for Dropout {
    type Op = Dropout;
    const TORCH: &'static str = "Dropout";
    const EXAMPLE: &'static str = r#"{"type": "dropout", "p": 0.25}"#;
    fn resolve(&self, cx: &Cx) -> Result<(Dropout, Shape)> {
        if !(0.0..1.0).contains(&self.p) {
            return Err(cx.fail(format!(
                "p is {}; the drop probability must be in [0, 1)",
                self.p
            )));
        }
        Ok((*self, cx.input))
    }
}

impl Run for Dropout {
    fn forward(&self, x: &Tensor, _: &[Tensor], pass: &mut Pass, _: bool) -> Result<Tensor> {
        match pass.rng() {
            Some(rng) if self.p > 0.0 => crate::ops::dropout(x, self.p as f32, rng),
            _ => Ok(x.clone()),
        }
    }

    /// Nothing: dropout is off in inference.
    fn onnx(&self, _: &mut Graph, x: &str, _: &[Tensor], _: &str) -> Result<String> {
        Ok(x.to_string())
    }
}
