//! `cnn export`: a checkpoint's network as an ONNX file (see `export` for
//! what the model holds), or its weights as a torchvision or timm
//! state_dict (by the config's `torch_name` table). An existing output is replaced only with
//! `--force`, never by the checkpoint being read, and atomically.

use super::thousands;
use crate::arch;
use crate::checkpoint;
use crate::cli::{ExportArgs, ExportFormat};
use crate::export::{self, Network};
use crate::interop::{self, Source};
use crate::model::check_tensors;
use crate::onnx;
use anyhow::{Context, Result};
use candle_core::Tensor;

pub fn run(args: &ExportArgs) -> Result<()> {
    let (input, output) = (&args.checkpoint, &args.output);
    if output.symlink_metadata().is_ok()
        && std::fs::canonicalize(output).ok() == std::fs::canonicalize(input).ok()
    {
        crate::bail_input!(
            "-o {} is the checkpoint being exported; choose another path for the ONNX file",
            output.display()
        );
    }
    crate::output::check(output, args.force, "-o")?;
    let (info, _) = checkpoint::read_raw(input)?;
    if info
        .as_ref()
        .and_then(|m| m.get("format"))
        .map(String::as_str)
        != Some(checkpoint::FORMAT)
    {
        crate::bail_input!(
            "{} is a safetensors file but not a cnn checkpoint (its metadata has no \"format\": \"{}\"); \
             cnn export needs a checkpoint written by cnn train, which records the architecture, the \
             normalisation and the class names the ONNX model carries",
            input.display(),
            checkpoint::FORMAT
        );
    }
    let ck = checkpoint::load(input)?;
    let meta = &ck.meta;
    let plan = arch::plan(&meta.config)
        .with_context(|| format!("the config stored in checkpoint {}", input.display()))?;
    check_tensors(&plan, &ck.weights).with_context(|| format!("checkpoint {}", input.display()))?;
    let format = match args.format {
        Some(f) => f,
        None if output.extension().is_some_and(|e| e == "safetensors") => ExportFormat::Torchvision,
        None => ExportFormat::Onnx,
    };
    let source = match format {
        ExportFormat::Onnx => None,
        ExportFormat::Torchvision => Some(Source::Torchvision),
        ExportFormat::Timm => Some(Source::Timm),
    };
    if let Some(source) = source {
        let state = interop::to_torch(&ck.weights, &plan, source, meta.step)
            .with_context(|| format!("checkpoint {}", input.display()))?;
        let bytes = safetensors::serialize(state.iter().map(|(n, t)| (n.as_str(), t)), None)
            .context("serialising the state_dict")?;
        crate::output::write(output, &bytes, args.force, "-o")?;
        println!(
            "wrote {}: a {} state_dict of {} tensors ({} parameters); load it with \
             model.load_state_dict(safetensors.torch.load_file(\"{}\"))",
            output.display(),
            source.name(),
            state.len(),
            thousands(plan.params()),
            output.display()
        );
        return Ok(());
    }
    let tensors: Vec<Tensor> = plan
        .layers
        .iter()
        .flat_map(|node| node.tensors())
        .map(|(name, _)| ck.weights[&name].clone())
        .collect();
    let net = Network {
        config: &meta.config,
        plan: &plan,
        tensors: &tensors,
        normalization: &meta.normalization,
        classes: &meta.classes,
        dataset: &meta.dataset,
        epoch: meta.epoch,
    };
    let model = export::model(&net, args.softmax)
        .with_context(|| format!("exporting checkpoint {}", input.display()))?;
    let bytes = onnx::encode(&model);
    crate::output::write(output, &bytes, args.force, "-o")?;
    let [c, h, w] = meta.config.input_shape;
    let graph = model.graph.as_ref().expect("an exported model has a graph");
    println!(
        "wrote {} (ONNX opset {}, {} KB): {} [batch, {c}, {h}, {w}] in [0, 1] -> {} [batch, {}]; \
         {} nodes, {} parameters",
        output.display(),
        onnx::OPSET,
        thousands(bytes.len().div_ceil(1000) as u128),
        export::INPUT,
        graph.output[0].name,
        plan.num_classes,
        graph.node.len(),
        thousands(plan.params()),
    );
    Ok(())
}
