//! The `training` section: epochs, batch size, seed, optimizer, learning-rate
//! schedule, monitoring, early stopping and checkpoint cadence, with their
//! defaults and their checks. The checks settle each setting (an optimizer's
//! defaults become a [`Rule`]) so that the code that runs them need not.

use super::controls::{ClassWeights, Ema, GradClip, Mixup, ParamGroup};
use anyhow::Result;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingConfig {
    #[serde(default = "default_epochs")]
    pub epochs: usize,
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Seeds weight initialisation, the validation split, shuffling and dropout.
    #[serde(default = "default_seed")]
    pub seed: u64,
    #[serde(default)]
    pub optimizer: OptimizerConfig,
    /// Cross-entropy label smoothing in [0, 1).
    #[serde(default)]
    pub label_smoothing: f64,
    /// How the learning rate changes over the run (default: constant).
    #[serde(default)]
    pub lr_schedule: LrSchedule,
    /// The metric that picks `best.safetensors` and drives early stopping.
    #[serde(default)]
    pub monitor: Monitor,
    /// Stop when the monitored metric has not improved for a while.
    #[serde(default)]
    pub early_stopping: Option<EarlyStopping>,
    /// Also write `last.safetensors` every N optimizer steps (0: only at
    /// the end of each epoch), so a crash loses at most N steps.
    #[serde(default)]
    pub checkpoint_every: u64,
    /// Divergence guard: stop when a batch's mean loss is above this (or not
    /// finite). Cross-entropy starts near ln(classes); healthy training never
    /// comes near 1000. `null` keeps only the non-finite check.
    #[serde(default = "default_max_loss")]
    pub max_loss: Option<f64>,
    /// Also write TensorBoard event files to `RUN_DIR/tensorboard`.
    #[serde(default = "yes")]
    pub tensorboard: bool,
    /// Fine-tuning: start from the weights of this checkpoint (or PyTorch
    /// state_dict) wherever a tensor's name and shape match; the rest is
    /// initialised from the seed.
    #[serde(default)]
    pub init_from: Option<PathBuf>,
    /// Layers (or single tensors, `0.weight`) whose parameters are not
    /// trained, until `unfreeze_after` epochs if given.
    #[serde(default)]
    pub freeze: Vec<String>,
    /// Train the `freeze` layers too after this many epochs.
    #[serde(default)]
    pub unfreeze_after: Option<usize>,
    /// Other learning rates and weight decays for some parameters.
    #[serde(default)]
    pub param_groups: Vec<ParamGroup>,
    /// The head first, then everything with discriminative rates.
    #[serde(default)]
    pub fine_tune: Option<super::FineTune>,
    /// Weights of the classes in the training loss: "balanced" or a list.
    #[serde(default)]
    pub class_weights: Option<ClassWeights>,
    /// Mixup and CutMix.
    #[serde(default)]
    pub mixup: Option<Mixup>,
    /// Gradient clipping by global norm or by value.
    #[serde(default)]
    pub grad_clip: Option<GradClip>,
    /// An exponential moving average of the weights for evaluation.
    #[serde(default)]
    pub ema: Option<Ema>,
    /// Also keep the best K epochs as `best-<epoch>.safetensors`.
    #[serde(default)]
    pub keep_best: usize,
    /// Also keep every N-th epoch as `epoch-<epoch>.safetensors`.
    #[serde(default)]
    pub keep_every_epochs: usize,
    /// The k of the top-k accuracy in the history.
    #[serde(default = "default_top_k")]
    pub top_k: usize,
    /// Run the validation and test passes after every N-th epoch and after
    /// the last (PyTorch Lightning's `check_val_every_n_epoch`); the other
    /// epochs record their training metrics only.
    #[serde(default = "one_epoch")]
    pub eval_every: usize,
    /// The numbers convolutions and linear layers multiply: `"fp32"`, or
    /// `"bf16"` (inputs and weights rounded to bf16, products summed in
    /// f32; master weights, optimizer state, batch norm and the loss stay
    /// f32, as PyTorch's autocast keeps them).
    #[serde(default)]
    pub precision: Precision,
}

pub use crate::precision::Precision;

fn one_epoch() -> usize {
    1
}

fn default_top_k() -> usize {
    5
}

fn default_max_loss() -> Option<f64> {
    Some(1000.0)
}

fn default_epochs() -> usize {
    10
}
fn default_batch_size() -> usize {
    64
}
fn default_seed() -> u64 {
    42
}
fn yes() -> bool {
    true
}

impl Default for TrainingConfig {
    fn default() -> Self {
        TrainingConfig {
            epochs: default_epochs(),
            batch_size: default_batch_size(),
            seed: default_seed(),
            optimizer: OptimizerConfig::default(),
            label_smoothing: 0.0,
            lr_schedule: LrSchedule::default(),
            monitor: Monitor::default(),
            early_stopping: None,
            checkpoint_every: 0,
            max_loss: default_max_loss(),
            tensorboard: true,
            init_from: None,
            freeze: Vec::new(),
            unfreeze_after: None,
            param_groups: Vec::new(),
            fine_tune: None,
            class_weights: None,
            mixup: None,
            grad_clip: None,
            ema: None,
            keep_best: 0,
            keep_every_epochs: 0,
            top_k: default_top_k(),
            precision: Precision::Fp32,
            eval_every: one_epoch(),
        }
    }
}

/// A per-epoch metric of the history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Monitor {
    #[default]
    ValAcc,
    ValLoss,
    TrainAcc,
    TrainLoss,
    /// The mean over classes of the validation F1 scores.
    ValMacroF1,
}

impl Monitor {
    pub fn name(self) -> &'static str {
        match self {
            Monitor::ValAcc => "val_acc",
            Monitor::ValLoss => "val_loss",
            Monitor::TrainAcc => "train_acc",
            Monitor::TrainLoss => "train_loss",
            Monitor::ValMacroF1 => "val_macro_f1",
        }
    }
    /// What is judged in its place when there is no validation split: the
    /// training accuracy or loss (as `run_state::monitored` reads it).
    pub fn without_validation(self) -> Monitor {
        match self {
            Monitor::ValAcc => Monitor::TrainAcc,
            Monitor::ValLoss => Monitor::TrainLoss,
            other => other,
        }
    }

    /// Accuracies and F1 improve upwards, losses downwards.
    pub fn higher_is_better(self) -> bool {
        matches!(
            self,
            Monitor::ValAcc | Monitor::TrainAcc | Monitor::ValMacroF1
        )
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EarlyStopping {
    /// Epochs without improvement before stopping.
    pub patience: usize,
    /// Smallest change that counts as an improvement.
    #[serde(default)]
    pub min_delta: f64,
}

/// A learning-rate schedule (see `schedule`), with an optional linear warmup:
/// `{"type": "cosine", "warmup_epochs": 1}`.
#[derive(Debug, Clone, PartialEq)]
pub struct LrSchedule {
    pub kind: ScheduleKind,
    /// Epochs (may be fractional) of linear warmup before the schedule.
    pub warmup_epochs: f64,
    /// The warmup starts at this fraction of the rate.
    pub warmup_start_factor: f64,
}

impl Default for LrSchedule {
    fn default() -> Self {
        LrSchedule {
            kind: ScheduleKind::Constant,
            warmup_epochs: 0.0,
            warmup_start_factor: 0.1,
        }
    }
}

/// Written `{"type": "step", "step_size": 10, ...}`; serde sees it as
/// `{"step": {"step_size": 10, ...}}` (see [`LrSchedule`]'s serde), so that
/// an error inside knows its field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ScheduleKind {
    Constant,
    /// Multiply by `gamma` every `step_size` epochs.
    Step {
        step_size: usize,
        gamma: f64,
    },
    /// Multiply by `gamma` at each listed epoch (0-based).
    Multistep {
        milestones: Vec<usize>,
        gamma: f64,
    },
    /// Multiply by `gamma` every epoch.
    Exponential {
        gamma: f64,
    },
    /// Half a cosine from the rate down to `eta_min` over `t_max` epochs
    /// (default: the whole run after warmup).
    Cosine {
        #[serde(default)]
        t_max: Option<usize>,
        #[serde(default)]
        eta_min: f64,
    },
    /// Up from `max_lr/div_factor` to `max_lr` over `pct_start` of the run,
    /// then down to `max_lr/(div_factor·final_div_factor)`, every step,
    /// along half cosines (`anneal_strategy` "cos") or straight lines
    /// ("linear", the triangle fast CIFAR-10 recipes use).
    OneCycle {
        #[serde(default)]
        max_lr: Option<f64>,
        #[serde(default = "pct_start")]
        pct_start: f64,
        #[serde(default = "div_factor")]
        div_factor: f64,
        #[serde(default = "final_div_factor")]
        final_div_factor: f64,
        #[serde(default)]
        anneal_strategy: Anneal,
    },
    /// Multiply by `factor` when the monitored metric has not improved for
    /// `patience` epochs (PyTorch's `ReduceLROnPlateau`, threshold mode
    /// "rel"), then wait `cooldown` epochs; never below `min_lr`.
    ReduceOnPlateau {
        /// Default: `training.monitor`.
        #[serde(default)]
        monitor: Option<Monitor>,
        #[serde(default = "plateau_factor")]
        factor: f64,
        #[serde(default = "plateau_patience")]
        patience: usize,
        #[serde(default)]
        cooldown: usize,
        #[serde(default)]
        min_lr: f64,
        /// Relative change that counts as an improvement.
        #[serde(default = "plateau_threshold")]
        threshold: f64,
    },
}

fn plateau_factor() -> f64 {
    0.1
}
fn plateau_patience() -> usize {
    10
}
fn plateau_threshold() -> f64 {
    1e-4
}

/// How one-cycle moves between its rates (PyTorch's `anneal_strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Anneal {
    #[default]
    Cos,
    Linear,
}

fn pct_start() -> f64 {
    0.3
}
fn div_factor() -> f64 {
    25.0
}
fn final_div_factor() -> f64 {
    1e4
}

/// The schedule names, for messages.
const SCHEDULES: &str = "constant, step, multistep, exponential, cosine, one_cycle";

impl Serialize for LrSchedule {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // `{"step": {...}}` (or `"constant"`) → `{"type": "step", ...}`.
        let tagged = serde_json::to_value(&self.kind).map_err(serde::ser::Error::custom)?;
        let mut map = serde_json::Map::new();
        match tagged {
            Value::String(name) => {
                map.insert("type".into(), name.into());
            }
            Value::Object(outer) => {
                for (name, fields) in outer {
                    map.insert("type".into(), name.into());
                    if let Value::Object(fields) = fields {
                        map.extend(fields);
                    }
                }
            }
            _ => {}
        }
        map.insert("warmup_epochs".into(), self.warmup_epochs.into());
        map.insert(
            "warmup_start_factor".into(),
            self.warmup_start_factor.into(),
        );
        Value::Object(map).serialize(s)
    }
}

impl<'de> Deserialize<'de> for LrSchedule {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let v = Value::deserialize(d)?;
        let Value::Object(mut fields) = v else {
            return Err(D::Error::custom(format!(
                "expected an object such as {{\"type\": \"cosine\"}}, got {}",
                crate::json::show(&v)
            )));
        };
        let defaults = LrSchedule::default();
        let mut number = |key: &str, default: f64| -> Result<f64, D::Error> {
            match fields.remove(key) {
                None | Some(Value::Null) => Ok(default),
                Some(Value::Number(n)) => n.as_f64().ok_or_else(|| {
                    D::Error::custom(format!("field `{key}`: expected a number, got {n}"))
                }),
                Some(other) => Err(D::Error::custom(format!(
                    "field `{key}`: expected a number, got {}",
                    crate::json::show(&other)
                ))),
            }
        };
        let warmup_epochs = number("warmup_epochs", defaults.warmup_epochs)?;
        let warmup_start_factor = number("warmup_start_factor", defaults.warmup_start_factor)?;
        let name = match fields.remove("type") {
            Some(Value::String(name)) => name,
            None => {
                return Err(D::Error::custom(format!(
                    "missing \"type\"; expected one of: {SCHEDULES}"
                )));
            }
            Some(other) => {
                return Err(D::Error::custom(format!(
                    "field `type`: expected one of {SCHEDULES}, got {}",
                    crate::json::show(&other)
                )));
            }
        };
        // "constant" takes no settings: serde reads it from its bare name.
        if name == "constant"
            && let Some(field) = fields.keys().next()
        {
            return Err(D::Error::custom(format!(
                "unknown field `{field}`: the constant schedule takes no settings; remove it"
            )));
        }
        let tagged = if name == "constant" {
            Value::String(name.clone())
        } else {
            Value::Object(
                [(name.clone(), Value::Object(fields))]
                    .into_iter()
                    .collect(),
            )
        };
        let kind = crate::json::decode::<ScheduleKind>(&tagged).map_err(|msg| {
            if msg.starts_with("unknown variant") {
                D::Error::custom(format!(
                    "field `type`: unknown schedule \"{name}\"; expected one of: {SCHEDULES}"
                ))
            } else {
                D::Error::custom(msg)
            }
        })?;
        Ok(LrSchedule {
            kind,
            warmup_epochs,
            warmup_start_factor,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    Adam,
    #[serde(rename = "adamw")]
    AdamW,
    Sgd,
}

impl OptimizerKind {
    pub fn name(self) -> &'static str {
        match self {
            OptimizerKind::Adam => "adam",
            OptimizerKind::AdamW => "adamw",
            OptimizerKind::Sgd => "sgd",
        }
    }
}

/// One flat section for every optimizer so that `--set` can switch between
/// them; fields that do not apply to the chosen `type` must stay `null`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimizerConfig {
    #[serde(rename = "type", default = "default_optimizer")]
    pub kind: OptimizerKind,
    #[serde(default = "default_lr")]
    pub lr: f64,
    /// L2 penalty (Adam, SGD) or decoupled decay (AdamW, where it must be given).
    #[serde(default)]
    pub weight_decay: Option<f64>,
    /// Adam/AdamW: coefficients of the running averages; default [0.9, 0.999].
    #[serde(default)]
    pub betas: Option<[f64; 2]>,
    /// Adam/AdamW: added to the denominator; default 1e-8.
    #[serde(default)]
    pub eps: Option<f64>,
    /// SGD: momentum factor; default 0.
    #[serde(default)]
    pub momentum: Option<f64>,
    /// SGD: Nesterov momentum; default false.
    #[serde(default)]
    pub nesterov: Option<bool>,
    /// SGD: dampening for momentum; default 0.
    #[serde(default)]
    pub dampening: Option<f64>,
}

fn default_optimizer() -> OptimizerKind {
    OptimizerKind::Adam
}
fn default_lr() -> f64 {
    1e-3
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        OptimizerConfig {
            kind: default_optimizer(),
            lr: default_lr(),
            weight_decay: None,
            betas: None,
            eps: None,
            momentum: None,
            nesterov: None,
            dampening: None,
        }
    }
}

/// Settled hyper-parameters (defaults applied, fields checked).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rule {
    Sgd {
        momentum: f64,
        dampening: f64,
        nesterov: bool,
        weight_decay: f64,
    },
    Adam {
        beta1: f64,
        beta2: f64,
        eps: f64,
        weight_decay: f64,
        decoupled: bool,
    },
}

impl OptimizerConfig {
    /// The update rule: defaults applied, and fields that do not belong to
    /// the optimizer refused. Every message names the field.
    pub fn rule(&self) -> Result<Rule> {
        let c = self;
        let name = c.kind.name();
        let refuse = |field: &str, set: bool, owner: &str| -> Result<()> {
            if set {
                crate::bail_input!(
                    "training.optimizer.{field} applies to {owner} only, but the optimizer is {name}; remove it"
                );
            }
            Ok(())
        };
        if !(c.lr.is_finite() && c.lr > 0.0) {
            crate::bail_input!(
                "training.optimizer.lr is {}; it must be a positive number like 0.001",
                c.lr
            );
        }
        let wd = c.weight_decay.unwrap_or(0.0);
        if !(wd.is_finite() && wd >= 0.0) {
            crate::bail_input!("training.optimizer.weight_decay is {wd}; it must be 0 or positive");
        }
        Ok(match c.kind {
            OptimizerKind::Sgd => {
                refuse("betas", c.betas.is_some(), "adam and adamw")?;
                refuse("eps", c.eps.is_some(), "adam and adamw")?;
                let momentum = c.momentum.unwrap_or(0.0);
                let dampening = c.dampening.unwrap_or(0.0);
                let nesterov = c.nesterov.unwrap_or(false);
                if !(0.0..1.0).contains(&momentum) {
                    crate::bail_input!(
                        "training.optimizer.momentum is {momentum}; it must be in [0, 1), e.g. 0.9"
                    );
                }
                if !(0.0..=1.0).contains(&dampening) {
                    crate::bail_input!(
                        "training.optimizer.dampening is {dampening}; it must be in [0, 1]"
                    );
                }
                if nesterov && (momentum == 0.0 || dampening != 0.0) {
                    crate::bail_input!(
                        "training.optimizer.nesterov needs a momentum above 0 and dampening 0 (momentum is {momentum}, dampening {dampening})"
                    );
                }
                Rule::Sgd {
                    momentum,
                    dampening,
                    nesterov,
                    weight_decay: wd,
                }
            }
            OptimizerKind::Adam | OptimizerKind::AdamW => {
                refuse("momentum", c.momentum.is_some(), "sgd")?;
                refuse("nesterov", c.nesterov.is_some(), "sgd")?;
                refuse("dampening", c.dampening.is_some(), "sgd")?;
                let decoupled = c.kind == OptimizerKind::AdamW;
                if decoupled && c.weight_decay.is_none() {
                    crate::bail_input!(
                        "training.optimizer.weight_decay must be given for adamw (PyTorch uses 0.01, candle 0.01 too); \
                         state it explicitly, e.g. \"weight_decay\": 0.01"
                    );
                }
                let [beta1, beta2] = c.betas.unwrap_or([0.9, 0.999]);
                if !(0.0..1.0).contains(&beta1) || !(0.0..1.0).contains(&beta2) {
                    crate::bail_input!(
                        "training.optimizer.betas is [{beta1}, {beta2}]; both must be in [0, 1)"
                    );
                }
                let eps = c.eps.unwrap_or(1e-8);
                if !(eps.is_finite() && eps > 0.0) {
                    crate::bail_input!(
                        "training.optimizer.eps is {eps}; it must be a small positive number like 1e-8"
                    );
                }
                Rule::Adam {
                    beta1,
                    beta2,
                    eps,
                    weight_decay: wd,
                    decoupled,
                }
            }
        })
    }
}

impl LrSchedule {
    /// Shortens a warm-up that does not fit in a run of `epochs` epochs (one
    /// of `warmup_epochs` or more, e.g. a shipped config run with
    /// `--epochs 1`) to half the run, and returns the warning that says so;
    /// `None` when it fits (or is invalid, which [`LrSchedule::check`]
    /// reports). One-cycle has no separate warm-up and is left alone.
    pub fn fit_warmup(&mut self, epochs: usize) -> Option<String> {
        let w = self.warmup_epochs;
        if !(w.is_finite() && w > 0.0) || epochs == 0 || w < epochs as f64 {
            return None;
        }
        if matches!(self.kind, ScheduleKind::OneCycle { .. }) {
            return None;
        }
        self.warmup_epochs = epochs as f64 / 2.0;
        Some(format!(
            "training.lr_schedule.warmup_epochs is {w} but the run has only {epochs} epoch{}; \
             the warm-up is shortened to {} epochs (half the run)",
            if epochs == 1 { "" } else { "s" },
            self.warmup_epochs
        ))
    }

    /// Checks the settings for a run of `epochs`; every message names the field.
    pub fn check(&self, epochs: usize) -> Result<()> {
        let s = self;
        let field = |f: &str| format!("training.lr_schedule.{f}");
        if !(s.warmup_epochs.is_finite() && s.warmup_epochs >= 0.0) {
            crate::bail_input!(
                "{} is {}; it must be 0 or more epochs",
                field("warmup_epochs"),
                s.warmup_epochs
            );
        }
        if !(s.warmup_start_factor > 0.0 && s.warmup_start_factor <= 1.0) {
            crate::bail_input!(
                "{} is {}; it must be in (0, 1], e.g. 0.1",
                field("warmup_start_factor"),
                s.warmup_start_factor
            );
        }
        let gamma_ok = |g: f64| g.is_finite() && g > 0.0;
        match &s.kind {
            ScheduleKind::Constant => {}
            ScheduleKind::Step { step_size, gamma } => {
                if *step_size == 0 {
                    crate::bail_input!("{} is 0; decay every 1 or more epochs", field("step_size"));
                }
                if !gamma_ok(*gamma) {
                    crate::bail_input!(
                        "{} is {gamma}; it must be positive, e.g. 0.1",
                        field("gamma")
                    );
                }
            }
            ScheduleKind::Multistep { milestones, gamma } => {
                if milestones.windows(2).any(|w| w[0] >= w[1]) {
                    crate::bail_input!(
                        "{} is {milestones:?}; list epochs in increasing order",
                        field("milestones")
                    );
                }
                if !gamma_ok(*gamma) {
                    crate::bail_input!(
                        "{} is {gamma}; it must be positive, e.g. 0.1",
                        field("gamma")
                    );
                }
            }
            ScheduleKind::Exponential { gamma } => {
                if !gamma_ok(*gamma) {
                    crate::bail_input!(
                        "{} is {gamma}; it must be positive, e.g. 0.95",
                        field("gamma")
                    );
                }
            }
            ScheduleKind::Cosine { t_max, eta_min } => {
                if *t_max == Some(0) {
                    crate::bail_input!(
                        "{} is 0; give the number of epochs of one half-period",
                        field("t_max")
                    );
                }
                if !(eta_min.is_finite() && *eta_min >= 0.0) {
                    crate::bail_input!(
                        "{} is {eta_min}; it must be 0 or positive",
                        field("eta_min")
                    );
                }
            }
            ScheduleKind::OneCycle {
                max_lr,
                pct_start,
                div_factor,
                final_div_factor,
                ..
            } => {
                if let Some(m) = max_lr
                    && !(m.is_finite() && *m > 0.0)
                {
                    crate::bail_input!("{} is {m}; it must be positive", field("max_lr"));
                }
                if !(*pct_start > 0.0 && *pct_start < 1.0) {
                    crate::bail_input!(
                        "{} is {pct_start}; it must be in (0, 1), e.g. 0.3",
                        field("pct_start")
                    );
                }
                if !(*div_factor >= 1.0 && *final_div_factor >= 1.0) {
                    crate::bail_input!(
                        "{} and {} must be at least 1",
                        field("div_factor"),
                        field("final_div_factor")
                    );
                }
                if s.warmup_epochs > 0.0 {
                    crate::bail_input!(
                        "{} is {}, but one_cycle warms up by itself (pct_start); remove warmup_epochs",
                        field("warmup_epochs"),
                        s.warmup_epochs
                    );
                }
            }
            ScheduleKind::ReduceOnPlateau {
                factor,
                min_lr,
                threshold,
                ..
            } => {
                if !(*factor > 0.0 && *factor < 1.0) {
                    crate::bail_input!(
                        "{} is {factor}; it must be in (0, 1), e.g. 0.1",
                        field("factor")
                    );
                }
                if !(min_lr.is_finite() && *min_lr >= 0.0) {
                    crate::bail_input!("{} is {min_lr}; it must be 0 or positive", field("min_lr"));
                }
                if !(threshold.is_finite() && *threshold >= 0.0) {
                    crate::bail_input!(
                        "{} is {threshold}; it must be 0 or a small positive fraction such as 1e-4",
                        field("threshold")
                    );
                }
            }
        }
        if s.warmup_epochs >= epochs as f64 && s.warmup_epochs > 0.0 {
            crate::bail_input!(
                "{} is {} but the run has only {epochs} epochs; shorten the warmup",
                field("warmup_epochs"),
                s.warmup_epochs
            );
        }
        Ok(())
    }
}
