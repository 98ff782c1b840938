//! `cnn import`: a PyTorch state_dict of torchvision or timm (saved with
//! safetensors) made into a self-describing cnn checkpoint, by the name
//! table the config declares (`torch_name` on each layer; see
//! [`crate::interop::name_table`]). The checkpoint carries the config, the
//! normalisation the weights were trained with (the config's
//! `data.normalize`), the class names and the evaluation transform (the
//! config's `data.resize`), so `eval`, `predict`, `export` and
//! `--init-from` take it like any checkpoint `cnn train` writes.

use super::thousands;
use crate::arch;
use crate::checkpoint::{self, Meta};
use crate::cli::ImportArgs;
use crate::config::{Config, Normalize};
use crate::data::Normalization;
use crate::interop;
use anyhow::{Context, Result};
use candle_core::Tensor;
use std::collections::HashMap;
use std::path::Path;

/// The 1,000 ImageNet-1k class names in label order, as torchvision's
/// weights list them (`ResNet18_Weights.IMAGENET1K_V1.meta["categories"]`).
const IMAGENET_CLASSES: &str = include_str!("../../configs/zoo/imagenet-classes.txt");

pub fn run(args: &ImportArgs) -> Result<()> {
    if std::fs::canonicalize(&args.out).ok() == std::fs::canonicalize(&args.file).ok()
        && args.out.exists()
    {
        crate::bail_input!(
            "--out {} is the file being imported; choose another path for the checkpoint",
            args.out.display()
        );
    }
    crate::output::check(&args.out, args.force, "--out")?;
    let config = Config::load(&args.config)?;
    let plan = arch::plan(&config).with_context(|| format!("config {}", args.config.display()))?;
    // The table first: a config without names is the user's next fix,
    // whatever the file holds.
    interop::name_table(&plan, args.from)
        .with_context(|| format!("config {}", args.config.display()))?;
    let normalization = normalization(&config, &args.config)?;
    let classes = classes(&config, args)?;
    let file = crate::data::hub::weights_file(&args.file, "cnn import", false)?;
    refuse_pickle(&file)?;
    let (meta, raw) = checkpoint::read_raw(&file)?;
    if meta
        .as_ref()
        .and_then(|m| m.get("format"))
        .is_some_and(|f| f == checkpoint::FORMAT)
    {
        crate::bail_input!(
            "{} is already a cnn checkpoint; give it to eval, predict, export or --init-from as it is",
            args.file.display()
        );
    }
    let raw = strip_wrapper(raw, &plan, args.from)?;
    let weights = interop::from_torch(raw, &plan, args.from).with_context(|| {
        format!(
            "importing {} with the names of config {}",
            args.file.display(),
            args.config.display()
        )
    })?;
    let tensors: Vec<(String, Tensor)> = plan
        .layers
        .iter()
        .flat_map(|node| node.tensors())
        .map(|(name, _)| {
            let t = weights[&name].clone();
            (name, t)
        })
        .collect();
    let meta = Meta {
        config: config.clone(),
        epoch: 0,
        step: 0,
        metrics: None,
        normalization,
        classes,
        dataset: config.data.dataset.name().to_string(),
        state: None,
        run_id: None,
    };
    checkpoint::save(&args.out, &meta, &tensors)?;
    println!(
        "wrote {}: {} ({} parameters, {} tensors) from the {} state_dict {}; {} classes",
        args.out.display(),
        config.display_name(),
        thousands(plan.params()),
        tensors.len(),
        args.from.name(),
        args.file.display(),
        plan.num_classes,
    );
    Ok(())
}

/// What the weights expect of their input: the config's `data.normalize`.
fn normalization(config: &Config, path: &Path) -> Result<Normalization> {
    let channels = config.input_shape[0];
    match &config.data.normalize {
        Normalize::Given { mean, std } => Ok(Normalization {
            mean: mean.clone(),
            std: std.clone(),
        }),
        Normalize::None => Ok(Normalization::identity(channels)),
        Normalize::Auto => crate::bail_input!(
            "config {}: data.normalize is \"auto\", but pretrained weights expect the normalisation \
             they were trained with; give it, such as ImageNet's {{\"mean\": [0.485, 0.456, 0.406], \
             \"std\": [0.229, 0.224, 0.225]}}",
            path.display()
        ),
    }
}

/// `--classes FILE` (one name per line), else ImageNet's for 1,000
/// classes, else the labels' numbers.
fn classes(config: &Config, args: &ImportArgs) -> Result<Vec<String>> {
    let n = config.num_classes;
    let Some(path) = &args.classes else {
        if n == 1000 {
            return Ok(IMAGENET_CLASSES.lines().map(str::to_string).collect());
        }
        return Ok((0..n).map(|i| i.to_string()).collect());
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--classes {}", path.display()))
        .map_err(|e| crate::input_error!("{e:#}"))?;
    let names: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    if names.len() != n {
        crate::bail_input!(
            "--classes {} lists {} names but the config has num_classes {n}; give one name per line, \
             in label order",
            path.display(),
            names.len()
        );
    }
    Ok(names)
}

/// A `.pth`/`.pt` file (a zip of pickles) gets the one-line conversion
/// instead of "not a valid safetensors file": cnn never unpickles.
fn refuse_pickle(path: &Path) -> Result<()> {
    use std::io::Read;
    // A safetensors file: an 8-byte length, then its JSON header.
    let mut head = [0u8; 9];
    let read = std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok();
    let zip = head[..4] == *b"PK\x03\x04";
    let pickle = head[0] == 0x80 && (2..=5).contains(&head[1]) && head[8] != b'{';
    if read && (zip || pickle) {
        crate::bail_input!(
            "{} is a PyTorch pickle (torch.save), which cnn does not read (unpickling runs code); save \
             the state_dict with safetensors instead: python -c \"import torch, safetensors.torch as s; \
             s.save_file(torch.load('{0}', map_location='cpu'), '{0}.safetensors')\"",
            path.display()
        );
    }
    Ok(())
}

/// A state_dict saved from a wrapper (`model.` of Lightning, `module.` of
/// DDP): the prefix before the table's first name, taken off every name
/// that has it.
fn strip_wrapper(
    raw: HashMap<String, Tensor>,
    plan: &arch::Plan,
    source: interop::Source,
) -> Result<HashMap<String, Tensor>> {
    let table = interop::name_table(plan, source)?;
    let Some(first) = table.first() else {
        return Ok(raw);
    };
    if raw.contains_key(&first.torch) {
        return Ok(raw);
    }
    let prefix = raw
        .keys()
        .filter_map(|k| k.strip_suffix(first.torch.as_str()))
        .filter(|p| p.ends_with('.'))
        .min_by_key(|p| p.len())
        .map(str::to_string);
    let Some(prefix) = prefix else {
        return Ok(raw);
    };
    Ok(raw
        .into_iter()
        .map(|(k, t)| match k.strip_prefix(&prefix) {
            Some(rest) => (rest.to_string(), t),
            None => (k, t),
        })
        .collect())
}
