//! The one policy for files a user names as an output (a picture, a CSV,
//! an ONNX model), which every command that writes one follows:
//!
//! * only regular files are written: a target that is a directory, a
//!   device, a FIFO or a socket is refused, and so is a path ending in `/`
//!   (it names a folder);
//! * an existing file is replaced only with `--force`, and never a file of
//!   a run directory (its checkpoints, `config.json`, `history.*`,
//!   `status.json`, the lock), even with `--force`;
//! * the bytes go to a temporary file in the same folder, renamed over the
//!   target once complete, so a failure leaves the old file whole and no
//!   temporary behind.
//!
//! Commands call [`check`] before their work (so a wrong path costs
//! nothing) and [`write`] at the end, which checks again.

use crate::run_dir;
use anyhow::Result;
use std::path::Path;

/// Refuses (exit 2) an output path this policy does not write, saying why
/// and what to do instead. `flag` names the option that gave the path.
pub fn check(path: &Path, force: bool, flag: &str) -> Result<()> {
    let shown = path.display();
    let text = path.as_os_str().as_encoded_bytes();
    if text.is_empty() {
        crate::bail_input!("{flag}: give a file name");
    }
    if text.ends_with(b"/") || path.file_name().is_none() {
        crate::bail_input!(
            "{flag} {shown} names a folder; give a file name (such as {}out.png)",
            if text.ends_with(b"/") {
                shown.to_string()
            } else {
                format!("{shown}/")
            }
        );
    }
    if let Ok(meta) = std::fs::metadata(path) {
        let kind = meta.file_type();
        if kind.is_dir() {
            crate::bail_input!("{flag} {shown} is a directory; give a file name for the output");
        }
        if !kind.is_file() {
            crate::bail_input!(
                "{flag} {shown} is {}, not a regular file; cnn writes only regular files, so choose \
                 another path",
                special_kind(&meta)
            );
        }
        if run_dir::is_run_file(path) {
            crate::bail_input!(
                "{flag} {shown} is a file of the run directory {}; cnn never overwrites a run's own \
                 files, even with --force. Choose another path",
                path.parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .unwrap_or(Path::new("."))
                    .display()
            );
        }
        if !force {
            crate::bail_input!(
                "{flag} {shown} already exists; pass --force to replace it, or choose another path"
            );
        }
    } else if std::fs::symlink_metadata(path).is_ok() {
        crate::bail_input!(
            "{flag} {shown} is a symbolic link to nothing; remove it or choose another path"
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
            "{flag} {shown}: its folder {} {why}; create the folder or choose another path",
            dir.display()
        );
    }
    Ok(())
}

/// Writes `bytes` to `path` under the policy: [`check`], then the
/// temporary file and the rename.
pub fn write(path: &Path, bytes: &[u8], force: bool, flag: &str) -> Result<()> {
    check(path, force, flag)?;
    crate::fsutil::write_output(path, bytes)
}

/// What a special file is, for messages.
fn special_kind(meta: &std::fs::Metadata) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        let t = meta.file_type();
        if t.is_char_device() {
            return "a character device";
        }
        if t.is_block_device() {
            return "a block device";
        }
        if t.is_fifo() {
            return "a FIFO";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    let _ = meta;
    "not a regular file"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(path: &Path, force: bool) -> String {
        let err = check(path, force, "-o").unwrap_err();
        assert_eq!(crate::error::exit_code(&err), 2, "{err}");
        err.to_string()
    }

    #[test]
    fn only_new_or_forced_regular_files_outside_runs_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        assert!(check(&d.join("new.png"), false, "-o").is_ok());
        std::fs::write(d.join("old.png"), b"x").unwrap();
        assert!(refused(&d.join("old.png"), false).contains("--force"));
        assert!(check(&d.join("old.png"), true, "-o").is_ok());
        assert!(refused(d, true).contains("is a directory"));
        let slash = format!("{}/missing/", d.display());
        assert!(refused(Path::new(&slash), true).contains("names a folder"));
        assert!(refused(&d.join("no/such.png"), true).contains("does not exist"));
        // A FIFO.
        let fifo = d.join("pipe.png");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: mkfifo(3) with a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert!(
            refused(&fifo, true).contains("a FIFO"),
            "{}",
            refused(&fifo, true)
        );
        // A run's own files, even with --force.
        let run = d.join("run");
        std::fs::create_dir(&run).unwrap();
        std::fs::write(run.join("status.json"), b"{}").unwrap();
        for f in [
            "best.safetensors",
            "last.safetensors",
            "config.json",
            "history.csv",
        ] {
            std::fs::write(run.join(f), b"x").unwrap();
            assert!(
                refused(&run.join(f), true).contains("never overwrites"),
                "{f}"
            );
        }
        std::fs::write(run.join("notes.csv"), b"x").unwrap();
        assert!(check(&run.join("notes.csv"), true, "-o").is_ok());
        // What write leaves: the bytes, and no temporary.
        write(&d.join("out.csv"), b"a,b\n", false, "--csv").unwrap();
        let names: Vec<_> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.contains(".tmp-"))
            .collect();
        assert!(names.is_empty(), "{names:?}");
        assert_eq!(std::fs::read(d.join("out.csv")).unwrap(), b"a,b\n");
    }
}
