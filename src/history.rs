//! The per-epoch metrics history of a run: `history.json` (an array of
//! objects) and `history.csv` (the same columns), both rewritten atomically
//! after every epoch.

use crate::fsutil::write_atomic;
use crate::run_dir;
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
    /// `null` for an epoch that was not evaluated (`training.eval_every`).
    pub test_loss: Option<f64>,
    pub test_acc: Option<f64>,
    /// Seconds spent in training steps (evaluation excluded).
    pub epoch_seconds: f64,
    /// Training images per second.
    pub images_per_second: f64,
    /// The mean over classes of the F1 scores (`null` in histories written
    /// before it was recorded).
    #[serde(default)]
    pub val_macro_f1: Option<f64>,
    #[serde(default)]
    pub test_macro_f1: Option<f64>,
    /// Fraction of images whose class is among the `training.top_k` highest
    /// scores.
    #[serde(default)]
    pub val_top_k_acc: Option<f64>,
    #[serde(default)]
    pub test_top_k_acc: Option<f64>,
    /// What the epoch's convolutions and linear layers multiplied
    /// (`training.precision`; fp32 in histories written before it).
    #[serde(default)]
    pub precision: crate::config::Precision,
}

pub const CSV_COLUMNS: [&str; 15] = [
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
    "val_macro_f1",
    "test_macro_f1",
    "val_top_k_acc",
    "test_top_k_acc",
    "precision",
];

fn opt(v: Option<f64>) -> String {
    v.map(|x| x.to_string()).unwrap_or_default()
}

pub fn to_csv(records: &[EpochRecord]) -> String {
    let mut out = CSV_COLUMNS.join(",");
    out.push('\n');
    for r in records {
        out.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}\n",
            r.epoch,
            r.lr,
            r.train_loss,
            r.train_acc,
            opt(r.val_loss),
            opt(r.val_acc),
            opt(r.test_loss),
            opt(r.test_acc),
            r.epoch_seconds,
            r.images_per_second,
            opt(r.val_macro_f1),
            opt(r.test_macro_f1),
            opt(r.val_top_k_acc),
            opt(r.test_top_k_acc),
            r.precision.name(),
        ));
    }
    out
}

/// Writes `history.json` and `history.csv` into `dir`.
pub fn write(dir: &Path, records: &[EpochRecord]) -> Result<()> {
    let json = serde_json::to_string_pretty(records)?;
    write_atomic(&dir.join(run_dir::HISTORY_JSON), json.as_bytes())?;
    write_atomic(&dir.join(run_dir::HISTORY_CSV), to_csv(records).as_bytes())?;
    Ok(())
}

/// Reads `history.json` from a run directory.
pub fn read(dir: &Path) -> Result<Vec<EpochRecord>> {
    let path = dir.join(run_dir::HISTORY_JSON);
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

/// Header of `steps.csv`, the per-step log for live graphs; `grad_norm` is
/// the global L2 norm of the gradients before any clipping.
pub const STEP_COLUMNS: &str = "step,epoch,loss,accuracy,lr,grad_norm";

/// One row of `steps.csv`.
#[derive(Debug, Clone, Copy)]
pub struct StepRow {
    pub step: u64,
    pub epoch: usize,
    pub loss: f64,
    pub accuracy: f64,
    pub lr: f64,
    pub grad_norm: f64,
}

/// `steps.csv`: one row per optimizer step, appended as training goes and
/// flushed at every checkpoint; on resume, rows after the checkpoint's step
/// are dropped (those steps are trained again).
pub struct StepLog {
    file: std::io::BufWriter<std::fs::File>,
    path: std::path::PathBuf,
}

impl StepLog {
    /// Opens `dir/steps.csv`, keeping the rows up to step `keep_until`.
    pub fn open(dir: &Path, keep_until: u64) -> Result<StepLog> {
        use std::io::Write;
        let path = dir.join(run_dir::STEPS_CSV);
        let mut kept = String::from(STEP_COLUMNS);
        kept.push('\n');
        if keep_until > 0
            && let Ok(old) = std::fs::read_to_string(&path)
        {
            for line in old.lines().skip(1) {
                // Rows up to the checkpoint were flushed before it was
                // written, so they are whole; a row cut by a crash is later.
                let fields: Vec<&str> = line.split(',').collect();
                let step = fields[0].parse::<u64>().ok();
                if (5..=6).contains(&fields.len()) && step.is_some_and(|s| s <= keep_until) {
                    kept.push_str(line);
                    // A row written before grad_norm was logged.
                    if fields.len() == 5 {
                        kept.push(',');
                    }
                    kept.push('\n');
                }
            }
        }
        write_atomic(&path, kept.as_bytes())?;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot open {} for appending", path.display()))?;
        let mut log = StepLog {
            file: std::io::BufWriter::new(file),
            path,
        };
        log.file.flush()?;
        Ok(log)
    }

    pub fn push(&mut self, row: &StepRow) -> Result<()> {
        use std::io::Write;
        let StepRow {
            step,
            epoch,
            loss,
            accuracy,
            lr,
            grad_norm,
        } = row;
        writeln!(
            self.file,
            "{step},{epoch},{loss},{accuracy},{lr},{grad_norm}"
        )
        .with_context(|| format!("cannot write {} (disk full?)", self.path.display()))
    }

    pub fn flush(&mut self) -> Result<()> {
        use std::io::Write;
        self.file
            .flush()
            .with_context(|| format!("cannot write {} (disk full?)", self.path.display()))
    }
}
