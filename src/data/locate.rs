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
/// place saying why it did not do.
pub fn find<F>(
    candidates: &[(PathBuf, &'static str)],
    probe: impl Fn(&Path) -> Option<F>,
    missing: &str,
) -> Result<(PathBuf, F), Vec<String>> {
    for (dir, _) in candidates {
        if let Some(found) = probe(dir) {
            return Ok((dir.clone(), found));
        }
    }
    Err(candidates
        .iter()
        .map(|(d, why)| {
            let state = if d.is_dir() {
                missing
            } else {
                "no such directory"
            };
            format!("  {} ({why}): {state}", d.display())
        })
        .collect())
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
