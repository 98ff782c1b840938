//! PyTorch's default initialisation, drawn from the project's seeded RNG:
//! conv and linear weights and biases uniform in ±1/√fan_in (what
//! `kaiming_uniform_(a=√5)` works out to), batch-norm scale 1, shift 0,
//! running mean 0 and variance 1.

use crate::arch::{LayerPlan, Op};
use crate::rng::Rng;
use anyhow::Result;
use candle_core::{Device, Tensor};
use rand::Rng as _;

pub fn tensor(
    lp: &LayerPlan,
    suffix: &str,
    dims: &[usize],
    rng: &mut Rng,
    device: &Device,
) -> Result<Tensor> {
    let n: usize = dims.iter().product();
    let fill = |v: f32| Tensor::from_vec(vec![v; n], dims, device);
    let fan_in = match lp.op {
        Op::Conv(g) => (g.in_channels / g.groups) * g.kernel.h * g.kernel.w,
        Op::Linear { in_features, .. } => in_features,
        _ => {
            return Ok(match suffix {
                "weight" | "running_var" => fill(1.0)?,
                _ => fill(0.0)?,
            });
        }
    };
    let bound = 1.0 / (fan_in as f32).sqrt();
    let data: Vec<f32> = (0..n).map(|_| rng.random_range(-bound..bound)).collect();
    Ok(Tensor::from_vec(data, dims, device)?)
}
