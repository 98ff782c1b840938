//! Reader for the IDX format of MNIST and Fashion-MNIST (raw or gzip).
//!
//! Every header field is checked against the data that follows, so a
//! truncated, padded or swapped file is an error that names the file.

use crate::error::InputContext;
use anyhow::Result;
use std::io::Read;
use std::path::{Path, PathBuf};

const IMAGES_MAGIC: u32 = 0x0000_0803; // unsigned bytes, 3 dimensions
const LABELS_MAGIC: u32 = 0x0000_0801; // unsigned bytes, 1 dimension

/// Images of one IDX file: `count` images of `rows`×`cols` bytes.
#[derive(Debug, Clone)]
pub struct IdxImages {
    pub count: usize,
    pub rows: usize,
    pub cols: usize,
    pub pixels: Vec<u8>,
}

/// Reads a file, transparently un-gzipping names ending in `.gz`.
fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).input_context(|| format!("cannot read {}", path.display()))?;
    let gz = path.extension().is_some_and(|e| e == "gz") || raw.starts_with(&[0x1f, 0x8b]);
    if !gz {
        return Ok(raw);
    }
    let mut out = Vec::with_capacity(raw.len() * 4);
    flate2::read::GzDecoder::new(raw.as_slice())
        .read_to_end(&mut out)
        .input_context(|| {
            format!(
                "{} is not a valid gzip file (corrupt or truncated download?); fetch it again",
                path.display()
            )
        })?;
    Ok(out)
}

fn be_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

fn check_header(
    path: &Path,
    bytes: &[u8],
    magic: u32,
    header_len: usize,
    what: &str,
) -> Result<()> {
    if bytes.len() < header_len {
        crate::bail_input!(
            "{} is too short to be an IDX {what} file ({} bytes, the header alone is {header_len})",
            path.display(),
            bytes.len()
        );
    }
    let got = be_u32(bytes, 0);
    if got != magic {
        let hint = match got {
            IMAGES_MAGIC => " (this is an images file)",
            LABELS_MAGIC => " (this is a labels file)",
            _ => "",
        };
        crate::bail_input!(
            "{} is not an IDX {what} file: magic number is 0x{got:08x}{hint}, expected 0x{magic:08x}",
            path.display()
        );
    }
    Ok(())
}

fn check_length(path: &Path, have: usize, need: u128, what: String) -> Result<()> {
    if (have as u128) < need {
        crate::bail_input!(
            "{} is truncated: its header promises {what} ({need} bytes of data) but only {have} bytes follow; fetch the file again",
            path.display()
        );
    }
    if (have as u128) > need {
        crate::bail_input!(
            "{} has {} bytes more than its header promises ({what}); the file is corrupt or not an IDX file",
            path.display(),
            have as u128 - need
        );
    }
    Ok(())
}

pub fn read_images(path: &Path) -> Result<IdxImages> {
    let bytes = read_maybe_gz(path)?;
    check_header(path, &bytes, IMAGES_MAGIC, 16, "images")?;
    let count = be_u32(&bytes, 4) as usize;
    let rows = be_u32(&bytes, 8) as usize;
    let cols = be_u32(&bytes, 12) as usize;
    if rows == 0 || cols == 0 {
        crate::bail_input!("{} declares images of {rows}×{cols} pixels", path.display());
    }
    let need = count as u128 * rows as u128 * cols as u128;
    check_length(
        path,
        bytes.len() - 16,
        need,
        format!("{count} images of {rows}×{cols}"),
    )?;
    let mut pixels = bytes;
    pixels.drain(..16);
    Ok(IdxImages {
        count,
        rows,
        cols,
        pixels,
    })
}

pub fn read_labels(path: &Path) -> Result<Vec<u8>> {
    let bytes = read_maybe_gz(path)?;
    check_header(path, &bytes, LABELS_MAGIC, 8, "labels")?;
    let count = be_u32(&bytes, 4) as usize;
    check_length(
        path,
        bytes.len() - 8,
        count as u128,
        format!("{count} labels"),
    )?;
    let mut labels = bytes;
    labels.drain(..8);
    Ok(labels)
}

/// The four files of an MNIST-style dataset, in the order train images,
/// train labels, test images, test labels.
pub const FILES: [&str; 4] = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
];

/// Finds each of the four files in `dir`, raw or `.gz` (also the
/// `train-images.idx3-ubyte` spelling some mirrors use). `None` when any is
/// missing.
pub fn find_files(dir: &Path) -> Result<[PathBuf; 4], String> {
    Ok(locate(dir)?.map(|(p, _)| p))
}

/// The names a file of `stem` may have, in the order they are preferred:
/// raw, then gzipped, in both spellings.
fn variants(stem: &str) -> [String; 4] {
    let dotted = stem.replacen("-idx", ".idx", 1);
    [
        stem.to_string(),
        format!("{stem}.gz"),
        dotted.clone(),
        format!("{dotted}.gz"),
    ]
}

/// Each file of the set in `dir`, with the other variants of it that are
/// files too (read instead of them, which a note says).
fn locate(dir: &Path) -> Result<[(PathBuf, Vec<PathBuf>); 4], String> {
    let mut problems = Vec::new();
    let found: Vec<Option<(PathBuf, Vec<PathBuf>)>> = FILES
        .iter()
        .map(|stem| {
            let paths: Vec<PathBuf> = variants(stem).iter().map(|n| dir.join(n)).collect();
            let files: Vec<PathBuf> = paths
                .iter()
                .filter(|p| super::locate::not_a_file(p).is_none())
                .cloned()
                .collect();
            if let Some((first, rest)) = files.split_first() {
                return Some((first.clone(), rest.to_vec()));
            }
            // Something there under one of the names, but not a file?
            let odd = paths.iter().find_map(|p| {
                super::locate::not_a_file(p)
                    .filter(|w| *w != "missing")
                    .map(|w| (p, w))
            });
            problems.push(match odd {
                Some((p, w)) => (p.file_name().unwrap().to_string_lossy().into_owned(), w),
                None => (format!("{stem}[.gz]"), "missing"),
            });
            None
        })
        .collect();
    if !problems.is_empty() {
        return Err(super::locate::describe_problems(&problems));
    }
    let mut it = found.into_iter().map(|f| f.expect("every file found"));
    Ok(std::array::from_fn(|_| it.next().expect("four files")))
}

/// Notes for files of the set in `dir` that exist in more than one form
/// (`train-images-idx3-ubyte` beside its `.gz`): which one is read.
pub fn twin_notes(dir: &Path) -> Vec<String> {
    let Ok(found) = locate(dir) else {
        return Vec::new();
    };
    found
        .iter()
        .filter(|(_, others)| !others.is_empty())
        .map(|(read, others)| {
            let names: Vec<String> = others
                .iter()
                .map(|o| o.file_name().unwrap().to_string_lossy().into_owned())
                .collect();
            format!(
                "note: {} holds {} as well as {}; reading {} (remove the one that is not wanted)",
                dir.display(),
                read.file_name().unwrap().to_string_lossy(),
                names.join(" and "),
                read.file_name().unwrap().to_string_lossy()
            )
        })
        .collect()
}

/// Writes an IDX images file (used by tests and fixtures).
pub fn encode_images(count: usize, rows: usize, cols: usize, pixels: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + pixels.len());
    for v in [IMAGES_MAGIC, count as u32, rows as u32, cols as u32] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    out.extend_from_slice(pixels);
    out
}

/// Writes an IDX labels file (used by tests and fixtures).
pub fn encode_labels(labels: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + labels.len());
    for v in [LABELS_MAGIC, labels.len() as u32] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    out.extend_from_slice(labels);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::InputError;
    use std::io::Write;

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    fn gz(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    fn message(r: Result<impl std::fmt::Debug>) -> String {
        let err = r.unwrap_err();
        assert!(err.is::<InputError>(), "not an input error: {err:#}");
        format!("{err:#}")
    }

    #[test]
    fn reads_raw_and_gzipped_images() {
        let dir = tempfile::tempdir().unwrap();
        let pixels: Vec<u8> = (0..2 * 3 * 4).map(|i| i as u8).collect();
        let raw = encode_images(2, 3, 4, &pixels);
        for (name, bytes) in [("a", raw.clone()), ("b.gz", gz(&raw))] {
            let img = read_images(&write(dir.path(), name, &bytes)).unwrap();
            assert_eq!((img.count, img.rows, img.cols), (2, 3, 4));
            assert_eq!(img.pixels, pixels);
        }
    }

    #[test]
    fn reads_labels() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "l.gz", &gz(&encode_labels(&[3, 1, 4])));
        assert_eq!(read_labels(&p).unwrap(), vec![3, 1, 4]);
    }

    #[test]
    fn truncated_images_file_is_an_input_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = encode_images(10, 28, 28, &vec![0; 10 * 784]);
        bytes.truncate(16 + 5 * 784);
        let p = write(dir.path(), "train-images-idx3-ubyte", &bytes);
        let msg = message(read_images(&p));
        assert!(
            msg.contains("train-images-idx3-ubyte is truncated"),
            "{msg}"
        );
        assert!(msg.contains("10 images of 28×28"), "{msg}");
    }

    #[test]
    fn extra_bytes_are_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = encode_labels(&[1, 2]);
        bytes.push(7);
        let msg = message(read_labels(&write(dir.path(), "l", &bytes)));
        assert!(msg.contains("1 bytes more than its header"), "{msg}");
    }

    #[test]
    fn swapped_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "labels", &encode_images(1, 1, 1, &[0]));
        let msg = message(read_labels(&p));
        assert!(msg.contains("not an IDX labels file"), "{msg}");
        assert!(msg.contains("this is an images file"), "{msg}");
    }

    #[test]
    fn corrupt_gzip_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = gz(&encode_labels(&[1; 1000]));
        bytes.truncate(bytes.len() / 2);
        let msg = message(read_labels(&write(dir.path(), "l.gz", &bytes)));
        assert!(msg.contains("not a valid gzip file"), "{msg}");
    }

    #[test]
    fn tiny_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let msg = message(read_images(&write(dir.path(), "x", &[0, 0, 8])));
        assert!(msg.contains("too short"), "{msg}");
    }

    #[test]
    fn finds_gz_and_raw_names() {
        let dir = tempfile::tempdir().unwrap();
        assert!(find_files(dir.path()).is_err());
        for (i, f) in FILES.iter().enumerate() {
            let name = if i % 2 == 0 {
                format!("{f}.gz")
            } else {
                f.to_string()
            };
            write(dir.path(), &name, b"");
        }
        let found = find_files(dir.path()).unwrap();
        assert!(found[0].ends_with("train-images-idx3-ubyte.gz"));
        assert!(found[1].ends_with("train-labels-idx1-ubyte"));
    }
}
