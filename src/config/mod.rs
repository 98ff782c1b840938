//! The JSON config: architecture (input shape, classes, `layers`), `training`
//! and `data` sections. This module owns parsing, defaults and `--set`
//! overrides; it does not check that the layers fit together (that is
//! `arch`) nor touch tensors.

mod controls;
mod data;
mod overrides;
pub mod reference;
mod training;

pub use controls::*;
pub use data::*;
pub use overrides::{apply_overrides, parse_assignment, value_at};
pub use training::*;

use crate::bail_input;
use crate::error::InputContext;
use crate::layers::{Layer, decode_layer};
use anyhow::Result;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::Path;

/// A config file larger than this is not a config (16 MiB: a network of
/// thousands of layers is still far below).
pub const MAX_CONFIG_BYTES: u64 = 16 << 20;

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

/// The sections that are objects of named settings.
const SECTIONS: &[&str] = &[
    "training",
    "training.optimizer",
    "training.early_stopping",
    "data",
    "data.augment",
    "data.augment.random_crop",
    "data.augment.affine",
    "data.normalize",
];

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
        let text = crate::fsutil::read_input_text(
            path,
            crate::fsutil::Input {
                what: "config file",
                max_bytes: MAX_CONFIG_BYTES,
            },
        )?;
        let value: Value = crate::json::parse(&text)
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
            return Err(format!(
                "the top level must be a JSON object {{\"input_shape\": ..., \"layers\": ...}}, got {}",
                crate::json::show(&value)
            ));
        }
        // serde would read a section written as a list positionally
        // (`"training": [5, 64]` as epochs and batch size): refuse that.
        for path in SECTIONS {
            let mut here = Some(&value);
            for key in path.split('.') {
                here = here.and_then(|v| v.get(key));
            }
            if let Some(v @ Value::Array(_)) = here {
                return Err(format!(
                    "field `{path}`: expected an object {{...}}, got {}",
                    crate::json::show(v)
                ));
            }
        }
        let raw: RawConfig = crate::json::decode(&value)?;
        let layers = raw
            .layers
            .into_iter()
            .enumerate()
            .map(|(i, v)| decode_layer(&format!("layer {i}"), v))
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
        t.lr_schedule.check(t.epochs)?;
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
        t.optimizer.rule()?;
        controls::check(t, self.num_classes)?;
        if t.monitor == Monitor::ValMacroF1 && self.data.val_size() == ValSize::Count(0) {
            bail_input!(
                "training.monitor is val_macro_f1 but data.val_size is 0, so there is no validation \
                 split to score; give data.val_size or monitor another metric"
            );
        }
        Ok(())
    }
}
