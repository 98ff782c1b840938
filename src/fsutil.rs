//! Files in and out. Atomic writes: write a temporary file beside the
//! target, flush it to disk, then rename it over the target, so a crash
//! mid-write leaves the old file whole. Reads of files the user names: only
//! regular files (a FIFO would block forever, `/dev/zero` never ends), and
//! no more bytes than the kind of file can sensibly hold. Errors carry the
//! path.

use anyhow::{Context, Result};
use std::fs;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// Sets apart the temporary files of two writes in one process (a second
/// Ctrl-C marking `status.json` while the run writes it).
static TEMPORARIES: AtomicU64 = AtomicU64::new(0);

/// Replaces `path` with `bytes` atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_file(path, bytes, false)
}

/// [`write_atomic`]; with `named_by_user`, a folder that cannot take the
/// file (read-only, no permission) is bad input like a missing one, while a
/// write that fails midway (disk full) stays a failure.
fn write_file(path: &Path, bytes: &[u8], named_by_user: bool) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(
        ".{name}.tmp-{}-{}",
        std::process::id(),
        TEMPORARIES.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| -> Result<()> {
        let mut f = match fs::File::create(&tmp) {
            Ok(f) => f,
            Err(e) if named_by_user => crate::bail_input!(
                "cannot write {}: {e}; choose a path in a folder you can write to",
                path.display()
            ),
            Err(e) => {
                return Err(e).with_context(|| format!("cannot create {}", tmp.display()));
            }
        };
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
    write_file(path, bytes, true)
}

/// What a file holds, for [`read_input`]'s messages and size limit.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// `config file`, `checkpoint`, `image`: how messages name it.
    pub what: &'a str,
    /// Larger files are refused before they are read.
    pub max_bytes: u64,
}

/// Reads a file the user named, refusing (as input errors naming the path)
/// anything but a regular file (a FIFO, a device such as `/dev/zero`, a
/// directory) and files above `input.max_bytes`. Never blocks on a FIFO
/// and never reads past the limit, even if the file grows meanwhile.
pub fn read_input(path: &Path, input: Input) -> Result<Vec<u8>> {
    let what = input.what;
    let meta = fs::metadata(path)
        .map_err(|e| crate::input_error!("cannot read {what} {}: {e}", path.display()))?;
    check_regular(path, &meta, what)?;
    if meta.len() > input.max_bytes {
        crate::bail_input!(
            "{what} {} is {} bytes, more than the {} bytes a {what} may have; is it the right file?",
            path.display(),
            meta.len(),
            input.max_bytes
        );
    }
    // O_NONBLOCK: should the path turn into a FIFO after the check, opening
    // it still returns at once (and reading it gives nothing).
    let mut file = open_nonblocking(path)
        .map_err(|e| crate::input_error!("cannot read {what} {}: {e}", path.display()))?;
    check_regular(path, &file.metadata()?, what)?;
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    (&mut file)
        .take(input.max_bytes + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| crate::input_error!("cannot read {what} {}: {e}", path.display()))?;
    if bytes.len() as u64 > input.max_bytes {
        crate::bail_input!(
            "{what} {} grew past {} bytes while being read",
            path.display(),
            input.max_bytes
        );
    }
    Ok(bytes)
}

/// [`read_input`] for text: the bytes must be UTF-8.
pub fn read_input_text(path: &Path, input: Input) -> Result<String> {
    let bytes = read_input(path, input)?;
    String::from_utf8(bytes).map_err(|e| {
        crate::input_error!(
            "{} {} is not UTF-8 text (invalid byte at offset {}); save it as UTF-8",
            input.what,
            path.display(),
            e.utf8_error().valid_up_to()
        )
    })
}

/// Opens `path` for reading without blocking on a FIFO.
pub fn open_nonblocking(path: &Path) -> std::io::Result<fs::File> {
    let mut options = fs::File::options();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK);
    }
    options.open(path)
}

/// Refuses what is not a regular file, saying what it is.
pub fn check_regular(path: &Path, meta: &fs::Metadata, what: &str) -> Result<()> {
    if meta.is_file() {
        return Ok(());
    }
    crate::bail_input!(
        "{what} {} is {}, not a regular file; give the path of a file",
        path.display(),
        file_kind(meta)
    );
}

/// `a directory`, `a FIFO (named pipe)`, `a character device`, ...
pub fn file_kind(meta: &fs::Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        return "a directory";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a FIFO (named pipe)";
        }
        if t.is_char_device() {
            return "a character device";
        }
        if t.is_block_device() {
            return "a block device";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    if t.is_file() {
        "a regular file"
    } else {
        "not a regular file"
    }
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
