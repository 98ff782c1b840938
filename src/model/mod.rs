//! The network built from a checked [`Plan`]: every layer's tensors created
//! (from the seed, or taken from a checkpoint) on one device, named as the
//! plan names them (`layers.3.weight`), and one forward pass shared by
//! training and evaluation. What each layer computes lives in `layers`.

pub mod whiten;

use crate::arch::Plan;
pub use crate::layers::walk;
use crate::layers::{self, Node, Op, Pass};
use crate::rng;
use anyhow::Result;
use candle_core::{DType, Device, Tensor, Var};
use std::collections::{BTreeSet, HashMap};

/// Where a model's tensors come from.
pub enum Weights<'a> {
    /// Fresh, PyTorch-style initialisation from the seed.
    Init { seed: u64 },
    /// Named tensors, e.g. from a checkpoint (names `layers.<i>.<suffix>`).
    Tensors(&'a HashMap<String, Tensor>),
}

/// A network ready to run on one device.
pub struct Model {
    plan: Plan,
    /// Every tensor in checkpoint order, named, and whether it is a
    /// parameter (else a buffer).
    vars: Vec<(String, Var, bool)>,
    /// What the forward pass reads, in the same order: the variables, with
    /// frozen parameters detached so that no gradient is computed for them.
    tensors: Vec<Tensor>,
    /// Parameters in checkpoint order, frozen ones included.
    params: Vec<(String, Var)>,
    /// Non-trainable state (batch-norm running statistics, a fixed scale).
    buffers: Vec<(String, Var)>,
    /// Parameters the optimizer leaves alone now: those of layers with
    /// `trainable: false`, and any frozen for a while (`training.freeze`).
    frozen: BTreeSet<String>,
    /// Batch norms keep their running statistics in training too.
    bn_stats_frozen: bool,
    device: Device,
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
        let mut model = Model {
            plan: plan.clone(),
            vars: Vec::new(),
            tensors: Vec::new(),
            params: Vec::new(),
            buffers: Vec::new(),
            frozen: BTreeSet::new(),
            bn_stats_frozen: false,
            device: device.clone(),
        };
        let mut failure = None;
        walk(&plan.layers, &mut |node| {
            if failure.is_none()
                && let Err(e) = node.op.run().check_device(device)
            {
                failure = Some(e.context(format!("layer {} ({})", node.index, node.kind)));
            }
        });
        if let Some(e) = failure {
            return Err(e);
        }
        for node in &plan.layers {
            for (name, spec) in node.tensors() {
                let t = match (&weights, init_rng.as_mut()) {
                    (Weights::Tensors(map), _) => {
                        map[&name].to_dtype(DType::F32)?.to_device(device)?
                    }
                    (Weights::Init { .. }, Some(r)) => spec.fresh(r, device)?,
                    _ => unreachable!("init rng exists exactly when initialising"),
                };
                let var = Var::from_tensor(&t)?;
                model.vars.push((name.clone(), var.clone(), spec.trainable));
                if spec.trainable {
                    model.params.push((name, var));
                } else {
                    model.buffers.push((name, var));
                }
            }
        }
        model.set_frozen(&BTreeSet::new());
        Ok(model)
    }

    /// Freezes the parameters named in `extra` besides those of layers with
    /// `trainable: false` (and unfreezes any others).
    /// Batch norms normalise by their running statistics in training too,
    /// and never update them (`training.fine_tune.freeze_bn_stats`).
    pub fn set_bn_stats_frozen(&mut self, frozen: bool) {
        self.bn_stats_frozen = frozen;
    }

    pub fn set_frozen(&mut self, extra: &BTreeSet<String>) {
        let mut frozen = extra.clone();
        walk(&self.plan.layers, &mut |node| {
            if node.frozen {
                for t in node.op.run().tensors() {
                    frozen.insert(format!("{}.{}", node.path, t.name));
                }
            }
        });
        self.tensors = self
            .vars
            .iter()
            .map(|(name, var, param)| {
                if *param && frozen.contains(name) {
                    var.as_detached_tensor()
                } else {
                    var.as_tensor().clone()
                }
            })
            .collect();
        // Only parameters: a frozen batch norm's running statistics still
        // move in training (as PyTorch's), and the EMA follows them.
        frozen.retain(|name| self.params.iter().any(|(n, _)| n == name));
        self.frozen = frozen;
    }

    /// Whether the optimizer leaves the parameter `name` alone now.
    pub fn is_frozen(&self, name: &str) -> bool {
        self.frozen.contains(name)
    }

    /// The parameters the optimizer trains now.
    pub fn trainable(&self) -> impl Iterator<Item = &(String, Var)> {
        self.params.iter().filter(|(n, _)| !self.frozen.contains(n))
    }

    /// Sets the tensors named in `values` to those values (of the same
    /// shapes); the others keep theirs.
    pub fn assign(&self, values: &HashMap<String, Tensor>) -> Result<()> {
        for (name, var, _) in &self.vars {
            if let Some(t) = values.get(name) {
                var.set(&t.to_dtype(DType::F32)?.to_device(&self.device)?)?;
            }
        }
        Ok(())
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

    /// Every tensor's variable in checkpoint order, named.
    pub fn vars(&self) -> impl Iterator<Item = (&str, &Var)> {
        self.vars.iter().map(|(n, v, _)| (n.as_str(), v))
    }

    /// Whether a layer needs the whole batch at once (batch norm's
    /// statistics), so a batch cannot be split across threads.
    pub fn needs_whole_batch(&self) -> bool {
        let mut found = false;
        walk(&self.plan.layers, &mut |n| {
            found |= matches!(n.op, Op::BatchNorm1d(_) | Op::BatchNorm2d(_));
        });
        found
    }

    /// Scores before a trailing softmax/log-softmax: what the loss and
    /// accuracy are computed from.
    pub fn logits(&self, xs: &Tensor, pass: Pass) -> Result<Tensor> {
        let mut pass = pass
            .in_precision(self.plan.precision)
            .with_bn_stats_frozen(self.bn_stats_frozen);
        let end = self
            .plan
            .output_activation()
            .unwrap_or(self.plan.layers.len());
        if pass.is_train() {
            return layers::run_list(&self.plan.layers, &self.tensors, xs, &mut pass, end);
        }
        // Evaluation takes no gradient: with the variables detached, no op
        // records its inputs, so each layer's output is freed once the next
        // layer has read it instead of living until the batch is done.
        let detached: Vec<Tensor> = self.tensors.iter().map(Tensor::detach).collect();
        layers::run_list(&self.plan.layers, &detached, xs, &mut pass, end)
    }

    /// Class probabilities.
    pub fn probabilities(&self, xs: &Tensor) -> Result<Tensor> {
        Ok(candle_nn::ops::softmax_last_dim(
            &self.logits(xs, Pass::eval())?,
        )?)
    }

    /// The output of every layer for `xs`, inside blocks too, in the order
    /// they run: for looking inside the network.
    pub fn activations(&self, xs: &Tensor) -> Result<Vec<(Node, Tensor)>> {
        let mut out = Vec::new();
        let mut keep = |node: &Node, y: &Tensor| out.push((node.clone(), y.clone()));
        let n = self.plan.layers.len();
        layers::run_list(
            &self.plan.layers,
            &self.tensors,
            xs,
            &mut Pass::observed(&mut keep).in_precision(self.plan.precision),
            n,
        )?;
        Ok(out)
    }
}

/// Compares a set of named tensors with what the plan needs; one error lists
/// every missing, unexpected and wrongly shaped tensor.
pub fn check_tensors(plan: &Plan, map: &HashMap<String, Tensor>) -> Result<()> {
    let mut missing = Vec::new();
    let mut wrong = Vec::new();
    let mut expected = std::collections::HashSet::new();
    for node in &plan.layers {
        for (name, spec) in node.tensors() {
            let dims = &spec.dims;
            match map.get(&name) {
                None => missing.push(format!(
                    "{name} {dims:?} (layer {} {})",
                    node.index, node.kind
                )),
                Some(t) if t.dims() != dims.as_slice() => wrong.push(format!(
                    "{name}: file has {:?}, layer {} ({}) needs {dims:?}",
                    t.dims(),
                    node.index,
                    node.kind
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
    Err(mismatch(
        "the weights do not match the architecture:",
        &missing,
        &wrong,
        &unexpected,
    ))
}

/// One message listing every tensor that is missing, of the wrong shape or
/// unexpected (each list with its count, empty lists left out).
pub(crate) fn mismatch(
    heading: &str,
    missing: &[String],
    wrong: &[String],
    unexpected: &[String],
) -> anyhow::Error {
    let mut msg = heading.to_string();
    for (title, list) in [
        ("missing", missing),
        ("wrong shape", wrong),
        ("unexpected", unexpected),
    ] {
        if !list.is_empty() {
            msg.push_str(&format!("\n  {title} ({}):", list.len()));
            for item in list {
                msg.push_str(&format!("\n    {item}"));
            }
        }
    }
    crate::input_error!("{msg}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn init_weights(conv_init: serde_json::Value, init_scale: f64) -> HashMap<String, Vec<f32>> {
        let config = Config::from_value(serde_json::json!({
            "input_shape": [3, 8, 8], "num_classes": 4,
            "layers": [
                {"type": "conv2d", "out_channels": 5, "kernel_size": 3, "padding": 1,
                 "init": conv_init},
                {"type": "conv2d", "out_channels": 2, "kernel_size": [3, 2], "padding": 1,
                 "init": conv_init},
                {"type": "flatten"},
                {"type": "linear", "out_features": 4, "init_scale": init_scale}
            ]
        }))
        .unwrap();
        let plan = crate::arch::plan(&config).unwrap();
        let model = Model::new(&plan, Weights::Init { seed: 3 }, &Device::Cpu).unwrap();
        model
            .tensors()
            .into_iter()
            .map(|(n, t)| (n, t.flatten_all().unwrap().to_vec1().unwrap()))
            .collect()
    }

    /// `dirac` makes the first min(out, in) filters pass their own channel
    /// through (one at the centre tap) and leaves the other filters, and
    /// everything drawn after them, as PyTorch's init draws them;
    /// `init_scale` multiplies a linear layer's weight and nothing else.
    #[test]
    fn dirac_init_and_init_scale_change_only_what_they_name() {
        let base = init_weights(serde_json::json!({"type": "default"}), 1.0);
        let new = init_weights(serde_json::json!({"type": "dirac"}), 0.25);
        // Layer 0: weight [5, 3, 3, 3]; filters 0..3 are identities.
        let w = &new["layers.0.weight"];
        for o in 0..5 {
            let f = &w[o * 27..][..27];
            if o < 3 {
                for (i, &v) in f.iter().enumerate() {
                    let centre = i == o * 9 + 4;
                    assert_eq!(v, if centre { 1.0 } else { 0.0 }, "filter {o}, tap {i}");
                }
            } else {
                assert_eq!(f, &base["layers.0.weight"][o * 27..][..27], "filter {o}");
            }
        }
        // Layer 1: weight [2, 5, 3, 2], more inputs than filters: both are
        // identities, centre at (1, 1) as torch.nn.init.dirac_ puts it.
        let w = &new["layers.1.weight"];
        for o in 0..2 {
            for (i, &v) in w[o * 30..][..30].iter().enumerate() {
                assert_eq!(v, if i == o * 6 + 3 { 1.0 } else { 0.0 }, "layer 1 {o} {i}");
            }
        }
        for name in ["layers.0.bias", "layers.1.bias", "layers.3.bias"] {
            assert_eq!(new[name], base[name], "{name}");
        }
        let scaled: Vec<f32> = base["layers.3.weight"].iter().map(|v| v * 0.25).collect();
        assert_eq!(new["layers.3.weight"], scaled);
    }

    /// Evaluation folds a batch norm into the convolution before it; the
    /// layer-by-layer pass (which fuses nothing) is the reference.
    #[test]
    fn batch_norm_folded_into_its_convolution_computes_the_same() {
        let config = Config::from_value(serde_json::json!({
            "input_shape": [3, 9, 9], "num_classes": 5,
            "layers": [
                {"type": "conv2d", "out_channels": 6, "kernel_size": 3, "padding": 1},
                {"type": "batch_norm2d"},
                {"type": "relu"},
                {"type": "max_pool2d", "kernel_size": 2},
                {"type": "conv2d", "out_channels": 7, "kernel_size": 3, "padding": 1, "bias": false,
                 "padding_mode": "reflect"},
                {"type": "batch_norm2d", "affine": false, "eps": 0.01},
                {"type": "conv2d", "out_channels": 5, "kernel_size": 1, "stride": 2},
                {"type": "batch_norm2d", "fixed_scale": true},
                {"type": "gelu"},
                {"type": "residual", "layers": [
                    {"type": "conv2d", "out_channels": 5, "kernel_size": 3, "padding": 1, "bias": false},
                    {"type": "batch_norm2d"}
                ], "activation": "relu"},
                {"type": "flatten"},
                {"type": "linear", "out_features": 5}
            ]
        }))
        .unwrap();
        let plan = crate::arch::plan(&config).unwrap();
        let model = Model::new(&plan, Weights::Init { seed: 3 }, &Device::Cpu).unwrap();
        // Statistics and affine parameters far from their initial values.
        use rand::{Rng as _, SeedableRng as _};
        let mut rng = crate::rng::Rng::seed_from_u64(11);
        let values: HashMap<String, Tensor> = model
            .tensors()
            .into_iter()
            .map(|(name, t)| {
                let n = t.elem_count();
                let v: Vec<f32> = (0..n)
                    .map(|_| {
                        let u: f32 = rng.random();
                        if name.ends_with("running_var") {
                            0.2 + 2.0 * u
                        } else if name.ends_with("weight") && t.rank() == 1 {
                            0.5 + u
                        } else if t.rank() == 1 {
                            2.0 * u - 1.0
                        } else {
                            (2.0 * u - 1.0) * 0.5
                        }
                    })
                    .collect();
                let v = Tensor::from_vec(v, t.dims(), &Device::Cpu).unwrap();
                (name, v)
            })
            .collect();
        model.assign(&values).unwrap();
        let xs = Tensor::randn(0f32, 1.0, (4, 3, 9, 9), &Device::Cpu).unwrap();
        let folded: Vec<f32> = model
            .logits(&xs, Pass::eval())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let layered = model.activations(&xs).unwrap();
        let reference: Vec<f32> = layered
            .last()
            .unwrap()
            .1
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(folded.len(), reference.len());
        let scale = reference.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(scale > 0.1, "outputs too small to compare: {reference:?}");
        for (a, b) in folded.iter().zip(&reference) {
            assert!((a - b).abs() <= 1e-5 * scale.max(1.0) + 1e-5, "{a} vs {b}");
        }
    }
}
