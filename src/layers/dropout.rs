//! `dropout`: zeroes each value with probability `p` in training and scales
//! the rest by 1/(1-p) (inverted dropout, PyTorch's `Dropout`); nothing in
//! evaluation. `drop_path` (stochastic depth, Huang et al. 2016) does the
//! same to whole examples: put last in a residual block's layers, it drops
//! the block for some images of the batch (torchvision's
//! `StochasticDepth(p, "row")`, timm's `DropPath`). Masks come from the
//! step's seeded generator.

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

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DropPath {
    /// Probability of zeroing an example's whole input during training.
    pub p: f64,
}

impl Spec for DropPath {
    type Op = DropPath;
    const TORCH: &'static str = "StochasticDepth";
    const EXAMPLE: &'static str = r#"{"type": "drop_path", "p": 0.1}"#;
    fn resolve(&self, cx: &Cx) -> Result<(DropPath, Shape)> {
        if !(0.0..1.0).contains(&self.p) {
            return Err(cx.fail(format!(
                "p is {}; the drop probability must be in [0, 1)",
                self.p
            )));
        }
        Ok((*self, cx.input))
    }
}

impl Run for DropPath {
    fn forward(&self, x: &Tensor, _: &[Tensor], pass: &mut Pass, _: bool) -> Result<Tensor> {
        let Some(rng) = pass.rng() else {
            return Ok(x.clone());
        };
        if self.p == 0.0 {
            return Ok(x.clone());
        }
        use rand::Rng as _;
        let keep = 1.0 - self.p as f32;
        let n = x.dim(0)?;
        let mask: Vec<f32> = (0..n)
            .map(|_| {
                if rng.random::<f32>() < keep {
                    1.0 / keep
                } else {
                    0.0
                }
            })
            .collect();
        let mut dims = vec![1usize; x.rank()];
        dims[0] = n;
        let mask =
            Tensor::from_vec(mask, dims, &candle_core::Device::Cpu)?.to_device(x.device())?;
        Ok(x.broadcast_mul(&mask)?)
    }

    /// Nothing: no example is dropped in inference.
    fn onnx(&self, _: &mut Graph, x: &str, _: &[Tensor], _: &str) -> Result<String> {
        Ok(x.to_string())
    }
}
