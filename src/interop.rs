//! Tensor names between cnn and PyTorch. cnn names a network's tensors
//! `layers.{path}.{tensor}` (`layers.3.weight`, `layers.5.layers.0.bias`),
//! which is what an `nn.Sequential` of the same layers calls `3.weight`, or
//! `model.3.weight` inside a module with a `model` attribute. One rule maps
//! a foreign file onto a network, for fine-tuning (`training.init_from`)
//! and for evaluating a state_dict (`eval --config`): the prefix under
//! which the most of the network's names are found (the longest among
//! equals) stands for `layers.`. PyTorch's `num_batches_tracked` counters
//! have no counterpart and are dropped.

use crate::arch::Plan;
use anyhow::Result;
use candle_core::Tensor;
use std::collections::HashMap;

/// What cnn calls `layers.`: the part of a cnn name after it is what an
/// `nn.Sequential` calls the tensor.
pub const LAYERS: &str = "layers.";

/// A foreign file's tensors sorted by the rule.
pub struct Renamed {
    /// Those found under the prefix, by cnn's names.
    pub tensors: HashMap<String, Tensor>,
    /// The rest, under the file's own names.
    pub others: HashMap<String, Tensor>,
}

/// `tensors` (PyTorch's names) renamed as `plan`'s network names them.
pub fn rename(tensors: HashMap<String, Tensor>, plan: &Plan) -> Renamed {
    let tensors: HashMap<String, Tensor> = tensors
        .into_iter()
        .filter(|(k, _)| !k.ends_with(".num_batches_tracked"))
        .collect();
    let wanted: Vec<String> = plan
        .layers
        .iter()
        .flat_map(|l| l.tensors())
        .map(|(name, _)| name.strip_prefix(LAYERS).unwrap_or(&name).to_string())
        .collect();
    let mut counts: HashMap<String, usize> = HashMap::new();
    for key in tensors.keys() {
        for w in &wanted {
            if let Some(prefix) = key.strip_suffix(w.as_str())
                && (prefix.is_empty() || prefix.ends_with('.'))
            {
                *counts.entry(prefix.to_string()).or_default() += 1;
            }
        }
    }
    let prefix = counts
        .into_iter()
        .max_by(|a, b| a.1.cmp(&b.1).then(a.0.len().cmp(&b.0.len())))
        .map(|(p, _)| p);
    let mut out = Renamed {
        tensors: HashMap::new(),
        others: HashMap::new(),
    };
    for (k, t) in tensors {
        match prefix.as_deref().and_then(|p| k.strip_prefix(p)) {
            Some(rest) => out.tensors.insert(format!("{LAYERS}{rest}"), t),
            None => out.others.insert(k, t),
        };
    }
    out
}

/// A foreign file that must hold exactly `plan`'s tensors (`eval
/// --config`): renamed by the rule, then checked, with one list of what is
/// missing, mis-shaped or unexpected.
pub fn import_foreign(
    tensors: HashMap<String, Tensor>,
    plan: &Plan,
) -> Result<HashMap<String, Tensor>> {
    let renamed = rename(tensors, plan);
    let mut all = renamed.tensors;
    all.extend(renamed.others);
    crate::model::check_tensors(plan, &all)?;
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn plan() -> Plan {
        let config = crate::config::Config::from_value(serde_json::json!({
            "input_shape": [1, 4, 4], "num_classes": 2,
            "layers": [{"type": "flatten"}, {"type": "linear", "out_features": 2}]
        }))
        .unwrap();
        crate::arch::plan(&config).unwrap()
    }

    fn file(names: &[(&str, &[usize])]) -> HashMap<String, Tensor> {
        names
            .iter()
            .map(|(n, d)| {
                let t = Tensor::zeros(d.to_vec(), candle_core::DType::F32, &Device::Cpu).unwrap();
                (n.to_string(), t)
            })
            .collect()
    }

    #[test]
    fn the_prefix_that_finds_the_most_names_stands_for_layers() {
        let f = file(&[
            ("model.1.weight", &[2, 16]),
            ("model.1.bias", &[2]),
            ("head.1.bias", &[2]),
            ("model.1.num_batches_tracked", &[]),
        ]);
        let r = rename(f, &plan());
        let mut names: Vec<_> = r.tensors.keys().cloned().collect();
        names.sort();
        assert_eq!(names, ["layers.1.bias", "layers.1.weight"]);
        assert_eq!(r.others.keys().collect::<Vec<_>>(), ["head.1.bias"]);
        // A plain nn.Sequential: the empty prefix.
        let r = rename(file(&[("1.weight", &[2, 16]), ("1.bias", &[2])]), &plan());
        assert_eq!(r.tensors.len(), 2);
        assert!(r.others.is_empty());
    }

    #[test]
    fn an_import_lists_what_does_not_fit() {
        let ok = import_foreign(
            file(&[("0.1.weight", &[2, 16]), ("0.1.bias", &[2])]),
            &plan(),
        );
        assert!(ok.is_ok());
        let err = import_foreign(file(&[("1.weight", &[2, 15]), ("extra", &[1])]), &plan())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("missing (1)") && err.contains("layers.1.bias"),
            "{err}"
        );
        assert!(
            err.contains("wrong shape") && err.contains("[2, 15]"),
            "{err}"
        );
        assert!(
            err.contains("unexpected (1)") && err.contains("extra"),
            "{err}"
        );
    }
}
