//! The `data` section of a config: which dataset, where it is, how it is
//! split, normalised and augmented. Only the settings and their checks live
//! here; reading the files is `crate::data`.

use crate::bail_input;
use anyhow::Result;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::path::PathBuf;

/// The datasets the tool knows how to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DatasetName {
    #[serde(rename = "mnist")]
    Mnist,
    #[serde(rename = "fashion-mnist", alias = "fashion_mnist")]
    FashionMnist,
    #[serde(rename = "cifar10", alias = "cifar-10")]
    Cifar10,
    /// `root/<class>/*.png|jpg|…`, the torchvision ImageFolder convention.
    #[serde(rename = "imagefolder", alias = "image-folder", alias = "image_folder")]
    ImageFolder,
}

impl DatasetName {
    pub const ALL: &[DatasetName] = &[
        DatasetName::Mnist,
        DatasetName::FashionMnist,
        DatasetName::Cifar10,
        DatasetName::ImageFolder,
    ];

    pub fn name(self) -> &'static str {
        match self {
            DatasetName::Mnist => "mnist",
            DatasetName::FashionMnist => "fashion-mnist",
            DatasetName::Cifar10 => "cifar10",
            DatasetName::ImageFolder => "imagefolder",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "mnist" => Ok(DatasetName::Mnist),
            "fashion-mnist" | "fashion_mnist" => Ok(DatasetName::FashionMnist),
            "cifar10" | "cifar-10" => Ok(DatasetName::Cifar10),
            "imagefolder" | "image-folder" | "image_folder" => Ok(DatasetName::ImageFolder),
            other => bail_input!(
                "unknown dataset `{other}`; expected one of: {}",
                Self::ALL
                    .iter()
                    .map(|d| d.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }

    /// Validation images when `data.val_size` is not given.
    pub fn default_val_size(self) -> ValSize {
        match self {
            DatasetName::Mnist | DatasetName::FashionMnist => ValSize::Count(10_000),
            DatasetName::Cifar10 => ValSize::Count(5_000),
            DatasetName::ImageFolder => ValSize::Fraction(0.1),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    #[serde(default = "default_dataset")]
    pub dataset: DatasetName,
    /// Directory holding the dataset files (for `imagefolder`: the root with
    /// one sub-folder per class); recorded so that `cnn eval` finds the data
    /// again. Looked up when not given (see the book, Data).
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// `imagefolder` only: a separate folder of test images, laid out like
    /// `dir`. Without it the test images are carved from `dir` (`test_size`).
    #[serde(default)]
    pub test_dir: Option<PathBuf>,
    /// Images held out of the training images for validation: a count, or a
    /// fraction in (0, 1). Chosen with the training seed. Default per dataset
    /// (10,000 for MNIST and Fashion-MNIST, 5,000 for CIFAR-10, 10% of an
    /// image folder); the run's config.json records the count used.
    #[serde(default)]
    pub val_size: Option<ValSize>,
    /// `imagefolder` without `test_dir`: images of `dir` held out for testing,
    /// a count or a fraction (default 0.1), chosen with the training seed.
    #[serde(default)]
    pub test_size: Option<ValSize>,
    /// `imagefolder`: what to do with a file that cannot be decoded: "fail"
    /// (default) or "skip" (count them and name the first few).
    #[serde(default)]
    pub on_bad_image: OnBadImage,
    /// Fetch MNIST, Fashion-MNIST or CIFAR-10 from the Hugging Face Hub when
    /// no local copy is found (`--no-download` turns it off for one command).
    #[serde(default = "yes")]
    pub download: bool,
    /// Use only the first N training images (after the validation split).
    #[serde(default)]
    pub limit_train: Option<usize>,
    /// Use only the first N test images.
    #[serde(default)]
    pub limit_test: Option<usize>,
    /// Input normalisation: "auto" (per-channel mean and std of the training
    /// split), "none", or {"mean": [...], "std": [...]}.
    #[serde(default)]
    pub normalize: Normalize,
    /// How an image of another size is made the input size (image folders
    /// and `cnn predict`): "stretch" (default), or {"shorter_side": N}:
    /// scaled so that its shorter side is N, aspect kept, then the centre
    /// cut out (torchvision's `Resize(N)` + `CenterCrop`, as ImageNet
    /// models are evaluated: N = 256 for 224).
    #[serde(default)]
    pub resize: Resize,
    /// Random changes to each training image (never to validation or test).
    #[serde(default)]
    pub augment: Augment,
    /// Reshuffle the training images every epoch.
    #[serde(default = "yes")]
    pub shuffle: bool,
    /// Drop the last incomplete training batch instead of training on it.
    #[serde(default)]
    pub drop_last: bool,
    /// Batch size for validation and test passes (no gradients are kept).
    #[serde(default = "default_eval_batch_size")]
    pub eval_batch_size: usize,
    /// Which training images an epoch visits: "uniform" (each once) or
    /// "balanced" (drawn with replacement, every class equally often).
    #[serde(default)]
    pub sampler: super::Sampler,
    /// Test-time augmentation of every validation and test pass.
    #[serde(default)]
    pub tta: Option<super::Tta>,
    /// `imagefolder`: where the decoded images are kept. "memory" (default)
    /// decodes every image once at the input size; "none" reads each photo
    /// from its file when a batch needs it, so memory does not grow with the
    /// folder, and `augment.random_resized_crop` cuts from the full photo.
    #[serde(default)]
    pub cache: Cache,
    /// With `cache: "none"`: threads that decode the next batch's photos
    /// while the current one trains (0: decode in the training threads only).
    #[serde(default = "default_workers")]
    pub workers: usize,
}

/// Where an image folder's decoded images are kept (`data.cache`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Cache {
    /// Decoded once, at the input size, and held in memory.
    #[default]
    Memory,
    /// Decoded from the file each time the image is used.
    None,
}

fn default_workers() -> usize {
    1
}

/// The most decoding threads `data.workers` may ask for.
pub const MAX_WORKERS: usize = 64;

fn default_dataset() -> DatasetName {
    DatasetName::Mnist
}
fn default_eval_batch_size() -> usize {
    1000
}
fn yes() -> bool {
    true
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            dataset: default_dataset(),
            dir: None,
            test_dir: None,
            val_size: None,
            test_size: None,
            on_bad_image: OnBadImage::default(),
            download: true,
            limit_train: None,
            limit_test: None,
            normalize: Normalize::default(),
            resize: Resize::default(),
            augment: Augment::default(),
            shuffle: true,
            drop_last: false,
            eval_batch_size: default_eval_batch_size(),
            sampler: super::Sampler::default(),
            tta: None,
            cache: Cache::default(),
            workers: default_workers(),
        }
    }
}

impl DataConfig {
    /// The validation size, or the dataset's default.
    pub fn val_size(&self) -> ValSize {
        self.val_size
            .unwrap_or_else(|| self.dataset.default_val_size())
    }

    /// Whether the test images are carved out of the training images.
    pub fn carves_test(&self) -> bool {
        self.dataset == DatasetName::ImageFolder && self.test_dir.is_none()
    }

    /// The test size of an image folder without `test_dir` (default 10%).
    pub fn test_size(&self) -> ValSize {
        self.test_size.unwrap_or(ValSize::Fraction(0.1))
    }

    /// Checks the section against the input shape. Messages name the field.
    pub fn check(&self, input_shape: [usize; 3]) -> Result<()> {
        if self.eval_batch_size == 0 {
            bail_input!("data.eval_batch_size is 0; use a positive batch size such as 1000");
        }
        let folder = self.dataset == DatasetName::ImageFolder;
        if !folder && self.test_dir.is_some() {
            bail_input!(
                "data.test_dir is set but data.dataset is {}; a separate test folder is only for \
                 \"imagefolder\" (remove data.test_dir)",
                self.dataset.name()
            );
        }
        if !folder && self.test_size.is_some() {
            bail_input!(
                "data.test_size is set but data.dataset is {}, which has its own test images; \
                 test_size is only for \"imagefolder\" (remove it)",
                self.dataset.name()
            );
        }
        if folder && self.test_dir.is_some() && self.test_size.is_some() {
            bail_input!(
                "data.test_size and data.test_dir are both set; the test images come from test_dir, \
                 so remove test_size (or test_dir, to carve the test images out of data.dir)"
            );
        }
        if folder && !matches!(input_shape[0], 1 | 3) {
            bail_input!(
                "input_shape is {input_shape:?}: image folders are read as grayscale (1 channel) or RGB \
                 (3 channels); set input_shape[0] to 1 or 3"
            );
        }
        if let Resize::ShorterSide(n) = self.resize {
            let longest = input_shape[1].max(input_shape[2]);
            if (n as usize) < longest || n as usize > crate::layers::MAX_SIZE {
                bail_input!(
                    "data.resize.shorter_side is {n} but the input is {}×{}: the centre crop must fit \
                     inside the resized image; give at least {longest} (ImageNet models: 256 for 224)",
                    input_shape[1],
                    input_shape[2]
                );
            }
        }
        if !folder && self.cache == Cache::None {
            bail_input!(
                "data.cache is \"none\" but data.dataset is {}, which is read into memory whole; \
                 streaming from files is for \"imagefolder\" (remove data.cache)",
                self.dataset.name()
            );
        }
        if self.workers > MAX_WORKERS {
            bail_input!(
                "data.workers is {}; give at most {MAX_WORKERS} decoding threads (1 or 2 is plenty on a \
                 CPU)",
                self.workers
            );
        }
        if let Some(t) = &self.tta {
            t.check(input_shape)?;
        }
        self.augment.check(input_shape)
    }
}

/// What to do with an image file that cannot be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnBadImage {
    /// Stop with an error naming the file.
    #[default]
    Fail,
    /// Leave it out, report how many were left out and the first few paths.
    Skip,
}

/// Size of a held-out split.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ValSize {
    Count(usize),
    Fraction(f64),
}

impl ValSize {
    /// How many of `n` images go to the split.
    pub fn of(self, n: usize) -> usize {
        match self {
            ValSize::Count(c) => c,
            ValSize::Fraction(f) => (f * n as f64).round() as usize,
        }
    }
}

impl Serialize for ValSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match *self {
            ValSize::Count(c) => s.serialize_u64(c as u64),
            ValSize::Fraction(f) => s.serialize_f64(f),
        }
    }
}

impl<'de> Deserialize<'de> for ValSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let x = f64::deserialize(d)?;
        if x >= 1.0 && x.fract() == 0.0 && x < 1e15 {
            Ok(ValSize::Count(x as usize))
        } else if x == 0.0 {
            Ok(ValSize::Count(0))
        } else if x > 0.0 && x < 1.0 {
            Ok(ValSize::Fraction(x))
        } else {
            Err(serde::de::Error::custom(format!(
                "{x} is neither a whole number of images nor a fraction between 0 and 1"
            )))
        }
    }
}

/// How an image is made the input size (`data.resize`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Resize {
    /// To the input size exactly, aspect ratio not kept.
    #[default]
    Stretch,
    /// The shorter side to N (aspect kept), then the centre crop.
    ShorterSide(u32),
}

impl Resize {
    /// The shorter side to scale to, when cropping.
    pub fn shorter_side(self) -> Option<u32> {
        match self {
            Resize::Stretch => None,
            Resize::ShorterSide(n) => Some(n),
        }
    }
}

impl Serialize for Resize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Shorter {
            shorter_side: u32,
        }
        match *self {
            Resize::Stretch => s.serialize_str("stretch"),
            Resize::ShorterSide(shorter_side) => Shorter { shorter_side }.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Resize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(rename_all = "lowercase")]
        enum Word {
            Stretch,
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Shorter {
            shorter_side: u32,
        }
        #[derive(Deserialize)]
        #[serde(untagged, expecting = "\"stretch\" or {\"shorter_side\": N}")]
        enum Repr {
            Word(Word),
            Shorter(Shorter),
        }
        Ok(match Repr::deserialize(d)? {
            Repr::Word(Word::Stretch) => Resize::Stretch,
            Repr::Shorter(Shorter { shorter_side }) => Resize::ShorterSide(shorter_side),
        })
    }
}

/// How inputs are normalised before the first layer.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Normalize {
    /// Per-channel mean and std computed from the training split.
    #[default]
    Auto,
    /// Pixels scaled to [0, 1] only.
    None,
    /// Given per-channel statistics (of pixels scaled to [0, 1]).
    Given { mean: Vec<f64>, std: Vec<f64> },
}

impl Serialize for Normalize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Stats<'a> {
            mean: &'a [f64],
            std: &'a [f64],
        }
        match self {
            Normalize::Auto => s.serialize_str("auto"),
            Normalize::None => s.serialize_str("none"),
            Normalize::Given { mean, std } => Stats { mean, std }.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Normalize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(rename_all = "lowercase")]
        enum Word {
            Auto,
            None,
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Stats {
            mean: Vec<f64>,
            std: Vec<f64>,
        }
        #[derive(Deserialize)]
        #[serde(
            untagged,
            expecting = "\"auto\", \"none\" or {\"mean\": [..], \"std\": [..]}"
        )]
        enum Repr {
            Word(Word),
            Stats(Stats),
        }
        Ok(match Repr::deserialize(d)? {
            Repr::Word(Word::Auto) => Normalize::Auto,
            Repr::Word(Word::None) => Normalize::None,
            Repr::Stats(Stats { mean, std }) => Normalize::Given { mean, std },
        })
    }
}

/// Training-time augmentation, applied in this order to each training image
/// (see `crate::data::augment`): random resized crop, random crop with
/// padding, horizontal flip, random affine, colour jitter, automatic
/// augmentation, then (on the normalised image) random erasing. Every part
/// is optional; none is the default.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Augment {
    /// A random part of the image (a fraction of its area in `scale`, an
    /// aspect ratio in `ratio`) resized to the input size: torchvision's
    /// `RandomResizedCrop`, the usual first step for photos.
    #[serde(default)]
    pub random_resized_crop: Option<RandomResizedCrop>,
    /// Pad every side, then crop back to the image size at a random offset.
    #[serde(default)]
    pub random_crop: Option<RandomCrop>,
    /// Mirroring images left to right: a probability (0.5 is usual), or
    /// "alternate" (every other epoch, see [`Flip`]). Not for digits or
    /// text, whose meaning changes when mirrored.
    #[serde(default)]
    pub horizontal_flip: Option<Flip>,
    /// A random rotation, shift and zoom about the image centre, sampled
    /// bilinearly.
    #[serde(default)]
    pub affine: Option<Affine>,
    /// Random brightness, contrast, saturation and hue, in a random order
    /// (torchvision's `ColorJitter`).
    #[serde(default)]
    pub color_jitter: Option<ColorJitter>,
    /// A policy of random operations: TrivialAugment (one operation of a
    /// random strength) or RandAugment (`num_ops` at a fixed `magnitude`).
    #[serde(default)]
    pub auto_augment: Option<AutoAugment>,
    /// A random rectangle of the normalised image replaced (torchvision's
    /// `RandomErasing`), last of all.
    #[serde(default)]
    pub random_erasing: Option<RandomErasing>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RandomResizedCrop {
    /// The crop's area as a fraction of the image's, drawn from [min, max]
    /// (default [0.08, 1]).
    #[serde(default = "rrc_scale")]
    pub scale: [f64; 2],
    /// The crop's width / height, drawn log-uniformly from [min, max]
    /// (default [3/4, 4/3]).
    #[serde(default = "rrc_ratio")]
    pub ratio: [f64; 2],
}

fn rrc_scale() -> [f64; 2] {
    [0.08, 1.0]
}
fn rrc_ratio() -> [f64; 2] {
    [3.0 / 4.0, 4.0 / 3.0]
}

impl Default for RandomResizedCrop {
    fn default() -> Self {
        RandomResizedCrop {
            scale: rrc_scale(),
            ratio: rrc_ratio(),
        }
    }
}

/// How far each colour property may move: brightness, contrast and
/// saturation by a factor drawn from [max(0, 1 - x), 1 + x], the hue by a
/// fraction of the colour circle drawn from [-hue, hue]. 0 leaves it alone.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColorJitter {
    #[serde(default)]
    pub brightness: f64,
    #[serde(default)]
    pub contrast: f64,
    #[serde(default)]
    pub saturation: f64,
    #[serde(default)]
    pub hue: f64,
}

/// The automatic augmentation policies (`data.augment.auto_augment.policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// One of 14 operations per image at a random strength in its wide
    /// range (Müller & Hutter 2021; torchvision's `TrivialAugmentWide`).
    TrivialAugmentWide,
    /// `num_ops` operations per image at one strength, `magnitude` of 30
    /// (Cubuk et al. 2020; torchvision's `RandAugment`).
    RandAugment,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoAugment {
    pub policy: Policy,
    /// `rand_augment`: operations per image (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_ops: Option<usize>,
    /// `rand_augment`: their strength, 0..=30 (default 9).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub magnitude: Option<usize>,
    /// Value of pixels that come from outside the image, 0..=255 (default 0).
    #[serde(default)]
    pub fill: u8,
}

/// RandAugment's strength scale: `magnitude` runs 0..=[`MAGNITUDE_BINS`] - 1.
pub const MAGNITUDE_BINS: usize = 31;

impl AutoAugment {
    pub fn num_ops(&self) -> usize {
        self.num_ops.unwrap_or(2)
    }
    pub fn magnitude(&self) -> usize {
        self.magnitude.unwrap_or(9)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RandomErasing {
    /// The chance an image gets a rectangle erased (default 0.5).
    #[serde(default = "half")]
    pub p: f64,
    /// The rectangle's area as a fraction of the image's (default [0.02, 0.33]).
    #[serde(default = "erase_scale")]
    pub scale: [f64; 2],
    /// Its height / width, drawn log-uniformly (default [0.3, 3.3]).
    #[serde(default = "erase_ratio")]
    pub ratio: [f64; 2],
    /// What goes in it: a value of the normalised image (default 0, the
    /// mean colour), or "random" (standard normal noise per pixel).
    #[serde(default)]
    pub value: EraseValue,
}

fn half() -> f64 {
    0.5
}
fn erase_scale() -> [f64; 2] {
    [0.02, 0.33]
}
fn erase_ratio() -> [f64; 2] {
    [0.3, 3.3]
}

/// The contents of an erased rectangle.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum EraseValue {
    Constant(f64),
    Random,
}

impl Default for EraseValue {
    fn default() -> Self {
        EraseValue::Constant(0.0)
    }
}

impl Serialize for EraseValue {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            EraseValue::Constant(v) => s.serialize_f64(*v),
            EraseValue::Random => s.serialize_str("random"),
        }
    }
}

impl<'de> Deserialize<'de> for EraseValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged, expecting = "a number such as 0, or \"random\"")]
        enum Repr {
            V(f64),
            Word(String),
        }
        match Repr::deserialize(d)? {
            Repr::V(v) => Ok(EraseValue::Constant(v)),
            Repr::Word(w) if w == "random" => Ok(EraseValue::Random),
            Repr::Word(w) => Err(serde::de::Error::custom(format!(
                "\"{w}\" is not an erasing value; give a number of the normalised image such as 0, \
                 or \"random\""
            ))),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RandomCrop {
    /// Pixels added on each side (4 for 32×32 CIFAR images is usual).
    pub padding: usize,
    /// Value of the added pixels, 0..=255 (default 0, black), with
    /// `padding_mode` "constant".
    #[serde(default)]
    pub fill: u8,
    /// "constant" (the `fill` value) or "reflect" (the image mirrored at
    /// its border, as fast CIFAR-10 recipes translate).
    #[serde(default)]
    pub padding_mode: CropPadding,
}

/// What a random crop pads with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CropPadding {
    #[default]
    Constant,
    Reflect,
}

/// How training images are mirrored left to right.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Flip {
    /// Each image with this probability, drawn anew at every step.
    Random(f64),
    /// Each image in every other epoch: whether an image starts mirrored
    /// is drawn once from the seed, and it is mirrored in the epochs of the
    /// other parity (airbench's alternating flip: every image is seen both
    /// ways in any two epochs in a row).
    Alternate,
}

impl Serialize for Flip {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Flip::Random(p) => s.serialize_f64(*p),
            Flip::Alternate => s.serialize_str("alternate"),
        }
    }
}

impl<'de> Deserialize<'de> for Flip {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged, expecting = "a probability such as 0.5, or \"alternate\"")]
        enum Repr {
            P(f64),
            Word(String),
        }
        match Repr::deserialize(d)? {
            Repr::P(p) => Ok(Flip::Random(p)),
            Repr::Word(w) if w == "alternate" => Ok(Flip::Alternate),
            Repr::Word(w) => Err(serde::de::Error::custom(format!(
                "\"{w}\" is not a flip; give a probability such as 0.5, or \"alternate\""
            ))),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Affine {
    /// Rotation drawn from [-degrees, degrees].
    #[serde(default)]
    pub degrees: f64,
    /// Largest shift as a fraction of the width and height: one number for
    /// both, or [x, y].
    #[serde(default)]
    pub translate: Translate,
    /// Zoom factor drawn from [min, max] (default [1, 1]: no zoom).
    #[serde(default = "unit_scale")]
    pub scale: [f64; 2],
    /// Value of pixels that come from outside the image, 0..=255 (default 0).
    #[serde(default)]
    pub fill: u8,
}

fn unit_scale() -> [f64; 2] {
    [1.0, 1.0]
}

/// Largest shift as fractions of the width (`x`) and height (`y`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Translate {
    pub x: f64,
    pub y: f64,
}

impl Serialize for Translate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.x == self.y {
            s.serialize_f64(self.x)
        } else {
            [self.x, self.y].serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for Translate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged, expecting = "a fraction such as 0.1, or a pair [x, y]")]
        enum Repr {
            One(f64),
            Two([f64; 2]),
        }
        Ok(match Repr::deserialize(d)? {
            Repr::One(f) => Translate { x: f, y: f },
            Repr::Two([x, y]) => Translate { x, y },
        })
    }
}

impl Augment {
    /// True when no transform is configured.
    pub fn is_none(&self) -> bool {
        self.random_resized_crop.is_none()
            && self.random_crop.is_none()
            && self.horizontal_flip.is_none()
            && self.affine.is_none()
            && self.color_jitter.is_none()
            && self.auto_augment.is_none()
            && self.random_erasing.is_none()
    }

    /// Checks every value; messages name the field and a valid value.
    pub fn check(&self, input_shape: [usize; 3]) -> Result<()> {
        let [_, h, w] = input_shape;
        if let Some(c) = &self.random_crop
            && c.padding >= h.min(w)
        {
            bail_input!(
                "data.augment.random_crop.padding is {} but the images are {h}×{w}; use a padding smaller \
                 than the image, e.g. 4",
                c.padding
            );
        }
        if let Some(Flip::Random(p)) = self.horizontal_flip
            && !(0.0..=1.0).contains(&p)
        {
            bail_input!(
                "data.augment.horizontal_flip is {p}; it is a probability, give a value in [0, 1] such as 0.5"
            );
        }
        if let Some(a) = &self.affine {
            if !(a.degrees.is_finite() && (0.0..=180.0).contains(&a.degrees)) {
                bail_input!(
                    "data.augment.affine.degrees is {}; give the largest rotation in [0, 180], e.g. 10",
                    a.degrees
                );
            }
            for (axis, t) in [("x", a.translate.x), ("y", a.translate.y)] {
                if !(t.is_finite() && (0.0..1.0).contains(&t)) {
                    bail_input!(
                        "data.augment.affine.translate ({axis}) is {t}; give the largest shift as a fraction \
                         of the image in [0, 1), e.g. 0.1"
                    );
                }
            }
            let [lo, hi] = a.scale;
            if !(lo.is_finite() && hi.is_finite() && lo > 0.0 && lo <= hi && hi <= 10.0) {
                bail_input!(
                    "data.augment.affine.scale is [{lo}, {hi}]; give [min, max] with 0 < min <= max <= 10, \
                     e.g. [0.9, 1.1]"
                );
            }
        }
        if let Some(r) = &self.random_resized_crop {
            range("random_resized_crop.scale", r.scale, 0.0, 1.0, "[0.08, 1]")?;
            range(
                "random_resized_crop.ratio",
                r.ratio,
                0.0,
                100.0,
                "[0.75, 1.333]",
            )?;
        }
        if let Some(j) = &self.color_jitter {
            for (name, v, most) in [
                ("brightness", j.brightness, 10.0),
                ("contrast", j.contrast, 10.0),
                ("saturation", j.saturation, 10.0),
                ("hue", j.hue, 0.5),
            ] {
                if !(v.is_finite() && (0.0..=most).contains(&v)) {
                    bail_input!(
                        "data.augment.color_jitter.{name} is {v}; give a value in [0, {most}] (0 leaves it \
                         alone; 0.4 is usual for brightness, contrast and saturation, 0.1 for hue)"
                    );
                }
            }
        }
        if let Some(a) = &self.auto_augment {
            if a.policy == Policy::TrivialAugmentWide
                && let Some(field) = [("num_ops", a.num_ops), ("magnitude", a.magnitude)]
                    .into_iter()
                    .find_map(|(f, v)| v.map(|_| f))
            {
                bail_input!(
                    "data.augment.auto_augment.{field} is set but the policy is \"trivial_augment_wide\", \
                     which draws one operation at a random strength; remove {field}, or use the policy \
                     \"rand_augment\""
                );
            }
            if !(1..=10).contains(&a.num_ops()) {
                bail_input!(
                    "data.augment.auto_augment.num_ops is {}; give 1 to 10 operations per image (2 is usual)",
                    a.num_ops()
                );
            }
            if a.magnitude() >= MAGNITUDE_BINS {
                bail_input!(
                    "data.augment.auto_augment.magnitude is {}; give a strength from 0 to {} (9 is usual)",
                    a.magnitude(),
                    MAGNITUDE_BINS - 1
                );
            }
        }
        if let Some(e) = &self.random_erasing {
            if !(0.0..=1.0).contains(&e.p) {
                bail_input!(
                    "data.augment.random_erasing.p is {}; it is a probability, give a value in [0, 1] such \
                     as 0.25",
                    e.p
                );
            }
            range("random_erasing.scale", e.scale, 0.0, 1.0, "[0.02, 0.33]")?;
            range("random_erasing.ratio", e.ratio, 0.0, 100.0, "[0.3, 3.3]")?;
            if let EraseValue::Constant(v) = e.value
                && !v.is_finite()
            {
                bail_input!(
                    "data.augment.random_erasing.value is {v}; give a finite number (0 is the mean colour) or \
                     \"random\""
                );
            }
        }
        Ok(())
    }
}

/// Refuses `[lo, hi]` unless `low < lo <= hi <= high`.
fn range(field: &str, [lo, hi]: [f64; 2], low: f64, high: f64, example: &str) -> Result<()> {
    if !(lo.is_finite() && hi.is_finite() && lo > low && lo <= hi && hi <= high) {
        bail_input!(
            "data.augment.{field} is [{lo}, {hi}]; give [min, max] with {low} < min <= max <= {high}, \
             e.g. {example}"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn augment(json: &str) -> Augment {
        serde_json::from_str(json).unwrap()
    }

    fn message(a: &Augment) -> String {
        format!("{:#}", a.check([3, 32, 32]).unwrap_err())
    }

    #[test]
    fn resize_reads_both_forms_and_the_crop_must_fit() {
        let data = |json: &str| -> DataConfig { serde_json::from_str(json).unwrap() };
        assert_eq!(data("{}").resize, Resize::Stretch);
        assert_eq!(data(r#"{"resize": "stretch"}"#).resize, Resize::Stretch);
        let crop = data(r#"{"resize": {"shorter_side": 256}}"#);
        assert_eq!(crop.resize, Resize::ShorterSide(256));
        assert!(crop.check([3, 224, 224]).is_ok());
        // Written back as read.
        let v = serde_json::to_value(&crop).unwrap();
        assert_eq!(v["resize"], serde_json::json!({"shorter_side": 256}));
        let err = format!("{:#}", crop.check([3, 300, 224]).unwrap_err());
        assert!(
            err.contains("data.resize.shorter_side is 256") && err.contains("at least 300"),
            "{err}"
        );
        for bad in [r#"{"resize": "crop"}"#, r#"{"resize": {"shorter": 256}}"#] {
            let err = serde_json::from_str::<DataConfig>(bad)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(r#""stretch" or {"shorter_side": N}"#),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn augment_parses_every_part_and_checks_values() {
        let a = augment(
            r#"{"random_crop": {"padding": 4}, "horizontal_flip": 0.5,
                "affine": {"degrees": 10, "translate": 0.1, "scale": [0.9, 1.1]}}"#,
        );
        assert!(a.check([3, 32, 32]).is_ok());
        let affine = a.affine.unwrap();
        assert_eq!(affine.translate, Translate { x: 0.1, y: 0.1 });
        assert_eq!(affine.fill, 0);
        assert!(Augment::default().is_none());

        let bad = augment(r#"{"horizontal_flip": 1.5}"#);
        assert!(message(&bad).contains("data.augment.horizontal_flip is 1.5"));
        let alt = augment(
            r#"{"horizontal_flip": "alternate", "random_crop": {"padding": 2, "padding_mode": "reflect"}}"#,
        );
        assert_eq!(alt.horizontal_flip, Some(Flip::Alternate));
        assert_eq!(alt.random_crop.unwrap().padding_mode, CropPadding::Reflect);
        assert_eq!(
            serde_json::to_value(&alt).unwrap()["horizontal_flip"],
            "alternate"
        );
        assert!(serde_json::from_str::<Augment>(r#"{"horizontal_flip": "sometimes"}"#).is_err());
        let bad = augment(r#"{"random_crop": {"padding": 32}}"#);
        assert!(message(&bad).contains("random_crop.padding is 32"));
        let bad = augment(r#"{"affine": {"degrees": 200}}"#);
        assert!(message(&bad).contains("affine.degrees is 200"));
        let bad = augment(r#"{"affine": {"translate": [0.1, 1.0]}}"#);
        assert!(message(&bad).contains("translate (y) is 1"));
        let bad = augment(r#"{"affine": {"scale": [1.2, 0.8]}}"#);
        assert!(message(&bad).contains("affine.scale is [1.2, 0.8]"));
        assert!(serde_json::from_str::<Augment>(r#"{"vertical_flip": 0.5}"#).is_err());
    }

    #[test]
    fn photo_augmentations_parse_with_torchvision_defaults_and_refuse_bad_values() {
        let a = augment(
            r#"{"random_resized_crop": {}, "color_jitter": {"brightness": 0.4, "hue": 0.1},
                "auto_augment": {"policy": "trivial_augment_wide"},
                "random_erasing": {"p": 0.25, "value": "random"}}"#,
        );
        assert!(a.check([3, 32, 32]).is_ok() && !a.is_none());
        assert_eq!(a.random_resized_crop, Some(RandomResizedCrop::default()));
        assert_eq!(a.random_resized_crop.unwrap().scale, [0.08, 1.0]);
        let e = a.random_erasing.unwrap();
        assert_eq!(
            (e.scale, e.ratio, e.value),
            ([0.02, 0.33], [0.3, 3.3], EraseValue::Random)
        );
        let r = augment(r#"{"auto_augment": {"policy": "rand_augment"}}"#);
        let aa = r.auto_augment.unwrap();
        assert_eq!((aa.num_ops(), aa.magnitude()), (2, 9));
        // Written back as read, defaults left out.
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(
            v["auto_augment"],
            serde_json::json!({"policy": "rand_augment", "fill": 0})
        );

        for (json, says) in [
            (
                r#"{"random_resized_crop": {"scale": [0.5, 0.2]}}"#,
                "random_resized_crop.scale is [0.5, 0.2]",
            ),
            (
                r#"{"random_resized_crop": {"ratio": [0, 1]}}"#,
                "random_resized_crop.ratio is [0, 1]",
            ),
            (
                r#"{"color_jitter": {"hue": 0.7}}"#,
                "color_jitter.hue is 0.7",
            ),
            (
                r#"{"color_jitter": {"contrast": -1}}"#,
                "color_jitter.contrast is -1",
            ),
            (
                r#"{"auto_augment": {"policy": "trivial_augment_wide", "magnitude": 3}}"#,
                "auto_augment.magnitude is set but the policy is \"trivial_augment_wide\"",
            ),
            (
                r#"{"auto_augment": {"policy": "rand_augment", "magnitude": 31}}"#,
                "magnitude is 31",
            ),
            (
                r#"{"auto_augment": {"policy": "rand_augment", "num_ops": 0}}"#,
                "num_ops is 0",
            ),
            (r#"{"random_erasing": {"p": 2}}"#, "random_erasing.p is 2"),
            (
                r#"{"random_erasing": {"scale": [0.2, 1.5]}}"#,
                "random_erasing.scale is [0.2, 1.5]",
            ),
        ] {
            let msg = message(&augment(json));
            assert!(msg.contains(says), "{json}: {msg}");
        }
        for bad in [
            r#"{"auto_augment": {"policy": "auto_augment"}}"#,
            r#"{"random_erasing": {"value": "noise"}}"#,
            r#"{"color_jitter": {"gamma": 0.1}}"#,
        ] {
            assert!(serde_json::from_str::<Augment>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn streaming_is_for_image_folders_and_workers_are_bounded() {
        let data = |json: &str| -> DataConfig { serde_json::from_str(json).unwrap() };
        let d = data(r#"{"cache": "none"}"#);
        let msg = format!("{:#}", d.check([1, 28, 28]).unwrap_err());
        assert!(
            msg.contains("data.cache is \"none\" but data.dataset is mnist"),
            "{msg}"
        );
        let d = data(r#"{"dataset": "imagefolder", "cache": "none", "workers": 2}"#);
        assert!(d.check([3, 64, 64]).is_ok());
        assert_eq!((d.cache, d.workers), (Cache::None, 2));
        assert_eq!(data("{}").workers, 1);
        let d = data(r#"{"dataset": "imagefolder", "workers": 1000}"#);
        let msg = format!("{:#}", d.check([3, 64, 64]).unwrap_err());
        assert!(msg.contains("data.workers is 1000"), "{msg}");
        assert!(serde_json::from_str::<DataConfig>(r#"{"cache": "disk"}"#).is_err());
    }

    #[test]
    fn translate_round_trips_as_one_number_or_a_pair() {
        for json in ["0.1", "[0.1,0.2]"] {
            let t: Translate = serde_json::from_str(json).unwrap();
            assert_eq!(serde_json::to_string(&t).unwrap(), json);
        }
    }

    #[test]
    fn val_size_defaults_per_dataset() {
        let mut d = DataConfig::default();
        assert_eq!(d.val_size(), ValSize::Count(10_000));
        d.dataset = DatasetName::Cifar10;
        assert_eq!(d.val_size(), ValSize::Count(5_000));
        d.dataset = DatasetName::ImageFolder;
        assert_eq!(d.val_size(), ValSize::Fraction(0.1));
        assert!(d.carves_test());
        d.val_size = Some(ValSize::Count(7));
        assert_eq!(d.val_size(), ValSize::Count(7));
    }

    #[test]
    fn folder_only_fields_are_refused_elsewhere() {
        let d = DataConfig {
            test_dir: Some("t".into()),
            ..Default::default()
        };
        let msg = format!("{:#}", d.check([1, 28, 28]).unwrap_err());
        assert!(
            msg.contains("data.test_dir is set but data.dataset is mnist"),
            "{msg}"
        );
        let d = DataConfig {
            dataset: DatasetName::ImageFolder,
            ..Default::default()
        };
        let msg = format!("{:#}", d.check([4, 28, 28]).unwrap_err());
        assert!(msg.contains("grayscale (1 channel) or RGB"), "{msg}");
    }
}
