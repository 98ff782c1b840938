//! `cnn samples`: a labelled grid of dataset images, picked at random with
//! a seed, as the seed notebooks' `display_dataset` shows them.

use crate::cli::SamplesArgs;
use crate::config::{Augment, Config, DatasetName};
use crate::data::augment::{Visit, shown};
use crate::data::{Dataset, LoadOptions, Split};
use crate::plot::{self, grid};
use crate::rng;
use anyhow::Result;
use rand::seq::index::sample;

/// The most images a grid shows (a picture about 12 tiles wide).
const MAX_IMAGES: usize = 1024;
/// With `--augmented`: rows of an image and its copies.
const MAX_AUGMENTED_IMAGES: usize = 128;
const MAX_COPIES: usize = 64;

pub fn run(args: &SamplesArgs) -> Result<()> {
    plot::check(&args.output, args.force, "-o")?;
    let count = args
        .count
        .unwrap_or(if args.augmented.is_some() { 8 } else { 32 });
    if count == 0 {
        crate::bail_input!("--count 0: show at least 1 image");
    }
    if args.augmented == Some(0) {
        crate::bail_input!(
            "--augmented 0: show at least 1 augmented copy, or leave out --augmented"
        );
    }
    // The picture grows with both: one tile per image and copy.
    if let Some(copies) = args.augmented
        && copies > MAX_COPIES
    {
        crate::bail_input!("--augmented {copies}: show at most {MAX_COPIES} copies per image");
    }
    let most = if args.augmented.is_some() {
        MAX_AUGMENTED_IMAGES
    } else {
        MAX_IMAGES
    };
    if count > most {
        let with = if args.augmented.is_some() {
            " with --augmented"
        } else {
            ""
        };
        crate::bail_input!("--count {count}: show at most {most} images{with}");
    }
    let config = args.config.as_deref().map(Config::load).transpose()?;
    if let (Some(_), Some(c), Some(path)) = (args.augmented, &config, &args.config) {
        c.data
            .augment
            .check(c.input_shape)
            .map_err(|e| crate::input_error!("{}: {e:#}", path.display()))?;
        if c.data.augment == Augment::default() {
            crate::bail_input!(
                "{}: data.augment is empty, so training sees the images unchanged; \
                 add e.g. \"augment\": {{\"random_crop\": {{\"padding\": 2}}}} to the data \
                 section (see the book, Data: augmentation)",
                path.display()
            );
        }
    }
    let name = match (&args.dataset, &config) {
        (Some(d), _) => {
            DatasetName::parse(d).map_err(|e| crate::input_error!("--dataset: {e:#}"))?
        }
        (None, Some(c)) => c.data.dataset,
        (None, None) => DatasetName::Mnist,
    };
    // The config's data settings when it is about this dataset.
    let mut data_cfg = config
        .as_ref()
        .map(|c| c.data.clone())
        .filter(|d| d.dataset == name)
        .unwrap_or_default();
    data_cfg.dataset = name;
    let opts = LoadOptions {
        data_dir: args.data.data_dir.as_deref(),
        no_download: args.data.no_download,
        ..Default::default()
    };
    let data = Dataset::load_data(&data_cfg, config.as_ref().map(|c| c.input_shape), &opts)?;
    for note in &data.notes {
        eprintln!("{note}");
    }
    let set = match args.split {
        Split::Test => data.test_images(),
        _ => &data.train,
    };
    let n = count.min(set.len());
    let mut picks = sample(
        &mut rng::stream(args.seed, rng::Purpose::Display, 0),
        set.len(),
        n,
    )
    .into_vec();
    picks.sort_unstable();
    let caption = |i: usize| {
        let label = set.labels[i] as usize;
        data.classes
            .get(label)
            .cloned()
            .unwrap_or_else(|| label.to_string())
    };
    let tile = |bytes: &[u8], caption: String| {
        grid::Tile::from_bytes(bytes, set.channels, set.height, set.width, caption)
    };
    let split = if args.split == Split::Test {
        "test"
    } else {
        "training"
    };
    let figure = match (args.augmented, &config) {
        (Some(copies), Some(config)) => {
            // One row per image: the image, then `copies` augmented versions,
            // each from its own stream so that adding copies keeps the others.
            let rows = picks
                .iter()
                .map(|&i| -> Result<grid::Row> {
                    let mut tiles = vec![tile(&set.pixels_of(i)?, "original".into())];
                    for k in 0..copies {
                        let mut rng = rng::stream(
                            args.seed,
                            rng::Purpose::Augment,
                            ((i as u64) << 16) | k as u64,
                        );
                        // Copy k is drawn as in epoch k + 1 (the alternating
                        // flip then alternates along the row).
                        let visit = Visit {
                            seed: args.seed,
                            epoch: k + 1,
                            image: i as u32,
                        };
                        let bytes = shown(&config.data.augment, set, i, &mut rng, visit)?;
                        tiles.push(tile(&bytes, format!("#{}", k + 1)));
                    }
                    Ok(grid::Row {
                        label: Some(caption(i)),
                        tiles,
                    })
                })
                .collect::<Result<_>>()?;
            grid::Grid {
                title: format!(
                    "{}: {n} {split} images and {copies} augmented copies each (seed {})",
                    data.name.name(),
                    args.seed
                ),
                rows,
                cell: 84,
                scale: grid::Scale::Gray,
                note: Some(format!(
                    "augmentation: {}",
                    serde_json::to_string(&config.data.augment)?
                )),
                labels_left: true,
            }
        }
        _ => {
            let tiles: Vec<grid::Tile> = picks
                .iter()
                .map(|&i| Ok(tile(&set.pixels_of(i)?, caption(i))))
                .collect::<Result<_>>()?;
            let per_row = ((n as f64 * 1.5).sqrt().ceil() as usize).clamp(4, 12);
            grid::Grid {
                title: format!(
                    "{}: {n} random {split} images (seed {})",
                    data.name.name(),
                    args.seed
                ),
                rows: tiles
                    .chunks(per_row)
                    .map(|c| grid::Row {
                        label: None,
                        tiles: c.to_vec(),
                    })
                    .collect(),
                cell: 84,
                scale: grid::Scale::Gray,
                note: Some(format!("from {}", data.dir.display())),
                labels_left: false,
            }
        }
    };
    plot::save(&figure, &args.output, args.force, "-o")?;
    eprintln!("wrote {}", args.output.display());
    Ok(())
}
