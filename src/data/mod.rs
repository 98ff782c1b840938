//! Datasets: where the files are looked for, reading them into compact `u8`
//! memory, the seeded train/validation split, normalisation statistics and
//! batch assembly. Nothing here knows about models or training.

pub mod convert;
pub mod idx;

use crate::config::{DataConfig, DatasetName, Normalize};
use crate::rng;
use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Images of one file held as bytes, `c×h×w` each, with their labels.
#[derive(Debug, Clone)]
pub struct ImageSet {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub pixels: Vec<u8>,
    pub labels: Vec<u8>,
}

impl ImageSet {
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    pub fn image_len(&self) -> usize {
        self.channels * self.height * self.width
    }
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.image_len();
        &self.pixels[i * n..(i + 1) * n]
    }
    pub fn shape(&self) -> [usize; 3] {
        [self.channels, self.height, self.width]
    }
}

/// A dataset read from disk: its training and test files and class names.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub name: DatasetName,
    pub dir: PathBuf,
    pub classes: Vec<String>,
    pub train: ImageSet,
    pub test: ImageSet,
}

/// Which part of the data to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Val,
    Test,
}

impl Split {
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::Test => "test",
        }
    }
}

pub fn class_names(name: DatasetName) -> Vec<String> {
    match name {
        DatasetName::Mnist => (0..10).map(|d| d.to_string()).collect(),
        DatasetName::FashionMnist => [
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
    }
}

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

fn how_to_get(name: DatasetName) -> &'static str {
    match name {
        DatasetName::Mnist => {
            "download the four MNIST files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, \
             t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz) into ./data/mnist, or pass \
             --data-dir DIR (on the project's machines: --data-dir ../shared/data/mnist)"
        }
        DatasetName::FashionMnist => {
            "install Debian's package (apt-get install dataset-fashion-mnist), or put the four \
             Fashion-MNIST IDX files into ./data/fashion-mnist, or pass --data-dir DIR"
        }
    }
}

/// Finds the directory holding the dataset's files.
pub fn resolve_dir(
    name: DatasetName,
    explicit: Option<&Path>,
    recorded: Option<&Path>,
) -> Result<(PathBuf, [PathBuf; 4])> {
    let candidates = candidate_dirs(name, explicit, recorded);
    for (dir, _) in &candidates {
        if let Some(files) = idx::find_files(dir) {
            return Ok((dir.clone(), files));
        }
    }
    let tried: Vec<String> = candidates
        .iter()
        .map(|(d, why)| {
            let state = if d.is_dir() {
                "no complete set of IDX files"
            } else {
                "no such directory"
            };
            format!("  {} ({why}): {state}", d.display())
        })
        .collect();
    crate::bail_input!(
        "cannot find the {} dataset. Looked in:\n{}\nEach place needs {} (raw or .gz).\nTo fix: {}",
        name.name(),
        tried.join("\n"),
        idx::FILES.join(", "),
        how_to_get(name)
    )
}

impl Dataset {
    /// Finds and reads a dataset (see [`resolve_dir`]).
    pub fn load(
        name: DatasetName,
        explicit: Option<&Path>,
        recorded: Option<&Path>,
    ) -> Result<Dataset> {
        let (dir, files) = resolve_dir(name, explicit, recorded)?;
        let classes = class_names(name);
        let train = read_pair(&files[0], &files[1], classes.len())?;
        let test = read_pair(&files[2], &files[3], classes.len())?;
        if train.shape() != test.shape() {
            crate::bail_input!(
                "in {}: training images are {}×{} but test images are {}×{}",
                dir.display(),
                train.height,
                train.width,
                test.height,
                test.width
            );
        }
        let dir = dir.canonicalize().unwrap_or(dir);
        Ok(Dataset {
            name,
            dir,
            classes,
            train,
            test,
        })
    }
}

fn read_pair(images: &Path, labels: &Path, classes: usize) -> Result<ImageSet> {
    let img = idx::read_images(images)?;
    let lab = idx::read_labels(labels)?;
    if img.count != lab.len() {
        crate::bail_input!(
            "{} holds {} images but {} holds {} labels; the files do not belong together",
            images.display(),
            img.count,
            labels.display(),
            lab.len()
        );
    }
    if let Some((i, &l)) = lab
        .iter()
        .enumerate()
        .find(|&(_, &l)| l as usize >= classes)
    {
        crate::bail_input!(
            "{}: label {l} of image {i} is outside the {classes} classes (0..{})",
            labels.display(),
            classes - 1
        );
    }
    Ok(ImageSet {
        channels: 1,
        height: img.rows,
        width: img.cols,
        pixels: img.pixels,
        labels: lab,
    })
}

/// A list of images of one [`ImageSet`].
#[derive(Debug, Clone)]
pub struct Subset<'a> {
    pub set: &'a ImageSet,
    pub indices: Vec<u32>,
}

impl Subset<'_> {
    pub fn len(&self) -> usize {
        self.indices.len()
    }
    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }
}

/// The three parts a run uses, after the validation split and the limits.
#[derive(Debug, Clone)]
pub struct Splits<'a> {
    pub train: Subset<'a>,
    pub val: Subset<'a>,
    pub test: Subset<'a>,
}

impl<'a> Splits<'a> {
    /// Carves the validation images out of the training file with the seed,
    /// then applies `limit_train` / `limit_test`.
    pub fn new(data: &'a Dataset, cfg: &DataConfig, seed: u64) -> Result<Splits<'a>> {
        let n = data.train.len();
        let n_val = cfg.val_size.of(n);
        if n_val >= n {
            crate::bail_input!(
                "data.val_size asks for {n_val} validation images but the training file of {} has only {n}; \
                 lower it, e.g. --set data.val_size=0.1",
                data.name.name()
            );
        }
        let mut order: Vec<u32> = (0..n as u32).collect();
        order.shuffle(&mut rng::stream(seed, rng::Purpose::Split, 0));
        let mut val = order[..n_val].to_vec();
        let mut train = order[n_val..].to_vec();
        val.sort_unstable();
        train.sort_unstable();
        if let Some(limit) = cfg.limit_train {
            if limit == 0 {
                crate::bail_input!(
                    "data.limit_train is 0; it must be at least 1 (or null for all images)"
                );
            }
            train.truncate(limit);
        }
        let mut test: Vec<u32> = (0..data.test.len() as u32).collect();
        if let Some(limit) = cfg.limit_test {
            if limit == 0 {
                crate::bail_input!(
                    "data.limit_test is 0; it must be at least 1 (or null for all images)"
                );
            }
            test.truncate(limit);
        }
        Ok(Splits {
            train: Subset {
                set: &data.train,
                indices: train,
            },
            val: Subset {
                set: &data.train,
                indices: val,
            },
            test: Subset {
                set: &data.test,
                indices: test,
            },
        })
    }

    pub fn get(&self, split: Split) -> &Subset<'a> {
        match split {
            Split::Train => &self.train,
            Split::Val => &self.val,
            Split::Test => &self.test,
        }
    }
}

/// Per-channel statistics of pixels scaled to [0, 1]; inputs become
/// `(pixel/255 - mean) / std`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Normalization {
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
}

impl Normalization {
    pub fn identity(channels: usize) -> Self {
        Normalization {
            mean: vec![0.0; channels],
            std: vec![1.0; channels],
        }
    }

    /// Resolves the config's setting against the training images.
    pub fn resolve(setting: &Normalize, train: &Subset) -> Result<Normalization> {
        let c = train.set.channels;
        match setting {
            Normalize::None => Ok(Self::identity(c)),
            Normalize::Given { mean, std } => {
                if mean.len() != c || std.len() != c {
                    crate::bail_input!(
                        "data.normalize gives {} means and {} stds but the images have {c} channel(s); give one of each per channel",
                        mean.len(),
                        std.len()
                    );
                }
                if let Some(s) = std.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
                    crate::bail_input!(
                        "data.normalize.std contains {s}; every std must be positive"
                    );
                }
                if let Some(m) = mean.iter().find(|m| !m.is_finite()) {
                    crate::bail_input!(
                        "data.normalize.mean contains {m}; every mean must be finite"
                    );
                }
                Ok(Normalization {
                    mean: mean.clone(),
                    std: std.clone(),
                })
            }
            Normalize::Auto => Ok(Self::compute(train)),
        }
    }

    /// Mean and standard deviation per channel over a subset.
    pub fn compute(subset: &Subset) -> Normalization {
        let set = subset.set;
        let plane = set.height * set.width;
        let mut sum = vec![0u64; set.channels];
        let mut sq = vec![0u64; set.channels];
        for &i in &subset.indices {
            let img = set.image(i as usize);
            for ch in 0..set.channels {
                for &p in &img[ch * plane..(ch + 1) * plane] {
                    sum[ch] += p as u64;
                    sq[ch] += (p as u64) * (p as u64);
                }
            }
        }
        let count = (subset.len() * plane).max(1) as f64;
        let mean: Vec<f64> = sum.iter().map(|&s| s as f64 / count / 255.0).collect();
        let std = sq
            .iter()
            .zip(&mean)
            .map(|(&q, &m)| {
                let var = q as f64 / count / (255.0 * 255.0) - m * m;
                let s = var.max(0.0).sqrt();
                if s > 1e-6 { s } else { 1.0 }
            })
            .collect();
        Normalization { mean, std }
    }

    /// Lookup tables byte → normalised value, one per channel.
    fn tables(&self) -> Vec<[f32; 256]> {
        self.mean
            .iter()
            .zip(&self.std)
            .map(|(&m, &s)| {
                let mut t = [0f32; 256];
                for (p, v) in t.iter_mut().enumerate() {
                    *v = ((p as f64 / 255.0 - m) / s) as f32;
                }
                t
            })
            .collect()
    }
}

/// Turns lists of image indices into normalised `f32` batches on a device.
pub struct Batcher {
    tables: Vec<[f32; 256]>,
    device: Device,
}

impl Batcher {
    pub fn new(norm: &Normalization, device: &Device) -> Self {
        Batcher {
            tables: norm.tables(),
            device: device.clone(),
        }
    }

    /// One image's bytes (`c×h×w`) as a normalised `[1, c, h, w]` tensor.
    pub fn tensor_from_pixels(&self, pixels: &[u8], [c, h, w]: [usize; 3]) -> Result<Tensor> {
        let plane = h * w;
        let xs: Vec<f32> = pixels
            .chunks(plane)
            .zip(&self.tables)
            .flat_map(|(ch, table)| ch.iter().map(|&p| table[p as usize]))
            .collect();
        Ok(Tensor::from_vec(xs, (1, c, h, w), &Device::Cpu)?.to_device(&self.device)?)
    }

    /// Images `[n, c, h, w]` (f32) and labels `[n]` (u32) for `indices` of `set`.
    pub fn batch(&self, set: &ImageSet, indices: &[u32]) -> Result<(Tensor, Tensor)> {
        let plane = set.height * set.width;
        let mut xs = Vec::with_capacity(indices.len() * set.image_len());
        let mut ys = Vec::with_capacity(indices.len());
        for &i in indices {
            let img = set.image(i as usize);
            for (ch, table) in self.tables.iter().enumerate() {
                xs.extend(
                    img[ch * plane..(ch + 1) * plane]
                        .iter()
                        .map(|&p| table[p as usize]),
                );
            }
            ys.push(set.labels[i as usize] as u32);
        }
        let n = indices.len();
        let x = Tensor::from_vec(xs, (n, set.channels, set.height, set.width), &Device::Cpu)?
            .to_device(&self.device)
            .context("moving a batch of images to the device")?;
        let y = Tensor::from_vec(ys, n, &Device::Cpu)?.to_device(&self.device)?;
        Ok((x, y))
    }
}
