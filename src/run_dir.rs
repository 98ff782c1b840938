//! A run directory: the files one training run writes (named here and
//! nowhere else), how a new one is made (never over another run's files
//! unless `--force`), how an existing one is reopened to resume, and the
//! lock that keeps a second writer out.
//!
//! The lock is an exclusive `flock` on `.lock` in the directory, held for as
//! long as the process writes there. The operating system drops it when the
//! process ends however it ends, so `kill -9` never leaves a stale lock; the
//! file records the holder's pid and host for the refusal message.

use crate::config::Config;
use crate::error::InputContext;
use anyhow::{Context, Result};
use std::fs::{self, File};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// The resolved config, every default written out.
pub const CONFIG: &str = "config.json";
/// One object per finished epoch.
pub const HISTORY_JSON: &str = "history.json";
pub const HISTORY_CSV: &str = "history.csv";
/// One row per optimizer step.
pub const STEPS_CSV: &str = "steps.csv";
/// Running, done, failed, interrupted; pid and host (see `status`).
pub const STATUS: &str = "status.json";
/// Weights, optimizer state and run state: what `--resume` continues from.
pub const LAST: &str = "last.safetensors";
/// Weights at the best monitored value.
pub const BEST: &str = "best.safetensors";
/// TensorBoard event files.
pub const TENSORBOARD: &str = "tensorboard";
/// `best-<epoch>.safetensors`: one of the `training.keep_best` best epochs.
pub const BEST_OF_PREFIX: &str = "best-";
/// `epoch-<epoch>.safetensors`: every `training.keep_every_epochs`-th epoch.
pub const EPOCH_PREFIX: &str = "epoch-";
/// Held by the process writing the run.
pub const LOCK: &str = ".lock";

/// The files of a run, which `--force` replaces (with the TensorBoard events).
pub const RUN_FILES: &[&str] = &[
    CONFIG,
    HISTORY_JSON,
    HISTORY_CSV,
    STEPS_CSV,
    STATUS,
    LAST,
    BEST,
];

/// Whether `path` is one of a run directory's own files: `name` is a run
/// file, a kept checkpoint or the lock, in a folder that holds a run (its
/// lock, `status.json` or `last.safetensors`). Nothing but training writes
/// those.
pub fn is_run_file(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let numbered = |prefix: &str| {
        name.strip_prefix(prefix)
            .and_then(|r| r.strip_suffix(".safetensors"))
            .is_some_and(|n| n.parse::<usize>().is_ok())
    };
    let named = RUN_FILES.contains(&name)
        || name == LOCK
        || numbered(BEST_OF_PREFIX)
        || numbered(EPOCH_PREFIX);
    named && [LOCK, STATUS, LAST].iter().any(|f| dir.join(f).is_file())
}

/// A run directory's paths; [`RunDir::create`] and [`RunDir::reopen`] also
/// hold its lock until dropped.
#[derive(Debug)]
pub struct RunDir {
    path: PathBuf,
    _lock: Option<File>,
}

impl RunDir {
    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn join(&self, file: &str) -> PathBuf {
        self.path.join(file)
    }
    pub fn config(&self) -> PathBuf {
        self.join(CONFIG)
    }
    pub fn last(&self) -> PathBuf {
        self.join(LAST)
    }
    pub fn best(&self) -> PathBuf {
        self.join(BEST)
    }
    /// `best-<epoch>.safetensors`.
    pub fn best_of(&self, epoch: usize) -> PathBuf {
        self.join(&format!("{BEST_OF_PREFIX}{epoch}.safetensors"))
    }
    /// `epoch-<epoch>.safetensors`.
    pub fn epoch_file(&self, epoch: usize) -> PathBuf {
        self.join(&format!("{EPOCH_PREFIX}{epoch}.safetensors"))
    }

    /// The epochs of the `best-<epoch>.safetensors` files present.
    pub fn kept_best(&self) -> Vec<usize> {
        numbered(&self.path, BEST_OF_PREFIX)
    }

    /// Refuses `path` for a new run if it holds anything and `force` is not
    /// given; touches nothing. (Checked again under the lock by
    /// [`RunDir::create`]; this early check spares loading data first.)
    pub fn check_new(path: &Path, force: bool) -> Result<()> {
        if path.exists() && !path.is_dir() {
            crate::bail_input!(
                "--out {} exists and is not a directory; choose another path",
                path.display()
            );
        }
        check_tensorboard(path)?;
        if !force && holds_files(path)? {
            crate::bail_input!(
                "run directory {} already exists and is not empty; nothing was changed. Choose another with \
                 --out DIR, or pass --force to replace its run files",
                path.display()
            );
        }
        Ok(())
    }

    /// The directory of a run another process writes (rank 0 of a
    /// distributed run): its paths, no lock, nothing created.
    pub fn follower(path: &Path) -> RunDir {
        RunDir {
            path: path.to_path_buf(),
            _lock: None,
        }
    }

    /// Makes `path` the directory of a new run and locks it; with `force`,
    /// removes the files of the run that was there.
    pub fn create(path: &Path, force: bool) -> Result<RunDir> {
        fs::create_dir_all(path)
            .input_context(|| format!("cannot create run directory {}", path.display()))?;
        let lock = lock(path)?;
        // Again under the lock: another run may have written here since.
        RunDir::check_new(path, force)?;
        let dir = RunDir {
            path: path.to_path_buf(),
            _lock: Some(lock),
        };
        if force {
            dir.remove_run_files()?;
        }
        Ok(dir)
    }

    /// Locks the existing run in `path` to continue it; it must be a run
    /// directory with a `last.safetensors`. Writes nothing.
    pub fn reopen(path: &Path) -> Result<RunDir> {
        if !path.exists() {
            crate::bail_input!("--resume {}: no such run directory", path.display());
        }
        if !path.is_dir() {
            crate::bail_input!(
                "--resume {}: this is a file, not a run directory; give the directory a run was written to",
                path.display()
            );
        }
        if !path.join(LAST).is_file() {
            crate::bail_input!(
                "--resume {}: the run directory has no {LAST}, so there is nothing to resume from \
                 (the run was never checkpointed); start it again with --config and --out",
                path.display()
            );
        }
        check_tensorboard(path)?;
        let lock = lock(path)?;
        Ok(RunDir {
            path: path.to_path_buf(),
            _lock: Some(lock),
        })
    }

    /// Refuses a `last.safetensors` that another run wrote (copied in by
    /// hand, say): resuming from it would replace this run's best checkpoint
    /// and history.
    pub fn check_same_run(&self, stored: &Config) -> Result<()> {
        let path = self.config();
        if !path.is_file() {
            return Ok(());
        }
        let recorded = Config::load(&path).context("the run's config.json")?;
        let differs = if recorded.input_shape != stored.input_shape
            || recorded.num_classes != stored.num_classes
        {
            Some("input shape or classes")
        } else if recorded.layers != stored.layers {
            Some("layers")
        } else if recorded.training.seed != stored.training.seed
            || recorded.data.dataset != stored.data.dataset
        {
            Some("seed or dataset")
        } else {
            None
        };
        if let Some(what) = differs {
            crate::bail_input!(
                "{} does not belong to this run: its {what} differ from {}. The directory mixes files of two runs; \
                 nothing was changed. Put the checkpoint back in its own run directory, or start a new run with \
                 --config and --out",
                self.last().display(),
                path.display()
            );
        }
        Ok(())
    }

    /// Whether any checkpoint exists (for messages about what a failed run
    /// leaves behind).
    pub fn has_checkpoint(&self) -> bool {
        self.last().exists() || self.best().exists()
    }

    fn remove_run_files(&self) -> Result<()> {
        for f in RUN_FILES {
            let p = self.join(f);
            if p.exists() {
                fs::remove_file(&p).input_context(|| format!("cannot remove {}", p.display()))?;
            }
        }
        for (prefix, epochs) in [
            (BEST_OF_PREFIX, numbered(&self.path, BEST_OF_PREFIX)),
            (EPOCH_PREFIX, numbered(&self.path, EPOCH_PREFIX)),
        ] {
            for e in epochs {
                let p = self.join(&format!("{prefix}{e}.safetensors"));
                fs::remove_file(&p).input_context(|| format!("cannot remove {}", p.display()))?;
            }
        }
        // The old run's TensorBoard events would mix with the new ones.
        if let Ok(entries) = fs::read_dir(self.join(TENSORBOARD)) {
            for entry in entries.flatten() {
                if entry
                    .file_name()
                    .to_string_lossy()
                    .starts_with("events.out.tfevents.")
                {
                    fs::remove_file(entry.path())
                        .input_context(|| format!("cannot remove {}", entry.path().display()))?;
                }
            }
        }
        Ok(())
    }
}

/// Refuses a run directory whose `tensorboard` is not a folder (a file put
/// there): the run writes its events into it.
fn check_tensorboard(run: &Path) -> Result<()> {
    let tb = run.join(TENSORBOARD);
    if tb.symlink_metadata().is_ok() && !tb.is_dir() {
        crate::bail_input!(
            "{} is not a folder, but it is where the run writes its TensorBoard events; move it \
             away (a new run can also turn the events off with --set training.tensorboard=false)",
            tb.display()
        );
    }
    Ok(())
}

/// The numbers N of the files `<prefix>N.safetensors` in `dir`, sorted.
fn numbered(dir: &Path, prefix: &str) -> Vec<usize> {
    let mut out: Vec<usize> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_prefix(prefix)?
                .strip_suffix(".safetensors")?
                .parse()
                .ok()
        })
        .collect();
    out.sort_unstable();
    out
}

/// This machine's name, for the lock and `status.json`.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// Whether `path` holds anything besides a lock file.
fn holds_files(path: &Path) -> Result<bool> {
    if !path.is_dir() {
        return Ok(false);
    }
    let entries = fs::read_dir(path)
        .input_context(|| format!("cannot read run directory {}", path.display()))?;
    for entry in entries {
        let entry =
            entry.input_context(|| format!("cannot read run directory {}", path.display()))?;
        if entry.file_name() != LOCK {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Takes the exclusive lock of the run directory `dir`, or says who holds it.
fn lock(dir: &Path) -> Result<File> {
    let path = dir.join(LOCK);
    let mut file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .input_context(|| format!("cannot open the lock file {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            let holder = if holder.is_empty() {
                "another process".to_string()
            } else {
                holder.to_string()
            };
            crate::bail_input!(
                "run directory {} is in use: {holder} is writing it; nothing was changed. Wait for that run \
                 to finish (or stop it), or write this run elsewhere with --out DIR",
                dir.display()
            );
        }
        Err(fs::TryLockError::Error(e)) => {
            return Err(e).input_context(|| format!("cannot lock {}", path.display()));
        }
    }
    // Who holds it, for the next one to be refused.
    let me = format!("process {} on {}", std::process::id(), hostname());
    let _ = file.set_len(0);
    let _ = file.rewind();
    let _ = file.write_all(me.as_bytes());
    let _ = file.flush();
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_writer_is_refused_with_the_holder_named_until_the_first_is_done() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("run");
        let first = RunDir::create(&path, false).unwrap();
        let err = RunDir::create(&path, true).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("is in use"), "{msg}");
        assert!(
            msg.contains(&format!("process {}", std::process::id())),
            "{msg}"
        );
        assert_eq!(crate::error::exit_code(&err), crate::error::exit::USAGE);
        drop(first);
        // The lock file alone does not make the directory "not empty".
        let again = RunDir::create(&path, false).unwrap();
        fs::write(again.config(), "{}").unwrap();
        drop(again);
        assert!(RunDir::create(&path, false).is_err());
        assert!(RunDir::create(&path, true).is_ok());
        assert!(
            !path.join(CONFIG).exists(),
            "--force removes the old run's files"
        );
    }
}
