//! `cnn filters`: the kernels of one conv layer of a checkpoint as a grid,
//! one row per output channel and one tile per input channel, on a colour
//! scale shared by the whole layer and stated under the picture.

use super::load_model;
use crate::arch::Plan;
use crate::cli::FiltersArgs;
use crate::layers::Node;
use crate::plot::{self, grid};
use anyhow::Result;
use candle_core::Device;

/// Most rows and columns drawn; larger layers show their first ones.
const MAX_ROWS: usize = 64;
const MAX_COLS: usize = 16;

/// The conv layer `index` of `plan` (default: the first), or an error that
/// lists the conv layers.
pub fn conv_layer(plan: &Plan, index: Option<usize>) -> Result<&Node> {
    let convs: Vec<&Node> = plan
        .layers
        .iter()
        .filter(|l| l.op.conv().is_some())
        .collect();
    let list = convs
        .iter()
        .map(|l| l.index.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let Some(&first) = convs.first() else {
        crate::bail_input!("this model has no conv2d layer, so it has no filters to show");
    };
    match index {
        None => Ok(first),
        Some(i) if i >= plan.layers.len() => crate::bail_input!(
            "--layer {i}: the model has {} layers (0 to {}); its conv2d layers are {list}",
            plan.layers.len(),
            plan.layers.len() - 1
        ),
        Some(i) => match plan.layers[i].op.conv() {
            Some(_) => Ok(&plan.layers[i]),
            None => crate::bail_input!(
                "--layer {i} is a {} layer, not conv2d; its conv2d layers are {list}",
                plan.layers[i].kind
            ),
        },
    }
}

pub fn run(args: &FiltersArgs) -> Result<()> {
    plot::format_of(&args.output)?;
    let loaded = load_model(&args.checkpoint, None, &Device::Cpu)?;
    let plan = loaded.model.plan();
    let layer = conv_layer(plan, args.layer)?;
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
            layer.index,
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
    plot::save(&figure, &args.output)?;
    eprintln!("wrote {}", args.output.display());
    Ok(())
}
