//! `cnn summary`: per-layer output shape, parameters and multiply-adds.

use super::thousands;
use crate::arch::Plan;
use crate::cli::SummaryArgs;
use crate::layers::Node;
use crate::settings;
use anyhow::Result;
use serde_json::{Value, json};

pub fn run(args: &SummaryArgs) -> Result<()> {
    // The whole config is checked as `cnn train` checks it, so that a
    // summary (and a sweep's check of its points) passes only what trains.
    let resolved = settings::new_run(&args.config, &args.sets, &args.precision)?;
    for note in &resolved.notes {
        eprintln!("warning: {note}");
    }
    let (config, plan) = (&resolved.config, &resolved.plan);
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&to_json(config.display_name(), plan))?
        );
    } else {
        for w in &plan.warnings {
            eprintln!("warning: {w}");
        }
        print!("{}", table(config.display_name(), plan));
        print!("{}", kernels_table(plan));
    }
    Ok(())
}

/// What the CPU runs each convolution with, forward and backward: one row
/// per conv2d layer (the first with parameters needs no input gradient).
fn conv_kernels(plan: &Plan) -> Vec<(String, [String; 2])> {
    let precision = plan.precision;
    let walk_in = |nodes: &[Node], grads_below: &mut bool, out: &mut Vec<(String, [String; 2])>| {
        walk(nodes, grads_below, out, precision)
    };
    fn walk(
        nodes: &[Node],
        grads_below: &mut bool,
        out: &mut Vec<(String, [String; 2])>,
        precision: crate::config::Precision,
    ) {
        for n in nodes {
            if let (Some(g), &[c, h, w]) = (n.op.conv(), n.input.dims().as_slice()) {
                let need_dx = *grads_below;
                let bf16 = precision == crate::config::Precision::Bf16;
                if let Some([fwd, mut bwd]) =
                    crate::ops::conv2d_algorithms(g, [c, h, w], need_dx, bf16)
                {
                    if !need_dx {
                        bwd.push_str(" (no input gradient)");
                    }
                    out.push((n.path.clone(), [fwd, bwd]));
                }
            }
            let children = n.op.run().children();
            for list in children {
                walk(list, &mut grads_below.clone(), out, precision);
            }
            *grads_below |= n.params > 0;
        }
    }
    let mut out = Vec::new();
    walk_in(&plan.layers, &mut false, &mut out);
    out
}

/// The table's second part: the CPU kernels each convolution runs.
fn kernels_table(plan: &Plan) -> String {
    let rows = conv_kernels(plan);
    if rows.is_empty() {
        return String::new();
    }
    let mut out = format!("CPU kernels ({}):\n", crate::ops::kernels::get().describe());
    let width = rows.iter().map(|(p, _)| p.len()).max().unwrap_or(0) - "layers.".len();
    for (path, [fwd, bwd]) in rows {
        let path = path.strip_prefix("layers.").unwrap_or(&path);
        out.push_str(&format!(
            "  {path:<width$}  conv2d forward {fwd}, backward {bwd}\n"
        ));
    }
    out
}

pub fn to_json(name: &str, plan: &Plan) -> serde_json::Value {
    let kernels: serde_json::Map<String, Value> = conv_kernels(plan)
        .into_iter()
        .map(|(path, [fwd, bwd])| (path, json!({"forward": fwd, "backward": bwd})))
        .collect();
    json!({
        "cpu_kernels": kernels,
        "name": name,
        "input_shape": plan.input.dims(),
        "num_classes": plan.num_classes,
        "layers": list_json(&plan.layers),
        "total_params": plan.params() as u64,
        "trainable_params": (plan.params() - plan.frozen_params()) as u64,
        "frozen_params": plan.frozen_params() as u64,
        "buffers": plan.buffers() as u64,
        "total_macs": plan.macs() as u64,
        "warnings": plan.warnings,
    })
}

/// A list of layers as JSON; a block's lists nest under their names as in
/// the config (`layers`, `shortcut`, `branches`).
fn list_json(nodes: &[Node]) -> Vec<Value> {
    nodes
        .iter()
        .map(|l| {
            let mut entry = json!({
                "index": l.index,
                "path": l.path,
                "type": l.kind,
                "output_shape": l.output.dims(),
                "params": l.params as u64,
                "macs": l.macs as u64,
            });
            for list in l.op.run().children() {
                let Some(name) = list.first().and_then(|n| n.list.clone()) else {
                    continue;
                };
                let value = Value::Array(list_json(list));
                match name.split_once('.') {
                    // branches.0, branches.1, ...: one array of lists.
                    Some((group, _)) => {
                        let slot = &mut entry[group];
                        if !slot.is_array() {
                            *slot = Value::Array(Vec::new());
                        }
                        slot.as_array_mut().expect("an array").push(value);
                    }
                    None => entry[name.as_str()] = value,
                }
            }
            entry
        })
        .collect()
}

/// One row per layer, a block's layers indented under it.
fn table_rows(nodes: &[Node], depth: usize, rows: &mut Vec<[String; 5]>) {
    for l in nodes {
        rows.push([
            l.path
                .strip_prefix("layers.")
                .unwrap_or(&l.path)
                .to_string(),
            format!("{}{}", "  ".repeat(depth), l.kind),
            l.output.to_string(),
            thousands(l.params),
            thousands(l.macs),
        ]);
        for list in l.op.run().children() {
            table_rows(list, depth + 1, rows);
        }
    }
}

pub fn table(name: &str, plan: &Plan) -> String {
    let mut rows = vec![[
        "#".to_string(),
        "layer".into(),
        "output shape".into(),
        "params".into(),
        "mult-adds".into(),
    ]];
    rows.push([
        "".into(),
        "input".into(),
        plan.input.to_string(),
        "".into(),
        "".into(),
    ]);
    table_rows(&plan.layers, 0, &mut rows);
    let widths: Vec<usize> = (0..5)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let total_width = widths.iter().sum::<usize>() + 2 * 4;
    let mut out = format!("Model: {name}\n");
    let rule = "─".repeat(total_width);
    for (i, r) in rows.iter().enumerate() {
        let line = format!(
            "{:<w0$}  {:<w1$}  {:<w2$}  {:>w3$}  {:>w4$}",
            r[0],
            r[1],
            r[2],
            r[3],
            r[4],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3],
            w4 = widths[4]
        );
        out.push_str(line.trim_end());
        out.push('\n');
        if i == 0 {
            out.push_str(&rule);
            out.push('\n');
        }
    }
    out.push_str(&rule);
    out.push('\n');
    let bytes = (plan.params() + plan.buffers()) * 4;
    let frozen = plan.frozen_params();
    if frozen == 0 {
        out.push_str(&format!(
            "Total params: {} (all trainable)\n",
            thousands(plan.params())
        ));
    } else {
        out.push_str(&format!(
            "Total params: {} ({} trainable, {} frozen by \"trainable\": false)\n",
            thousands(plan.params()),
            thousands(plan.params() - frozen),
            thousands(frozen)
        ));
    }
    if plan.buffers() > 0 {
        out.push_str(&format!(
            "Buffers: {} (batch-norm running statistics and fixed scales, not trained)\n",
            thousands(plan.buffers())
        ));
    }
    out.push_str(&format!(
        "Size: {:.1} KiB as f32\nMult-adds per image: {} (conv2d and linear layers)\n",
        bytes as f64 / 1024.0,
        thousands(plan.macs())
    ));
    out
}
