//! `batch_norm2d` (per channel of an image) and `batch_norm1d` (per feature
//! of a vector): normalisation by the batch's statistics in training and
//! by running statistics in evaluation; PyTorch's `BatchNorm2d`/`BatchNorm1d`
//! with their tensor names (`weight`, `bias`, `running_mean`, `running_var`).

use super::{Cx, Init, Pass, Run, Spec, TensorSpec};
use crate::geometry::{PoolGeometry, Shape};
use crate::onnx::{Attr, Graph};
use anyhow::Result;
use candle_core::Tensor;
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

    fn fuses_relu(&self) -> bool {
        true
    }

    fn fuses_max_pool(&self, pool: &PoolGeometry) -> bool {
        crate::ops::fuses_into_batch_norm(pool)
    }

    fn forward(&self, x: &Tensor, t: &[Tensor], pass: &mut Pass, relu: bool) -> Result<Tensor> {
        crate::ops::batch_norm(x, &self.params(t)?, pass.batch_statistics(), relu)
    }

    fn forward_pooled(
        &self,
        x: &Tensor,
        t: &[Tensor],
        pass: &mut Pass,
        relu: bool,
        pool: &PoolGeometry,
    ) -> Result<Tensor> {
        crate::ops::batch_norm_max_pool(x, &self.params(t)?, pass.batch_statistics(), relu, pool)
    }

    /// `BatchNormalization` in its inference form (the running
    /// statistics); without `affine`, a scale of ones and a shift of zeros.
    fn onnx(&self, g: &mut Graph, x: &str, t: &[Tensor], path: &str) -> Result<String> {
        let n = self.features;
        let (scale, shift, stats) = if self.affine {
            let scale = g.weight(&format!("{path}.weight"), &t[0])?;
            let shift = g.weight(&format!("{path}.bias"), &t[1])?;
            (scale, shift, &t[2..4])
        } else {
            let scale = g.floats(&format!("{path}.ones"), &[n], &vec![1.0; n]);
            let shift = g.floats(&format!("{path}.zeros"), &[n], &vec![0.0; n]);
            (scale, shift, &t[0..2])
        };
        let mean = g.weight(&format!("{path}.running_mean"), &stats[0])?;
        let var = g.weight(&format!("{path}.running_var"), &stats[1])?;
        let attrs = [
            ("epsilon", Attr::Float(self.eps as f32)),
            ("momentum", Attr::Float(1.0 - self.momentum as f32)),
        ];
        Ok(g.node(
            "BatchNormalization",
            path,
            &[x, &scale, &shift, &mean, &var],
            &attrs,
        ))
    }
}

impl BatchNormOp {
    /// The convolution `weight` (`[o, c, kh, kw]`, `o` = this layer's
    /// features) and `bias` followed by this batch norm in evaluation, as
    /// one convolution: `weight·s` and `(bias − mean)·s + β`, with
    /// `s = γ/√(var + ε)` per output channel (γ = 1, β = 0 without
    /// `affine`). `t` holds this layer's tensors as for `forward`. The
    /// result is detached: evaluation takes no gradient.
    pub fn fold_into_conv(
        &self,
        t: &[Tensor],
        weight: &Tensor,
        bias: Option<&Tensor>,
    ) -> Result<(Tensor, Tensor)> {
        let (affine, stats) = if self.affine {
            (Some((t[0].detach(), t[1].detach())), &t[2..4])
        } else {
            (None, &t[0..2])
        };
        let (mean, var) = (stats[0].detach(), stats[1].detach());
        let inv_std = var.affine(1.0, self.eps)?.sqrt()?.recip()?;
        let (scale, shift) = match affine {
            Some((gamma, beta)) => (gamma.mul(&inv_std)?, beta),
            None => (inv_std, mean.zeros_like()?),
        };
        let folded_weight =
            weight
                .detach()
                .broadcast_mul(&scale.reshape((self.features, 1, 1, 1))?)?;
        let centred = match bias {
            Some(b) => b.detach().sub(&mean)?,
            None => mean.neg()?,
        };
        let folded_bias = centred.mul(&scale)?.add(&shift)?;
        Ok((folded_weight, folded_bias))
    }

    /// The layer's tensors for `ops::batch_norm`. They are the model's
    /// variables, so the running statistics it updates in training stick.
    fn params(&self, t: &[Tensor]) -> Result<crate::ops::BatchNormParams> {
        let (affine, stats) = if self.affine {
            // A fixed scale takes no gradient.
            let scale = if self.fixed_scale {
                t[0].detach()
            } else {
                t[0].clone()
            };
            (Some((scale, t[1].clone())), &t[2..4])
        } else {
            (None, &t[0..2])
        };
        Ok(crate::ops::BatchNormParams::new(
            self.features,
            affine,
            &stats[0],
            &stats[1],
            self.eps,
            self.momentum,
        )?)
    }
}
