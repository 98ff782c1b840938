//! `cnn filters`: the kernels of one conv layer of a checkpoint as a grid,
//! one row per output channel and one tile per input channel, on a colour
//! scale shared by the whole layer and stated under the picture.

use super::load_model;
use crate::arch::Plan;
use crate::cli::FiltersArgs;
use crate::layers::Node;
use crate::model::walk;
use crate::plot::{self, grid};
use anyhow::Result;
use candle_core::Device;

/// Most rows and columns drawn; larger layers show their first ones.
const MAX_ROWS: usize = 64;
const MAX_COLS: usize = 16;

/// The conv layer `which` of `plan` (default: the first): an index in the
/// config's list (`3`) or the path of one inside a block (`5.layers.0`, or
/// `layers.5.layers.0` as in the checkpoint); else an error that lists the
/// conv layers.
pub fn conv_layer<'a>(plan: &'a Plan, which: Option<&str>) -> Result<&'a Node> {
    let mut convs: Vec<&Node> = Vec::new();
    walk(&plan.layers, &mut |n| {
        if n.op.conv().is_some() {
            convs.push(n)
        }
    });
    let list = convs
        .iter()
        .map(|l| {
            l.path
                .strip_prefix("layers.")
                .unwrap_or(&l.path)
                .to_string()
        })
        .collect::<Vec<_>>()
        .join(", ");
    let Some(&first) = convs.first() else {
        crate::bail_input!("this model has no conv2d layer, so it has no filters to show");
    };
    let Some(which) = which else {
        return Ok(first);
    };
    let path = if which.starts_with("layers.") {
        which.to_string()
    } else {
        format!("layers.{which}")
    };
    if let Some(found) = convs.iter().find(|n| n.path == path) {
        return Ok(found);
    }
    let mut any = None;
    walk(&plan.layers, &mut |n| {
        if n.path == path {
            any = Some(n)
        }
    });
    match any {
        Some(n) => crate::bail_input!(
            "--layer {which} is a {} layer, not conv2d; its conv2d layers are {list}",
            n.kind
        ),
        None => crate::bail_input!(
            "--layer {which}: the model has no such layer: it has {} layers (0 to {}; inside a block, \
             give the path, such as 5.layers.0); its conv2d layers are {list}",
            plan.layers.len(),
            plan.layers.len() - 1
        ),
    }
}

pub fn run(args: &FiltersArgs) -> Result<()> {
    plot::check(&args.output, args.force, "-o")?;
    let loaded = load_model(&args.checkpoint, None, &Device::Cpu)?;
    let plan = loaded.model.plan();
    let layer = conv_layer(plan, args.layer.as_deref())?;
    let g = *layer.op.conv().expect("conv_layer returns conv layers");
    let name = format!("{}.weight", layer.path);
    let weight = loaded
        .model
        .tensors()
        .into_iter()
        .find(|(n, _)| *n == name)
        .map(|(_, t)| t)
        .ok_or_else(|| anyhow::anyhow!("{name} is missing from the model"))?;
    let (o, cg, kh, kw) = weight.dims4()?;
    let values = weight.flatten_all()?.to_vec1::<f32>()?;
    let max = values.iter().fold(0f32, |m, v| m.max(v.abs()));
    let rows: Vec<grid::Row> = (0..o.min(MAX_ROWS))
        .map(|out| grid::Row {
            label: (cg > 1).then(|| format!("out {out}")),
            tiles: (0..cg.min(MAX_COLS))
                .map(|inp| {
                    let start = (out * cg + inp) * kh * kw;
                    grid::Tile {
                        w: kw,
                        h: kh,
                        channels: 1,
                        values: values[start..start + kh * kw].to_vec(),
                        // Several input channels make a matrix, captioned under its last row.
                        caption: if cg == 1 {
                            format!("{out}")
                        } else if out + 1 == o.min(MAX_ROWS) {
                            format!("in {inp}")
                        } else {
                            String::new()
                        },
                        alert: false,
                    }
                })
                .collect(),
        })
        .collect();
    // One input channel: lay the kernels out side by side rather than one per row.
    let rows = if cg == 1 {
        let tiles: Vec<grid::Tile> = rows.into_iter().flat_map(|r| r.tiles).collect();
        tiles
            .chunks(8)
            .map(|c| grid::Row {
                label: None,
                tiles: c.to_vec(),
            })
            .collect()
    } else {
        rows
    };
    let mut notes = Vec::new();
    if o > MAX_ROWS || cg > MAX_COLS {
        notes.push(format!(
            "showing {} of {o} output and {} of {cg} input channels",
            o.min(MAX_ROWS),
            cg.min(MAX_COLS)
        ));
    }
    let epoch = loaded
        .epoch
        .map(|e| format!(", epoch {e}"))
        .unwrap_or_default();
    let figure = grid::Grid {
        title: format!(
            "{}{epoch}: layer {} filters (conv2d {}→{}, {}×{})",
            loaded.config.display_name(),
            layer.path.strip_prefix("layers.").unwrap_or(&layer.path),
            g.in_channels,
            g.out_channels,
            kh,
            kw
        ),
        rows,
        cell: (10 * kh.max(kw) as u32).clamp(40, 96),
        scale: grid::Scale::Diverging { max },
        note: (!notes.is_empty()).then(|| notes.join("; ")),
        labels_left: cg > 1,
    };
    plot::save(&figure, &args.output, args.force, "-o")?;
    eprintln!("wrote {}", args.output.display());
    Ok(())
}
