//! One function per subcommand: turn parsed flags into settings, call the
//! library, print the result. Output formats live here; the work does not.

pub(crate) mod check_device;
pub(crate) mod eval;
pub(crate) mod export;
pub(crate) mod feature_maps;
pub(crate) mod filters;
pub(crate) mod lr_find;
pub(crate) mod plot;
pub(crate) mod predict;
pub(crate) mod report;
pub(crate) mod samples;
pub(crate) mod summary;
pub(crate) mod sweep;
pub(crate) mod train;

use crate::arch;
use crate::checkpoint;
use crate::config::{Config, apply_overrides, parse_assignment};
use crate::data::{Normalization, class_names};
use crate::model::{Model, Weights};
use anyhow::{Context, Result};
use candle_core::Device;
use std::path::Path;

/// A model rebuilt from a weights file, with what is known about its data.
pub struct Loaded {
    pub config: Config,
    pub model: Model,
    /// From the checkpoint; `None` for foreign weights (computed from the data then).
    pub normalization: Option<Normalization>,
    pub classes: Vec<String>,
    pub epoch: Option<usize>,
}

/// Loads a cnn checkpoint, or any safetensors file (such as a PyTorch
/// state_dict) when `config` describes its architecture.
pub fn load_model(weights: &Path, config: Option<&Path>, device: &Device) -> Result<Loaded> {
    let (config, tensors, normalization, classes, epoch) = match config {
        None => {
            let ck = checkpoint::load(weights)?;
            (
                ck.meta.config,
                ck.weights,
                Some(ck.meta.normalization),
                ck.meta.classes,
                Some(ck.meta.epoch),
            )
        }
        Some(path) => {
            let config = Config::load(path)?;
            let plan = arch::plan(&config)?;
            let (_, tensors) = checkpoint::read_raw(weights)?;
            let tensors = checkpoint::import_foreign(tensors, &plan).with_context(|| {
                format!(
                    "{} does not fit config {}",
                    weights.display(),
                    path.display()
                )
            })?;
            let classes = class_names(config.data.dataset);
            (config, tensors, None, classes, None)
        }
    };
    let plan = arch::plan(&config).context("the checkpoint's config")?;
    let model = Model::new(&plan, Weights::Tensors(&tensors), device)
        .with_context(|| format!("checkpoint {}", weights.display()))?;
    Ok(Loaded {
        config,
        model,
        normalization,
        classes,
        epoch,
    })
}

/// Loads a config file and applies `--set` assignments, then `extra` ones
/// coming from dedicated flags (which win).
pub fn load_config(path: &Path, sets: &[String], extra: &[(String, String)]) -> Result<Config> {
    let config = Config::load(path)?;
    let mut pairs = sets
        .iter()
        .map(|s| parse_assignment(s))
        .collect::<Result<Vec<_>>>()?;
    pairs.extend_from_slice(extra);
    apply_overrides(&config, &pairs)
}

/// The flags `train` and `lr-find` share, applied to a config after
/// `--set` (the flags win).
pub struct RunFlags<'a> {
    pub batch_size: Option<usize>,
    pub seed: Option<u64>,
    pub init_from: Option<&'a Path>,
    pub limit_train: Option<usize>,
    pub dataset: Option<&'a str>,
    pub data_dir: Option<&'a Path>,
}

impl RunFlags<'_> {
    pub fn apply(&self, config: &mut Config) -> Result<()> {
        let t = &mut config.training;
        t.batch_size = self.batch_size.unwrap_or(t.batch_size);
        t.seed = self.seed.unwrap_or(t.seed);
        if let Some(path) = self.init_from {
            t.init_from = Some(path.to_path_buf());
        }
        let d = &mut config.data;
        d.limit_train = self.limit_train.or(d.limit_train);
        if let Some(name) = self.dataset {
            d.dataset = crate::config::DatasetName::parse(name)
                .map_err(|e| crate::input_error!("--dataset: {e:#}"))?;
        }
        if let Some(dir) = self.data_dir {
            d.dir = Some(dir.to_path_buf());
        }
        Ok(())
    }
}

/// `1234567` → `1,234,567`.
pub fn thousands(n: u128) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn thousands_groups_digits() {
        assert_eq!(super::thousands(0), "0");
        assert_eq!(super::thousands(999), "999");
        assert_eq!(super::thousands(61706), "61,706");
        assert_eq!(super::thousands(1234567), "1,234,567");
    }
}
