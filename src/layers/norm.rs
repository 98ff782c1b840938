//! `batch_norm2d` (per channel of an image) and `batch_norm1d` (per feature
//! of a vector): normalisation by the batch's statistics in training and
//! by running statistics in evaluation; PyTorch's `BatchNorm2d`/`BatchNorm1d`
//! with their tensor names (`weight`, `bias`, `running_mean`, `running_var`).

use super::{Cx, Init, Pass, Run, Spec, TensorSpec};
use crate::geometry::Shape;
use anyhow::Result;
use candle_core::{ModuleT, Tensor};
use serde::{Deserialize, Serialize};

/// The settings both kinds take.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchNorm {
    /// Optional: checked against the input when given.
    #[serde(default)]
    pub num_features: Option<usize>,
    #[serde(default = "default_eps")]
    pub eps: f64,
    #[serde(default = "default_momentum")]
    pub momentum: f64,
    /// Learn a per-channel scale and shift.
    #[serde(default = "yes")]
    pub affine: bool,
    /// Keep the scale (`weight`) at 1 and learn only the shift (`bias`), as
    /// fast CIFAR-10 recipes do. The scale is still saved as `weight`, so
    /// the checkpoint loads into PyTorch's module (there with
    /// `weight.requires_grad = False`).
    #[serde(default)]
    pub fixed_scale: bool,
}

fn default_eps() -> f64 {
    1e-5
}
fn default_momentum() -> f64 {
    0.1
}
fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BatchNorm2d(pub BatchNorm);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BatchNorm1d(pub BatchNorm);

/// A resolved batch-norm layer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchNormOp {
    pub features: usize,
    pub eps: f64,
    pub momentum: f64,
    pub affine: bool,
    pub fixed_scale: bool,
}

impl Spec for BatchNorm2d {
    type Op = BatchNormOp;
    const TORCH: &'static str = "BatchNorm2d";
    const EXAMPLE: &'static str = r#"{"type": "batch_norm2d"}"#;
    fn resolve(&self, cx: &Cx) -> Result<(BatchNormOp, Shape)> {
        let features = match cx.input {
            Shape::Image { c, .. } => c,
            Shape::Flat(n) => {
                return Err(cx.fail(format!(
                    "needs an image input but {} {n} features; use batch_norm1d after flatten",
                    cx.source()
                )));
            }
        };
        resolve(&self.0, cx, features, "channels")
    }
}

impl Spec for BatchNorm1d {
    type Op = BatchNormOp;
    const TORCH: &'static str = "BatchNorm1d";
    const EXAMPLE: &'static str = r#"{"type": "batch_norm1d"}"#;
    fn resolve(&self, cx: &Cx) -> Result<(BatchNormOp, Shape)> {
        let features = match cx.input {
            Shape::Flat(n) => n,
            img => {
                return Err(cx.fail(format!(
                    "needs a feature vector but {} an image of {img}; use batch_norm2d before flatten",
                    cx.source()
                )));
            }
        };
        resolve(&self.0, cx, features, "features")
    }
}

fn resolve(bn: &BatchNorm, cx: &Cx, features: usize, what: &str) -> Result<(BatchNormOp, Shape)> {
    if let Some(given) = bn.num_features
        && given != features
    {
        return Err(cx.fail(format!(
            "num_features is {given} but {} {features} {what}; remove num_features or set it to {features}",
            cx.source(),
        )));
    }
    if !(bn.eps.is_finite() && bn.eps > 0.0) {
        return Err(cx.fail(format!(
            "eps is {}; it must be a small positive number like 1e-5",
            bn.eps
        )));
    }
    if !(0.0..=1.0).contains(&bn.momentum) {
        return Err(cx.fail(format!(
            "momentum is {}; it must be between 0 and 1 (default 0.1)",
            bn.momentum
        )));
    }
    if bn.fixed_scale && !bn.affine {
        return Err(cx.fail(
            "fixed_scale is true but affine is false: there is no scale to fix; remove fixed_scale, \
             or set affine to true to learn the shift alone",
        ));
    }
    let op = BatchNormOp {
        features,
        eps: bn.eps,
        momentum: bn.momentum,
        affine: bn.affine,
        fixed_scale: bn.fixed_scale,
    };
    Ok((op, cx.input))
}

impl Run for BatchNormOp {
    fn tensors(&self) -> Vec<TensorSpec> {
        let dims = vec![self.features];
        let tensor = |name, trainable, value| TensorSpec {
            name,
            dims: dims.clone(),
            trainable,
            init: Init::Const(value),
        };
        let mut t = Vec::with_capacity(4);
        if self.affine {
            t.push(tensor("weight", !self.fixed_scale, 1.0));
            t.push(tensor("bias", true, 0.0));
        }
        t.push(tensor("running_mean", false, 0.0));
        t.push(tensor("running_var", false, 1.0));
        t
    }

    fn forward(&self, x: &Tensor, t: &[Tensor], pass: &mut Pass, _: bool) -> Result<Tensor> {
        // candle's batch norm updates the running statistics in place: the
        // tensors here are the model's variables, so the update sticks.
        let (n, eps, momentum) = (self.features, self.eps, self.momentum);
        let bn = if self.affine {
            let (w, b, mean, var) = (&t[0], &t[1], &t[2], &t[3]);
            // A fixed scale takes no gradient.
            let w = if self.fixed_scale {
                w.detach()
            } else {
                w.clone()
            };
            candle_nn::BatchNorm::new_with_momentum(
                n,
                mean.clone(),
                var.clone(),
                w,
                b.clone(),
                eps,
                momentum,
            )?
        } else {
            candle_nn::BatchNorm::new_no_bias_with_momentum(
                n,
                t[0].clone(),
                t[1].clone(),
                eps,
                momentum,
            )?
        };
        // candle's output is a strided view; the layers after want it dense.
        Ok(bn.forward_t(x, pass.is_train())?.contiguous()?)
    }
}
