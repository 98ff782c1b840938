//! `cnn feature-maps`: what a trained network sees in one image (the input
//! and the activation maps of every conv layer), or, with `--kernel`, a
//! fixed filter such as a vertical-edge detector applied to sample images,
//! as the seed notebooks' `plot_convolution` does.

use super::load_model;
use crate::cli::FeatureMapsArgs;
use crate::config::{DataConfig, DatasetName};
use crate::data::convert::{self, Fit};
use crate::data::{Batcher, Dataset, LoadOptions, Split};
use crate::error::InputContext;
use crate::geometry::{ConvGeometry, Pad4, PaddingMode, Pair};
use crate::ops;
use crate::plot::{self, grid};
use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use std::path::Path;

/// Most maps drawn per layer.
const MAX_MAPS: usize = 64;
const MAPS_PER_ROW: usize = 16;

pub fn run(args: &FeatureMapsArgs) -> Result<()> {
    plot::check(&args.output, args.force, "-o")?;
    match &args.kernel {
        Some(kernel) => fixed_filter(args, kernel),
        None => activations(args),
    }
}

/// The input and every conv layer's activation maps for one image.
fn activations(args: &FeatureMapsArgs) -> Result<()> {
    let Some(checkpoint) = &args.checkpoint else {
        crate::bail_input!(
            "cnn feature-maps needs --checkpoint FILE (or --kernel K to apply a fixed filter)"
        );
    };
    let loaded = load_model(checkpoint, None, &Device::Cpu)?;
    let config = &loaded.config;
    let [c, h, w] = config.input_shape;
    let (pixels, source) = match (&args.image, args.index) {
        (Some(path), None) => {
            let fit = Fit::for_config(config);
            let shorter = config.data.resize.shorter_side();
            (
                convert::load_image(path, c, h, w, fit, shorter)?,
                path.display().to_string(),
            )
        }
        (None, Some(index)) => {
            let known = (!loaded.classes.is_empty()).then_some(&loaded.classes[..]);
            let dataset = Dataset::for_config(
                config,
                &LoadOptions {
                    data_dir: args.data.data_dir.as_deref(),
                    no_download: args.data.no_download,
                    classes: known,
                    ..Default::default()
                },
            )?;
            let splits = dataset.splits(config)?;
            let subset = splits.get(args.split);
            let Some(&i) = subset.indices.get(index) else {
                crate::bail_input!(
                    "--index {index}: the {} split has {} images (0 to {})",
                    args.split.name(),
                    subset.len(),
                    subset.len().saturating_sub(1)
                );
            };
            let label = subset.set.labels[i as usize] as usize;
            let name = loaded
                .classes
                .get(label)
                .cloned()
                .unwrap_or_else(|| label.to_string());
            (
                subset.set.pixels_of(i as usize)?.into_owned(),
                format!("{} image {index} (label {name})", args.split.name()),
            )
        }
        _ => crate::bail_input!("give exactly one of --image FILE or --index N"),
    };
    let normalization = loaded
        .normalization
        .clone()
        .expect("checkpoints record their normalization");
    let batcher = Batcher::new(&normalization, &Device::Cpu);
    let x = batcher.tensor_from_pixels(&pixels, [c, h, w])?;
    let outputs = loaded.model.activations(&x)?;
    let probs = loaded
        .model
        .probabilities(&x)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let (best, p) = probs
        .iter()
        .enumerate()
        .fold((0, 0f32), |b, (i, &v)| if v > b.1 { (i, v) } else { b });
    let predicted = loaded
        .classes
        .get(best)
        .cloned()
        .unwrap_or_else(|| best.to_string());

    let mut rows = vec![grid::Row {
        label: Some(format!("input: {source}")),
        tiles: vec![grid::Tile::from_bytes(&pixels, c, h, w, String::new())],
    }];
    let mut truncated = false;
    for (i, (node, output)) in outputs.iter().enumerate() {
        let Some(g) = node.op.conv() else { continue };
        // Show the maps after the activation that follows the conv in its
        // list, if any.
        let (maps, what) = match outputs.get(i + 1) {
            Some((next, y))
                if next.op.run().is_activation() && next.path == sibling(&node.path) =>
            {
                (y, format!(" + {}", next.kind))
            }
            _ => (output, String::new()),
        };
        let name = node
            .label
            .strip_suffix(" (conv2d)")
            .unwrap_or(&node.label)
            .to_string();
        let maps = maps.squeeze(0)?;
        let (n, mh, mw) = maps.dims3()?;
        truncated |= n > MAX_MAPS;
        let values = maps.flatten_all()?.to_vec1::<f32>()?;
        let tiles: Vec<grid::Tile> = (0..n.min(MAX_MAPS))
            .map(|k| grid::Tile {
                w: mw,
                h: mh,
                channels: 1,
                values: values[k * mh * mw..(k + 1) * mh * mw].to_vec(),
                caption: k.to_string(),
                alert: false,
            })
            .collect();
        for (j, chunk) in tiles.chunks(MAPS_PER_ROW).enumerate() {
            rows.push(grid::Row {
                label: (j == 0).then(|| {
                    format!(
                        "{name} conv2d {}→{} {}×{}{what}: {n} maps of {mh}×{mw}",
                        g.in_channels, g.out_channels, g.kernel.h, g.kernel.w
                    )
                }),
                tiles: chunk.to_vec(),
            });
        }
    }
    let figure = grid::Grid {
        title: format!(
            "{}: feature maps, predicted {predicted} ({:.1}%)",
            config.display_name(),
            100.0 * p
        ),
        rows,
        cell: 72,
        scale: grid::Scale::GrayPerTile,
        note: truncated
            .then(|| format!("layers with more than {MAX_MAPS} maps show their first {MAX_MAPS}")),
        labels_left: false,
    };
    plot::save(&figure, &args.output, args.force, "-o")?;
    eprintln!("wrote {}", args.output.display());
    Ok(())
}

/// A named or file-given kernel: rows of weights.
fn parse_kernel(spec: &str) -> Result<(String, Vec<Vec<f32>>)> {
    let rows = match spec {
        "vertical-edge" => vec![vec![-1.0, 0.0, 1.0]; 3],
        "horizontal-edge" => vec![vec![-1.0; 3], vec![0.0; 3], vec![1.0; 3]],
        path => {
            if !Path::new(path).exists() {
                crate::bail_input!(
                    "--kernel {path}: not vertical-edge or horizontal-edge, and there is no such file"
                );
            }
            let input = crate::fsutil::Input {
                what: "kernel file",
                max_bytes: 1 << 20,
            };
            let text = crate::fsutil::read_input_text(Path::new(path), input)
                .with_context(|| format!("--kernel {path}"))?;
            let rows: Vec<Vec<f32>> = match serde_json::from_str(&text) {
                Ok(rows) => rows,
                Err(_) => text
                    .lines()
                    .filter(|l| !l.trim().is_empty())
                    .map(|l| {
                        l.split(|c: char| c.is_whitespace() || c == ',')
                            .filter(|t| !t.is_empty())
                            .map(|t| t.parse::<f32>())
                            .collect::<Result<Vec<_>, _>>()
                    })
                    .collect::<Result<_, _>>()
                    .input_context(|| {
                        format!("--kernel {path}: expected a JSON array of rows like [[-1,0,1],[-1,0,1],[-1,0,1]] or rows of numbers")
                    })?,
            };
            let name = Path::new(path)
                .file_stem()
                .map_or(path.to_string(), |s| s.to_string_lossy().into_owned());
            return check_kernel(path, rows).map(|r| (name, r));
        }
    };
    Ok((spec.replace('-', " ") + " filter", rows))
}

fn check_kernel(path: &str, rows: Vec<Vec<f32>>) -> Result<Vec<Vec<f32>>> {
    let width = rows.first().map_or(0, Vec::len);
    if rows.is_empty() || width == 0 || rows.iter().any(|r| r.len() != width) {
        crate::bail_input!(
            "--kernel {path}: the kernel must be a non-empty rectangle of numbers (every row as long as the first)"
        );
    }
    if rows.len() > 15 || width > 15 {
        crate::bail_input!(
            "--kernel {path}: a {}×{width} kernel is too large to show; use at most 15×15",
            rows.len()
        );
    }
    if rows.iter().flatten().any(|v| !v.is_finite()) {
        crate::bail_input!("--kernel {path}: every weight must be a finite number");
    }
    Ok(rows)
}

/// Sample images and the same images convolved with a fixed kernel.
fn fixed_filter(args: &FeatureMapsArgs, spec: &str) -> Result<()> {
    let (name, rows) = parse_kernel(spec)?;
    if args.image.is_some() || args.index.is_some() {
        crate::bail_input!(
            "--kernel applies a fixed filter to --count sample images; drop --image/--index"
        );
    }
    if args.count == 0 {
        crate::bail_input!("--count 0: show at least 1 image");
    }
    // One row of tiles per kind: the picture grows with the count.
    if args.count > MAX_MAPS {
        crate::bail_input!(
            "--count {}: show at most {MAX_MAPS} images (one row of tiles each for the images and \
             their filtered versions)",
            args.count
        );
    }
    let opts = LoadOptions {
        data_dir: args.data.data_dir.as_deref(),
        no_download: args.data.no_download,
        ..Default::default()
    };
    let data = match &args.checkpoint {
        Some(ck) => Dataset::load(&load_model(ck, None, &Device::Cpu)?.config, &opts)?,
        None => {
            let dataset = args
                .dataset
                .as_deref()
                .map(DatasetName::parse)
                .transpose()?
                .unwrap_or(DatasetName::Mnist);
            let data = DataConfig {
                dataset,
                ..Default::default()
            };
            Dataset::load_data(&data, None, &opts)?
        }
    };
    let set = match args.split {
        Split::Test => data.test_images(),
        _ => &data.train,
    };
    let n = args.count.min(set.len());
    let (c, h, w) = (set.channels, set.height, set.width);
    let plane = h * w;
    // Gray images in [0, 1] (RGB averaged), as one batch.
    let mut gray = Vec::with_capacity(n * plane);
    for i in 0..n {
        let img = set.pixels_of(i)?;
        for p in 0..plane {
            gray.push(
                (0..c).map(|ch| img[ch * plane + p] as f32).sum::<f32>() / (255.0 * c as f32),
            );
        }
    }
    let (kh, kw) = (rows.len(), rows[0].len());
    let kernel = Tensor::from_vec(
        rows.iter().flatten().copied().collect::<Vec<f32>>(),
        (1, 1, kh, kw),
        &Device::Cpu,
    )?;
    let geom = ConvGeometry {
        in_channels: 1,
        out_channels: 1,
        kernel: Pair { h: kh, w: kw },
        stride: Pair::square(1),
        dilation: Pair::square(1),
        padding: Pad4 {
            top: (kh - 1) / 2,
            bottom: kh / 2,
            left: (kw - 1) / 2,
            right: kw / 2,
        },
        padding_mode: PaddingMode::Zeros,
        groups: 1,
        bias: false,
    };
    let x = Tensor::from_vec(gray.clone(), (n, 1, h, w), &Device::Cpu)?;
    let filtered = ops::conv2d(&x, &kernel, None, &geom, false)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let max = filtered.iter().fold(0f32, |m, v| m.max(v.abs()));
    let label = |i: usize| {
        let l = set.labels[i] as usize;
        data.classes
            .get(l)
            .cloned()
            .unwrap_or_else(|| l.to_string())
    };
    let tiles = |values: &[f32]| -> Vec<grid::Tile> {
        (0..n)
            .map(|i| grid::Tile {
                w,
                h,
                channels: 1,
                values: values[i * plane..(i + 1) * plane].to_vec(),
                caption: label(i),
                alert: false,
            })
            .collect()
    };
    let weights: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "[{}]",
                r.iter()
                    .map(|v| format!("{v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
        .collect();
    // Originals in gray; filtered images on the shared diverging scale.
    let mut figure = grid::Grid {
        title: format!(
            "{name} on {} {} images",
            data.name.name(),
            if args.split == Split::Test {
                "test"
            } else {
                "training"
            }
        ),
        rows: vec![
            grid::Row {
                label: Some("images".into()),
                tiles: tiles(&gray),
            },
            grid::Row {
                label: Some(format!("filtered with {}", weights.join(" "))),
                tiles: tiles(&filtered),
            },
        ],
        cell: 96,
        scale: grid::Scale::Diverging { max },
        note: None,
        labels_left: false,
    };
    // The originals are drawn as they are (gray RGB), not on the filter's scale.
    for t in &mut figure.rows[0].tiles {
        t.channels = 3;
        t.values = t.values.iter().cycle().take(3 * plane).copied().collect();
    }
    plot::save(&figure, &args.output, args.force, "-o")?;
    eprintln!("wrote {}", args.output.display());
    Ok(())
}

/// The path of the layer after `path` in the same list (`layers.3` →
/// `layers.4`).
fn sibling(path: &str) -> String {
    match path.rsplit_once('.') {
        Some((list, i)) => format!("{list}.{}", i.parse::<usize>().map_or(0, |i| i + 1)),
        None => String::new(),
    }
}
