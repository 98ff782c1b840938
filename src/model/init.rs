//! PyTorch's default initialisation, drawn from the project's seeded RNG:
//! conv and linear weights and biases uniform in ±1/√fan_in (what
//! `kaiming_uniform_(a=√5)` works out to), batch-norm scale 1, shift 0,
//! running mean 0 and variance 1. Each layer says which (`layers::Init`).

use crate::layers::{Init, TensorSpec};
use crate::rng::Rng;
use anyhow::Result;
use candle_core::{Device, Tensor};
use rand::Rng as _;

pub fn tensor(spec: &TensorSpec, rng: &mut Rng, device: &Device) -> Result<Tensor> {
    let n: usize = spec.dims.iter().product();
    let data: Vec<f32> = match spec.init {
        Init::Const(v) => vec![v; n],
        Init::Uniform { fan_in } => {
            let bound = 1.0 / (fan_in as f32).sqrt();
            (0..n).map(|_| rng.random_range(-bound..bound)).collect()
        }
    };
    Ok(Tensor::from_vec(data, spec.dims.as_slice(), device)?)
}
