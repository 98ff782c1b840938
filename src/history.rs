//! The per-epoch metrics history of a run: `history.json` (an array of
//! objects) and `history.csv` (the same columns), both rewritten atomically
//! after every epoch.

use crate::fsutil::write_atomic;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// One epoch's numbers. Accuracies are fractions in [0, 1]; losses are means
/// over the images of the split. Validation fields are `null` when the run
/// has no validation split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    pub epoch: usize,
    pub lr: f64,
    pub train_loss: f64,
    pub train_acc: f64,
    pub val_loss: Option<f64>,
    pub val_acc: Option<f64>,
    pub test_loss: f64,
    pub test_acc: f64,
    /// Seconds spent in training steps (evaluation excluded).
    pub epoch_seconds: f64,
    /// Training images per second.
    pub images_per_second: f64,
}

pub const CSV_COLUMNS: [&str; 10] = [
    "epoch",
    "lr",
    "train_loss",
    "train_acc",
    "val_loss",
    "val_acc",
    "test_loss",
    "test_acc",
    "epoch_seconds",
    "images_per_second",
];

fn opt(v: Option<f64>) -> String {
    v.map(|x| x.to_string()).unwrap_or_default()
}

pub fn to_csv(records: &[EpochRecord]) -> String {
    let mut out = CSV_COLUMNS.join(",");
    out.push('\n');
    for r in records {
        out.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{}\n",
            r.epoch,
            r.lr,
            r.train_loss,
            r.train_acc,
            opt(r.val_loss),
            opt(r.val_acc),
            r.test_loss,
            r.test_acc,
            r.epoch_seconds,
            r.images_per_second
        ));
    }
    out
}

/// Writes `history.json` and `history.csv` into `dir`.
pub fn write(dir: &Path, records: &[EpochRecord]) -> Result<()> {
    let json = serde_json::to_string_pretty(records)?;
    write_atomic(&dir.join("history.json"), json.as_bytes())?;
    write_atomic(&dir.join("history.csv"), to_csv(records).as_bytes())?;
    Ok(())
}

/// Reads `history.json` from a run directory.
pub fn read(dir: &Path) -> Result<Vec<EpochRecord>> {
    let path = dir.join("history.json");
    let text = std::fs::read_to_string(&path).map_err(|e| {
        crate::input_error!(
            "cannot read {}: {e}; is {} a cnn run directory?",
            path.display(),
            dir.display()
        )
    })?;
    serde_json::from_str(&text)
        .map_err(|e| crate::input_error!("{} is not a cnn history: {e}", path.display()))
        .context("reading the history")
}
