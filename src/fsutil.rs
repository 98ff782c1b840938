//! Atomic file writes: write a temporary file beside the target, flush it to
//! disk, then rename it over the target, so a crash mid-write leaves the old
//! file whole. Errors carry the path.

use anyhow::{Context, Result};
use std::fs;
use std::io::Write;
use std::path::Path;

/// Replaces `path` with `bytes` atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| -> Result<()> {
        let mut f =
            fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        f.write_all(bytes)
            .with_context(|| format!("cannot write {} (disk full?)", tmp.display()))?;
        f.sync_all()
            .with_context(|| format!("cannot flush {} to disk", tmp.display()))?;
        drop(f);
        fs::rename(&tmp, path)
            .with_context(|| format!("cannot move {} to {}", tmp.display(), path.display()))?;
        // Make the rename itself durable.
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// [`write_atomic`] for a file the user named (a picture, a CSV): a path
/// whose folder is missing, is a file, or is a directory itself is bad input
/// (exit 2) with what to fix, not a failure of the tool.
pub fn write_output(path: &Path, bytes: &[u8]) -> Result<()> {
    if path.is_dir() {
        crate::bail_input!(
            "{} is a directory; give a file name for the output",
            path.display()
        );
    }
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(dir) = dir
        && !dir.is_dir()
    {
        let why = if dir.exists() {
            "is not a directory"
        } else {
            "does not exist"
        };
        crate::bail_input!(
            "cannot write {}: its folder {} {why}; create the folder or choose another path",
            path.display(),
            dir.display()
        );
    }
    write_atomic(path, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_whole_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.json");
        write_atomic(&p, b"first").unwrap();
        write_atomic(&p, b"second").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"second");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn failure_names_the_path_and_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no/such/dir/x.bin");
        let err = write_atomic(&missing, b"x").unwrap_err();
        assert!(format!("{err:#}").contains("no/such/dir"), "{err:#}");
    }
}
