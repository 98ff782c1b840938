//! One function per subcommand: turn parsed flags into settings, call the
//! library, print the result. Output formats live here; the work does not.

pub mod eval;
pub mod report;
pub mod summary;
pub mod train;

use crate::config::{Config, apply_overrides, parse_assignment};
use crate::data::Dataset;
use anyhow::Result;
use std::path::Path;

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

/// The dataset's images must be what the config's first layer expects.
pub fn check_dataset_fits(config: &Config, data: &Dataset) -> Result<()> {
    let shape = data.train.shape();
    if config.input_shape != shape {
        crate::bail_input!(
            "input_shape is {:?} but {} images are {}×{}×{}; set input_shape to {:?}",
            config.input_shape,
            data.name.name(),
            shape[0],
            shape[1],
            shape[2],
            shape
        );
    }
    if config.num_classes != data.classes.len() {
        crate::bail_input!(
            "num_classes is {} but {} has {} classes; set num_classes to {} (and the last layer's width)",
            config.num_classes,
            data.name.name(),
            data.classes.len(),
            data.classes.len()
        );
    }
    Ok(())
}

/// `1234567` → `1,234,567`.
pub fn thousands(n: u128) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
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
