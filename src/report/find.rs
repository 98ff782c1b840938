//! Where the runs of a report are: the points of a sweep's `manifest.json`,
//! the run directories inside a directory, or a run directory itself.

use super::set_value;
use crate::run_dir;
use anyhow::Result;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// `manifest.json` of a sweep, as far as the report needs it.
#[derive(Debug, Deserialize)]
struct Manifest {
    axes: Vec<Axis>,
    points: Vec<Point>,
}

#[derive(Debug, Deserialize)]
struct Axis {
    key: String,
    values: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct Point {
    name: String,
    dir: PathBuf,
    params: BTreeMap<String, String>,
}

pub const MANIFEST: &str = "manifest.json";

fn is_run_dir(dir: &Path) -> bool {
    [run_dir::STATUS, run_dir::HISTORY_JSON, run_dir::CONFIG]
        .iter()
        .any(|f| dir.join(f).is_file())
}

/// A run found on disk, before its files are read.
pub(super) struct Found {
    pub run: String,
    pub dir: PathBuf,
    /// Sweep parameters from a manifest (absent for plain run directories).
    pub sweep_params: Option<BTreeMap<String, Value>>,
}

/// Runs in `dir`: a sweep's points, the run directories in it, or itself.
pub(super) fn find_runs(dir: &Path, axes: &mut Vec<(String, usize)>) -> Result<Vec<Found>> {
    if !dir.is_dir() {
        crate::bail_input!(
            "{}: no such directory; give a sweep directory (made by scripts/sweep.sh), a directory of cnn \
             run directories, or a run directory",
            dir.display()
        );
    }
    let manifest_path = dir.join(MANIFEST);
    if manifest_path.is_file() {
        let text = std::fs::read_to_string(&manifest_path)
            .map_err(|e| crate::input_error!("cannot read {}: {e}", manifest_path.display()))?;
        let m: Manifest = serde_json::from_str(&text).map_err(|e| {
            crate::input_error!(
                "{} is not a sweep manifest ({e}); it is written by scripts/sweep.sh — re-run the sweep \
                 command to rewrite it, or delete it to report the run directories as they are",
                manifest_path.display()
            )
        })?;
        for a in &m.axes {
            match axes.iter_mut().find(|(k, _)| *k == a.key) {
                Some((_, n)) => *n = (*n).max(a.values.len()),
                None => axes.push((a.key.clone(), a.values.len())),
            }
        }
        return Ok(m
            .points
            .into_iter()
            .map(|p| Found {
                run: p.name,
                dir: dir.join(p.dir),
                sweep_params: Some(
                    p.params
                        .iter()
                        .map(|(k, v)| (k.clone(), set_value(v)))
                        .collect(),
                ),
            })
            .collect());
    }
    let plain = |d: PathBuf| Found {
        run: d.file_name().map_or_else(
            || d.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        ),
        dir: d,
        sweep_params: None,
    };
    if is_run_dir(dir) {
        return Ok(vec![plain(dir.to_path_buf())]);
    }
    for parent in [dir.to_path_buf(), dir.join("runs")] {
        let Ok(entries) = std::fs::read_dir(&parent) else {
            continue;
        };
        let mut dirs: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir() && is_run_dir(p))
            .collect();
        dirs.sort();
        if !dirs.is_empty() {
            return Ok(dirs.into_iter().map(plain).collect());
        }
    }
    crate::bail_input!(
        "{} holds no runs: it has no {MANIFEST} (written by scripts/sweep.sh) and no run directories \
         (directories with status.json, history.json or config.json written by cnn train)",
        dir.display()
    )
}
