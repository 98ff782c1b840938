//! One function per subcommand: turn parsed flags into settings (through
//! [`crate::settings`]), call the library, print the result. Output formats
//! live here; the work does not.

pub(crate) mod check_device;
pub(crate) mod docs;
pub(crate) mod eval;
pub(crate) mod export;
pub(crate) mod feature_maps;
pub(crate) mod filters;
pub(crate) mod import;
pub(crate) mod lr_find;
pub(crate) mod plot;
pub(crate) mod predict;
pub(crate) mod report;
pub(crate) mod samples;
pub(crate) mod summary;
pub(crate) mod sweep;
pub(crate) mod train;

use crate::data::Normalization;
use crate::model::{Model, Weights};
use crate::settings;
use anyhow::{Context, Result};
use candle_core::Device;
use std::path::Path;

/// A model rebuilt from a weights file, with what is known about its data.
pub struct Loaded {
    pub config: crate::config::Config,
    pub model: Model,
    /// From the checkpoint; `None` for foreign weights (computed from the data then).
    pub normalization: Option<Normalization>,
    pub classes: Vec<String>,
    pub epoch: Option<usize>,
}

/// Loads a cnn checkpoint, or any safetensors file (such as a PyTorch
/// state_dict) when `config` describes its architecture
/// ([`settings::evaluation`]), onto `device`.
pub fn load_model(weights: &Path, config: Option<&Path>, device: &Device) -> Result<Loaded> {
    load_model_in(weights, config, device, None)
}

/// [`load_model`], evaluating in `precision` instead of the stored one.
pub fn load_model_in(
    weights: &Path,
    config: Option<&Path>,
    device: &Device,
    precision: Option<crate::config::Precision>,
) -> Result<Loaded> {
    let e = settings::evaluation(weights, config, precision)?;
    let model = Model::new(&e.plan, Weights::Tensors(&e.tensors), device)
        .with_context(|| format!("checkpoint {}", weights.display()))?;
    Ok(Loaded {
        config: e.config,
        model,
        normalization: e.normalization,
        classes: e.classes,
        epoch: e.epoch,
    })
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
