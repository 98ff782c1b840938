//! Self-describing checkpoints: one safetensors file with the model's tensors
//! (`layers.<i>.<name>`), the optimizer's state (`optim.*`) and, in the
//! `__metadata__` header, the format version, the full resolved config, the
//! epoch, its metrics, the data normalisation and the class names. `cnn eval`
//! needs nothing else. Files are written atomically.

use crate::config::Config;
use crate::data::Normalization;
use crate::error::InputContext;
use crate::fsutil::write_atomic;
use crate::history::EpochRecord;
use crate::run_state::RunState;
use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

pub const FORMAT: &str = "cnn-checkpoint";
pub const FORMAT_VERSION: u32 = 1;

/// What a checkpoint says about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    pub config: Config,
    /// Epochs completed when this was written.
    pub epoch: usize,
    /// Optimizer steps taken.
    pub step: u64,
    /// The metrics of `epoch`, if one has been completed.
    pub metrics: Option<EpochRecord>,
    pub normalization: Normalization,
    pub classes: Vec<String>,
    pub dataset: String,
    /// Where the run stands (in `last.safetensors`): what `--resume` needs.
    pub state: Option<RunState>,
    /// The run that wrote it (see `RunState::run_id`); `None` before run ids.
    pub run_id: Option<String>,
}

/// The `__metadata__` string map of a safetensors file.
pub type Metadata = HashMap<String, String>;

/// Prefix of the weights being trained, in a `last.safetensors` of a run
/// with `training.ema` (whose `layers.*` tensors are then the average).
pub const RAW: &str = "raw.";

/// A loaded checkpoint.
pub struct Checkpoint {
    pub meta: Meta,
    /// `layers.*` tensors: the network as evaluated (with `training.ema`,
    /// the average of the weights).
    pub weights: HashMap<String, Tensor>,
    /// `optim.*` tensors.
    pub optimizer: HashMap<String, Tensor>,
    /// `raw.layers.*` tensors, named without `raw.`: with `training.ema`,
    /// the weights being trained (in `last.safetensors` only).
    pub raw: HashMap<String, Tensor>,
}

fn to_json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("metadata always serialises")
}

/// Writes a checkpoint atomically.
pub fn save(path: &Path, meta: &Meta, tensors: &[(String, Tensor)]) -> Result<()> {
    let mut info = HashMap::new();
    info.insert("format".to_string(), FORMAT.to_string());
    info.insert("format_version".to_string(), FORMAT_VERSION.to_string());
    info.insert(
        "cnn_version".to_string(),
        env!("CARGO_PKG_VERSION").to_string(),
    );
    info.insert("config".to_string(), to_json(&meta.config));
    info.insert("epoch".to_string(), meta.epoch.to_string());
    info.insert("step".to_string(), meta.step.to_string());
    info.insert("metrics".to_string(), to_json(&meta.metrics));
    info.insert("normalization".to_string(), to_json(&meta.normalization));
    info.insert("classes".to_string(), to_json(&meta.classes));
    info.insert("dataset".to_string(), meta.dataset.clone());
    if let Some(state) = &meta.state {
        info.insert("state".to_string(), to_json(state));
    }
    if let Some(id) = &meta.run_id {
        info.insert("run_id".to_string(), id.clone());
    }
    let cpu: Vec<(String, Tensor)> = tensors
        .iter()
        .map(|(n, t)| Ok((n.clone(), t.to_device(&Device::Cpu)?.contiguous()?)))
        .collect::<Result<_>>()?;
    let bytes = safetensors::serialize(cpu.iter().map(|(n, t)| (n.as_str(), t)), Some(info))
        .context("serialising the checkpoint")?;
    write_atomic(path, &bytes).with_context(|| format!("writing checkpoint {}", path.display()))
}

/// Reads the tensors of any safetensors file, and its metadata when it is a
/// cnn checkpoint (`None` for a plain file such as a PyTorch state_dict).
pub fn read_raw(path: &Path) -> Result<(Option<Metadata>, HashMap<String, Tensor>)> {
    // A regular file only: a FIFO or /dev/zero is refused, not read forever.
    let bytes = crate::fsutil::read_input(
        path,
        crate::fsutil::Input {
            what: "checkpoint",
            max_bytes: 64 << 30,
        },
    )?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).input_context(|| {
        format!(
            "{} is not a valid safetensors file (truncated or corrupt?)",
            path.display()
        )
    })?;
    // Weights are floats: an integer or boolean tensor would be cast into
    // nonsense (or not load at all), so it is named instead. PyTorch's
    // integer batch counters (`num_batches_tracked`) are the exception:
    // the readers of PyTorch files drop them.
    let mut infos: Vec<_> = header
        .tensors()
        .into_iter()
        .filter(|(name, _)| !name.ends_with(".num_batches_tracked"))
        .collect();
    infos.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, info) in &infos {
        use safetensors::Dtype;
        if !matches!(
            info.dtype,
            Dtype::F32 | Dtype::F16 | Dtype::BF16 | Dtype::F64
        ) {
            crate::bail_input!(
                "{}: tensor {name} holds {:?} values, not floating-point weights; the file is damaged \
                 or is not a network's weights",
                path.display(),
                info.dtype
            );
        }
    }
    let tensors =
        candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).input_context(|| {
            format!(
                "{} is not a valid safetensors file (truncated or corrupt?)",
                path.display()
            )
        })?;
    // A NaN or infinite weight gives NaN for every image: named here
    // rather than blamed later on the learning rate.
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    for name in names {
        let t = &tensors[name];
        let finite = t
            .to_dtype(candle_core::DType::F32)
            .and_then(|t| t.flatten_all()?.to_vec1::<f32>())
            .map(|v| v.iter().all(|x| x.is_finite()))
            .unwrap_or(false);
        if !finite {
            crate::bail_input!(
                "{}: tensor {name} holds NaN or infinite values; the file is damaged (use an earlier \
                 checkpoint, such as best.safetensors, or train again)",
                path.display()
            );
        }
    }
    Ok((header.metadata().clone(), tensors))
}

/// Loads a cnn checkpoint; a plain safetensors file is refused with a hint.
pub fn load(path: &Path) -> Result<Checkpoint> {
    let (info, tensors) = read_raw(path)?;
    let info = info.unwrap_or_default();
    match info.get("format").map(String::as_str) {
        Some(FORMAT) => {}
        _ => crate::bail_input!(
            "{} is a safetensors file but not a cnn checkpoint (its metadata has no \"format\": \"{FORMAT}\"); \
             to evaluate weights saved elsewhere, such as a PyTorch state_dict, use \
             cnn eval --checkpoint FILE --config CONFIG",
            path.display()
        ),
    }
    let meta = parse_meta(&info)
        .with_context(|| format!("reading the metadata of checkpoint {}", path.display()))?;
    let (optimizer, rest): (HashMap<_, _>, HashMap<_, _>) = tensors
        .into_iter()
        .partition(|(k, _)| k.starts_with("optim."));
    let (raw, weights): (HashMap<_, _>, HashMap<_, _>) =
        rest.into_iter().partition(|(k, _)| k.starts_with(RAW));
    let raw = raw
        .into_iter()
        .map(|(k, t)| (k[RAW.len()..].to_string(), t))
        .collect();
    Ok(Checkpoint {
        meta,
        weights,
        optimizer,
        raw,
    })
}

fn parse_meta(info: &HashMap<String, String>) -> Result<Meta> {
    let get = |key: &str| -> Result<&String> {
        info.get(key)
            .ok_or_else(|| crate::input_error!("the checkpoint metadata lacks \"{key}\""))
    };
    let version: u32 = get("format_version")?
        .parse()
        .map_err(|_| crate::input_error!("the checkpoint's format_version is not a number"))?;
    if version > FORMAT_VERSION {
        crate::bail_input!(
            "the checkpoint has format version {version}, newer than this cnn understands ({FORMAT_VERSION}); upgrade cnn"
        );
    }
    fn json<T: for<'de> Deserialize<'de>>(key: &str, text: &str) -> Result<T> {
        serde_json::from_str(text)
            .map_err(|e| crate::input_error!("checkpoint metadata \"{key}\" is malformed: {e}"))
    }
    let config_value: serde_json::Value = json("config", get("config")?)?;
    let config = Config::from_value(config_value)
        .map_err(|e| crate::input_error!("the config stored in the checkpoint is invalid: {e}"))?;
    let meta = Meta {
        config,
        epoch: json("epoch", get("epoch")?)?,
        step: json("step", get("step")?)?,
        metrics: json("metrics", get("metrics")?)?,
        normalization: json("normalization", get("normalization")?)?,
        classes: json("classes", get("classes")?)?,
        dataset: get("dataset")?.clone(),
        state: match info.get("state") {
            Some(text) => Some(json("state", text)?),
            None => None,
        },
        run_id: info.get("run_id").cloned(),
    };
    check_meta(&meta)?;
    Ok(meta)
}

/// The parts of the metadata that must agree with each other before they
/// are used: a class name per output, a finite positive std per channel.
fn check_meta(meta: &Meta) -> Result<()> {
    let (classes, channels) = (meta.config.num_classes, meta.config.input_shape[0]);
    if meta.classes.len() != classes {
        crate::bail_input!(
            "checkpoint metadata \"classes\" names {} classes but the network has {classes} outputs; \
             the file was altered or is corrupt",
            meta.classes.len()
        );
    }
    let n = &meta.normalization;
    if n.mean.len() != channels || n.std.len() != channels {
        crate::bail_input!(
            "checkpoint metadata \"normalization\" has {} means and {} stds for {channels} input channels; \
             the file was altered or is corrupt",
            n.mean.len(),
            n.std.len()
        );
    }
    if n.mean.iter().any(|m| !m.is_finite()) || n.std.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
        crate::bail_input!(
            "checkpoint metadata \"normalization\" needs finite means and positive stds, not {:?} and {:?}; \
             the file was altered or is corrupt",
            n.mean,
            n.std
        );
    }
    Ok(())
}
