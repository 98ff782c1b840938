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

/// Frameworks whose state_dicts a config's `torch_name` fields describe
/// (`cnn import --from`, `cnn export --format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Source {
    /// torchvision.models (`torchvision.models.resnet18()`).
    Torchvision,
    /// timm (`timm.create_model("resnet18")`).
    Timm,
}

impl Source {
    pub fn name(self) -> &'static str {
        match self {
            Source::Torchvision => "torchvision",
            Source::Timm => "timm",
        }
    }
}

/// One tensor of a network under both names.
#[derive(Debug, Clone, PartialEq)]
pub struct Named {
    /// cnn's name (`layers.4.layers.0.weight`).
    pub cnn: String,
    /// The source's name (`layer1.0.conv1.weight`).
    pub torch: String,
    pub dims: Vec<usize>,
    /// Its shape in the source, where that differs from cnn's only by
    /// unit dimensions (timm's ConvNeXt `gamma` is `[C]`, cnn's and
    /// torchvision's layer scale `[C, 1, 1]`).
    pub torch_dims: Vec<usize>,
    /// The layer, as messages name it.
    pub label: String,
    /// A batch-norm layer's running mean: PyTorch keeps a step counter
    /// (`num_batches_tracked`) beside it.
    pub counter: Option<String>,
}

/// Every tensor of `plan` under the names `source` gives it, in checkpoint
/// order, from the layers' `torch_name` fields (no guessing by order). A
/// layer with tensors but no name for `source` is an error naming them all.
pub fn name_table(plan: &Plan, source: Source) -> Result<Vec<Named>> {
    fn walk(
        nodes: &[crate::layers::Node],
        source: Source,
        out: &mut Vec<Named>,
        unnamed: &mut Vec<String>,
    ) {
        for node in nodes {
            let run = node.op.run();
            let own = run.tensors();
            if !own.is_empty() {
                match node.torch_name.as_ref().and_then(|n| n.of(source.name())) {
                    None => unnamed.push(node.label.clone()),
                    Some(module) => {
                        for spec in own {
                            let counter = (spec.name == "running_mean")
                                .then(|| format!("{module}.num_batches_tracked"));
                            // A layer scale is a parameter of its block in
                            // PyTorch, not a module: the name is its own.
                            let scale = node.kind == "layer_scale";
                            let torch = if scale {
                                module.to_string()
                            } else {
                                format!("{module}.{}", spec.name)
                            };
                            let torch_dims = if scale && source == Source::Timm {
                                vec![spec.dims[0]]
                            } else {
                                spec.dims.clone()
                            };
                            out.push(Named {
                                cnn: format!("{}.{}", node.path, spec.name),
                                torch,
                                dims: spec.dims,
                                torch_dims,
                                label: node.label.clone(),
                                counter,
                            });
                        }
                    }
                }
            }
            for list in run.children() {
                walk(list, source, out, unnamed);
            }
        }
    }
    let mut out = Vec::new();
    let mut unnamed = Vec::new();
    walk(&plan.layers, source, &mut out, &mut unnamed);
    if !unnamed.is_empty() {
        let n = unnamed.len();
        let shown: Vec<&str> = unnamed.iter().take(8).map(String::as_str).collect();
        crate::bail_input!(
            "the config names no {} module for {n} layer{} with tensors: {}{}; give each such layer \
             a \"torch_name\" (its module in the state_dict, such as \"layer1.0.conv1\", or one per \
             source: {{\"{}\": \"...\"}}), as the configs in configs/zoo/ do",
            source.name(),
            if n == 1 { "" } else { "s" },
            shown.join(", "),
            if n > shown.len() { ", …" } else { "" },
            source.name()
        );
    }
    let mut seen = std::collections::HashSet::new();
    if let Some(twice) = out.iter().find(|n| !seen.insert(n.torch.as_str())) {
        crate::bail_input!(
            "two layers of the config have the same torch_name: {} ({} and another); each layer \
             needs its own module name",
            twice.torch,
            twice.label
        );
    }
    Ok(out)
}

/// A `source` state_dict (safetensors) as `plan`'s weights by cnn's names, in fp32. Anything
/// missing, unexpected or mis-shaped is refused in one list.
pub fn from_torch(
    tensors: HashMap<String, Tensor>,
    plan: &Plan,
    source: Source,
) -> Result<HashMap<String, Tensor>> {
    let table = name_table(plan, source)?;
    // PyTorch's batch counters have no counterpart in cnn.
    let mut tensors: HashMap<String, Tensor> = tensors
        .into_iter()
        .filter(|(k, _)| !k.ends_with(".num_batches_tracked"))
        .collect();
    let (mut missing, mut wrong) = (Vec::new(), Vec::new());
    let mut out = HashMap::new();
    for n in &table {
        match tensors.remove(&n.torch) {
            None => missing.push(format!("{} {:?} ({})", n.torch, n.torch_dims, n.label)),
            Some(t) if t.dims() != n.torch_dims.as_slice() => wrong.push(format!(
                "{}: file has {:?}, {} needs {:?}",
                n.torch,
                t.dims(),
                n.label,
                n.torch_dims
            )),
            Some(t) => {
                let t = t.reshape(n.dims.as_slice())?;
                out.insert(n.cnn.clone(), t.to_dtype(candle_core::DType::F32)?);
            }
        }
    }
    let mut unexpected: Vec<String> = tensors
        .iter()
        .map(|(k, t)| format!("{k} {:?}", t.dims()))
        .collect();
    unexpected.sort();
    if missing.is_empty() && wrong.is_empty() && unexpected.is_empty() {
        return Ok(out);
    }
    let heading = format!(
        "the {} state_dict does not match the config's torch_name table:",
        source.name()
    );
    Err(crate::model::mismatch(
        &heading,
        &missing,
        &wrong,
        &unexpected,
    ))
}

/// `weights` (by cnn's names) under the names `source` gives them, as its
/// `state_dict()` holds them: batch-norm layers with their
/// `num_batches_tracked` counter (`steps`, as an int64 scalar).
pub fn to_torch(
    weights: &HashMap<String, Tensor>,
    plan: &Plan,
    source: Source,
    steps: u64,
) -> Result<Vec<(String, Tensor)>> {
    let mut out = Vec::new();
    for n in name_table(plan, source)? {
        let t = weights
            .get(&n.cnn)
            .ok_or_else(|| crate::input_error!("the checkpoint has no tensor {}", n.cnn))?;
        let t = t.reshape(n.torch_dims.as_slice())?;
        out.push((n.torch, t.to_dtype(candle_core::DType::F32)?));
        if let Some(counter) = n.counter {
            let count = Tensor::new(steps as i64, &candle_core::Device::Cpu)?;
            out.push((counter, count));
        }
    }
    Ok(out)
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
