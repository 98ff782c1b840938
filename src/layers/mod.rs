//! Every layer kind, each defined in one place: its config fields (serde),
//! its shape rule (checked before any tensor exists), the tensors it owns
//! with their shapes and initialisation, its forward pass and the PyTorch
//! module it matches.
//!
//! A kind is two types in a module of this folder: the config entry, which
//! implements [`Spec`] (fields and shape rule), and what it resolves to once
//! its input shape is known, which implements [`Run`] (tensors, cost,
//! forward). The [`kinds!`] list at the bottom of this file registers both;
//! it generates the config's tagged [`Layer`] enum, the resolved [`Op`] enum
//! and [`KINDS`], so the compiler points at anything a new kind still needs.
//! ARCHITECTURE.md walks through adding one.

mod activation;
mod block;
mod channels;
mod conv;
mod dropout;
mod init;
mod linear;
mod norm;
mod pool;

pub use activation::{
    Gelu, Hardsigmoid, Hardswish, LeakyRelu, LogSoftmax, Relu, Relu6, Sigmoid, Silu, Softmax, Tanh,
};
pub use block::{Concat, ConcatOp, Gate, GateOp, Residual, ResidualOp};
pub use channels::{
    ChannelLinear, ChannelLinearOp, LayerNorm2d, LayerNorm2dOp, LayerScale, LayerScaleOp,
};
pub use conv::{Conv2d, ConvInit, ConvLayer};
pub use dropout::{DropPath, Dropout};
pub use linear::{Flatten, Linear};
pub use norm::{BatchNorm, BatchNorm1d, BatchNorm2d, BatchNormOp};
pub use pool::{
    AdaptiveAvgPool2d, AdaptiveOp, AvgPool2d, GlobalAvgPool2d, GlobalMaxPool2d, MaxPool2d, Pool2d,
    PoolOp,
};

use crate::geometry::{ConvGeometry, Pair, PoolGeometry, Shape};
use crate::onnx::Graph;
use crate::rng::Rng;
use anyhow::Result;
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;

/// A layer as the config writes it.
pub trait Spec {
    /// What the layer resolves to once its input shape is known.
    type Op: Run;
    /// The PyTorch module computing the same function with the same tensor
    /// names (`Conv2d` for `torch.nn.Conv2d`).
    const TORCH: &'static str;
    /// A short config entry of this kind, for the documentation and tests.
    const EXAMPLE: &'static str;
    /// Checks the settings against the input shape; returns the resolved
    /// layer and its output shape. Errors go through [`Cx::fail`], which
    /// names the layer.
    fn resolve(&self, cx: &Cx) -> Result<(Self::Op, Shape)>;
}

/// A layer with every size known: what it owns and how it runs.
pub trait Run {
    /// The tensors this layer owns, in checkpoint order; each is saved as
    /// `<node path>.<name>`.
    fn tensors(&self) -> Vec<TensorSpec> {
        Vec::new()
    }
    /// Multiply-adds per example.
    fn macs(&self, _output: Shape) -> u128 {
        0
    }
    /// Whether [`Run::forward`] can apply a following ReLU itself.
    fn fuses_relu(&self) -> bool {
        false
    }
    /// Whether [`Run::forward_pooled`] applies this max pooling (after the
    /// layer and its fused ReLU) itself, faster than the pooling layer.
    fn fuses_max_pool(&self, _pool: &PoolGeometry) -> bool {
        false
    }
    /// An activation function (shown beside the maps of the layer before it).
    fn is_activation(&self) -> bool {
        false
    }
    /// Lists of layers inside this one (a block's), whose tensors follow
    /// this layer's own in [`Node::tensors`] and in the slice
    /// [`Run::forward`] gets.
    fn children(&self) -> Vec<&[Node]> {
        Vec::new()
    }
    /// Refuses what the implementation for `device` cannot run.
    fn check_device(&self, _device: &Device) -> Result<()> {
        Ok(())
    }
    /// Applies the layer to a batch; `t` holds the tensors of
    /// [`Node::tensors`] in order. With `relu` (only when
    /// [`Run::fuses_relu`]), also applies the ReLU that follows.
    fn forward(&self, x: &Tensor, t: &[Tensor], pass: &mut Pass, relu: bool) -> Result<Tensor>;
    /// [`Run::forward`], then the max pooling `pool` that follows it (and
    /// its ReLU): what `run_list` calls where [`Run::fuses_max_pool`].
    fn forward_pooled(
        &self,
        x: &Tensor,
        t: &[Tensor],
        pass: &mut Pass,
        relu: bool,
        pool: &PoolGeometry,
    ) -> Result<Tensor> {
        crate::ops::max_pool2d(&self.forward(x, t, pass, relu)?, pool)
    }

    /// Appends what [`Run::forward`] computes in evaluation to an ONNX
    /// graph, reading the value named `x`, and returns the name of its
    /// output. `t` holds the tensors as for `forward`; `path` (`layers.3`)
    /// names the nodes and weights it adds (`layers.3.weight`, the
    /// checkpoint's names). A kind without an ONNX form is refused.
    fn onnx(&self, g: &mut Graph, x: &str, t: &[Tensor], path: &str) -> Result<String> {
        let _ = (g, x, t, path);
        Err(crate::input_error!(
            "cnn has no ONNX form for this kind of layer; remove it from the config to export the network"
        ))
    }
}

/// One tensor a layer owns.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorSpec {
    /// The last part of its checkpoint name: `weight`, `running_mean`.
    pub name: &'static str,
    pub dims: Vec<usize>,
    /// Trained by the optimizer (else a buffer such as running statistics).
    pub trainable: bool,
    pub init: Init,
}

/// How a fresh tensor is filled (PyTorch's defaults).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    /// Uniform in ±scale/√fan_in: with scale 1, what `kaiming_uniform_(a=√5)`
    /// works out to for weights and PyTorch uses for biases too.
    Uniform {
        fan_in: usize,
        scale: f32,
    },
    /// A convolution's weight `[out, in, kh, kw]` drawn as `Uniform` (scale
    /// 1), then its first `min(out, in)` filters made the identity, as
    /// `torch.nn.init.dirac_` makes them: a one at the kernel's centre
    /// (`kh/2, kw/2`) of the filter's own channel, zeros elsewhere.
    Dirac {
        fan_in: usize,
    },
    Const(f32),
}

impl TensorSpec {
    pub fn elements(&self) -> u128 {
        self.dims.iter().map(|&d| d as u128).product()
    }

    /// A fresh tensor drawn as `init` says, from `rng`.
    pub fn fresh(&self, rng: &mut crate::rng::Rng, device: &Device) -> anyhow::Result<Tensor> {
        init::tensor(self, rng, device)
    }
}

/// How a forward pass runs: training (with the generator dropout draws
/// its masks from) or evaluation (dropout off, batch norm on its running
/// statistics), and optionally watched layer by layer.
pub struct Pass<'a> {
    rng: Option<&'a mut Rng>,
    observer: Option<&'a mut Observer<'a>>,
    /// What convolutions and linear layers multiply; the model sets it.
    precision: crate::precision::Precision,
    /// Batch norms normalise by their running statistics even in training
    /// and leave them as they are (`training.fine_tune.freeze_bn_stats`).
    bn_stats_frozen: bool,
}

/// Sees a layer's output.
pub type Observer<'a> = dyn FnMut(&Node, &Tensor) + 'a;

impl<'a> Pass<'a> {
    pub fn eval() -> Self {
        Pass {
            rng: None,
            observer: None,
            precision: Default::default(),
            bn_stats_frozen: false,
        }
    }
    pub fn train(rng: &'a mut Rng) -> Self {
        Pass {
            rng: Some(rng),
            observer: None,
            precision: Default::default(),
            bn_stats_frozen: false,
        }
    }

    /// What convolutions and linear layers multiply in this pass.
    pub fn precision(&self) -> crate::precision::Precision {
        self.precision
    }

    /// This pass in `precision`.
    pub fn in_precision(mut self, precision: crate::precision::Precision) -> Self {
        self.precision = precision;
        self
    }
    /// Evaluation that shows `f` the output of every layer, inside blocks
    /// too, in the order they run (no layer applies the next one's ReLU).
    pub fn observed(f: &'a mut Observer<'a>) -> Self {
        Pass {
            rng: None,
            observer: Some(f),
            precision: Default::default(),
            bn_stats_frozen: false,
        }
    }
    /// Training that shows `f` the output of every layer.
    pub fn train_observed(rng: &'a mut Rng, f: &'a mut Observer<'a>) -> Self {
        Pass {
            rng: Some(rng),
            observer: Some(f),
            precision: Default::default(),
            bn_stats_frozen: false,
        }
    }
    pub fn is_train(&self) -> bool {
        self.rng.is_some()
    }
    /// This pass with batch-norm statistics frozen or not.
    pub fn with_bn_stats_frozen(mut self, frozen: bool) -> Self {
        self.bn_stats_frozen = frozen;
        self
    }
    /// Whether batch norms use (and update) the batch's statistics.
    pub fn batch_statistics(&self) -> bool {
        self.is_train() && !self.bn_stats_frozen
    }
    /// The training generator, `None` in evaluation.
    pub fn rng(&mut self) -> Option<&mut Rng> {
        self.rng.as_deref_mut()
    }
}

/// What a shape rule knows about where its layer sits.
pub struct Cx<'a> {
    /// The layer's shape of input.
    pub input: Shape,
    /// `layer 3 (conv2d)`, or `layer 5 (residual) → layers.2 (conv2d)`
    /// inside a block: how messages name the layer.
    label: &'a str,
    /// Prefix of the layer's tensors: `layers.3`.
    path: &'a str,
    /// The layer before it in the same list.
    prev: Option<&'a Node>,
    /// Blocks around this layer.
    depth: usize,
    /// The layer is frozen (`trainable: false` on it or on a block around it).
    frozen: bool,
}

impl Cx<'_> {
    /// An input error naming the layer.
    pub fn fail(&self, msg: impl fmt::Display) -> anyhow::Error {
        crate::input_error!("{}: {msg}", self.label)
    }

    /// How messages name the layer.
    pub fn label(&self) -> &str {
        self.label
    }

    /// Where the input comes from, for messages: `layer 2 (flatten)
    /// outputs`, `the input is`, or `the block's input is`.
    pub fn source(&self) -> String {
        match self.prev {
            Some(p) => format!("{} outputs", p.short_label()),
            None if self.depth == 0 => "the input is".to_string(),
            None => "the block's input is".to_string(),
        }
    }

    /// The layer before, if any.
    pub fn prev(&self) -> Option<&Node> {
        self.prev
    }

    /// Plans a list of layers inside this one (a block's `name` list, such
    /// as `layers` or `shortcut`), fed `input`.
    pub fn plan_list(&self, name: &str, layers: &[Layer], input: Shape) -> Result<Vec<Node>> {
        if self.depth + 1 > MAX_DEPTH {
            return Err(self.fail(format!(
                "blocks are nested more than {MAX_DEPTH} deep; flatten the nesting into a list"
            )));
        }
        let at = ListAt {
            prefix: format!("{}.{name}", self.path),
            list: name.to_string(),
            parent: Some(self.label.to_string()),
            depth: self.depth + 1,
            frozen: self.frozen,
        };
        plan_list_at(layers, input, &at)
    }

    /// The input as channels × height × width, or an error saying where
    /// it became a vector.
    pub fn image(&self) -> Result<(usize, usize, usize)> {
        match self.input {
            Shape::Image { c, h, w } => Ok((c, h, w)),
            Shape::Flat(n) => {
                let fix = match self.prev.map(|p| &p.op) {
                    Some(Op::GlobalAvgPool2d(_) | Op::GlobalMaxPool2d(_)) => {
                        "a global pool already reduced each channel to one value; remove this layer or \
                         put it before the global pool"
                    }
                    _ => "move the flatten after the last conv/pool layer",
                };
                Err(self.fail(format!(
                    "needs an image input (channels×height×width) but {} {n} features; {fix}",
                    self.source()
                )))
            }
        }
    }

    /// A size that must be at least 1 (and not absurd).
    pub fn at_least_one(&self, field: &str, v: Pair) -> Result<()> {
        if v.h == 0 || v.w == 0 {
            return Err(self.fail(format!("{field} is {v}; it must be at least 1")));
        }
        self.not_huge(field, v)
    }

    /// Sizes beyond any image (and beyond overflow-free arithmetic) are typos.
    pub fn not_huge(&self, field: &str, v: Pair) -> Result<()> {
        if v.h.max(v.w) > MAX_SIZE {
            return Err(self.fail(format!(
                "{field} is {v}; sizes above {MAX_SIZE} are not supported (is it a typo?)"
            )));
        }
        Ok(())
    }
}

/// The largest kernel, stride, dilation or padding a layer may state.
pub const MAX_SIZE: usize = 1 << 16;

/// How deep blocks may nest.
pub const MAX_DEPTH: usize = 8;

/// One layer of a checked network.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Position in its list.
    pub index: usize,
    /// Prefix of its tensors' names: `layers.3`, `layers.5.shortcut.0`.
    pub path: String,
    /// How messages name it: `layer 3 (conv2d)`, `layer 5 (residual) →
    /// shortcut.0 (conv2d)`.
    pub label: String,
    /// The list it is in, inside a block (`layers`, `shortcut`); `None` at
    /// the top level.
    pub list: Option<String>,
    pub kind: &'static str,
    pub op: Op,
    pub input: Shape,
    pub output: Shape,
    /// Trainable parameters.
    pub params: u128,
    /// Non-trainable state (batch-norm running statistics).
    pub buffers: u128,
    /// Multiply-adds per example.
    pub macs: u128,
    /// How many tensors [`Node::tensors`] lists.
    pub tensor_count: usize,
    /// `trainable: false` on the layer or on a block around it: the
    /// optimizer never changes its parameters.
    pub frozen: bool,
    /// The layer's module in other frameworks' state_dicts (`torch_name`).
    pub torch_name: Option<TorchName>,
}

impl Node {
    /// `layer 3 (conv2d)` at the top level, `layers.2 (conv2d)` in a block.
    pub fn short_label(&self) -> String {
        match &self.list {
            None => format!("layer {} ({})", self.index, self.kind),
            Some(list) => format!("{list}.{} ({})", self.index, self.kind),
        }
    }

    /// The tensors of this layer and of the layers inside it, in
    /// checkpoint order, with their full names (`layers.3.weight`).
    pub fn tensors(&self) -> Vec<(String, TensorSpec)> {
        let run = self.op.run();
        let mut out: Vec<(String, TensorSpec)> = run
            .tensors()
            .into_iter()
            .map(|t| (format!("{}.{}", self.path, t.name), t))
            .collect();
        for list in run.children() {
            for node in list {
                out.extend(node.tensors());
            }
        }
        out
    }
}

/// Where a list of layers sits.
struct ListAt {
    /// Prefix of its layers' paths: `layers`, `layers.5.shortcut`.
    prefix: String,
    /// Its name inside a block (`layers`, `branches.1`).
    list: String,
    /// The label of the block holding it; `None` at the top level.
    parent: Option<String>,
    depth: usize,
    /// Inside a frozen block.
    frozen: bool,
}

/// Resolves the network's list of layers fed `input`: every shape, in
/// order. Tensor names start with `layers.`.
pub fn plan_list(layers: &[Layer], input: Shape) -> Result<Vec<Node>> {
    let top = ListAt {
        prefix: "layers".to_string(),
        list: "layers".to_string(),
        parent: None,
        depth: 0,
        frozen: false,
    };
    plan_list_at(layers, input, &top)
}

fn plan_list_at(layers: &[Layer], input: Shape, at: &ListAt) -> Result<Vec<Node>> {
    let mut nodes: Vec<Node> = Vec::with_capacity(layers.len());
    let mut shape = input;
    for (index, layer) in layers.iter().enumerate() {
        let kind = layer.kind();
        let (label, list) = match &at.parent {
            None => (format!("layer {index} ({kind})"), None),
            Some(parent) => (
                format!("{parent} → {}.{index} ({kind})", at.list),
                Some(at.list.clone()),
            ),
        };
        let path = format!("{}.{index}", at.prefix);
        let frozen = at.frozen || !layer.trainable;
        let cx = Cx {
            input: shape,
            label: &label,
            path: &path,
            prev: nodes.last(),
            depth: at.depth,
            frozen,
        };
        let (op, output) = layer.resolve(&cx)?;
        let mut node = Node {
            index,
            path,
            label,
            list,
            kind,
            params: 0,
            buffers: 0,
            macs: op.run().macs(output),
            tensor_count: 0,
            frozen,
            torch_name: layer.torch_name.clone(),
            op,
            input: shape,
            output,
        };
        let tensors = node.tensors();
        let count = |trainable: bool| {
            tensors
                .iter()
                .filter(|(_, t)| t.trainable == trainable)
                .map(|(_, t)| t.elements())
                .sum()
        };
        (node.params, node.buffers) = (count(true), count(false));
        node.tensor_count = tensors.len();
        nodes.push(node);
        shape = output;
    }
    Ok(nodes)
}

/// Calls `f` on every node of a list and of the lists inside its blocks.
pub fn walk<'a>(nodes: &'a [Node], f: &mut impl FnMut(&'a Node)) {
    for node in nodes {
        f(node);
        for list in node.op.run().children() {
            walk(list, f);
        }
    }
}

/// Runs the first `end` layers of a resolved list on `x`; `tensors` holds
/// the list's tensors in checkpoint order. A layer that can apply the ReLU
/// after it (conv, linear, batch norm) does so, and batch norm the 2×2 max
/// pooling after that too.
pub fn run_list(
    nodes: &[Node],
    tensors: &[Tensor],
    x: &Tensor,
    pass: &mut Pass,
    end: usize,
) -> Result<Tensor> {
    use anyhow::Context;
    let mut x = x.clone();
    let mut at = 0;
    let mut i = 0;
    while i < end {
        let node = &nodes[i];
        let run = node.op.run();
        let watched = pass.observer.is_some();
        if !pass.is_train() && !watched && i + 1 < end {
            // Evaluation: a batch norm after a convolution is folded into
            // its weights, and the convolution applies the ReLU after both.
            if let (Op::Conv2d(conv), Op::BatchNorm2d(bn)) = (&node.op, &nodes[i + 1].op) {
                let relu = i + 2 < end && matches!(nodes[i + 2].op, Op::Relu(_));
                let conv_t = &tensors[at..at + node.tensor_count];
                let bn_at = at + node.tensor_count;
                let bn_t = &tensors[bn_at..bn_at + nodes[i + 1].tensor_count];
                let (w, b) = bn
                    .fold_into_conv(bn_t, &conv_t[0], conv_t.get(1))
                    .with_context(|| format!("in {}", nodes[i + 1].label))?;
                x = conv
                    .forward(&x, &[w, b], pass, relu)
                    .with_context(|| format!("in {}", node.label))?;
                let taken = 2 + usize::from(relu);
                at += nodes[i..i + taken]
                    .iter()
                    .map(|n| n.tensor_count)
                    .sum::<usize>();
                i += taken;
                continue;
            }
        }
        let fuse =
            run.fuses_relu() && !watched && i + 1 < end && matches!(nodes[i + 1].op, Op::Relu(_));
        let next = i + 1 + usize::from(fuse);
        let pool = match nodes.get(next).map(|n| &n.op) {
            Some(Op::MaxPool2d(p)) if !watched && next < end && run.fuses_max_pool(&p.geom) => {
                Some(p.geom)
            }
            _ => None,
        };
        let t = &tensors[at..at + node.tensor_count];
        x = match &pool {
            Some(g) => run.forward_pooled(&x, t, pass, fuse, g),
            None => run.forward(&x, t, pass, fuse),
        }
        .with_context(|| format!("in {}", node.label))?;
        if let Some(f) = pass.observer.as_mut() {
            f(node, &x);
        }
        let taken = 1 + usize::from(fuse) + usize::from(pool.is_some());
        at += nodes[i..i + taken]
            .iter()
            .map(|n| n.tensor_count)
            .sum::<usize>();
        i += taken;
    }
    Ok(x)
}

/// Appends the ONNX form of the first `end` layers of a resolved list to
/// `g`, fed the value named `x`; `tensors` as for [`run_list`]. Returns the
/// name of the list's output (`x` itself for an empty list). An error names
/// the layer.
pub fn onnx_list(
    nodes: &[Node],
    tensors: &[Tensor],
    g: &mut Graph,
    x: &str,
    end: usize,
) -> Result<String> {
    use anyhow::Context;
    let mut x = x.to_string();
    let mut at = 0;
    for node in &nodes[..end] {
        let t = &tensors[at..at + node.tensor_count];
        let run = node.op.run();
        let out = run.onnx(g, &x, t, &node.path);
        // A block's errors come from a layer inside it, already named with
        // the block (`layer 5 (residual) → layers.2 (conv2d)`).
        x = if run.children().is_empty() {
            out.with_context(|| node.label.clone())?
        } else {
            out?
        };
        at += node.tensor_count;
    }
    Ok(x)
}

/// What the documentation and tests know of a kind.
#[derive(Debug, Clone, Copy)]
pub struct Kind {
    /// The config's `"type"`.
    pub name: &'static str,
    /// Other accepted spellings.
    pub aliases: &'static [&'static str],
    /// The PyTorch module computing the same (`torch.nn.<torch>`).
    pub torch: &'static str,
    pub example: &'static str,
}

/// The registry: one line per kind, `Variant(ConfigType) = "type"` plus
/// any aliases. Generates [`Layer`], [`Op`] and [`KINDS`].
macro_rules! kinds {
    ($($variant:ident($spec:ty) = $name:literal $(| $alias:literal)*;)*) => {
        /// A layer kind with its settings, tagged by `"type"`.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "type")]
        pub enum LayerKind {
            $(#[serde(rename = $name $(, alias = $alias)*)] $variant($spec),)*
        }

        /// A layer resolved against its input shape.
        #[derive(Debug, Clone, PartialEq)]
        pub enum Op {
            $($variant(<$spec as Spec>::Op),)*
        }

        /// Every kind, in the order of the registry.
        pub const KINDS: &[Kind] = &[$(Kind {
            name: $name,
            aliases: &[$($alias),*],
            torch: <$spec as Spec>::TORCH,
            example: <$spec as Spec>::EXAMPLE,
        },)*];

        impl LayerKind {
            /// The canonical `"type"`.
            pub fn kind(&self) -> &'static str {
                match self {
                    $(LayerKind::$variant(_) => $name,)*
                }
            }

            /// Decodes the fields of a layer whose `"type"` is `name`
            /// (the `"type"` itself removed); `None` for an unknown type.
            /// Each kind's struct is decoded directly, so an error knows
            /// the field it is in.
            fn decode_fields(name: &str, fields: &Value) -> Option<std::result::Result<LayerKind, String>> {
                match name {
                    $($name $(| $alias)* => Some(crate::json::decode::<$spec>(fields).map(LayerKind::$variant)),)*
                    _ => None,
                }
            }

            fn resolve(&self, cx: &Cx) -> Result<(Op, Shape)> {
                Ok(match self {
                    $(LayerKind::$variant(spec) => {
                        let (op, shape) = spec.resolve(cx)?;
                        (Op::$variant(op), shape)
                    })*
                })
            }
        }

        impl Op {
            pub fn run(&self) -> &dyn Run {
                match self {
                    $(Op::$variant(op) => op,)*
                }
            }
        }
    };
}

kinds! {
    Conv2d(Conv2d) = "conv2d";
    MaxPool2d(MaxPool2d) = "max_pool2d" | "maxpool2d" | "max_pool";
    AvgPool2d(AvgPool2d) = "avg_pool2d" | "avgpool2d" | "avg_pool";
    GlobalAvgPool2d(GlobalAvgPool2d) = "global_avg_pool2d";
    GlobalMaxPool2d(GlobalMaxPool2d) = "global_max_pool2d";
    AdaptiveAvgPool2d(AdaptiveAvgPool2d) = "adaptive_avg_pool2d";
    BatchNorm2d(BatchNorm2d) = "batch_norm2d" | "batchnorm2d";
    BatchNorm1d(BatchNorm1d) = "batch_norm1d" | "batchnorm1d";
    LayerNorm2d(LayerNorm2d) = "layer_norm2d";
    ChannelLinear(ChannelLinear) = "channel_linear";
    LayerScale(LayerScale) = "layer_scale";
    Relu(Relu) = "relu";
    LeakyRelu(LeakyRelu) = "leaky_relu";
    Sigmoid(Sigmoid) = "sigmoid";
    Tanh(Tanh) = "tanh";
    Gelu(Gelu) = "gelu";
    Relu6(Relu6) = "relu6";
    Hardsigmoid(Hardsigmoid) = "hardsigmoid" | "hard_sigmoid";
    Hardswish(Hardswish) = "hardswish" | "hard_swish";
    Silu(Silu) = "silu" | "swish";
    Flatten(Flatten) = "flatten";
    Linear(Linear) = "linear" | "dense";
    Dropout(Dropout) = "dropout";
    DropPath(DropPath) = "drop_path" | "stochastic_depth";
    LogSoftmax(LogSoftmax) = "log_softmax";
    Softmax(Softmax) = "softmax";
    Residual(Residual) = "residual";
    Concat(Concat) = "concat";
    Gate(Gate) = "gate";
}

impl Op {
    /// The convolution's geometry, for a conv2d layer.
    pub fn conv(&self) -> Option<&ConvGeometry> {
        match self {
            Op::Conv2d(c) => Some(&c.geometry),
            _ => None,
        }
    }
    /// A final softmax or log-softmax.
    pub fn is_output_activation(&self) -> bool {
        matches!(self, Op::Softmax(_) | Op::LogSoftmax(_))
    }
}

/// Every accepted `"type"`, for error messages.
pub fn type_names() -> Vec<&'static str> {
    KINDS.iter().map(|k| k.name).collect()
}

/// One entry of a `layers` list: a kind with its settings, and what every
/// kind may take besides (`trainable`), handled here rather than by each
/// kind.
#[derive(Debug, Clone, PartialEq)]
pub struct Layer {
    pub spec: LayerKind,
    /// `false` freezes the layer: the optimizer never changes its
    /// parameters (those of the layers inside a block too). Its running
    /// statistics, if any, still follow the data.
    pub trainable: bool,
    /// Its module's name in a PyTorch state_dict (`layer1.0.conv1`), by
    /// source where they differ: what `cnn import` and `cnn export --names`
    /// map its tensors to (`layer1.0.conv1.weight`).
    pub torch_name: Option<TorchName>,
}

impl From<LayerKind> for Layer {
    fn from(spec: LayerKind) -> Self {
        Layer {
            spec,
            trainable: true,
            torch_name: None,
        }
    }
}

/// A layer's `torch_name`: one module name for every source, or one per
/// source (`{"torchvision": "features.0.0", "timm": "conv_stem"}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TorchName {
    Same(String),
    BySource(std::collections::BTreeMap<String, String>),
}

impl TorchName {
    /// The module's name in `source`'s state_dicts, if declared.
    pub fn of(&self, source: &str) -> Option<&str> {
        match self {
            TorchName::Same(name) => Some(name),
            TorchName::BySource(names) => names.get(source).map(String::as_str),
        }
    }

    fn check(&self) -> std::result::Result<(), String> {
        let bad = |n: &str| {
            n.is_empty()
                || n.split('.').any(|part| {
                    part.is_empty() || !part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                })
        };
        let names: Vec<&str> = match self {
            TorchName::Same(n) => vec![n],
            TorchName::BySource(m) if m.is_empty() => {
                return Err(
                    "field `torch_name`: the object names no source; give a name \
                            such as \"layer1.0.conv1\" or {\"torchvision\": \"...\"}"
                        .into(),
                );
            }
            TorchName::BySource(m) => m.values().map(String::as_str).collect(),
        };
        match names.into_iter().find(|n| bad(n)) {
            Some(n) => Err(format!(
                "field `torch_name`: \"{n}\" is not a module path; expected dot-separated names \
                 such as \"layer1.0.conv1\""
            )),
            None => Ok(()),
        }
    }
}

impl Layer {
    /// The canonical `"type"`.
    pub fn kind(&self) -> &'static str {
        self.spec.kind()
    }

    fn resolve(&self, cx: &Cx) -> Result<(Op, Shape)> {
        self.spec.resolve(cx)
    }
}

impl Serialize for Layer {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut v = serde_json::to_value(&self.spec).map_err(serde::ser::Error::custom)?;
        // Written out like every default, so that `--set` finds it.
        if let Value::Object(map) = &mut v {
            map.insert("trainable".into(), Value::Bool(self.trainable));
            if let Some(name) = &self.torch_name {
                let name = serde_json::to_value(name).map_err(serde::ser::Error::custom)?;
                map.insert("torch_name".into(), name);
            }
        }
        v.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Layer {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(d)?;
        let (value, trainable, torch_name) =
            take_common(value).map_err(serde::de::Error::custom)?;
        let spec = LayerKind::deserialize(value).map_err(serde::de::Error::custom)?;
        Ok(Layer {
            spec,
            trainable,
            torch_name,
        })
    }
}

/// Removes the fields every kind takes (`trainable`, `torch_name`) from a
/// layer's object.
fn take_common(mut value: Value) -> std::result::Result<(Value, bool, Option<TorchName>), String> {
    let map = value.as_object_mut();
    let trainable = map.as_ref().and_then(|m| m.get("trainable")).cloned();
    let torch_name = map.and_then(|m| m.remove("torch_name"));
    if let Some(m) = value.as_object_mut() {
        m.remove("trainable");
    }
    let trainable = match trainable {
        None => true,
        Some(Value::Bool(b)) => b,
        Some(other) => {
            return Err(format!(
                "field `trainable`: expected true or false, got {other}"
            ));
        }
    };
    let torch_name = match torch_name {
        None | Some(Value::Null) => None,
        Some(v) => {
            let name: TorchName = serde_json::from_value(v.clone()).map_err(|_| {
                format!(
                    "field `torch_name`: expected a module name such as \"layer1.0.conv1\" or names by \
                     source such as {{\"torchvision\": \"features.0.0\"}}, got {}",
                    crate::json::show(&v)
                )
            })?;
            name.check()?;
            Some(name)
        }
    };
    Ok((value, trainable, torch_name))
}

/// Decodes one entry of a layer list; errors start with `name` (`layer 3`
/// at the top level, `layers.2` inside a block) and the kind, then name the
/// field.
pub fn decode_layer(name: &str, value: Value) -> std::result::Result<Layer, String> {
    let Value::Object(mut fields) = value else {
        return Err(format!(
            "{name}: expected an object like {{\"type\": \"relu\"}}, got {}",
            crate::json::show(&value)
        ));
    };
    let kind = match fields.remove("type") {
        Some(Value::String(s)) => s,
        Some(other) => {
            return Err(format!(
                "{name}: \"type\" must be a string such as \"conv2d\", got {}",
                crate::json::show(&other)
            ));
        }
        None => {
            return Err(format!(
                "{name}: missing \"type\"; expected one of: {}",
                type_names().join(", ")
            ));
        }
    };
    let (fields, trainable, torch_name) =
        take_common(Value::Object(fields)).map_err(|e| format!("{name} ({kind}): {e}"))?;
    match LayerKind::decode_fields(&kind, &fields) {
        None => Err(format!(
            "{name}: unknown layer type \"{kind}\"; expected one of: {}",
            type_names().join(", ")
        )),
        Some(Ok(spec)) => Ok(Layer {
            spec,
            trainable,
            torch_name,
        }),
        Some(Err(msg)) => {
            // A layer inside this block: its message starts with its list.
            let nested = ["layers.", "shortcut.", "branches."]
                .iter()
                .any(|list| msg.starts_with(list));
            let joint = if nested { " → " } else { ": " };
            Err(format!("{name} ({kind}){joint}{msg}"))
        }
    }
}

/// Decodes a block's list of layers, named `list` in messages.
pub fn decode_list(list: &str, values: Vec<Value>) -> std::result::Result<Vec<Layer>, String> {
    values
        .into_iter()
        .enumerate()
        .map(|(i, v)| decode_layer(&format!("{list}.{i}"), v))
        .collect()
}
