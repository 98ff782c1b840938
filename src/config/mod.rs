//! The JSON config: architecture (input shape, classes, `layers`), `training`
//! and `data` sections. This module owns parsing, defaults and `--set`
//! overrides; it does not check that the layers fit together (that is
//! `arch`) nor touch tensors.

mod data;
mod layers;
mod overrides;

pub use data::*;
pub use layers::*;
pub use overrides::{apply_overrides, parse_assignment};

use crate::bail_input;
use crate::error::InputContext;
use anyhow::Result;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use std::path::Path;

/// A whole config file, with every default filled in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Name of the model; the default run directory is `runs/<name>`.
    /// Defaults to the config file's name without `.json`.
    #[serde(default)]
    pub name: Option<String>,
    /// Free text, ignored by the tool.
    #[serde(default)]
    pub description: Option<String>,
    /// Input image shape as `[channels, height, width]`.
    pub input_shape: [usize; 3],
    /// Number of classes; the last layer must output this many values.
    pub num_classes: usize,
    pub layers: Vec<Layer>,
    #[serde(default)]
    pub training: TrainingConfig,
    #[serde(default)]
    pub data: DataConfig,
}

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
}

impl Monitor {
    pub fn name(self) -> &'static str {
        match self {
            Monitor::ValAcc => "val_acc",
            Monitor::ValLoss => "val_loss",
            Monitor::TrainAcc => "train_acc",
            Monitor::TrainLoss => "train_loss",
        }
    }
    /// Accuracies improve upwards, losses downwards.
    pub fn higher_is_better(self) -> bool {
        matches!(self, Monitor::ValAcc | Monitor::TrainAcc)
    }
    pub fn needs_validation(self) -> bool {
        matches!(self, Monitor::ValAcc | Monitor::ValLoss)
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
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
    /// then down to `max_lr/(div_factor·final_div_factor)`, every step.
    OneCycle {
        #[serde(default)]
        max_lr: Option<f64>,
        #[serde(default = "pct_start")]
        pct_start: f64,
        #[serde(default = "div_factor")]
        div_factor: f64,
        #[serde(default = "final_div_factor")]
        final_div_factor: f64,
    },
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

impl Serialize for LrSchedule {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut v = serde_json::to_value(&self.kind).map_err(serde::ser::Error::custom)?;
        if let Value::Object(map) = &mut v {
            map.insert("warmup_epochs".into(), self.warmup_epochs.into());
            map.insert(
                "warmup_start_factor".into(),
                self.warmup_start_factor.into(),
            );
        }
        v.serialize(s)
    }
}

impl<'de> Deserialize<'de> for LrSchedule {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let mut v = Value::deserialize(d)?;
        let defaults = LrSchedule::default();
        let mut number = |key: &str, default: f64| -> Result<f64, D::Error> {
            match v.as_object_mut().and_then(|m| m.remove(key)) {
                None | Some(Value::Null) => Ok(default),
                Some(Value::Number(n)) => n
                    .as_f64()
                    .ok_or_else(|| D::Error::custom(format!("`{key}` must be a number"))),
                Some(other) => Err(D::Error::custom(format!(
                    "`{key}` must be a number, got {other}"
                ))),
            }
        };
        let warmup_epochs = number("warmup_epochs", defaults.warmup_epochs)?;
        let warmup_start_factor = number("warmup_start_factor", defaults.warmup_start_factor)?;
        let kind = ScheduleKind::deserialize(v).map_err(D::Error::custom)?;
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

/// The top level as read, before the layers are decoded one by one so that
/// every layer error can name its index.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    input_shape: [usize; 3],
    num_classes: usize,
    layers: Vec<Value>,
    #[serde(default)]
    training: TrainingConfig,
    #[serde(default)]
    data: DataConfig,
}

impl Config {
    /// Reads and decodes a config file. Errors name the file and the field.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path)
            .input_context(|| format!("cannot read config file {}", path.display()))?;
        let value: Value = serde_json::from_str(&text)
            .input_context(|| format!("{} is not valid JSON", path.display()))?;
        let mut config =
            Config::from_value(value).input_context(|| format!("config {}", path.display()))?;
        if config.name.is_none() {
            config.name = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .filter(|s| !s.is_empty());
        }
        Ok(config)
    }

    /// Decodes a JSON value; the error message names the field path, and for
    /// layers the layer index and type.
    pub fn from_value(value: Value) -> std::result::Result<Config, String> {
        if !value.is_object() {
            return Err("the top level must be a JSON object".into());
        }
        let raw: RawConfig =
            serde_path_to_error::deserialize(value).map_err(|e| describe_error(&e))?;
        let layers = raw
            .layers
            .into_iter()
            .enumerate()
            .map(|(i, v)| decode_layer(i, v))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(Config {
            name: raw.name,
            description: raw.description,
            input_shape: raw.input_shape,
            num_classes: raw.num_classes,
            layers,
            training: raw.training,
            data: raw.data,
        })
    }

    /// The full config as JSON, every default written out.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).expect("a config always serialises")
    }

    pub fn to_pretty_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a config always serialises")
    }

    /// The model name, used for the default run directory.
    pub fn display_name(&self) -> &str {
        self.name.as_deref().unwrap_or("model")
    }
}

fn decode_layer(index: usize, value: Value) -> std::result::Result<Layer, String> {
    let Some(obj) = value.as_object() else {
        return Err(format!(
            "layer {index}: expected an object like {{\"type\": \"relu\"}}, got {value}"
        ));
    };
    let kind = match obj.get("type") {
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            return Err(format!(
                "layer {index}: \"type\" must be a string, got {other}"
            ));
        }
        None => {
            return Err(format!(
                "layer {index}: missing \"type\"; expected one of: {}",
                LAYER_TYPES.join(", ")
            ));
        }
    };
    serde_path_to_error::deserialize::<_, Layer>(value).map_err(|e| {
        let inner = e.inner().to_string();
        // (Inside the layer, serde reports unknown values of any field, such
        // as padding_mode, the same way; only the type's is this error.)
        if inner.starts_with(&format!("unknown variant `{kind}`")) {
            format!(
                "layer {index}: unknown layer type \"{kind}\"; expected one of: {}",
                LAYER_TYPES.join(", ")
            )
        } else {
            format!("layer {index} ({kind}): {}", describe_error(&e))
        }
    })
}

/// `field.path: message`, or just the message at the top level.
fn describe_error(e: &serde_path_to_error::Error<serde_json::Error>) -> String {
    let path = e.path().to_string();
    let msg = e.inner().to_string();
    if path == "." || path.is_empty() {
        msg
    } else {
        format!("field `{path}`: {msg}")
    }
}

impl Config {
    /// Checks the training and data sections (the layers are checked by
    /// `arch::plan`). Every message names the field and a valid value.
    pub fn check_settings(&self) -> Result<()> {
        let t = &self.training;
        if t.epochs == 0 {
            bail_input!("training.epochs is 0; train for at least 1 epoch");
        }
        if t.batch_size == 0 {
            bail_input!("training.batch_size is 0; use a positive batch size such as 64");
        }
        if !(0.0..1.0).contains(&t.label_smoothing) {
            bail_input!(
                "training.label_smoothing is {}; it must be in [0, 1), e.g. 0.1",
                t.label_smoothing
            );
        }
        crate::schedule::check(&t.lr_schedule, t.epochs)?;
        if let Some(m) = t.max_loss
            && !(m.is_finite() && m > 0.0)
        {
            bail_input!("training.max_loss is {m}; give a positive number (default 1000) or null");
        }
        if let Some(es) = &t.early_stopping
            && !(es.min_delta.is_finite() && es.min_delta >= 0.0)
        {
            bail_input!(
                "training.early_stopping.min_delta is {}; it must be 0 or positive",
                es.min_delta
            );
        }
        self.data.check(self.input_shape)?;
        crate::optim::Rule::from_config(&t.optimizer)?;
        Ok(())
    }
}
