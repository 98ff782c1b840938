//! Optimizers with state that can be saved and restored: SGD (momentum,
//! Nesterov, weight decay), Adam and AdamW, following PyTorch's update rules
//! so results can be compared one to one. candle-nn's AdamW keeps its moments
//! private and its SGD has no momentum, hence these.

use crate::arch::Plan;
use crate::config::{OptimizerConfig, ParamGroup, Rule, TrainingConfig};
use crate::layers::{KINDS, walk};
use anyhow::Result;
use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use std::collections::HashMap;

/// Per-parameter state tensors, named as in PyTorch's state_dict.
#[derive(Default)]
struct Slot {
    exp_avg: Option<Tensor>,
    exp_avg_sq: Option<Tensor>,
    momentum_buffer: Option<Tensor>,
    /// Updates of this parameter (PyTorch's per-parameter `step`): fewer
    /// than the run's steps when it was frozen for a while.
    steps: u64,
}

/// How one parameter is updated: its group's rate multiplier and rule.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Setting {
    lr_scale: f64,
    rule: Rule,
}

impl Rule {
    /// The same rule with another weight decay.
    fn with_weight_decay(self, wd: f64) -> Rule {
        match self {
            Rule::Sgd {
                momentum,
                dampening,
                nesterov,
                ..
            } => Rule::Sgd {
                momentum,
                dampening,
                nesterov,
                weight_decay: wd,
            },
            Rule::Adam {
                beta1,
                beta2,
                eps,
                decoupled,
                ..
            } => Rule::Adam {
                beta1,
                beta2,
                eps,
                weight_decay: wd,
                decoupled,
            },
        }
    }
}

/// The hyper-parameters of one update.
struct Step {
    rule: Rule,
    lr: f64,
    /// 1-based step number (for Adam's bias correction).
    t: u64,
}

impl Step {
    /// Adam's bias corrections `(1 - β1^t, 1 - β2^t)`.
    fn bias_corrections(&self, beta1: f64, beta2: f64) -> (f64, f64) {
        let t = self.t.min(i32::MAX as u64) as i32;
        (1.0 - beta1.powi(t), 1.0 - beta2.powi(t))
    }

    /// Updates `theta` and the slot's state in place (the CPU's kernels,
    /// or a GPU's, f32): no new tensors after the first step.
    fn in_place(&self, theta: &Tensor, grad: &Tensor, slot: &mut Slot) -> Result<()> {
        use crate::ops::inplace::{Kernel, update};
        let lr = self.lr as f32;
        match self.rule {
            Rule::Sgd {
                momentum,
                dampening,
                nesterov,
                weight_decay,
            } => {
                let (mu, wd) = (momentum as f32, weight_decay as f32);
                if momentum == 0.0 {
                    update(theta, grad, grad, Kernel::SgdPlain { lr, wd })?;
                    return Ok(());
                }
                let buf = match &slot.momentum_buffer {
                    // The first buffer is the gradient itself, as in PyTorch.
                    None => (grad + (theta * weight_decay)?)?,
                    Some(b) => {
                        let keep = 1.0 - dampening as f32;
                        update(b, grad, theta, Kernel::SgdBuffer { mu, keep, wd })?;
                        b.clone()
                    }
                };
                let kernel = Kernel::SgdTheta {
                    lr,
                    mu,
                    wd,
                    nesterov,
                };
                update(theta, &buf, grad, kernel)?;
                slot.momentum_buffer = Some(buf);
            }
            Rule::Adam {
                beta1,
                beta2,
                eps,
                weight_decay,
                decoupled,
            } => {
                let (b1, b2, eps) = (beta1 as f32, beta2 as f32, eps as f32);
                let l2 = if decoupled { 0.0 } else { weight_decay as f32 };
                let shrink = if decoupled {
                    (1.0 - self.lr * weight_decay) as f32
                } else {
                    1.0
                };
                let m = match &slot.exp_avg {
                    Some(m) => m.clone(),
                    None => theta.zeros_like()?,
                };
                let v = match &slot.exp_avg_sq {
                    Some(v) => v.clone(),
                    None => theta.zeros_like()?,
                };
                update(&m, grad, theta, Kernel::AdamM { beta1: b1, l2 })?;
                update(&v, grad, theta, Kernel::AdamV { beta2: b2, l2 })?;
                let (bc1, bc2) = self.bias_corrections(beta1, beta2);
                let step_size = (self.lr / bc1) as f32;
                let bc2_sqrt = bc2.sqrt() as f32;
                let kernel = Kernel::AdamTheta {
                    shrink,
                    step_size,
                    bc2_sqrt,
                    eps,
                };
                update(theta, &m, &v, kernel)?;
                slot.exp_avg = Some(m);
                slot.exp_avg_sq = Some(v);
            }
        }
        Ok(())
    }

    /// The new value of `theta` from tensor ops (any device).
    fn with_tensors(&self, theta: &Tensor, grad: &Tensor, slot: &mut Slot) -> Result<Tensor> {
        let lr = self.lr;
        Ok(match self.rule {
            Rule::Sgd {
                momentum,
                dampening,
                nesterov,
                weight_decay,
            } => {
                let mut g = if weight_decay > 0.0 {
                    (grad + (theta * weight_decay)?)?
                } else {
                    grad.clone()
                };
                if momentum > 0.0 {
                    let buf = match slot.momentum_buffer.take() {
                        None => g.clone(),
                        Some(b) => ((b * momentum)? + (&g * (1.0 - dampening))?)?,
                    };
                    g = if nesterov {
                        (&g + (&buf * momentum)?)?
                    } else {
                        buf.clone()
                    };
                    slot.momentum_buffer = Some(buf);
                }
                (theta - (g * lr)?)?
            }
            Rule::Adam {
                beta1,
                beta2,
                eps,
                weight_decay,
                decoupled,
            } => {
                let mut theta = theta.clone();
                let g = if weight_decay > 0.0 && !decoupled {
                    (grad + (&theta * weight_decay)?)?
                } else {
                    grad.clone()
                };
                if weight_decay > 0.0 && decoupled {
                    theta = (theta * (1.0 - lr * weight_decay))?;
                }
                let m = match slot.exp_avg.take() {
                    None => (&g * (1.0 - beta1))?,
                    Some(m) => ((m * beta1)? + (&g * (1.0 - beta1))?)?,
                };
                let v = match slot.exp_avg_sq.take() {
                    None => (g.sqr()? * (1.0 - beta2))?,
                    Some(v) => ((v * beta2)? + (g.sqr()? * (1.0 - beta2))?)?,
                };
                let (bc1, bc2) = self.bias_corrections(beta1, beta2);
                let denom = ((v.sqrt()? / bc2.sqrt())? + eps)?;
                let update = ((&m / denom)? * (lr / bc1))?;
                slot.exp_avg = Some(m);
                slot.exp_avg_sq = Some(v);
                (theta - update)?
            }
        })
    }
}

pub struct Optimizer {
    lr: f64,
    /// Number of steps taken.
    step: u64,
    params: Vec<(String, Var)>,
    slots: Vec<Slot>,
    /// Per parameter, from `training.param_groups`.
    settings: Vec<Setting>,
}

impl Optimizer {
    /// One rule for every parameter.
    pub fn new(params: Vec<(String, Var)>, config: &OptimizerConfig) -> Result<Self> {
        let rule = config.rule()?;
        let slots = params.iter().map(|_| Slot::default()).collect();
        let settings = params
            .iter()
            .map(|_| Setting {
                lr_scale: 1.0,
                rule,
            })
            .collect();
        Ok(Optimizer {
            lr: config.lr,
            step: 0,
            params,
            slots,
            settings,
        })
    }

    /// The optimizer of a training run: every parameter of `plan` (the
    /// frozen ones get no gradient and so no update), each with the
    /// settings of the first of `training.param_groups` that selects it.
    pub fn for_run(
        plan: &Plan,
        params: Vec<(String, Var)>,
        training: &TrainingConfig,
    ) -> Result<Self> {
        let mut optim = Optimizer::new(params, &training.optimizer)?;
        let base = training.optimizer.rule()?;
        let param_groups = param_groups(training, plan);
        let groups = assign_groups(plan, &param_groups)?;
        for ((name, _), setting) in optim.params.iter().zip(optim.settings.iter_mut()) {
            if let Some(&g) = groups.get(name) {
                let group = &param_groups[g];
                *setting = Setting {
                    lr_scale: group.lr_scale,
                    rule: group
                        .weight_decay
                        .map_or(base, |wd| base.with_weight_decay(wd)),
                };
            }
        }
        Ok(optim)
    }

    #[cfg(test)]
    pub fn steps(&self) -> u64 {
        self.step
    }
    pub fn lr(&self) -> f64 {
        self.lr
    }
    pub fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }

    /// Backpropagates `loss` and applies one update.
    #[cfg(test)]
    pub fn backward_step(&mut self, loss: &Tensor) -> Result<()> {
        use anyhow::Context;
        let grads = loss.backward().context("computing gradients")?;
        self.apply(&grads)
    }

    /// One update from computed gradients.
    pub fn apply(&mut self, grads: &GradStore) -> Result<()> {
        self.apply_with(grads, true)
    }

    /// One update; `fused` allows the in-place CPU path (tests compare it
    /// with the tensor-op path that other devices take).
    fn apply_with(&mut self, grads: &GradStore, fused: bool) -> Result<()> {
        self.step += 1;
        for (((_, var), slot), setting) in self
            .params
            .iter()
            .zip(self.slots.iter_mut())
            .zip(&self.settings)
        {
            let Some(grad) = grads.get(var.as_tensor()) else {
                continue;
            };
            slot.steps += 1;
            let hp = Step {
                rule: setting.rule,
                lr: self.lr * setting.lr_scale,
                t: slot.steps,
            };
            let theta = var.as_tensor();
            if fused && crate::ops::inplace::available(theta) {
                hp.in_place(theta, grad, slot)?;
            } else {
                var.set(&hp.with_tensors(theta, grad, slot)?)?;
            }
        }
        Ok(())
    }

    /// State tensors named `optim.<param>.<exp_avg|exp_avg_sq|momentum_buffer>`,
    /// and `optim.<param>.step`, the parameter's update count as an f32
    /// scalar (as PyTorch keeps it).
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for ((name, var), slot) in self.params.iter().zip(&self.slots) {
            for (key, t) in [
                ("exp_avg", &slot.exp_avg),
                ("exp_avg_sq", &slot.exp_avg_sq),
                ("momentum_buffer", &slot.momentum_buffer),
            ] {
                if let Some(t) = t {
                    out.push((format!("optim.{name}.{key}"), t.clone()));
                }
            }
            if slot.steps > 0
                && let Ok(t) = Tensor::new(slot.steps as f32, var.device())
            {
                out.push((format!("optim.{name}.step"), t));
            }
        }
        out
    }

    /// The state tensors a run of `step` steps must have saved, by name,
    /// and the first of them missing from `tensors`. A parameter that was
    /// never updated (frozen so far) has none; one that was has its
    /// `optim.<param>.step`. With no optimizer tensor at all, every
    /// parameter's state is missing.
    pub fn missing_state(&self, tensors: &HashMap<String, Tensor>, step: u64) -> Option<String> {
        if step == 0 {
            return None;
        }
        let none_saved = !tensors.keys().any(|k| k.starts_with("optim."));
        self.params
            .iter()
            .zip(&self.settings)
            .filter(|((name, _), _)| {
                none_saved || tensors.contains_key(&format!("optim.{name}.step"))
            })
            .find_map(|((name, _), setting)| {
                let keys: &[&str] = match setting.rule {
                    Rule::Adam { .. } => &["exp_avg", "exp_avg_sq"],
                    Rule::Sgd { momentum, .. } if momentum > 0.0 => &["momentum_buffer"],
                    Rule::Sgd { .. } => &["step"],
                };
                keys.iter()
                    .map(|k| format!("optim.{name}.{k}"))
                    .find(|full| !tensors.contains_key(full))
            })
    }

    /// Restores the state saved by [`Optimizer::state_tensors`] and the step count.
    pub fn load_state(&mut self, tensors: &HashMap<String, Tensor>, step: u64) -> Result<()> {
        let device = self.params.first().map(|(_, v)| v.device().clone());
        for ((name, var), slot) in self.params.iter().zip(self.slots.iter_mut()) {
            let get = |key: &str| -> Result<Option<Tensor>> {
                let full = format!("optim.{name}.{key}");
                match tensors.get(&full) {
                    None => Ok(None),
                    Some(t) if t.dims() != var.dims() => crate::bail_input!(
                        "optimizer state {full} has shape {:?} but the parameter has {:?}",
                        t.dims(),
                        var.dims()
                    ),
                    Some(t) => Ok(Some(t.to_device(device.as_ref().expect("has params"))?)),
                }
            };
            slot.exp_avg = get("exp_avg")?;
            slot.exp_avg_sq = get("exp_avg_sq")?;
            slot.momentum_buffer = get("momentum_buffer")?;
            let key = format!("optim.{name}.step");
            slot.steps = match tensors.get(&key) {
                Some(t) => {
                    let v = t
                        .to_dtype(candle_core::DType::F32)
                        .and_then(|t| t.to_scalar::<f32>())
                        .map_err(|_| {
                            crate::input_error!(
                                "optimizer state {key} must be one number, not a tensor of shape {:?}",
                                t.dims()
                            )
                        })?;
                    if !(v.is_finite() && v >= 0.0 && v.fract() == 0.0) {
                        crate::bail_input!(
                            "optimizer state {key} is {v}; it must be a whole number of steps"
                        );
                    }
                    v as u64
                }
                // Written before each parameter kept its own count: every
                // parameter with state was updated at every step.
                None if slot.exp_avg.is_some() || slot.momentum_buffer.is_some() => step,
                None => 0,
            };
        }
        self.step = step;
        Ok(())
    }
}

/// Checks `training.param_groups` against `plan` (before a run starts).
pub fn check_groups(plan: &Plan, groups: &[ParamGroup]) -> Result<()> {
    assign_groups(plan, groups).map(|_| ())
}

/// Which of `groups` each parameter of `plan` belongs to: the first whose
/// selectors all match. Every selector must name something that exists,
/// and every group must select a parameter; messages name the group.
fn assign_groups(plan: &Plan, groups: &[ParamGroup]) -> Result<HashMap<String, usize>> {
    // Every parameter with its layer's path and kind and its own name.
    let mut params: Vec<(String, String, &'static str, &'static str)> = Vec::new();
    walk(&plan.layers, &mut |node| {
        for t in node.op.run().tensors() {
            if t.trainable {
                params.push((
                    format!("{}.{}", node.path, t.name),
                    node.path.clone(),
                    node.kind,
                    t.name,
                ));
            }
        }
    });
    let mut out = HashMap::new();
    for (i, g) in groups.iter().enumerate() {
        let field = format!("training.param_groups.{i}");
        let layers: Option<Vec<String>> = match &g.layers {
            None => None,
            Some(list) => Some(
                list.iter()
                    .map(|l| match plan.find(l) {
                        Some(node) => Ok(node.path.clone()),
                        None => Err(crate::input_error!(
                            "{field}.layers: the network has no layer {l}; its layers are {}",
                            plan.layer_paths()
                        )),
                    })
                    .collect::<Result<_>>()?,
            ),
        };
        let kinds: Option<Vec<&str>> = match &g.kinds {
            None => None,
            Some(list) => Some(
                list.iter()
                    .map(|k| {
                        KINDS
                            .iter()
                            .find(|kind| kind.name == k || kind.aliases.contains(&k.as_str()))
                            .map(|kind| kind.name)
                            .ok_or_else(|| {
                                crate::input_error!(
                                    "{field}.kinds: unknown layer kind \"{k}\"; expected one of: {}",
                                    crate::layers::type_names().join(", ")
                                )
                            })
                    })
                    .collect::<Result<_>>()?,
            ),
        };
        let (mut matched, mut taken) = (0, 0);
        for (name, path, kind, tensor) in &params {
            let in_layer = layers.as_ref().is_none_or(|ls| {
                ls.iter()
                    .any(|l| path == l || path.starts_with(&format!("{l}.")))
            });
            let of_kind = kinds.as_ref().is_none_or(|ks| ks.contains(kind));
            let named = g
                .tensors
                .as_ref()
                .is_none_or(|ts| ts.iter().any(|t| t == tensor));
            if in_layer && of_kind && named {
                matched += 1;
                if let std::collections::hash_map::Entry::Vacant(e) = out.entry(name.clone()) {
                    e.insert(i);
                    taken += 1;
                }
            }
        }
        if matched > 0 && taken == 0 {
            crate::bail_input!(
                "{field} selects only parameters that earlier groups already took (a parameter belongs to \
                 the first group that selects it), so it would change nothing; put it before them, \
                 narrow the earlier groups, or remove it"
            );
        }
        if matched == 0 {
            crate::bail_input!(
                "{field} selects no parameter of this network (its layers, kinds and tensors must all \
                 match one; batch norm with affine false has none, and running statistics are not \
                 parameters); correct the selectors or remove the group"
            );
        }
    }
    Ok(out)
}

/// `training.fine_tune`'s split of the top-level layers with parameters:
/// the paths of those before the head, and the head's.
pub(crate) fn fine_tune_layers(plan: &Plan) -> (Vec<String>, Option<String>) {
    let mut with: Vec<String> = plan
        .layers
        .iter()
        .filter(|n| n.params > 0)
        .map(|n| n.index.to_string())
        .collect();
    let head = with.pop();
    (with, head)
}

/// The parameter groups in effect: `training.param_groups`, or those of
/// `training.fine_tune` (each top-level layer before the head at the rate
/// times `lr_ratio^(d/K)`, d its distance from the head and K the first
/// layer's).
pub fn param_groups(
    training: &crate::config::TrainingConfig,
    plan: &Plan,
) -> Vec<crate::config::ParamGroup> {
    let Some(f) = training.fine_tune else {
        return training.param_groups.clone();
    };
    let (body, _) = fine_tune_layers(plan);
    let k = body.len() as f64;
    body.iter()
        .enumerate()
        .map(|(i, layer)| crate::config::ParamGroup {
            layers: Some(vec![layer.clone()]),
            kinds: None,
            tensors: None,
            lr_scale: f.lr_ratio.powf((k - i as f64) / k),
            weight_decay: None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::OptimizerKind;
    use candle_core::Device;

    fn run(config: OptimizerConfig, steps: usize) -> Vec<f32> {
        // Minimise 0.5 * |x|^2 from x = [1, -2]; the gradient is x itself.
        let x = Var::new(&[1.0f32, -2.0], &Device::Cpu).unwrap();
        let mut opt = Optimizer::new(vec![("x".into(), x.clone())], &config).unwrap();
        for _ in 0..steps {
            let loss = (x.as_tensor().sqr().unwrap().sum_all().unwrap() * 0.5).unwrap();
            opt.backward_step(&loss).unwrap();
        }
        x.as_tensor().to_vec1().unwrap()
    }

    fn close(a: &[f32], b: &[f32]) {
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-5, "{a:?} vs {b:?}");
        }
    }

    // PyTorch's documented update for
    //   torch.optim.SGD([x], lr=0.1, momentum=0.9, nesterov=True), 3 steps on 0.5*|x|^2
    // worked by hand (the gradient is x, so every value is a multiple of x0):
    #[test]
    fn sgd_nesterov_matches_pytorch() {
        let cfg = OptimizerConfig {
            kind: OptimizerKind::Sgd,
            lr: 0.1,
            momentum: Some(0.9),
            nesterov: Some(true),
            ..Default::default()
        };
        // g0=x0, buf=g0, step=g0+0.9buf=1.9x0 → x1=0.81x0;
        // g1=0.81x0, buf=0.9x0+0.81x0=1.71x0, step=0.81x0+1.539x0=2.349x0 → x2=0.5751x0;
        // g2=0.5751x0, buf=1.539x0+0.5751x0=2.1141x0, step=0.5751x0+1.90269x0=2.47779x0 → x3=0.327321x0.
        close(&run(cfg, 3), &[0.327321, -0.654642]);
    }

    // Adam's first step moves every coordinate by lr (m̂/√v̂ = sign(g)).
    #[test]
    fn adam_first_steps_match_closed_form() {
        let cfg = OptimizerConfig {
            lr: 0.01,
            ..Default::default()
        };
        close(&run(cfg, 1), &[0.99, -1.99]);
    }

    #[test]
    fn adamw_needs_explicit_weight_decay() {
        let cfg = OptimizerConfig {
            kind: OptimizerKind::AdamW,
            ..Default::default()
        };
        let err = cfg.rule().unwrap_err();
        assert!(
            format!("{err}").contains("weight_decay must be given for adamw"),
            "{err}"
        );
    }

    #[test]
    fn foreign_fields_are_refused() {
        let cfg = OptimizerConfig {
            momentum: Some(0.9),
            ..Default::default()
        };
        let err = cfg.rule().unwrap_err();
        assert!(
            format!("{err}").contains("momentum applies to sgd only"),
            "{err}"
        );
    }

    /// The in-place CPU path and the tensor-op path (other devices) agree.
    #[test]
    fn fused_and_tensor_updates_agree() {
        let configs = [
            OptimizerConfig::default(),
            OptimizerConfig {
                weight_decay: Some(0.1),
                ..Default::default()
            },
            OptimizerConfig {
                kind: OptimizerKind::AdamW,
                weight_decay: Some(0.05),
                ..Default::default()
            },
            OptimizerConfig {
                kind: OptimizerKind::Sgd,
                lr: 0.1,
                ..Default::default()
            },
            OptimizerConfig {
                kind: OptimizerKind::Sgd,
                lr: 0.1,
                momentum: Some(0.9),
                dampening: Some(0.3),
                weight_decay: Some(0.01),
                ..Default::default()
            },
            OptimizerConfig {
                kind: OptimizerKind::Sgd,
                lr: 0.1,
                momentum: Some(0.8),
                nesterov: Some(true),
                weight_decay: Some(0.01),
                ..Default::default()
            },
        ];
        for cfg in configs {
            let run = |fused: bool| {
                let x = Var::new(&[1.0f32, -2.0, 0.5], &Device::Cpu).unwrap();
                let mut opt = Optimizer::new(vec![("x".into(), x.clone())], &cfg).unwrap();
                for _ in 0..5 {
                    // A gradient that is not just x: 0.5|x|² + sum(x³)/3.
                    let t = x.as_tensor();
                    let loss = ((t.sqr().unwrap().sum_all().unwrap() * 0.5).unwrap()
                        + (t.powf(3.0).unwrap().sum_all().unwrap() / 3.0).unwrap())
                    .unwrap();
                    opt.apply_with(&loss.backward().unwrap(), fused).unwrap();
                }
                let mut state: Vec<Vec<f32>> = opt
                    .state_tensors()
                    .iter()
                    .map(|(_, t)| t.flatten_all().unwrap().to_vec1().unwrap())
                    .collect();
                state.push(x.as_tensor().to_vec1().unwrap());
                state
            };
            let (a, b) = (run(true), run(false));
            assert_eq!(a.len(), b.len(), "{cfg:?}");
            for (u, v) in a.iter().zip(&b) {
                close(u, v);
            }
        }
    }

    #[test]
    fn state_round_trips() {
        let cfg = OptimizerConfig::default();
        let x = Var::new(&[1.0f32, -2.0], &Device::Cpu).unwrap();
        let mut a = Optimizer::new(vec![("x".into(), x.clone())], &cfg).unwrap();
        let loss = x.as_tensor().sqr().unwrap().sum_all().unwrap();
        a.backward_step(&loss).unwrap();
        let saved: HashMap<String, Tensor> = a.state_tensors().into_iter().collect();
        assert!(saved.contains_key("optim.x.exp_avg") && saved.contains_key("optim.x.exp_avg_sq"));
        let mut b = Optimizer::new(vec![("x".into(), x.clone())], &cfg).unwrap();
        b.load_state(&saved, a.steps()).unwrap();
        assert_eq!(b.steps(), 1);
    }

    /// A parameter that gets no gradient for a while (frozen) keeps its own
    /// update count: its first Adam update after that moves it by lr, as
    /// PyTorch's per-parameter `step` makes it; the count is saved and
    /// restored, and a file without it means "every step".
    #[test]
    fn each_parameter_counts_its_own_updates() {
        let cfg = OptimizerConfig {
            lr: 0.01,
            ..Default::default()
        };
        let x = Var::new(&[1.0f32, -2.0], &Device::Cpu).unwrap();
        let y = Var::new(&[3.0f32], &Device::Cpu).unwrap();
        let params = vec![("x".to_string(), x.clone()), ("y".to_string(), y.clone())];
        let mut opt = Optimizer::new(params.clone(), &cfg).unwrap();
        for _ in 0..4 {
            // y is left out of the loss: no gradient, no update.
            let loss = x.as_tensor().sqr().unwrap().sum_all().unwrap();
            opt.backward_step(&loss).unwrap();
        }
        let both = (x.as_tensor().sqr().unwrap().sum_all().unwrap()
            + y.as_tensor().sqr().unwrap().sum_all().unwrap())
        .unwrap();
        opt.backward_step(&both).unwrap();
        close(&y.as_tensor().to_vec1().unwrap(), &[2.99]);
        let saved: HashMap<String, Tensor> = opt.state_tensors().into_iter().collect();
        let count = |k: &str| saved[k].to_scalar::<f32>().unwrap();
        assert_eq!((count("optim.x.step"), count("optim.y.step")), (5.0, 1.0));
        let mut back = Optimizer::new(params.clone(), &cfg).unwrap();
        back.load_state(&saved, 5).unwrap();
        assert_eq!((back.slots[0].steps, back.slots[1].steps), (5, 1));
        let mut old = saved.clone();
        old.retain(|k, _| !k.ends_with(".step"));
        back.load_state(&old, 5).unwrap();
        assert_eq!((back.slots[0].steps, back.slots[1].steps), (5, 5));
    }

    /// `training.param_groups`: the first group that selects a parameter
    /// sets its rate multiplier and weight decay; selectors that name
    /// nothing are refused with the group's field.
    #[test]
    fn param_groups_select_by_kind_tensor_and_layer() {
        use crate::config::Config;
        let config = Config::from_value(serde_json::json!({
            "input_shape": [1, 8, 8], "num_classes": 2,
            "layers": [
                {"type": "conv2d", "out_channels": 2, "kernel_size": 3},
                {"type": "batch_norm2d"},
                {"type": "flatten"},
                {"type": "linear", "out_features": 2}],
            "training": {"optimizer": {"type": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4},
                "param_groups": [
                    {"kinds": ["batchnorm2d"], "tensors": ["bias"], "lr_scale": 64, "weight_decay": 0},
                    {"layers": ["3"], "lr_scale": 0.5}]}
        }))
        .unwrap();
        let plan = crate::arch::plan(&config).unwrap();
        let model =
            crate::model::Model::new(&plan, crate::model::Weights::Init { seed: 1 }, &Device::Cpu)
                .unwrap();
        let opt = Optimizer::for_run(&plan, model.params().to_vec(), &config.training).unwrap();
        let wd = |r: Rule| match r {
            Rule::Sgd { weight_decay, .. } => weight_decay,
            Rule::Adam { .. } => unreachable!(),
        };
        let got: Vec<(String, f64, f64)> = opt
            .params
            .iter()
            .zip(&opt.settings)
            .map(|((n, _), s)| (n.clone(), s.lr_scale, wd(s.rule)))
            .collect();
        assert_eq!(
            got,
            vec![
                ("layers.0.weight".into(), 1.0, 5e-4),
                ("layers.0.bias".into(), 1.0, 5e-4),
                ("layers.1.weight".into(), 1.0, 5e-4),
                ("layers.1.bias".into(), 64.0, 0.0),
                ("layers.3.weight".into(), 0.5, 5e-4),
                ("layers.3.bias".into(), 0.5, 5e-4),
            ]
        );
        let mut bad = config.training.clone();
        bad.param_groups[1].layers = Some(vec!["9".into()]);
        let err = format!("{:#}", check_groups(&plan, &bad.param_groups).unwrap_err());
        assert!(
            err.contains("training.param_groups.1.layers: the network has no layer 9"),
            "{err}"
        );
        bad.param_groups[1].layers = None;
        bad.param_groups[1].kinds = Some(vec!["dropout".into()]);
        let err = format!("{:#}", check_groups(&plan, &bad.param_groups).unwrap_err());
        assert!(
            err.contains("training.param_groups.1 selects no parameter"),
            "{err}"
        );
        bad.param_groups[1].kinds = Some(vec!["conv3d".into()]);
        let err = format!("{:#}", check_groups(&plan, &bad.param_groups).unwrap_err());
        assert!(err.contains("unknown layer kind \"conv3d\""), "{err}");
    }
}
