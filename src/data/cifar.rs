//! Reader for the binary version of CIFAR-10 (`cifar-10-binary.tar.gz`:
//! `data_batch_1.bin` … `data_batch_5.bin` and `test_batch.bin`). Each file
//! is a run of 3,073-byte records: one label byte, then the 32×32 red,
//! green and blue planes, row by row — already the `c×h×w` layout of an
//! [`ImageSet`].
//!
//! candle-datasets has a loader for these files, but it converts to `f32`
//! tensors (four times the memory of the bytes kept here), assumes exactly
//! 10,000 images per file and returns bare IO errors that do not name the
//! file; a short or foreign file must instead be an error that says which
//! file and what is wrong with it, so the format is read here.

use super::ImageSet;
use crate::error::InputContext;
use anyhow::Result;
use std::path::{Path, PathBuf};

pub const CHANNELS: usize = 3;
pub const SIDE: usize = 32;
/// One label byte and 3×32×32 pixel bytes.
pub const RECORD: usize = 1 + CHANNELS * SIDE * SIDE;

pub const TRAIN_FILES: [&str; 5] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
];
pub const TEST_FILE: &str = "test_batch.bin";

/// The class names, in label order (`batches.meta.txt`).
pub const CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// The six files, found in `dir` or in the `cifar-10-batches-bin` folder
/// the archive unpacks to. `None` when any is missing.
pub fn find_files(dir: &Path) -> Result<(PathBuf, [PathBuf; 6]), String> {
    let mut best: Option<(usize, String)> = None;
    for d in [dir.to_path_buf(), dir.join("cifar-10-batches-bin")] {
        let files: [PathBuf; 6] =
            std::array::from_fn(|i| d.join(TRAIN_FILES.get(i).copied().unwrap_or(TEST_FILE)));
        let problems: Vec<(String, &'static str)> = files
            .iter()
            .filter_map(|f| {
                super::locate::not_a_file(f)
                    .map(|w| (f.file_name().unwrap().to_string_lossy().into(), w))
            })
            .collect();
        if problems.is_empty() {
            return Ok((d, files));
        }
        // Say what is wrong where most of the files are.
        let present = 6 - problems.iter().filter(|(_, w)| *w == "missing").count();
        if best.as_ref().is_none_or(|(n, _)| present > *n) {
            let at = if d == dir {
                String::new()
            } else {
                " in cifar-10-batches-bin/".into()
            };
            best = Some((
                present,
                format!("{}{at}", super::locate::describe_problems(&problems)),
            ));
        }
    }
    Err(best.map(|(_, why)| why).unwrap_or_default())
}

/// Reads one batch file, checking its size and every label.
pub fn read_file(path: &Path) -> Result<ImageSet> {
    let bytes = std::fs::read(path).input_context(|| format!("cannot read {}", path.display()))?;
    if bytes.is_empty() || bytes.len() % RECORD != 0 {
        let hint = if bytes.len() % (RECORD + 1) == 0 && !bytes.is_empty() {
            " (its size fits CIFAR-100's 3,074-byte records, which have two label bytes)"
        } else {
            ""
        };
        crate::bail_input!(
            "{} is {} bytes, not a positive multiple of {RECORD} (one label byte and 3×32×32 pixels per \
             image){hint}; it is not a CIFAR-10 binary batch, or it is truncated. Use the binary version \
             (cifar-10-binary.tar.gz) and fetch it again",
            path.display(),
            bytes.len()
        );
    }
    let n = bytes.len() / RECORD;
    let mut labels = Vec::with_capacity(n);
    let mut pixels = Vec::with_capacity(n * (RECORD - 1));
    for (i, record) in bytes.chunks_exact(RECORD).enumerate() {
        let label = record[0];
        if label as usize >= CLASSES.len() {
            crate::bail_input!(
                "{}: image {i} has label {label}, but CIFAR-10 labels are 0..9; the file is corrupt or \
                 from another dataset (CIFAR-100 files have two label bytes per image)",
                path.display()
            );
        }
        labels.push(u16::from(label));
        pixels.extend_from_slice(&record[1..]);
    }
    Ok(ImageSet::in_memory([CHANNELS, SIDE, SIDE], pixels, labels))
}

/// Reads the five training files into one set, and the test file.
pub fn read(files: &[PathBuf; 6]) -> Result<(ImageSet, ImageSet)> {
    let mut train = read_file(&files[0])?;
    for f in &files[1..5] {
        let part = read_file(f)?;
        train.pixels.extend_from_slice(&part.pixels);
        train.labels.extend_from_slice(&part.labels);
    }
    let test = read_file(&files[5])?;
    Ok((train, test))
}

/// Writes images (`n×3×32×32` bytes) and labels in the batch format (used by
/// tests and to convert other data).
pub fn encode(pixels: &[u8], labels: &[u8]) -> Vec<u8> {
    let image = RECORD - 1;
    assert_eq!(
        pixels.len(),
        labels.len() * image,
        "3×32×32 bytes per label"
    );
    let mut out = Vec::with_capacity(labels.len() * RECORD);
    for (label, img) in labels.iter().zip(pixels.chunks_exact(image)) {
        out.push(*label);
        out.extend_from_slice(img);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::InputError;

    fn message(r: Result<impl std::fmt::Debug>) -> String {
        let err = r.unwrap_err();
        assert!(err.is::<InputError>(), "not an input error: {err:#}");
        format!("{err:#}")
    }

    #[test]
    fn reads_records_as_chw_images() {
        let dir = tempfile::tempdir().unwrap();
        let pixels: Vec<u8> = (0..2 * 3072).map(|i| (i % 251) as u8).collect();
        let p = dir.path().join("b.bin");
        std::fs::write(&p, encode(&pixels, &[3, 9])).unwrap();
        let set = read_file(&p).unwrap();
        assert_eq!(set.shape(), [3, 32, 32]);
        assert_eq!(set.labels, vec![3, 9]);
        assert_eq!(set.image(1), &pixels[3072..]);
    }

    #[test]
    fn wrong_size_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("data_batch_3.bin");
        std::fs::write(&p, vec![0u8; RECORD * 2 - 5]).unwrap();
        let msg = message(read_file(&p));
        assert!(msg.contains("data_batch_3.bin is 6141 bytes"), "{msg}");
        assert!(msg.contains("multiple of 3073"), "{msg}");
        std::fs::write(&p, vec![0u8; (RECORD + 1) * 3]).unwrap();
        assert!(message(read_file(&p)).contains("CIFAR-100"));
        std::fs::write(&p, b"").unwrap();
        assert!(message(read_file(&p)).contains("is 0 bytes"));
    }

    #[test]
    fn label_out_of_range_names_file_and_image() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("test_batch.bin");
        std::fs::write(&p, encode(&vec![0; 3 * 3072], &[1, 2, 10])).unwrap();
        let msg = message(read_file(&p));
        assert!(
            msg.contains("test_batch.bin: image 2 has label 10"),
            "{msg}"
        );
    }

    #[test]
    fn finds_files_in_the_unpacked_archive_folder() {
        let dir = tempfile::tempdir().unwrap();
        assert!(find_files(dir.path()).is_err());
        let inner = dir.path().join("cifar-10-batches-bin");
        std::fs::create_dir(&inner).unwrap();
        for f in TRAIN_FILES.iter().chain([&TEST_FILE]) {
            std::fs::write(inner.join(f), b"").unwrap();
        }
        let (found, files) = find_files(dir.path()).unwrap();
        assert_eq!(found, inner);
        assert!(files[5].ends_with("test_batch.bin"));
    }
}
