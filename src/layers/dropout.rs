//! `dropout`: zeroes each value with probability `p` in training and scales
//! the rest by 1/(1-p) (inverted dropout, PyTorch's `Dropout`); nothing in
//! evaluation. Masks come from the step's seeded generator.

use super::{Cx, Pass, Run, Spec};
use crate::geometry::Shape;
use crate::onnx::Graph;
use crate::rng::Rng;
use anyhow::Result;
use candle_core::{Device, Tensor};
use rand::Rng as _;
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
            Some(rng) if self.p > 0.0 => dropout(x, self.p as f32, rng),
            _ => Ok(x.clone()),
        }
    }

    /// Nothing: dropout is off in inference.
    fn onnx(&self, _: &mut Graph, x: &str, _: &[Tensor], _: &str) -> Result<String> {
        Ok(x.to_string())
    }
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
