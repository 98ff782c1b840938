//! Shape inference and validation of an architecture, before any tensor is
//! allocated. Every error names the layer (index and type), what it got and
//! what it needs. The resulting [`Plan`] carries each layer's input and output
//! shapes, resolved paddings, parameter counts and multiply-adds; the model
//! builder and `cnn summary` both read it.

use crate::config::{Config, Layer, Padding, PaddingMode, Pair};
use anyhow::Result;
use std::fmt;

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

/// What a layer does once its input shape is known.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Conv(ConvGeometry),
    MaxPool(PoolGeometry),
    AvgPool(PoolGeometry),
    BatchNorm {
        features: usize,
        eps: f64,
        momentum: f64,
        affine: bool,
    },
    Linear {
        in_features: usize,
        out_features: usize,
        bias: bool,
    },
    Relu,
    LeakyRelu(f64),
    Sigmoid,
    Tanh,
    Gelu,
    Flatten,
    Dropout(f64),
    LogSoftmax,
    Softmax,
}

/// One layer of a checked network.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerPlan {
    pub index: usize,
    pub kind: &'static str,
    pub op: Op,
    pub input: Shape,
    pub output: Shape,
    /// Trainable parameters.
    pub params: u128,
    /// Non-trainable state (batch-norm running statistics).
    pub buffers: u128,
    /// Multiply-adds per example (convolution and linear layers).
    pub macs: u128,
}

impl LayerPlan {
    /// The tensors this layer owns, with their shapes, as `(suffix, dims)`;
    /// the checkpoint name is `layers.<index>.<suffix>`.
    pub fn tensors(&self) -> Vec<(&'static str, Vec<usize>)> {
        match self.op {
            Op::Conv(g) => {
                let mut t = vec![(
                    "weight",
                    vec![
                        g.out_channels,
                        g.in_channels / g.groups,
                        g.kernel.h,
                        g.kernel.w,
                    ],
                )];
                if g.bias {
                    t.push(("bias", vec![g.out_channels]));
                }
                t
            }
            Op::Linear {
                in_features,
                out_features,
                bias,
            } => {
                let mut t = vec![("weight", vec![out_features, in_features])];
                if bias {
                    t.push(("bias", vec![out_features]));
                }
                t
            }
            Op::BatchNorm {
                features, affine, ..
            } => {
                let mut t = vec![];
                if affine {
                    t.push(("weight", vec![features]));
                    t.push(("bias", vec![features]));
                }
                t.push(("running_mean", vec![features]));
                t.push(("running_var", vec![features]));
                t
            }
            _ => vec![],
        }
    }
}

/// A checked network: every layer with its shapes, plus warnings to show.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub input: Shape,
    pub num_classes: usize,
    pub layers: Vec<LayerPlan>,
    pub warnings: Vec<String>,
}

impl Plan {
    pub fn params(&self) -> u128 {
        self.layers.iter().map(|l| l.params).sum()
    }
    pub fn buffers(&self) -> u128 {
        self.layers.iter().map(|l| l.buffers).sum()
    }
    pub fn macs(&self) -> u128 {
        self.layers.iter().map(|l| l.macs).sum()
    }
    /// Index of the trailing softmax/log-softmax, if any: the loss is taken on
    /// the logits before it.
    pub fn output_activation(&self) -> Option<usize> {
        self.layers
            .last()
            .filter(|l| matches!(l.op, Op::Softmax | Op::LogSoftmax))
            .map(|l| l.index)
    }
}

/// Most memory a run may plan for before we call the architecture absurd.
const MEMORY_CEILING_BYTES: u128 = 256 << 30;

/// Infers every shape and checks the whole architecture; `batch_size` is used
/// for the memory estimate.
pub fn plan(config: &Config) -> Result<Plan> {
    let [c, h, w] = config.input_shape;
    if c == 0 || h == 0 || w == 0 {
        crate::bail_input!(
            "input_shape is [{c}, {h}, {w}]; channels, height and width must all be at least 1"
        );
    }
    if config.num_classes < 2 {
        crate::bail_input!(
            "num_classes is {}; a classifier needs at least 2 classes",
            config.num_classes
        );
    }
    if config.layers.is_empty() {
        crate::bail_input!(
            "`layers` is empty; list at least one layer, ending with a linear layer of num_classes outputs"
        );
    }
    let input = Shape::Image { c, h, w };
    let mut shape = input;
    let mut layers = Vec::with_capacity(config.layers.len());
    let mut warnings = Vec::new();
    let last = config.layers.len() - 1;
    for (index, layer) in config.layers.iter().enumerate() {
        let kind = layer.kind();
        let ctx = LayerCtx {
            index,
            kind,
            input: shape,
            prev: layers.last(),
        };
        let (op, output) = infer(&ctx, layer)?;
        let (params, buffers, macs) = counts(&op, &output);
        if layer.is_output_activation() && index != last {
            crate::bail_input!(
                "layer {index} ({kind}): {kind} may only be the last layer (it turns the \
                 network's outputs into probabilities); remove it or move it to the end"
            );
        }
        if let Op::Softmax = op {
            warnings.push(format!(
                "layer {index} (softmax): cross-entropy applies log-softmax itself, so a final \
                 softmax would be applied twice (a common mistake). cnn computes the loss from \
                 the outputs of layer {} and uses this softmax only for predictions; remove the \
                 layer to silence this warning.",
                index.saturating_sub(1)
            ));
        }
        layers.push(LayerPlan {
            index,
            kind,
            op,
            input: shape,
            output,
            params,
            buffers,
            macs,
        });
        shape = output;
    }
    // The classifier's width must be the number of classes.
    let head = layers
        .iter()
        .rev()
        .find(|l| !matches!(l.op, Op::Softmax | Op::LogSoftmax))
        .map(|l| (l.index, l.kind, l.output));
    match head {
        Some((_, _, Shape::Flat(n))) if n == config.num_classes => {}
        Some((i, kind, Shape::Flat(n))) => crate::bail_input!(
            "layer {i} ({kind}): the network ends with {n} outputs but num_classes is {}; \
             make the last linear layer's out_features {}",
            config.num_classes,
            config.num_classes
        ),
        Some((i, kind, out)) => crate::bail_input!(
            "layer {i} ({kind}): the network ends with an image of {out}, not a vector of class \
             scores; end with {{\"type\": \"flatten\"}} and {{\"type\": \"linear\", \"out_features\": {}}}",
            config.num_classes
        ),
        None => crate::bail_input!("the network has no layer before its output activation"),
    }
    if !layers.iter().any(|l| l.params > 0) {
        crate::bail_input!("the network has no trainable parameters; add a conv2d or linear layer");
    }
    let plan = Plan {
        input,
        num_classes: config.num_classes,
        layers,
        warnings,
    };
    check_memory(
        &plan,
        config.training.batch_size.max(config.data.eval_batch_size),
    )?;
    Ok(plan)
}

/// Rough bytes needed to train: weights, gradients and two optimizer moments,
/// plus every activation and its gradient for one batch.
fn check_memory(plan: &Plan, batch: usize) -> Result<()> {
    let params = plan.params() + plan.buffers();
    let activations: u128 = plan
        .layers
        .iter()
        .map(|l| l.output.elements())
        .sum::<u128>()
        + plan.input.elements();
    let bytes = 4 * (4 * params + 2 * activations * batch.max(1) as u128);
    if bytes > MEMORY_CEILING_BYTES {
        let (i, l) = plan
            .layers
            .iter()
            .map(|l| (l.index, l))
            .max_by_key(|(_, l)| l.params.max(l.output.elements() * batch as u128))
            .expect("plan has layers");
        crate::bail_input!(
            "the network would need about {} GiB to train with batch size {batch} \
             ({} parameters, {} activation values per image); the largest layer is {i} ({}) \
             with output {} and {} parameters. Reduce its size or the batch size.",
            bytes >> 30,
            params,
            activations,
            l.kind,
            l.output,
            l.params
        );
    }
    Ok(())
}

struct LayerCtx<'a> {
    index: usize,
    kind: &'static str,
    input: Shape,
    prev: Option<&'a LayerPlan>,
}

impl LayerCtx<'_> {
    fn fail(&self, msg: impl fmt::Display) -> anyhow::Error {
        crate::input_error!("layer {} ({}): {msg}", self.index, self.kind)
    }

    /// "the input" or "layer 3 (flatten)", for messages about where a shape came from.
    fn source(&self) -> String {
        match self.prev {
            Some(p) => format!("layer {} ({}) outputs", p.index, p.kind),
            None => "the input is".to_string(),
        }
    }

    fn image(&self) -> Result<(usize, usize, usize)> {
        match self.input {
            Shape::Image { c, h, w } => Ok((c, h, w)),
            Shape::Flat(n) => Err(self.fail(format!(
                "needs an image input (channels×height×width) but {} {n} features; \
                 move the flatten after the last conv/pool layer",
                self.source()
            ))),
        }
    }

    fn at_least_one(&self, field: &str, v: Pair) -> Result<()> {
        if v.h == 0 || v.w == 0 {
            return Err(self.fail(format!("{field} is {v}; it must be at least 1")));
        }
        self.not_huge(field, v)
    }

    /// Sizes beyond any image (and beyond overflow-free arithmetic) are typos.
    fn not_huge(&self, field: &str, v: Pair) -> Result<()> {
        if v.h.max(v.w) > MAX_SIZE {
            return Err(self.fail(format!(
                "{field} is {v}; sizes above {MAX_SIZE} are not supported (is it a typo?)"
            )));
        }
        Ok(())
    }
}

/// The largest kernel, stride, dilation or padding a layer may state.
const MAX_SIZE: usize = 1 << 16;

fn infer(ctx: &LayerCtx, layer: &Layer) -> Result<(Op, Shape)> {
    match layer {
        Layer::Conv2d(conv) => {
            let (c, h, w) = ctx.image()?;
            if let Some(given) = conv.in_channels
                && given != c
            {
                return Err(ctx.fail(format!(
                    "in_channels is {given} but {} {c} channels ({}); remove in_channels or set it to {c}",
                    ctx.source(),
                    ctx.input
                )));
            }
            if conv.out_channels == 0 {
                return Err(ctx.fail("out_channels is 0; it must be at least 1"));
            }
            ctx.at_least_one("kernel_size", conv.kernel_size)?;
            ctx.at_least_one("stride", conv.stride)?;
            ctx.at_least_one("dilation", conv.dilation)?;
            let groups = conv.groups;
            if groups == 0 || c % groups != 0 || conv.out_channels % groups != 0 {
                return Err(ctx.fail(format!(
                    "groups is {groups}; it must divide both in_channels ({c}) and out_channels ({})",
                    conv.out_channels
                )));
            }
            if let Padding::Explicit(p) = conv.padding {
                ctx.not_huge("padding", p)?;
            }
            let k = conv.kernel_size;
            let d = conv.dilation;
            let span = Pair {
                h: d.h * (k.h - 1) + 1,
                w: d.w * (k.w - 1) + 1,
            };
            let padding = match conv.padding {
                Padding::Explicit(p) => Pad4::symmetric(p),
                Padding::Valid => Pad4::default(),
                Padding::Same => {
                    if conv.stride != Pair::square(1) {
                        return Err(ctx.fail(format!(
                            "padding \"same\" needs stride 1 (stride is {}); give the padding as a number",
                            conv.stride
                        )));
                    }
                    let (th, tw) = (span.h - 1, span.w - 1);
                    Pad4 {
                        top: th / 2,
                        bottom: th - th / 2,
                        left: tw / 2,
                        right: tw - tw / 2,
                    }
                }
            };
            if conv.padding_mode != PaddingMode::Zeros
                && (padding.top.max(padding.bottom)
                    > h.saturating_sub(usize::from(conv.padding_mode == PaddingMode::Reflect))
                    || padding.left.max(padding.right)
                        > w.saturating_sub(usize::from(conv.padding_mode == PaddingMode::Reflect)))
            {
                let (mode, most) = if conv.padding_mode == PaddingMode::Reflect {
                    ("reflect", "less than the input's height and width")
                } else if conv.padding_mode == PaddingMode::Replicate {
                    ("replicate", "at most the input's height and width")
                } else {
                    ("circular", "at most the input's height and width")
                };
                return Err(ctx.fail(format!(
                    "padding of {} (top, bottom, left, right) is too large for padding_mode \"{mode}\" on a {h}×{w} \
                     input: it needs padding {most}; lower the padding or use padding_mode \"zeros\"",
                    [padding.top, padding.bottom, padding.left, padding.right]
                        .map(|v| v.to_string())
                        .join(", ")
                )));
            }
            let (ph, pw) = (
                h + padding.top + padding.bottom,
                w + padding.left + padding.right,
            );
            if span.h > ph || span.w > pw {
                return Err(ctx.fail(format!(
                    "the {}×{} kernel{} does not fit the {h}×{w} input with padding {}; \
                     use a smaller kernel_size, more padding, or less pooling before it",
                    k.h,
                    k.w,
                    if d == Pair::square(1) {
                        String::new()
                    } else {
                        format!(" (dilation {d})")
                    },
                    pad_text(padding)
                )));
            }
            let oh = (ph - span.h) / conv.stride.h + 1;
            let ow = (pw - span.w) / conv.stride.w + 1;
            let geom = ConvGeometry {
                in_channels: c,
                out_channels: conv.out_channels,
                kernel: k,
                stride: conv.stride,
                dilation: d,
                padding,
                padding_mode: conv.padding_mode,
                groups,
                bias: conv.bias,
            };
            Ok((
                Op::Conv(geom),
                Shape::Image {
                    c: conv.out_channels,
                    h: oh,
                    w: ow,
                },
            ))
        }
        Layer::MaxPool2d(pool) | Layer::AvgPool2d(pool) => {
            let (c, h, w) = ctx.image()?;
            ctx.at_least_one("kernel_size", pool.kernel_size)?;
            let k = pool.kernel_size;
            let s = pool.stride.unwrap_or(k);
            ctx.at_least_one("stride", s)?;
            let p = pool.padding;
            ctx.not_huge("padding", p)?;
            if p.h * 2 > k.h || p.w * 2 > k.w {
                return Err(ctx.fail(format!(
                    "padding {p} is more than half the kernel size {k}; use padding at most {}",
                    Pair {
                        h: k.h / 2,
                        w: k.w / 2
                    }
                )));
            }
            let (ph, pw) = (h + 2 * p.h, w + 2 * p.w);
            if k.h > ph || k.w > pw {
                return Err(ctx.fail(format!(
                    "the {}×{} window does not fit the {h}×{w} input ({}); use a smaller kernel_size \
                     or remove a pooling layer before it",
                    k.h,
                    k.w,
                    ctx.source()
                )));
            }
            let out = Shape::Image {
                c,
                h: (ph - k.h) / s.h + 1,
                w: (pw - k.w) / s.w + 1,
            };
            let geom = PoolGeometry {
                kernel: k,
                stride: s,
                padding: p,
            };
            let op = if matches!(layer, Layer::MaxPool2d(_)) {
                Op::MaxPool(geom)
            } else {
                Op::AvgPool(geom)
            };
            Ok((op, out))
        }
        Layer::BatchNorm2d(bn) | Layer::BatchNorm1d(bn) => {
            let features = match (layer, ctx.input) {
                (Layer::BatchNorm2d(_), Shape::Image { c, .. }) => c,
                (Layer::BatchNorm1d(_), Shape::Flat(n)) => n,
                (Layer::BatchNorm2d(_), Shape::Flat(n)) => {
                    return Err(ctx.fail(format!(
                        "needs an image input but {} {n} features; use batch_norm1d after flatten",
                        ctx.source()
                    )));
                }
                (_, img) => {
                    return Err(ctx.fail(format!(
                        "needs a feature vector but {} an image of {img}; use batch_norm2d before flatten",
                        ctx.source()
                    )));
                }
            };
            if let Some(given) = bn.num_features
                && given != features
            {
                return Err(ctx.fail(format!(
                    "num_features is {given} but {} {features} {}; remove num_features or set it to {features}",
                    ctx.source(),
                    if matches!(layer, Layer::BatchNorm2d(_)) { "channels" } else { "features" }
                )));
            }
            if !(bn.eps.is_finite() && bn.eps > 0.0) {
                return Err(ctx.fail(format!(
                    "eps is {}; it must be a small positive number like 1e-5",
                    bn.eps
                )));
            }
            if !(0.0..=1.0).contains(&bn.momentum) {
                return Err(ctx.fail(format!(
                    "momentum is {}; it must be between 0 and 1 (default 0.1)",
                    bn.momentum
                )));
            }
            Ok((
                Op::BatchNorm {
                    features,
                    eps: bn.eps,
                    momentum: bn.momentum,
                    affine: bn.affine,
                },
                ctx.input,
            ))
        }
        Layer::Linear(lin) => {
            let n = match ctx.input {
                Shape::Flat(n) => n,
                img @ Shape::Image { .. } => {
                    return Err(ctx.fail(format!(
                        "needs a feature vector but {} an image of {img} = {} values; add {{\"type\": \"flatten\"}} before it",
                        ctx.source(),
                        img.elements()
                    )));
                }
            };
            if let Some(given) = lin.in_features
                && given != n
            {
                let from = match ctx.prev.map(|p| p.input) {
                    Some(img @ Shape::Image { .. })
                        if matches!(ctx.prev.map(|p| &p.op), Some(Op::Flatten)) =>
                    {
                        format!("{img} = {n}")
                    }
                    _ => n.to_string(),
                };
                return Err(ctx.fail(format!(
                    "in_features is {given} but {} {from}; remove in_features or set it to {n}",
                    ctx.source()
                )));
            }
            if lin.out_features == 0 {
                return Err(ctx.fail("out_features is 0; it must be at least 1"));
            }
            Ok((
                Op::Linear {
                    in_features: n,
                    out_features: lin.out_features,
                    bias: lin.bias,
                },
                Shape::Flat(lin.out_features),
            ))
        }
        Layer::Flatten(_) => Ok((
            Op::Flatten,
            Shape::Flat(ctx.input.elements().min(usize::MAX as u128) as usize),
        )),
        Layer::Dropout(d) => {
            if !(0.0..1.0).contains(&d.p) {
                return Err(ctx.fail(format!(
                    "p is {}; the drop probability must be in [0, 1)",
                    d.p
                )));
            }
            Ok((Op::Dropout(d.p), ctx.input))
        }
        Layer::LeakyRelu(l) => {
            if !l.negative_slope.is_finite() {
                return Err(ctx.fail("negative_slope must be a finite number (default 0.01)"));
            }
            Ok((Op::LeakyRelu(l.negative_slope), ctx.input))
        }
        Layer::Relu(_) => Ok((Op::Relu, ctx.input)),
        Layer::Sigmoid(_) => Ok((Op::Sigmoid, ctx.input)),
        Layer::Tanh(_) => Ok((Op::Tanh, ctx.input)),
        Layer::Gelu(_) => Ok((Op::Gelu, ctx.input)),
        Layer::LogSoftmax(_) | Layer::Softmax(_) => {
            if let Shape::Image { .. } = ctx.input {
                return Err(ctx.fail(format!(
                    "needs the vector of class scores but {} an image of {}; put it after the last linear layer",
                    ctx.source(),
                    ctx.input
                )));
            }
            let op = if matches!(layer, Layer::Softmax(_)) {
                Op::Softmax
            } else {
                Op::LogSoftmax
            };
            Ok((op, ctx.input))
        }
    }
}

fn pad_text(p: Pad4) -> String {
    if p.top == p.bottom && p.left == p.right {
        Pair {
            h: p.top,
            w: p.left,
        }
        .to_string()
    } else {
        format!(
            "top {} bottom {} left {} right {}",
            p.top, p.bottom, p.left, p.right
        )
    }
}

/// (trainable parameters, buffers, multiply-adds per example).
fn counts(op: &Op, output: &Shape) -> (u128, u128, u128) {
    match *op {
        Op::Conv(g) => {
            let per_out =
                (g.in_channels / g.groups) as u128 * g.kernel.h as u128 * g.kernel.w as u128;
            let weights = g.out_channels as u128 * per_out;
            let bias = if g.bias { g.out_channels as u128 } else { 0 };
            (weights + bias, 0, output.elements() * per_out)
        }
        Op::Linear {
            in_features,
            out_features,
            bias,
        } => {
            let weights = in_features as u128 * out_features as u128;
            (
                weights + if bias { out_features as u128 } else { 0 },
                0,
                weights,
            )
        }
        Op::BatchNorm {
            features, affine, ..
        } => (
            if affine { 2 * features as u128 } else { 0 },
            2 * features as u128,
            0,
        ),
        _ => (0, 0, 0),
    }
}
