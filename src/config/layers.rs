//! The layer vocabulary of an architecture config: one JSON object per layer,
//! tagged by `"type"`. Only the layer's own settings live here; input sizes
//! (`in_channels`, `in_features`, `num_features`) are optional and, when given,
//! checked against what shape inference derives (see `arch`).

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A height/width pair written either as one number (`5`) or as `[h, w]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pair {
    pub h: usize,
    pub w: usize,
}

impl Pair {
    pub const fn square(n: usize) -> Self {
        Pair { h: n, w: n }
    }
}

impl std::fmt::Display for Pair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.h == self.w {
            write!(f, "{}", self.h)
        } else {
            write!(f, "{}×{}", self.h, self.w)
        }
    }
}

impl Serialize for Pair {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.h == self.w {
            s.serialize_u64(self.h as u64)
        } else {
            [self.h, self.w].serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for Pair {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(
            untagged,
            expecting = "a non-negative integer or a pair [height, width]"
        )]
        enum Repr {
            One(usize),
            Two([usize; 2]),
        }
        Ok(match Repr::deserialize(d)? {
            Repr::One(n) => Pair::square(n),
            Repr::Two([h, w]) => Pair { h, w },
        })
    }
}

/// Convolution padding: explicit sizes, or `"same"` / `"valid"` as in Keras and PyTorch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Padding {
    Explicit(Pair),
    /// Output has the input's size (stride 1 only).
    Same,
    /// No padding.
    Valid,
}

impl Serialize for Padding {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Padding::Explicit(p) => p.serialize(s),
            Padding::Same => s.serialize_str("same"),
            Padding::Valid => s.serialize_str("valid"),
        }
    }
}

impl<'de> Deserialize<'de> for Padding {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(rename_all = "lowercase")]
        enum Word {
            Same,
            Valid,
        }
        #[derive(Deserialize)]
        #[serde(
            untagged,
            expecting = "a non-negative integer, a pair [height, width], \"same\" or \"valid\""
        )]
        enum Repr {
            Pair(Pair),
            Word(Word),
        }
        Ok(match Repr::deserialize(d)? {
            Repr::Pair(p) => Padding::Explicit(p),
            Repr::Word(Word::Same) => Padding::Same,
            Repr::Word(Word::Valid) => Padding::Valid,
        })
    }
}

/// How a convolution fills the border it pads (PyTorch's `padding_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PaddingMode {
    #[default]
    Zeros,
    Reflect,
    Replicate,
    Circular,
}

fn one() -> Pair {
    Pair::square(1)
}
fn zero() -> Pair {
    Pair::square(0)
}
fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Conv2d {
    #[serde(default)]
    pub in_channels: Option<usize>,
    pub out_channels: usize,
    pub kernel_size: Pair,
    #[serde(default = "one")]
    pub stride: Pair,
    #[serde(default = "zero_padding")]
    pub padding: Padding,
    #[serde(default = "one")]
    pub dilation: Pair,
    #[serde(default = "one_usize")]
    pub groups: usize,
    #[serde(default = "yes")]
    pub bias: bool,
    #[serde(default)]
    pub padding_mode: PaddingMode,
}

fn zero_padding() -> Padding {
    Padding::Explicit(zero())
}
fn one_usize() -> usize {
    1
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pool2d {
    pub kernel_size: Pair,
    /// Defaults to the kernel size, as in PyTorch.
    #[serde(default)]
    pub stride: Option<Pair>,
    #[serde(default = "zero")]
    pub padding: Pair,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Linear {
    #[serde(default)]
    pub in_features: Option<usize>,
    pub out_features: usize,
    #[serde(default = "yes")]
    pub bias: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchNorm {
    #[serde(default)]
    pub num_features: Option<usize>,
    #[serde(default = "bn_eps")]
    pub eps: f64,
    #[serde(default = "bn_momentum")]
    pub momentum: f64,
    /// Learn a per-channel scale and shift.
    #[serde(default = "yes")]
    pub affine: bool,
}

fn bn_eps() -> f64 {
    1e-5
}
fn bn_momentum() -> f64 {
    0.1
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dropout {
    /// Probability of zeroing an element during training.
    #[serde(default = "half")]
    pub p: f64,
}

fn half() -> f64 {
    0.5
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeakyRelu {
    #[serde(default = "leaky_slope")]
    pub negative_slope: f64,
}

fn leaky_slope() -> f64 {
    0.01
}

/// A layer without settings (`{"type": "relu"}`); any extra field is an error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct NoSettings {}

/// One entry of the `layers` list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Layer {
    Conv2d(Conv2d),
    #[serde(alias = "maxpool2d", alias = "max_pool")]
    MaxPool2d(Pool2d),
    #[serde(alias = "avgpool2d", alias = "avg_pool")]
    AvgPool2d(Pool2d),
    #[serde(rename = "batch_norm2d", alias = "batchnorm2d")]
    BatchNorm2d(BatchNorm),
    #[serde(rename = "batch_norm1d", alias = "batchnorm1d")]
    BatchNorm1d(BatchNorm),
    Relu(NoSettings),
    LeakyRelu(LeakyRelu),
    Sigmoid(NoSettings),
    Tanh(NoSettings),
    Gelu(NoSettings),
    Flatten(NoSettings),
    #[serde(alias = "dense")]
    Linear(Linear),
    Dropout(Dropout),
    LogSoftmax(NoSettings),
    Softmax(NoSettings),
}

/// Every accepted `"type"`, for error messages.
pub const LAYER_TYPES: &[&str] = &[
    "conv2d",
    "max_pool2d",
    "avg_pool2d",
    "batch_norm2d",
    "batch_norm1d",
    "relu",
    "leaky_relu",
    "sigmoid",
    "tanh",
    "gelu",
    "flatten",
    "linear",
    "dropout",
    "log_softmax",
    "softmax",
];

impl Layer {
    /// The canonical `"type"` name.
    pub fn kind(&self) -> &'static str {
        match self {
            Layer::Conv2d(_) => "conv2d",
            Layer::MaxPool2d(_) => "max_pool2d",
            Layer::AvgPool2d(_) => "avg_pool2d",
            Layer::BatchNorm2d(_) => "batch_norm2d",
            Layer::BatchNorm1d(_) => "batch_norm1d",
            Layer::Relu(_) => "relu",
            Layer::LeakyRelu(_) => "leaky_relu",
            Layer::Sigmoid(_) => "sigmoid",
            Layer::Tanh(_) => "tanh",
            Layer::Gelu(_) => "gelu",
            Layer::Flatten(_) => "flatten",
            Layer::Linear(_) => "linear",
            Layer::Dropout(_) => "dropout",
            Layer::LogSoftmax(_) => "log_softmax",
            Layer::Softmax(_) => "softmax",
        }
    }

    /// A final softmax or log-softmax turns logits into (log-)probabilities.
    pub fn is_output_activation(&self) -> bool {
        matches!(self, Layer::Softmax(_) | Layer::LogSoftmax(_))
    }
}
