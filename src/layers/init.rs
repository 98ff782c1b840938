//! PyTorch's default initialisation, drawn from the project's seeded RNG:
//! conv and linear weights and biases uniform in ±1/√fan_in (what
//! `kaiming_uniform_(a=√5)` works out to), batch-norm scale 1, shift 0,
//! running mean 0 and variance 1, and the variants a config can ask for
//! (dirac, a scaled draw). Each layer says which (`layers::Init`);
//! `TensorSpec::fresh` draws it.

use crate::layers::{Init, TensorSpec};
use crate::rng::Rng;
use anyhow::Result;
use candle_core::{Device, Tensor};
use rand::Rng as _;

pub fn tensor(spec: &TensorSpec, rng: &mut Rng, device: &Device) -> Result<Tensor> {
    let n: usize = spec.dims.iter().product();
    let data: Vec<f32> = match spec.init {
        Init::Const(v) => vec![v; n],
        Init::Uniform { fan_in, scale } => uniform(n, fan_in, scale, rng),
        Init::Dirac { fan_in } => {
            let mut w = uniform(n, fan_in, 1.0, rng);
            let [out, inp, kh, kw] = spec.dims[..] else {
                anyhow::bail!(
                    "dirac init needs a 4-d convolution weight, not {:?}",
                    spec.dims
                );
            };
            let filter = inp * kh * kw;
            for o in 0..out.min(inp) {
                let f = &mut w[o * filter..][..filter];
                f.fill(0.0);
                f[(o * kh + kh / 2) * kw + kw / 2] = 1.0;
            }
            w
        }
    };
    Ok(Tensor::from_vec(data, spec.dims.as_slice(), device)?)
}

fn uniform(n: usize, fan_in: usize, scale: f32, rng: &mut Rng) -> Vec<f32> {
    let bound = 1.0 / (fan_in as f32).sqrt();
    let draws = (0..n).map(|_| rng.random_range(-bound..bound));
    // Multiplying after the draw keeps scale 1 bit-identical to before.
    if scale == 1.0 {
        draws.collect()
    } else {
        draws.map(|v| v * scale).collect()
    }
}
