//! Optimizers with state that can be saved and restored: SGD (momentum,
//! Nesterov, weight decay), Adam and AdamW, following PyTorch's update rules
//! so results can be compared one to one. candle-nn's AdamW keeps its moments
//! private and its SGD has no momentum, hence these.

use crate::config::{OptimizerConfig, Rule};
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
    rule: Rule,
    lr: f64,
    /// Number of steps taken.
    step: u64,
    params: Vec<(String, Var)>,
    slots: Vec<Slot>,
}

impl Optimizer {
    pub fn new(params: Vec<(String, Var)>, config: &OptimizerConfig) -> Result<Self> {
        let rule = config.rule()?;
        let slots = params.iter().map(|_| Slot::default()).collect();
        Ok(Optimizer {
            rule,
            lr: config.lr,
            step: 0,
            params,
            slots,
        })
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
        let hp = Step {
            rule: self.rule,
            lr: self.lr,
            t: self.step,
        };
        for ((_, var), slot) in self.params.iter().zip(self.slots.iter_mut()) {
            let Some(grad) = grads.get(var.as_tensor()) else {
                continue;
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

    /// State tensors named `optim.<param>.<exp_avg|exp_avg_sq|momentum_buffer>`.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for ((name, _), slot) in self.params.iter().zip(&self.slots) {
            for (key, t) in [
                ("exp_avg", &slot.exp_avg),
                ("exp_avg_sq", &slot.exp_avg_sq),
                ("momentum_buffer", &slot.momentum_buffer),
            ] {
                if let Some(t) = t {
                    out.push((format!("optim.{name}.{key}"), t.clone()));
                }
            }
        }
        out
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
        }
        self.step = step;
        Ok(())
    }
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
                    .map(|(_, t)| t.to_vec1().unwrap())
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
}
