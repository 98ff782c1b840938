//! Fine-tuning's starting point (`training.init_from`): the tensors of
//! another checkpoint, or of a PyTorch state_dict saved with safetensors,
//! whose names and shapes match the new network. The rest (a new head for
//! another number of classes, say) keeps its initialisation from the seed.

use crate::arch::Plan;
use crate::checkpoint;
use anyhow::Result;
use candle_core::Tensor;
use std::collections::HashMap;
use std::path::Path;

/// What a source file gives a network.
pub struct Transfer {
    /// The tensors taken, by the network's names.
    pub tensors: HashMap<String, Tensor>,
    /// Tensors of the network the file has under the same name with another
    /// shape (`name: file [..], network [..]`): initialised from the seed.
    pub reshaped: Vec<String>,
    /// Tensors of the network the file lacks: initialised from the seed.
    pub missing: Vec<String>,
}

impl Transfer {
    /// One line for the user: what was taken and what starts fresh.
    pub fn summary(&self, path: &Path) -> String {
        let mut fresh: Vec<&str> = self
            .reshaped
            .iter()
            .chain(&self.missing)
            .map(String::as_str)
            .collect();
        fresh.sort_unstable();
        let fresh = if fresh.is_empty() {
            "nothing".to_string()
        } else {
            fresh.join(", ")
        };
        format!(
            "init_from {}: took {} tensors; initialised from the seed: {fresh}",
            path.display(),
            self.tensors.len()
        )
    }
}

/// A torchvision or timm state_dict read by the config's `torch_name`
/// table (the source under whose names the file has the most tensors), by
/// cnn's names; `None` when the config declares no names the file has.
fn by_torch_names(raw: &HashMap<String, Tensor>, plan: &Plan) -> Option<HashMap<String, Tensor>> {
    use crate::interop::{Source, name_table};
    let found = |source: Source| -> Option<HashMap<String, Tensor>> {
        let table = name_table(plan, source).ok()?;
        let out: HashMap<String, Tensor> = table
            .iter()
            .filter_map(|n| {
                let t = raw.get(&n.torch)?;
                // A tensor stored in the source's own shape (timm's `gamma`).
                let t = match t.dims() == n.torch_dims.as_slice() {
                    true => t.reshape(n.dims.as_slice()).ok()?,
                    false => t.clone(),
                };
                Some((n.cnn.clone(), t))
            })
            .collect();
        (!out.is_empty()).then_some(out)
    };
    [Source::Torchvision, Source::Timm]
        .into_iter()
        .filter_map(found)
        .max_by_key(|m| m.len())
}

/// Reads `path` (a cnn checkpoint: the network as evaluated; any other
/// safetensors file: its tensors, renamed as `interop` maps PyTorch's
/// names) and takes what fits `plan`. Nothing
/// fitting at all is an error, since it is surely the wrong file.
pub fn load(path: &Path, plan: &Plan) -> Result<Transfer> {
    let (meta, raw) = checkpoint::read_raw(path)?;
    let is_cnn = meta
        .as_ref()
        .and_then(|m| m.get("format"))
        .is_some_and(|f| f == checkpoint::FORMAT);
    let source: HashMap<String, Tensor> = if is_cnn {
        checkpoint::load(path)?.weights
    } else {
        by_torch_names(&raw, plan).unwrap_or_else(|| crate::interop::rename(raw, plan).tensors)
    };
    let mut out = Transfer {
        tensors: HashMap::new(),
        reshaped: Vec::new(),
        missing: Vec::new(),
    };
    for node in &plan.layers {
        for (name, spec) in node.tensors() {
            match source.get(&name) {
                Some(t) if t.dims() == spec.dims.as_slice() => {
                    out.tensors.insert(name, t.clone());
                }
                Some(t) => out.reshaped.push(format!(
                    "{name} (file {:?}, network {:?})",
                    t.dims(),
                    spec.dims
                )),
                None => out.missing.push(name),
            }
        }
    }
    if out.tensors.is_empty() && !out.reshaped.is_empty() {
        let n = out.reshaped.len();
        let shown: Vec<&str> = out.reshaped.iter().take(6).map(String::as_str).collect();
        crate::bail_input!(
            "training.init_from: no tensor of {} fits this network: {n} have its names but other \
             shapes ({}{}). Give a checkpoint of a network whose layers have the same sizes, or change \
             the layers to match it",
            path.display(),
            shown.join("; "),
            if n > shown.len() { "; …" } else { "" }
        );
    }
    if out.tensors.is_empty() {
        let mut names: Vec<&String> = source.keys().collect();
        names.sort();
        let shown: Vec<String> = names.iter().take(6).map(|n| n.to_string()).collect();
        crate::bail_input!(
            "training.init_from: no tensor of {} has the name and shape of a tensor of this network \
             (it holds {}{}; the network needs names like layers.0.weight). Give a checkpoint of a \
             network that shares layers with this one",
            path.display(),
            if shown.is_empty() {
                "no tensors".to_string()
            } else {
                shown.join(", ")
            },
            if names.len() > shown.len() {
                ", …"
            } else {
                ""
            }
        );
    }
    Ok(out)
}
