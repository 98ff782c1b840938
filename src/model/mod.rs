//! The network built from a checked [`Plan`]: candle-nn modules (and the
//! project's own ops where they are faster) in a list, parameters named
//! `layers.<index>.<tensor>` so that checkpoint keys are the layer list, and
//! one `forward_t(x, train)` shared by training and evaluation.

mod init;

use crate::arch::{ConvGeometry, LayerPlan, Op, Plan};
use crate::ops;
use crate::rng::{self, Rng};
use anyhow::{Context, Result};
use candle_core::{DType, Device, ModuleT, Tensor, Var};
use std::collections::HashMap;

/// Where a model's tensors come from.
pub enum Weights<'a> {
    /// Fresh, PyTorch-style initialisation from the seed.
    Init { seed: u64 },
    /// Named tensors, e.g. from a checkpoint (names `layers.<i>.<suffix>`).
    Tensors(&'a HashMap<String, Tensor>),
}

enum Layer {
    Conv {
        geom: ConvGeometry,
        weight: Tensor,
        bias: Option<Tensor>,
    },
    Linear {
        weight: Tensor,
        bias: Option<Tensor>,
    },
    BatchNorm(ops::BatchNormParams),
    MaxPool(crate::arch::PoolGeometry),
    AvgPool(crate::arch::PoolGeometry),
    Relu,
    LeakyRelu(f64),
    Sigmoid,
    Tanh,
    Gelu,
    Flatten,
    Dropout(f32),
    Softmax,
    LogSoftmax,
}

/// A network ready to run on one device.
pub struct Model {
    plan: Plan,
    layers: Vec<Layer>,
    /// Trainable tensors in layer order.
    params: Vec<(String, Var)>,
    /// Non-trainable state (batch-norm running statistics).
    buffers: Vec<(String, Var)>,
    device: Device,
    /// `fused[i]`: the layers after layer `i` that it applies itself (which
    /// are then skipped).
    fused: Vec<Fused>,
}

/// What a layer applies of the layers after it: conv, linear and batch norm
/// a ReLU that follows, batch norm also a 2×2 max pooling after that.
#[derive(Debug, Clone, Copy, Default)]
struct Fused {
    relu: bool,
    pool: Option<crate::arch::PoolGeometry>,
}

impl Fused {
    /// How many of the following layers this takes.
    fn layers(&self) -> usize {
        usize::from(self.relu) + usize::from(self.pool.is_some())
    }
}

impl Model {
    pub fn new(plan: &Plan, weights: Weights, device: &Device) -> Result<Model> {
        if let Weights::Tensors(map) = &weights {
            check_tensors(plan, map)?;
        }
        let mut init_rng = match weights {
            Weights::Init { seed } => Some(rng::stream(seed, rng::Purpose::Init, 0)),
            Weights::Tensors(_) => None,
        };
        let mut params = Vec::new();
        let mut buffers = Vec::new();
        let mut layers = Vec::with_capacity(plan.layers.len());
        for lp in &plan.layers {
            let mut get = |suffix: &str, dims: &[usize], trainable: bool| -> Result<Tensor> {
                let name = format!("layers.{}.{suffix}", lp.index);
                let t = match (&weights, init_rng.as_mut()) {
                    (Weights::Tensors(map), _) => {
                        map[&name].to_dtype(DType::F32)?.to_device(device)?
                    }
                    (Weights::Init { .. }, Some(r)) => init::tensor(lp, suffix, dims, r, device)?,
                    _ => unreachable!("init rng exists exactly when initialising"),
                };
                let var = Var::from_tensor(&t)?;
                let tensor = var.as_tensor().clone();
                if trainable {
                    params.push((name, var))
                } else {
                    buffers.push((name, var))
                }
                Ok(tensor)
            };
            layers.push(build_layer(lp, device, &mut get)?);
        }
        let fused = (0..layers.len())
            .map(|i| {
                let relu = matches!(layers.get(i + 1), Some(Layer::Relu));
                match &layers[i] {
                    Layer::Conv { .. } | Layer::Linear { .. } => Fused { relu, pool: None },
                    Layer::BatchNorm(_) => Fused {
                        relu,
                        pool: match layers.get(i + 1 + usize::from(relu)) {
                            Some(Layer::MaxPool(g)) if ops::fuses_into_batch_norm(g) => Some(*g),
                            _ => None,
                        },
                    },
                    _ => Fused::default(),
                }
            })
            .collect();
        Ok(Model {
            fused,
            plan: plan.clone(),
            layers,
            params,
            buffers,
            device: device.clone(),
        })
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }
    pub fn device(&self) -> &Device {
        &self.device
    }
    /// Trainable parameters, named.
    pub fn params(&self) -> &[(String, Var)] {
        &self.params
    }

    /// Every tensor of the model (parameters and buffers), named, for saving.
    pub fn tensors(&self) -> Vec<(String, Tensor)> {
        self.params
            .iter()
            .chain(&self.buffers)
            .map(|(n, v)| (n.clone(), v.as_detached_tensor()))
            .collect()
    }

    /// Whether a layer needs the whole batch at once (batch norm's
    /// statistics), so a batch cannot be split across threads.
    pub fn needs_whole_batch(&self) -> bool {
        self.layers.iter().any(|l| matches!(l, Layer::BatchNorm(_)))
    }

    /// Scores before a trailing softmax/log-softmax: what the loss and
    /// accuracy are computed from.
    pub fn logits(&self, xs: &Tensor, pass: Pass) -> Result<Tensor> {
        let end = self.plan.output_activation().unwrap_or(self.layers.len());
        self.run(xs, pass, end)
    }

    /// Class probabilities.
    pub fn probabilities(&self, xs: &Tensor) -> Result<Tensor> {
        Ok(candle_nn::ops::softmax_last_dim(
            &self.logits(xs, Pass::Eval)?,
        )?)
    }

    /// Outputs of every layer, for looking inside the network.
    pub fn activations(&self, xs: &Tensor) -> Result<Vec<Tensor>> {
        let mut out = Vec::with_capacity(self.layers.len());
        let mut x = xs.clone();
        for i in 0..self.layers.len() {
            x = self.apply_fused(i, &x, &mut Pass::Eval, Fused::default())?;
            out.push(x.clone());
        }
        Ok(out)
    }

    fn run(&self, xs: &Tensor, mut pass: Pass, end: usize) -> Result<Tensor> {
        let mut x = xs.clone();
        let mut i = 0;
        while i < end {
            let fuse = self.fused[i];
            let fuse = if i + fuse.layers() < end {
                fuse
            } else {
                Fused::default()
            };
            x = self
                .apply_fused(i, &x, &mut pass, fuse)
                .with_context(|| format!("in layer {} ({})", i, self.plan.layers[i].kind))?;
            i += 1 + fuse.layers();
        }
        Ok(x)
    }

    /// Layer `i`, and the layers after it that `fuse` names.
    fn apply_fused(&self, i: usize, x: &Tensor, pass: &mut Pass, fuse: Fused) -> Result<Tensor> {
        let train = matches!(pass, Pass::Train(_));
        let relu = fuse.relu;
        Ok(match &self.layers[i] {
            Layer::Conv { geom, weight, bias } => {
                ops::conv2d(x, weight, bias.as_ref(), geom, relu)?
            }
            Layer::Linear { weight, bias } => ops::linear(x, weight, bias.as_ref(), relu)?,
            Layer::BatchNorm(p) => match &fuse.pool {
                Some(g) => ops::batch_norm_max_pool(x, p, train, relu, g)?,
                None => ops::batch_norm(x, p, train, relu)?,
            },
            Layer::MaxPool(g) => ops::max_pool2d(x, g)?,
            Layer::AvgPool(g) => ops::avg_pool2d(x, g)?,
            Layer::Relu => x.relu()?,
            Layer::LeakyRelu(s) => candle_nn::ops::leaky_relu(x, *s)?,
            Layer::Sigmoid => candle_nn::ops::sigmoid(x)?,
            Layer::Tanh => x.tanh()?,
            Layer::Gelu => x.gelu_erf()?,
            Layer::Flatten => x.flatten_from(1)?,
            Layer::Dropout(p)
                if *p > 0.0
                    && let Pass::Train(rng) = pass =>
            {
                ops::dropout(x, *p, rng)?
            }
            Layer::Dropout(_) => x.clone(),
            Layer::Softmax => candle_nn::ops::softmax_last_dim(x)?,
            Layer::LogSoftmax => candle_nn::ops::log_softmax(x, candle_core::D::Minus1)?,
        })
    }
}

/// How a forward pass runs.
pub enum Pass<'a> {
    /// Evaluation: dropout off, batch norm on its running statistics.
    Eval,
    /// Training, with the generator dropout draws its masks from.
    Train(&'a mut Rng),
}

/// candle's module interface; training in this crate goes through
/// [`Model::logits`] with the step's generator, so `forward_t` in training
/// mode draws dropout masks from a fixed stream.
impl ModuleT for Model {
    fn forward_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let mut rng = rng::stream(0, rng::Purpose::Dropout, 0);
        let pass = if train {
            Pass::Train(&mut rng)
        } else {
            Pass::Eval
        };
        self.run(xs, pass, self.layers.len())
            .map_err(|e| candle_core::Error::Msg(format!("{e:#}")))
    }
}

fn build_layer(
    lp: &LayerPlan,
    device: &Device,
    get: &mut impl FnMut(&str, &[usize], bool) -> Result<Tensor>,
) -> Result<Layer> {
    let dims: HashMap<&str, Vec<usize>> = lp.tensors().into_iter().collect();
    let mut take = |suffix: &str, trainable: bool| get(suffix, &dims[suffix], trainable);
    Ok(match lp.op {
        Op::Conv(geom) => {
            ops::check_conv_supported(&geom, device)
                .with_context(|| format!("layer {} (conv2d)", lp.index))?;
            let weight = take("weight", true)?;
            let bias = if geom.bias {
                Some(take("bias", true)?)
            } else {
                None
            };
            Layer::Conv { geom, weight, bias }
        }
        Op::Linear { bias, .. } => {
            let w = take("weight", true)?;
            let b = if bias {
                Some(take("bias", true)?)
            } else {
                None
            };
            Layer::Linear { weight: w, bias: b }
        }
        Op::BatchNorm {
            features,
            eps,
            momentum,
            affine,
        } => {
            let (w, b) = if affine {
                (Some(take("weight", true)?), Some(take("bias", true)?))
            } else {
                (None, None)
            };
            let mean = take("running_mean", false)?;
            let var = take("running_var", false)?;
            Layer::BatchNorm(ops::BatchNormParams::new(
                features,
                w.zip(b),
                &mean,
                &var,
                eps,
                momentum,
            )?)
        }
        Op::MaxPool(g) => Layer::MaxPool(g),
        Op::AvgPool(g) => Layer::AvgPool(g),
        Op::Relu => Layer::Relu,
        Op::LeakyRelu(s) => Layer::LeakyRelu(s),
        Op::Sigmoid => Layer::Sigmoid,
        Op::Tanh => Layer::Tanh,
        Op::Gelu => Layer::Gelu,
        Op::Flatten => Layer::Flatten,
        Op::Dropout(p) => Layer::Dropout(p as f32),
        Op::Softmax => Layer::Softmax,
        Op::LogSoftmax => Layer::LogSoftmax,
    })
}

/// Compares a set of named tensors with what the plan needs; one error lists
/// every missing, unexpected and wrongly shaped tensor.
pub fn check_tensors(plan: &Plan, map: &HashMap<String, Tensor>) -> Result<()> {
    let mut missing = Vec::new();
    let mut wrong = Vec::new();
    let mut expected = std::collections::HashSet::new();
    for lp in &plan.layers {
        for (suffix, dims) in lp.tensors() {
            let name = format!("layers.{}.{suffix}", lp.index);
            match map.get(&name) {
                None => missing.push(format!("{name} {dims:?} (layer {} {})", lp.index, lp.kind)),
                Some(t) if t.dims() != dims.as_slice() => wrong.push(format!(
                    "{name}: file has {:?}, layer {} ({}) needs {dims:?}",
                    t.dims(),
                    lp.index,
                    lp.kind
                )),
                Some(_) => {}
            }
            expected.insert(name);
        }
    }
    let mut unexpected: Vec<String> = map
        .keys()
        .filter(|k| !expected.contains(*k))
        .map(|k| format!("{k} {:?}", map[k].dims()))
        .collect();
    unexpected.sort();
    if missing.is_empty() && wrong.is_empty() && unexpected.is_empty() {
        return Ok(());
    }
    let mut msg = String::from("the weights do not match the architecture:");
    for (title, list) in [
        ("missing", &missing),
        ("wrong shape", &wrong),
        ("unexpected", &unexpected),
    ] {
        if !list.is_empty() {
            msg.push_str(&format!("\n  {title} ({}):", list.len()));
            for item in list.iter() {
                msg.push_str(&format!("\n    {item}"));
            }
        }
    }
    Err(crate::input_error!("{msg}"))
}
