//! `cnn predict`: classify image files with a checkpoint. Each image is
//! made to look like the training data (see `data::convert`), normalised as
//! recorded in the checkpoint, and the top-K classes are printed.

use super::load_model;
use crate::cli::PredictArgs;
use crate::data::Batcher;
use crate::data::convert::{self, Fit};
use crate::device;
use anyhow::Result;
use candle_core::Tensor;
use serde_json::json;

pub fn run(args: &PredictArgs) -> Result<()> {
    if args.top == 0 {
        crate::bail_input!("--top 0: show at least 1 class");
    }
    let device = device::open(args.device)?;
    let loaded = load_model(&args.checkpoint, None, &device)?;
    let config = &loaded.config;
    let [c, h, w] = config.input_shape;
    let fit = args
        .preprocess
        .unwrap_or_else(|| Fit::for_dataset(config.data.dataset.name()));
    let normalization = loaded
        .normalization
        .clone()
        .expect("checkpoints record their normalization");
    let batcher = Batcher::new(&normalization, &device);
    let label = |i: usize| {
        loaded
            .classes
            .get(i)
            .cloned()
            .unwrap_or_else(|| i.to_string())
    };

    // A file that cannot be read is reported in its place; the others are
    // still classified, and the exit code says some failed.
    let inputs: Vec<Result<Tensor>> = args
        .images
        .iter()
        .map(|path| {
            batcher.tensor_from_pixels(&convert::load_image(path, c, h, w, fit)?, [c, h, w])
        })
        .collect();
    let readable: Vec<Tensor> = inputs
        .iter()
        .filter_map(|r| r.as_ref().ok().cloned())
        .collect();
    let mut results = Vec::with_capacity(readable.len());
    for chunk in readable.chunks(256) {
        let probs = loaded
            .model
            .probabilities(&Tensor::cat(chunk, 0)?)?
            .to_vec2::<f32>()?;
        results.extend(probs);
    }
    let mut results = results.iter();
    let k = args.top.min(config.num_classes);
    let mut out = Vec::new();
    let mut failed = 0;
    for (path, input) in args.images.iter().zip(&inputs) {
        if let Err(e) = input {
            failed += 1;
            if args.json {
                out.push(json!({"path": path, "error": format!("{e:#}")}));
            } else {
                eprintln!("error: {e:#}");
            }
            continue;
        }
        let probs = results.next().expect("one result per readable image");
        let mut order: Vec<usize> = (0..probs.len()).collect();
        order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
        let top: Vec<_> = order[..k]
            .iter()
            .map(|&i| json!({"class": i, "label": label(i), "probability": probs[i]}))
            .collect();
        if args.json {
            out.push(
                json!({"path": path, "class": order[0], "label": label(order[0]), "top": top}),
            );
        } else {
            let rest: Vec<String> = order[1..k]
                .iter()
                .map(|&i| format!("{} {:.1}%", label(i), 100.0 * probs[i]))
                .collect();
            let rest = if rest.is_empty() {
                String::new()
            } else {
                format!("  ({})", rest.join(", "))
            };
            println!(
                "{}: {} {:.1}%{rest}",
                path.display(),
                label(order[0]),
                100.0 * probs[order[0]]
            );
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    if failed > 0 {
        crate::bail_input!(
            "{failed} of {} images could not be read (named above); the others were classified",
            args.images.len()
        );
    }
    Ok(())
}
