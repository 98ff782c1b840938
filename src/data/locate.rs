//! Where the files of MNIST, Fashion-MNIST and CIFAR-10 are looked for, in
//! order, and the message that lists every place tried when none has them.
//! (Image folders are named by the config and never searched for.)

use crate::config::DatasetName;
use std::path::{Path, PathBuf};

/// Where a dataset is looked for, in order. An explicit `--data-dir` is the
/// only place tried when given.
pub fn candidate_dirs(
    name: DatasetName,
    explicit: Option<&Path>,
    recorded: Option<&Path>,
) -> Vec<(PathBuf, &'static str)> {
    if let Some(dir) = explicit {
        return vec![(dir.to_path_buf(), "--data-dir")];
    }
    let mut dirs = Vec::new();
    if let Some(env) = std::env::var_os("CNN_DATA_DIR").filter(|v| !v.is_empty()) {
        let env = PathBuf::from(env);
        // CNN_DATA_DIR may hold the files or one folder per dataset.
        dirs.push((env.join(name.name()), "CNN_DATA_DIR/<dataset>"));
        dirs.push((env, "CNN_DATA_DIR"));
    }
    if let Some(dir) = recorded {
        dirs.push((dir.to_path_buf(), "data.dir in the config"));
    }
    dirs.push((PathBuf::from("data").join(name.name()), "./data/<dataset>"));
    dirs.push((
        PathBuf::from("/usr/share/datasets").join(name.name()),
        "system datasets",
    ));
    dirs
}

/// The first candidate where `probe` finds the files, or one line per
/// place saying why it did not do (`probe`'s reason for a directory that
/// exists: which files are missing, or which are not regular files).
pub fn find<F>(
    candidates: &[(PathBuf, &'static str)],
    probe: impl Fn(&Path) -> Result<F, String>,
) -> Result<(PathBuf, F), Vec<String>> {
    let mut tried = Vec::new();
    for (dir, why) in candidates {
        let state = if dir.is_dir() {
            match probe(dir) {
                Ok(found) => return Ok((dir.clone(), found)),
                Err(reason) => reason,
            }
        } else if dir.exists() {
            "not a directory".to_string()
        } else {
            "no such directory".to_string()
        };
        tried.push(format!("  {} ({why}): {state}", dir.display()));
    }
    Err(tried)
}

/// Why `path`, which a dataset needs as a file, is not one: `None` for a
/// regular file, else `missing` or what it is (a directory, a FIFO…).
pub fn not_a_file(path: &Path) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(_) => return Some("missing"),
    };
    let t = meta.file_type();
    if t.is_file() {
        None
    } else if t.is_dir() {
        Some("a directory")
    } else if t.is_fifo() {
        Some("a FIFO")
    } else if t.is_char_device() || t.is_block_device() {
        Some("a device")
    } else if t.is_socket() {
        Some("a socket")
    } else {
        Some("not a regular file")
    }
}

/// `missing: a, b; not regular files: c (a FIFO)` for the files of a place.
pub fn describe_problems(problems: &[(String, &'static str)]) -> String {
    let missing: Vec<&str> = problems
        .iter()
        .filter(|(_, w)| *w == "missing")
        .map(|(n, _)| n.as_str())
        .collect();
    let odd: Vec<String> = problems
        .iter()
        .filter(|(_, w)| *w != "missing")
        .map(|(n, w)| format!("{n} is {w}, not a file"))
        .collect();
    let mut parts = Vec::new();
    if !odd.is_empty() {
        parts.push(odd.join(", "));
    }
    if !missing.is_empty() {
        parts.push(format!("missing {}", missing.join(", ")));
    }
    parts.join("; ")
}

/// What each place needs, for the "cannot find" message.
pub fn files_needed(name: DatasetName) -> String {
    match name {
        DatasetName::Mnist | DatasetName::FashionMnist => format!(
            "Each place needs {} (raw or .gz).",
            super::idx::FILES.join(", ")
        ),
        DatasetName::Cifar10 => format!(
            "Each place needs {} and {} (the binary version), directly or in cifar-10-batches-bin/.",
            super::cifar::TRAIN_FILES.join(", "),
            super::cifar::TEST_FILE
        ),
        DatasetName::ImageFolder => String::new(),
    }
}

/// How to get the dataset, for the "cannot find" message.
pub fn how_to_get(name: DatasetName) -> &'static str {
    match name {
        DatasetName::Mnist => {
            "download the four MNIST files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, \
             t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz) into ./data/mnist, or pass \
             --data-dir DIR (on the project's machines: --data-dir ../shared/data/mnist), or let cnn \
             download it from the Hugging Face Hub (needs internet access; HF_ENDPOINT for a mirror)"
        }
        DatasetName::FashionMnist => {
            "install Debian's package (apt-get install dataset-fashion-mnist), or put the four \
             Fashion-MNIST IDX files into ./data/fashion-mnist, or pass --data-dir DIR, or let cnn \
             download it from the Hugging Face Hub (needs internet access; HF_ENDPOINT for a mirror)"
        }
        DatasetName::Cifar10 => {
            "download the binary version (https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz), \
             unpack it into ./data/cifar10, or pass --data-dir DIR, or let cnn download it from the \
             Hugging Face Hub (needs internet access; HF_ENDPOINT for a mirror)"
        }
        DatasetName::ImageFolder => {
            "set data.dir (or --data-dir) to a folder with one sub-folder of images per class"
        }
    }
}
