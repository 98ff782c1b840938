//! `cnn check-device`: every operation a config's network uses, run on a
//! device and on the CPU's own kernels with the same weights, batch and
//! dropout masks, compared layer by layer (forward outputs) and tensor by
//! tensor (gradients of the loss). What runs on a GPU is candle's
//! operations; with `--device cpu` the CPU runs them too (as
//! `CNN_KERNELS=candle` would), so the same check proves the path a GPU takes
//! on a machine without one.

use crate::arch;
use crate::cli::CheckDeviceArgs;
use crate::device;
use crate::layers::{Node, Pass};
use crate::model::{Model, Weights};
use crate::{ops, rng};
use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use rand::Rng as _;
use serde::Serialize;
use std::collections::HashMap;
use std::path::Path;

/// The largest relative difference of a layer output that passes: float32
/// sums taken in other orders, Winograd's transforms and a GPU's TF32
/// convolutions stay well below it.
const TOLERANCE: f64 = 5e-3;
/// The same for gradients, which also carry the few max-pooling windows whose
/// winner flips between two values equal to the last bits (the gradient then
/// goes to the other one): about 1e-2 through ResNet-9's three pools on a
/// random batch. A wrong operation (a gradient scaled, dropped or sent to the
/// wrong place) is off by far more.
const GRADIENT_TOLERANCE: f64 = 3e-2;

/// One compared tensor.
#[derive(Debug, Clone, Serialize)]
pub struct Compared {
    pub config: String,
    /// `output` of a layer, or `gradient` of a tensor.
    pub what: &'static str,
    /// The layer's path or the tensor's name.
    pub name: String,
    pub kind: String,
    /// ‖device − cpu‖ / ‖cpu‖ (Euclidean norms).
    pub relative_error: f64,
    pub max_abs_error: f64,
    pub ok: bool,
}

pub fn run(args: &CheckDeviceArgs) -> Result<()> {
    let device = device::open(args.device.device)?;
    let mut all = Vec::new();
    for path in &args.configs {
        let rows = check(path, &device, args.batch_size, args.seed)
            .with_context(|| format!("checking {} on {}", path.display(), args.device.device))?;
        all.extend(rows);
    }
    let failed = all.iter().filter(|r| !r.ok).count();
    if args.json {
        let out = serde_json::json!({
            "device": device::describe(&device),
            "reference": "cpu kernels",
            "tolerance": TOLERANCE,
            "gradient_tolerance": GRADIENT_TOLERANCE,
            "checked": all.len(),
            "failed": failed,
            "results": all,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "{:<22} {:<9} {:<34} {:<14} {:>10} {:>10}  ok",
            "config", "what", "layer or tensor", "kind", "rel err", "abs err"
        );
        for r in &all {
            println!(
                "{:<22} {:<9} {:<34} {:<14} {:>10.2e} {:>10.2e}  {}",
                r.config,
                r.what,
                r.name,
                r.kind,
                r.relative_error,
                r.max_abs_error,
                if r.ok { "yes" } else { "NO" }
            );
        }
        println!(
            "{} tensors compared on {} against the CPU kernels (relative tolerance {TOLERANCE:e} for outputs, \
             {GRADIENT_TOLERANCE:e} for gradients): {}",
            all.len(),
            device::describe(&device),
            if failed == 0 {
                "all within".to_string()
            } else {
                format!("{failed} beyond")
            }
        );
    }
    if failed > 0 {
        anyhow::bail!(
            "{failed} of {} tensors differ beyond the tolerance",
            all.len()
        );
    }
    Ok(())
}

/// Every layer's output of a step, and each parameter's gradient by name.
type Step = (Vec<(Node, Tensor)>, HashMap<String, Tensor>);

/// The forward outputs and gradients of one training step of `model` on
/// `(x, y)`, dropout drawn from `seed`.
fn step(model: &Model, x: &Tensor, y: &Tensor, seed: u64) -> Result<Step> {
    let mut outputs = Vec::new();
    let mut keep = |n: &Node, t: &Tensor| outputs.push((n.clone(), t.clone()));
    let mut dropout = rng::stream(seed, rng::Purpose::Dropout, 0);
    let logits = model.logits(x, Pass::train_observed(&mut dropout, &mut keep))?;
    let loss = ops::cross_entropy(&logits, y, 0.0)?;
    let grads = loss.backward()?;
    let grads = model
        .params()
        .iter()
        .filter_map(|(name, var)| {
            grads
                .get(var.as_tensor())
                .map(|g| (name.clone(), g.clone()))
        })
        .collect();
    Ok((outputs, grads))
}

fn check(path: &Path, device: &Device, batch: usize, seed: u64) -> Result<Vec<Compared>> {
    let config = crate::settings::load(path, &[])?;
    let plan = arch::plan(&config)?;
    let name = config.display_name().to_string();
    // The same weights everywhere: fresh ones on the CPU, copied over.
    let reference = Model::new(&plan, Weights::Init { seed }, &Device::Cpu)?;
    let weights: HashMap<String, Tensor> = reference.tensors().into_iter().collect();
    let candidate = Model::new(&plan, Weights::Tensors(&weights), device)?;

    let [c, h, w] = config.input_shape;
    let mut r = rng::stream(seed, rng::Purpose::Init, 1);
    let pixels: Vec<f32> = (0..batch * c * h * w)
        .map(|_| r.random_range(-2.0f32..2.0))
        .collect();
    let labels: Vec<u32> = (0..batch)
        .map(|_| r.random_range(0..config.num_classes as u32))
        .collect();
    let x = Tensor::from_vec(pixels, (batch, c, h, w), &Device::Cpu)?;
    let y = Tensor::from_vec(labels, batch, &Device::Cpu)?;

    let (ref_out, ref_grads) = step(&reference, &x, &y, seed)?;
    let (dev_x, dev_y) = (x.to_device(device)?, y.to_device(device)?);
    let (dev_out, dev_grads) = if device.is_cpu() {
        ops::with_candle_ops(|| step(&candidate, &dev_x, &dev_y, seed))?
    } else {
        step(&candidate, &dev_x, &dev_y, seed)?
    };

    let mut rows = Vec::new();
    for ((node, a), (_, b)) in ref_out.iter().zip(&dev_out) {
        rows.push(compare(&name, "output", &node.path, node.kind, a, b)?);
    }
    let kinds: HashMap<String, &'static str> = plan
        .layers
        .iter()
        .flat_map(|n| {
            let mut v = Vec::new();
            crate::model::walk(std::slice::from_ref(n), &mut |m| v.push(m.clone()));
            v
        })
        .flat_map(|n| {
            n.tensors()
                .into_iter()
                .map(move |(t, _)| (t, n.kind))
                .collect::<Vec<_>>()
        })
        .collect();
    let mut names: Vec<&String> = ref_grads.keys().collect();
    names.sort();
    for tensor in names {
        let Some(b) = dev_grads.get(tensor) else {
            anyhow::bail!("{tensor} has a gradient on the CPU but none on the device");
        };
        let kind = kinds.get(tensor).copied().unwrap_or("");
        rows.push(compare(
            &name,
            "gradient",
            tensor,
            kind,
            &ref_grads[tensor],
            b,
        )?);
    }
    Ok(rows)
}

fn compare(
    config: &str,
    what: &'static str,
    name: &str,
    kind: &str,
    a: &Tensor,
    b: &Tensor,
) -> Result<Compared> {
    let a = a
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let b = b
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    anyhow::ensure!(
        a.len() == b.len(),
        "{name}: {} values on the CPU, {} on the device",
        a.len(),
        b.len()
    );
    let norm = a.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
    let (mut sq, mut diff) = (0f64, 0f64);
    for (x, y) in a.iter().zip(&b) {
        let d = (*x as f64 - *y as f64).abs();
        sq += d * d;
        diff = diff.max(d);
    }
    let finite = b.iter().all(|v| v.is_finite());
    let relative = if norm > 0.0 {
        sq.sqrt() / norm
    } else {
        sq.sqrt()
    };
    Ok(Compared {
        config: config.to_string(),
        what,
        name: name.to_string(),
        kind: kind.to_string(),
        relative_error: relative,
        max_abs_error: diff,
        ok: finite
            && relative
                <= if what == "gradient" {
                    GRADIENT_TOLERANCE
                } else {
                    TOLERANCE
                },
    })
}
