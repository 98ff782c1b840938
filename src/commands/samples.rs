//! `cnn samples`: a labelled grid of dataset images, picked at random with
//! a seed, as the seed notebooks' `display_dataset` shows them.

use crate::cli::SamplesArgs;
use crate::config::{Config, DatasetName};
use crate::data::{Dataset, Split};
use crate::plot::{self, grid};
use crate::rng;
use anyhow::Result;
use rand::seq::index::sample;

pub fn run(args: &SamplesArgs) -> Result<()> {
    plot::format_of(&args.output)?;
    if args.count == 0 {
        crate::bail_input!("--count 0: show at least 1 image");
    }
    let config = args.config.as_deref().map(Config::load).transpose()?;
    let name = match (&args.dataset, &config) {
        (Some(d), _) => {
            DatasetName::parse(d).map_err(|e| crate::input_error!("--dataset: {e:#}"))?
        }
        (None, Some(c)) => c.data.dataset,
        (None, None) => DatasetName::Mnist,
    };
    let recorded = config.as_ref().and_then(|c| c.data.dir.clone());
    let data = Dataset::load(name, args.data_dir.as_deref(), recorded.as_deref())?;
    let set = match args.split {
        Split::Test => &data.test,
        _ => &data.train,
    };
    let n = args.count.min(set.len());
    let mut picks = sample(
        &mut rng::stream(args.seed, rng::Purpose::Display, 0),
        set.len(),
        n,
    )
    .into_vec();
    picks.sort_unstable();
    let tiles: Vec<grid::Tile> = picks
        .iter()
        .map(|&i| {
            let label = set.labels[i] as usize;
            let caption = data
                .classes
                .get(label)
                .cloned()
                .unwrap_or_else(|| label.to_string());
            grid::Tile::from_bytes(set.image(i), set.channels, set.height, set.width, caption)
        })
        .collect();
    let per_row = ((n as f64 * 1.5).sqrt().ceil() as usize).clamp(4, 12);
    let figure = grid::Grid {
        title: format!(
            "{}: {n} random {} images (seed {})",
            data.name.name(),
            if args.split == Split::Test {
                "test"
            } else {
                "training"
            },
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
    };
    plot::save(&figure, &args.output)?;
    eprintln!("wrote {}", args.output.display());
    Ok(())
}
