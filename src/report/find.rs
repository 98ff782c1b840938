//! Where the runs of a report are: the points of a sweep's `manifest.json`,
//! the run directories inside a directory, or a run directory itself.

use super::set_value;
use crate::run_dir;
use crate::sweep::Manifest;
use crate::sweep::manifest::FILE as MANIFEST;
use crate::sweep::state::lock_path;
use anyhow::Result;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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
    /// The lock a sweep point's runner holds while the point runs.
    pub lock: Option<PathBuf>,
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
    if dir.join(MANIFEST).is_file() {
        let m = Manifest::read(dir)?;
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
                dir: Manifest::run_dir(dir, &p),
                lock: Some(lock_path(dir, p.index)),
                run: p.name,
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
        lock: None,
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
