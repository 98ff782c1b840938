//! Sizes and shapes, shared by every stage and depending on nothing else in
//! the crate: the `[h, w]` pairs and padding a config writes, the shape of an
//! example as it flows through a network, and convolution and pooling
//! windows with every size resolved (what the kernels in `ops` take).

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

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

impl fmt::Display for Pair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
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

/// Convolution padding as written: explicit sizes, or `"same"` / `"valid"`
/// as in Keras and PyTorch.
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

impl PaddingMode {
    pub fn name(self) -> &'static str {
        match self {
            PaddingMode::Zeros => "zeros",
            PaddingMode::Reflect => "reflect",
            PaddingMode::Replicate => "replicate",
            PaddingMode::Circular => "circular",
        }
    }
}

/// Padding resolved to the four sides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pad4 {
    pub top: usize,
    pub bottom: usize,
    pub left: usize,
    pub right: usize,
}

impl Pad4 {
    pub fn symmetric(p: Pair) -> Self {
        Pad4 {
            top: p.h,
            bottom: p.h,
            left: p.w,
            right: p.w,
        }
    }
    pub fn is_zero(&self) -> bool {
        *self == Pad4::default()
    }
}

impl fmt::Display for Pad4 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.top == self.bottom && self.left == self.right {
            Pair {
                h: self.top,
                w: self.left,
            }
            .fmt(f)
        } else {
            write!(
                f,
                "top {} bottom {} left {} right {}",
                self.top, self.bottom, self.left, self.right
            )
        }
    }
}

/// A convolution with every size known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeometry {
    pub in_channels: usize,
    pub out_channels: usize,
    pub kernel: Pair,
    pub stride: Pair,
    pub dilation: Pair,
    pub padding: Pad4,
    pub padding_mode: PaddingMode,
    pub groups: usize,
    pub bias: bool,
}

/// A pooling window with every size known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolGeometry {
    pub kernel: Pair,
    pub stride: Pair,
    pub padding: Pair,
}

/// The shape of one example as it flows through the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Image { c: usize, h: usize, w: usize },
    Flat(usize),
}

impl Shape {
    pub fn elements(&self) -> u128 {
        match *self {
            Shape::Image { c, h, w } => c as u128 * h as u128 * w as u128,
            Shape::Flat(n) => n as u128,
        }
    }

    /// Dimensions without the batch axis.
    pub fn dims(&self) -> Vec<usize> {
        match *self {
            Shape::Image { c, h, w } => vec![c, h, w],
            Shape::Flat(n) => vec![n],
        }
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Shape::Image { c, h, w } => write!(f, "{c}×{h}×{w}"),
            Shape::Flat(n) => write!(f, "{n}"),
        }
    }
}
