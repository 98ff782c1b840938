//! Datasets: reading MNIST and Fashion-MNIST (IDX), CIFAR-10 (binary
//! batches), image folders and the Hugging Face Hub's parquet files into
//! compact `u8` memory; the seeded splits, normalisation, augmentation and
//! batch assembly. Nothing here knows about models or training.
//!
//! One module per concern: [`locate`] (where files are looked for),
//! [`idx`], [`cifar`], [`folder`], [`hub`] (readers), [`split`],
//! [`normalize`], [`augment`], [`batch`]; [`convert`] fits single image
//! files to a model's input for `cnn predict`.

pub(crate) mod augment;
pub(crate) mod batch;
pub mod cifar;
pub mod convert;
pub(crate) mod folder;
pub(crate) mod hub;
pub mod idx;
pub mod image_file;
pub(crate) mod locate;
pub(crate) mod normalize;
pub(crate) mod photo_ops;
pub mod photos;
pub(crate) mod split;

pub use batch::Batcher;
pub use locate::candidate_dirs;
pub use normalize::Normalization;
pub use split::{Splits, Subset};

use crate::config::{Config, DataConfig, DatasetName};
use anyhow::Result;
use photos::Photos;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The most classes a dataset may have (labels are 16-bit).
pub const MAX_CLASSES: usize = 1 << 16;

/// Images of one file or folder with their labels: held as bytes, `c×h×w`
/// each, or (an image folder with `data.cache: "none"`) as their files,
/// decoded when used.
#[derive(Debug, Clone)]
pub struct ImageSet {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    /// Empty when the images are read from `files`.
    pub pixels: Vec<u8>,
    /// Class indices (at most [`MAX_CLASSES`] classes).
    pub labels: Vec<u16>,
    /// The photos of a set streamed from its files.
    pub files: Option<Arc<Photos>>,
}

impl ImageSet {
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    /// No images, of the same shape.
    pub fn empty_like(&self) -> ImageSet {
        ImageSet {
            channels: self.channels,
            height: self.height,
            width: self.width,
            pixels: Vec::new(),
            labels: Vec::new(),
            files: None,
        }
    }

    /// Images held as bytes of this shape.
    pub fn in_memory(shape: [usize; 3], pixels: Vec<u8>, labels: Vec<u16>) -> ImageSet {
        let [channels, height, width] = shape;
        ImageSet {
            channels,
            height,
            width,
            pixels,
            labels,
            files: None,
        }
    }

    pub fn image_len(&self) -> usize {
        self.channels * self.height * self.width
    }
    /// Image `i` of a set held in memory (see [`ImageSet::pixels_of`] for any set).
    pub fn image(&self, i: usize) -> &[u8] {
        debug_assert!(self.files.is_none(), "image() of a streamed set");
        let n = self.image_len();
        &self.pixels[i * n..(i + 1) * n]
    }
    /// Image `i` as `c×h×w` bytes: held, or decoded from its file and fitted.
    pub fn pixels_of(&self, i: usize) -> Result<Cow<'_, [u8]>> {
        match &self.files {
            None => Ok(Cow::Borrowed(self.image(i))),
            Some(files) => Ok(Cow::Owned(files.fitted(i as u32)?)),
        }
    }
    /// Image `i` as augmentation starts from it: at its own size when
    /// `whole` (the random resized crop) and the set streams from files,
    /// else the set's bytes.
    pub fn source(&self, i: usize, whole: bool) -> Result<Source<'_>> {
        match &self.files {
            Some(files) if whole => Ok(Source::Original(files.original(i as u32)?)),
            _ => Ok(Source::Pixels(self.pixels_of(i)?)),
        }
    }
    /// Image `i` at its own size (a streamed photo) or the set's, for the
    /// random resized crop.
    pub fn original(&self, i: usize) -> Result<Arc<photos::Original>> {
        match &self.files {
            None => Ok(Arc::new(photos::Original::from_planes(
                self.image(i),
                self.shape(),
            ))),
            Some(files) => files.original(i as u32),
        }
    }
    /// Asks a streamed set to decode these images ahead of their use, as
    /// [`ImageSet::original`] (`whole`) or [`ImageSet::pixels_of`] will
    /// take them (a set in memory has nothing to do).
    pub fn prefetch(&self, indices: &[u32], whole: bool) {
        if let Some(files) = &self.files {
            let want = if whole {
                photos::Want::Original
            } else {
                photos::Want::Fitted
            };
            files.prefetch(indices, want);
        }
    }
    pub fn shape(&self) -> [usize; 3] {
        [self.channels, self.height, self.width]
    }
}

/// An image as read, before augmentation (see [`ImageSet::source`]).
pub enum Source<'a> {
    /// `c×h×w` bytes at the set's shape.
    Pixels(Cow<'a, [u8]>),
    /// A streamed photo at its own size.
    Original(Arc<photos::Original>),
}

/// A dataset read into memory: training and test images and class names.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub name: DatasetName,
    /// Where the images were read from (for an image folder: its root; for
    /// the hub: the repository's folder in the cache).
    pub dir: PathBuf,
    /// Read from the Hugging Face Hub's cache rather than a local directory.
    pub from_hub: bool,
    pub classes: Vec<String>,
    pub train: ImageSet,
    /// `None` for an image folder without a test folder: the test images
    /// are then carved from `train` by the seed (see [`Splits`]).
    pub test: Option<ImageSet>,
    /// The separate test folder of an image folder, when there is one.
    pub test_dir: Option<PathBuf>,
    /// Worth telling the user: images skipped or resized, files ignored.
    pub notes: Vec<String>,
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

/// How a command wants the data found.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadOptions<'a> {
    /// `--data-dir`: the only place looked at for MNIST, Fashion-MNIST and
    /// CIFAR-10; the root for an image folder (overrides `data.dir`).
    pub data_dir: Option<&'a Path>,
    /// `cnn eval --test-dir`: other test images for an image folder.
    pub test_dir: Option<&'a Path>,
    /// `--no-download`: use local files and the hub's cache only.
    pub no_download: bool,
    /// The class names labels must follow (a checkpoint's); `None` for the
    /// dataset's own.
    pub classes: Option<&'a [String]>,
    /// Print nothing (no download line or bar).
    pub quiet: bool,
    /// Read only the test files of a built-in dataset (the training set is
    /// then empty): `cnn eval --split test` of a checkpoint, which needs
    /// nothing of the training images.
    pub test_only: bool,
}

/// The fixed class names of the built-in datasets (an image folder's are
/// its sub-folder names).
pub fn class_names(name: DatasetName) -> Vec<String> {
    let names: Vec<&str> = match name {
        DatasetName::Mnist => vec!["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"],
        DatasetName::FashionMnist => vec![
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
        ],
        DatasetName::Cifar10 => cifar::CLASSES.to_vec(),
        DatasetName::ImageFolder => Vec::new(),
    };
    names.into_iter().map(str::to_string).collect()
}

impl Dataset {
    /// Finds and reads the dataset of `config.data` (images of an image
    /// folder come out in the config's input shape).
    pub fn load(config: &Config, opts: &LoadOptions) -> Result<Dataset> {
        Self::load_data(&config.data, Some(config.input_shape), opts)
    }

    /// As [`Dataset::load`], for commands that may have no model config
    /// (`cnn samples`): an image folder needs `input_shape`, which says the
    /// size and channels its images are read at.
    pub fn load_data(
        data: &DataConfig,
        input_shape: Option<[usize; 3]>,
        opts: &LoadOptions,
    ) -> Result<Dataset> {
        match (data.dataset, input_shape) {
            (DatasetName::ImageFolder, Some(shape)) => load_folder(data, shape, opts),
            (DatasetName::ImageFolder, None) => crate::bail_input!(
                "reading an image folder needs a model config: its input_shape says the size and \
                 channels the images are read at; pass the model's --config FILE"
            ),
            (name, _) => load_builtin(name, data, opts),
        }
    }

    /// The data `config` trains and evaluates on: found, read, and checked
    /// against the network's input shape and classes. The same for train,
    /// eval and feature-maps.
    pub fn for_config(config: &Config, opts: &LoadOptions) -> Result<Dataset> {
        let data = Self::load(config, opts)?;
        data.check_fits(config)?;
        Ok(data)
    }

    /// The seeded train/validation/test split `config` describes.
    pub fn splits(&self, config: &Config) -> Result<Splits<'_>> {
        Splits::new(self, &config.data, config.training.seed)
    }

    /// Refuses a dataset whose images or classes are not what the
    /// config's network takes.
    pub fn check_fits(&self, config: &Config) -> Result<()> {
        let data = self;
        let shape = data.train.shape();
        if config.input_shape != shape {
            crate::bail_input!(
                "input_shape is {:?} but {} images are {}×{}×{}; set input_shape to {:?}",
                config.input_shape,
                data.name.name(),
                shape[0],
                shape[1],
                shape[2],
                shape
            );
        }
        if config.num_classes != data.classes.len() {
            let what = match data.name {
                DatasetName::ImageFolder => format!(
                    "the image folder {} has {} class folders ({})",
                    data.dir.display(),
                    data.classes.len(),
                    data.classes.join(", ")
                ),
                name => format!("{} has {} classes", name.name(), data.classes.len()),
            };
            if data.classes.len() < 2 {
                crate::bail_input!(
                    "{what}, but a classifier needs at least 2 classes; add a sub-folder of images for each \
                     other class"
                );
            }
            crate::bail_input!(
                "num_classes is {} but {what}; set num_classes to {n} and the last layer's width \
                 (cnn train --num-classes {n} does both; with --init-from the new head starts afresh)",
                config.num_classes,
                n = data.classes.len()
            );
        }
        Ok(())
    }

    /// The test images for display: the test file or folder, or, for an
    /// image folder that carves its test split, the whole folder.
    pub fn test_images(&self) -> &ImageSet {
        self.test.as_ref().unwrap_or(&self.train)
    }
}

/// The local files of a built-in dataset.
enum Files {
    Idx([PathBuf; 4]),
    Cifar([PathBuf; 6]),
}

fn load_builtin(name: DatasetName, data: &DataConfig, opts: &LoadOptions) -> Result<Dataset> {
    let candidates = candidate_dirs(name, opts.data_dir, data.dir.as_deref());
    let classes = class_names(name);
    let found = match name {
        DatasetName::Cifar10 => locate::find(&candidates, |d| {
            cifar::find_files(d)
                .map(|(dir, f)| (dir, Files::Cifar(f)))
                .map_err(|why| format!("no complete set of CIFAR-10 binary files: {why}"))
        }),
        _ => locate::find(&candidates, |d| {
            idx::find_files(d)
                .map(|f| (d.to_path_buf(), Files::Idx(f)))
                .map_err(|why| format!("no complete set of IDX files: {why}"))
        }),
    };
    let mut tried = match found {
        Ok((_, (dir, files))) => {
            let notes = match &files {
                Files::Idx(_) => idx::twin_notes(&dir),
                Files::Cifar(_) => Vec::new(),
            };
            // Only the test files, when that is all the caller uses.
            let (train, test) = match files {
                Files::Idx(f) if opts.test_only => {
                    let test = read_pair(&f[2], &f[3], classes.len())?;
                    (test.empty_like(), test)
                }
                Files::Idx(f) => {
                    let train = read_pair(&f[0], &f[1], classes.len())?;
                    let test = read_pair(&f[2], &f[3], classes.len())?;
                    (train, test)
                }
                Files::Cifar(f) if opts.test_only => {
                    let test = cifar::read_file(&f[5])?;
                    (test.empty_like(), test)
                }
                Files::Cifar(f) => cifar::read(&f)?,
            };
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
            return Ok(Dataset {
                name,
                dir,
                from_hub: false,
                classes,
                train,
                test: Some(test),
                test_dir: None,
                notes,
            });
        }
        Err(tried) => tried,
    };
    let needs = locate::files_needed(name);
    let fix = locate::how_to_get(name);
    let remote = hub::remote(name).filter(|_| opts.data_dir.is_none());
    let Some(remote) = remote else {
        crate::bail_input!(
            "cannot find the {} dataset. Looked in:\n{}\n{needs}\nTo fix: {fix}",
            name.name(),
            tried.join("\n")
        );
    };
    let download = if opts.no_download {
        Err("downloading is off (--no-download)".to_string())
    } else if !data.download {
        Err("downloading is off (data.download is false)".to_string())
    } else if hub::offline_env() {
        Err("downloading is off (HF_HUB_OFFLINE is set)".to_string())
    } else {
        Ok(())
    };
    match hub::fetch(&remote, classes.len(), download, opts.quiet)? {
        Ok(h) => Ok(Dataset {
            name,
            notes: vec![format!(
                "{} from the Hugging Face Hub cache ({})",
                name.name(),
                h.dir.display()
            )],
            dir: h.dir,
            from_hub: true,
            classes,
            train: h.train,
            test: Some(h.test),
            test_dir: None,
        }),
        Err(u) => {
            tried.push(format!(
                "  {} (Hugging Face Hub cache): not downloaded",
                u.cache.display()
            ));
            let remote_line = if u.downloading_off {
                format!("and did not download it from {}: {}.", u.url, u.reason)
            } else {
                format!("and could not download it from {}: {}.", u.url, u.reason)
            };
            crate::bail_input!(
                "cannot find the {} dataset. Looked in:\n{}\n{remote_line}\n{needs}\nTo fix: {fix}",
                name.name(),
                tried.join("\n")
            )
        }
    }
}

/// Class names for a message: all of a short list, the first dozen of a
/// long one (an ImageNet checkpoint has 1,000).
fn few(names: &[String]) -> String {
    const SHOWN: usize = 12;
    if names.len() <= SHOWN {
        return names.join(", ");
    }
    format!("{}, … ({} in all)", names[..SHOWN].join(", "), names.len())
}

fn load_folder(data: &DataConfig, shape: [usize; 3], opts: &LoadOptions) -> Result<Dataset> {
    let Some(root) = opts.data_dir.or(data.dir.as_deref()) else {
        crate::bail_input!(
            "data.dataset is imagefolder but no folder is given; set data.dir (or pass --data-dir DIR) to \
             a folder with one sub-folder of images per class, e.g. DIR/cat/001.png"
        );
    };
    let present = folder::class_folders(root, "image folder")?;
    let classes = match opts.classes {
        Some(known) => {
            if data.carves_test() && present != known {
                crate::bail_input!(
                    "image folder {} has the classes {} but the checkpoint was trained on {}; its test \
                     images are carved from the same folder, so it must be unchanged (or give a test \
                     folder with --test-dir)",
                    root.display(),
                    few(&present),
                    few(known)
                );
            }
            known.to_vec()
        }
        None => present.clone(),
    };
    if classes.len() > MAX_CLASSES {
        crate::bail_input!(
            "image folder {} has {} class folders; at most {MAX_CLASSES} classes are supported",
            root.display(),
            classes.len()
        );
    }
    let mut notes = Vec::new();
    let streamed = (data.cache == crate::config::Cache::None).then_some(data.workers);
    let read = |dir: &Path, present: &[String]| {
        let (on_bad, resize) = (data.on_bad_image, data.resize);
        folder::read_as(dir, present, &classes, shape, on_bad, resize, streamed)
    };
    let train = read(root, &present)?;
    report(&train, root, shape, &mut notes);
    let test_dir = opts.test_dir.or(data.test_dir.as_deref());
    let test = match test_dir {
        Some(dir) => {
            let present = folder::class_folders(dir, "test folder")?;
            let test = read(dir, &present)?;
            report(&test, dir, shape, &mut notes);
            Some(test.set)
        }
        None => None,
    };
    Ok(Dataset {
        name: DatasetName::ImageFolder,
        dir: root.canonicalize().unwrap_or_else(|_| root.to_path_buf()),
        from_hub: false,
        classes,
        train: train.set,
        test,
        test_dir: test_dir.map(|d| d.canonicalize().unwrap_or_else(|_| d.to_path_buf())),
        notes,
    })
}

/// Notes on what reading a folder skipped, resized or ignored.
fn report(f: &folder::Folder, dir: &Path, [_, h, w]: [usize; 3], notes: &mut Vec<String>) {
    if let Some(files) = &f.set.files {
        notes.push(format!(
            "reading the {} image(s) of {} from their files as batches need them (data.cache is \"none\"; \
             {} thread(s) decoding ahead, data.workers)",
            files.len(),
            dir.display(),
            files.workers()
        ));
    }
    if !f.skipped.is_empty() {
        notes.push(format!(
            "skipped {} unreadable image(s) in {} (data.on_bad_image is \"skip\"): {}",
            f.skipped.len(),
            dir.display(),
            folder::list(&f.skipped)
        ));
    }
    if let Some((path, ow, oh)) = &f.resized_example {
        notes.push(format!(
            "resized {} of {} image(s) in {} to {h}×{w} (input_shape), e.g. {} ({oh}×{ow})",
            f.resized,
            f.set.len(),
            dir.display(),
            path.display()
        ));
    }
    if f.ignored > 0 {
        notes.push(format!(
            "ignored {} file(s) in {} that are not images ({})",
            f.ignored,
            dir.display(),
            folder::EXTENSIONS.join(", ")
        ));
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
    Ok(ImageSet::in_memory(
        [1, img.rows, img.cols],
        img.pixels,
        lab.into_iter().map(u16::from).collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::InputError;

    fn write_idx(dir: &Path, side: usize, test_side: usize) {
        let files = [
            (
                idx::FILES[0],
                idx::encode_images(2, side, side, &vec![1; 2 * side * side]),
            ),
            (idx::FILES[1], idx::encode_labels(&[1, 2])),
            (
                idx::FILES[2],
                idx::encode_images(1, test_side, test_side, &vec![1; test_side * test_side]),
            ),
            (idx::FILES[3], idx::encode_labels(&[3])),
        ];
        for (name, bytes) in files {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }

    #[test]
    fn training_and_test_images_of_different_sizes_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        write_idx(dir.path(), 28, 20);
        let opts = LoadOptions {
            data_dir: Some(dir.path()),
            ..Default::default()
        };
        let err = Dataset::load_data(&DataConfig::default(), None, &opts).unwrap_err();
        assert!(err.is::<InputError>());
        let msg = format!("{err:#}");
        assert!(
            msg.contains("training images are 28×28 but test images are 20×20"),
            "{msg}"
        );
        write_idx(dir.path(), 28, 28);
        let data = Dataset::load_data(&DataConfig::default(), None, &opts).unwrap();
        assert_eq!((data.train.len(), data.test_images().len()), (2, 1));
        assert_eq!(data.classes[9], "9");
    }

    #[test]
    fn an_image_folder_without_a_model_config_asks_for_one() {
        let data = DataConfig {
            dataset: DatasetName::ImageFolder,
            ..Default::default()
        };
        let err = Dataset::load_data(&data, None, &LoadOptions::default()).unwrap_err();
        assert!(format!("{err:#}").contains("needs a model config"));
    }
}
