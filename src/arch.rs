//! The whole network checked before any tensor is allocated: the layer
//! list resolved shape by shape (each kind's rule lives in `layers`), then
//! what only the whole can tell: a final softmax placed last, a head as
//! wide as the number of classes, something to train, and a memory
//! estimate. The resulting [`Plan`] carries every layer's shapes, tensors,
//! parameter counts and multiply-adds; the model builder and `cnn summary`
//! both read it.

use crate::config::Config;
use crate::geometry::Shape;
use crate::layers::{self, Node};
use anyhow::Result;

/// A checked network: every layer with its shapes, plus warnings to show.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub input: Shape,
    pub num_classes: usize,
    pub layers: Vec<Node>,
    pub warnings: Vec<String>,
    /// What convolutions and linear layers multiply (`training.precision`).
    pub precision: crate::config::Precision,
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
    /// Parameters of layers with `trainable: false` (or inside a frozen block).
    pub fn frozen_params(&self) -> u128 {
        let mut n = 0;
        layers::walk(&self.layers, &mut |node| {
            if node.frozen {
                n += node
                    .op
                    .run()
                    .tensors()
                    .iter()
                    .filter(|t| t.trainable)
                    .map(|t| t.elements())
                    .sum::<u128>();
            }
        });
        n
    }

    /// The layer at `path`: an index in the config's list (`3`), the path of
    /// one inside a block (`5.layers.0`), or either with the checkpoint's
    /// `layers.` in front.
    pub fn find(&self, path: &str) -> Option<&Node> {
        let full = if path.starts_with("layers.") {
            path.to_string()
        } else {
            format!("layers.{path}")
        };
        let mut found = None;
        layers::walk(&self.layers, &mut |n| {
            if n.path == full {
                found = Some(n)
            }
        });
        found
    }

    /// The parameters `entry` names: every parameter of a layer (and of the
    /// layers inside it) given by its path, or one tensor given as
    /// `PATH.NAME` (`0.weight`). `None` when it names nothing.
    pub fn params_at(&self, entry: &str) -> Option<Vec<String>> {
        let params = |node: &Node| -> Vec<String> {
            node.tensors()
                .into_iter()
                .filter(|(_, t)| t.trainable)
                .map(|(name, _)| name)
                .collect()
        };
        if let Some(node) = self.find(entry) {
            return Some(params(node));
        }
        let (layer, tensor) = entry.rsplit_once('.')?;
        let node = self.find(layer)?;
        let name = format!("{}.{tensor}", node.path);
        node.op
            .run()
            .tensors()
            .iter()
            .any(|t| t.trainable && t.name == tensor)
            .then(|| vec![name])
    }

    /// The layers a message can suggest: their paths as configs give them.
    pub fn layer_paths(&self) -> String {
        format!(
            "0 to {} (inside a block, a path such as 5.layers.0; one tensor as 0.weight)",
            self.layers.len() - 1
        )
    }

    /// Index of the trailing softmax/log-softmax, if any: the loss is taken on
    /// the logits before it.
    pub fn output_activation(&self) -> Option<usize> {
        self.layers
            .last()
            .filter(|l| l.op.is_output_activation())
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
    let layers = layers::plan_list(&config.layers, input)?;
    let mut warnings = Vec::new();
    let last = layers.len() - 1;
    for node in &layers {
        let (index, kind) = (node.index, node.kind);
        if node.op.is_output_activation() && index != last {
            crate::bail_input!(
                "layer {index} ({kind}): {kind} may only be the last layer (it turns the \
                 network's outputs into probabilities); remove it or move it to the end"
            );
        }
        if let layers::Op::Softmax(_) = node.op {
            warnings.push(format!(
                "layer {index} (softmax): cross-entropy applies log-softmax itself, so a final \
                 softmax would be applied twice (a common mistake). cnn computes the loss from \
                 the outputs of layer {} and uses this softmax only for predictions; remove the \
                 layer to silence this warning.",
                index.saturating_sub(1)
            ));
        }
    }
    // The classifier's width must be the number of classes.
    let head = layers
        .iter()
        .rev()
        .find(|l| !l.op.is_output_activation())
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
    let mut trained = false;
    layers::walk(&layers, &mut |n| {
        trained |= !n.frozen && n.op.run().tensors().iter().any(|t| t.trainable)
    });
    if !trained {
        crate::bail_input!(
            "every layer with parameters has \"trainable\": false, so nothing would be trained; \
             remove \"trainable\": false from at least one of them"
        );
    }
    let plan = Plan {
        input,
        num_classes: config.num_classes,
        layers,
        warnings,
        precision: config.training.precision,
    };
    let (train, eval) = (config.training.batch_size, config.data.eval_batch_size);
    let (batch, field) = if eval > train {
        (eval, "data.eval_batch_size")
    } else {
        (train, "training.batch_size")
    };
    check_memory(&plan, batch, field)?;
    Ok(plan)
}

/// Rough bytes needed to train: weights, gradients and two optimizer moments,
/// plus every activation and its gradient for one batch.
fn check_memory(plan: &Plan, batch: usize, field: &str) -> Result<()> {
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
            "the network would need about {} GiB to train and evaluate batches of {batch} images ({field}) \
             ({} parameters, {} activation values per image); the largest layer is {i} ({}) \
             with output {} and {} parameters. Reduce its size or {field}.",
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    /// LeNet as shipped, changed by `modify`, planned.
    fn plan_lenet(modify: fn(&mut Value)) -> Result<Plan> {
        let mut v: Value = serde_json::from_str(include_str!("../configs/lenet.json")).unwrap();
        modify(&mut v);
        let config = Config::from_value(v).map_err(|e| crate::input_error!("{e}"))?;
        plan(&config)
    }

    fn layers(v: &mut Value) -> &mut Vec<Value> {
        v["layers"].as_array_mut().unwrap()
    }

    /// A change to LeNet's config, and what the message must say (nothing:
    /// the change is fine).
    type Case = (fn(&mut Value), &'static [&'static str]);

    /// Refused configs: what is changed, and what the message must say.
    /// Every message names the layer and how to fix it.
    #[test]
    fn shape_inference_refuses_what_does_not_fit_and_says_why() {
        #[rustfmt::skip]
        let cases: &[Case] = &[
            (|v| v["layers"][7]["in_features"] = json!(16),
             &["layer 7 (linear): in_features is 16 but layer 6 (flatten) outputs 16×5×5 = 400", "set it to 400"]),
            (|v| v["layers"][3]["in_channels"] = json!(3),
             &["layer 3 (conv2d): in_channels is 3 but layer 2 (avg_pool2d) outputs 6 channels"]),
            (|v| v["layers"][0]["in_channels"] = json!(3),
             &["layer 0 (conv2d): in_channels is 3 but the input is 1 channels"]),
            (|v| v["layers"][3]["kernel_size"] = json!(20),
             &["layer 3 (conv2d)", "does not fit the 14×14 input", "smaller kernel_size"]),
            (|v| v["layers"][3]["dilation"] = json!(4),
             &["layer 3 (conv2d)", "(dilation 4) does not fit the 14×14 input"]),
            (|v| for _ in 0..4 { layers(v).insert(6, json!({"type": "max_pool2d", "kernel_size": 2})) },
             &["layer 8 (max_pool2d)", "window does not fit the 1×1 input"]),
            (|v| v["layers"][2]["padding"] = json!(2),
             &["layer 2 (avg_pool2d): padding 2 is more than half the kernel size 2", "at most 1"]),
            (|v| v["layers"][11]["out_features"] = json!(100),
             &["layer 11 (linear): the network ends with 100 outputs but num_classes is 10", "out_features 10"]),
            (|v| { layers(v).truncate(6); },
             &["layer 5 (avg_pool2d): the network ends with an image of 16×5×5", "flatten"]),
            (|v| { layers(v).remove(6); },
             &["layer 6 (linear)", "an image of 16×5×5 = 400 values", "add {\"type\": \"flatten\"} before it"]),
            (|v| layers(v).insert(7, json!({"type": "conv2d", "out_channels": 4, "kernel_size": 3})),
             &["layer 7 (conv2d): needs an image input", "layer 6 (flatten) outputs 400 features"]),
            (|v| layers(v).insert(8, json!({"type": "softmax"})),
             &["layer 8 (softmax): softmax may only be the last layer"]),
            (|v| layers(v).insert(2, json!({"type": "log_softmax"})),
             &["layer 2 (log_softmax): needs the vector of class scores", "an image of 6×28×28"]),
            (|v| v["layers"][0]["out_channels"] = json!(0), &["layer 0 (conv2d): out_channels is 0"]),
            (|v| v["layers"][0]["stride"] = json!(0), &["layer 0 (conv2d): stride is 0"]),
            (|v| v["layers"][0]["stride"] = json!([1, 0]), &["layer 0 (conv2d): stride is 1×0"]),
            (|v| v["layers"][3]["groups"] = json!(4),
             &["layer 3 (conv2d): groups is 4; it must divide both in_channels (6) and out_channels (16)"]),
            (|v| v["layers"][0]["padding"] = json!("same"), &[]),
            (|v| { v["layers"][0]["padding"] = json!("same"); v["layers"][0]["stride"] = json!(2) },
             &["layer 0 (conv2d): padding \"same\" needs stride 1"]),
            (|v| { v["layers"][0]["padding"] = json!(30); v["layers"][0]["padding_mode"] = json!("reflect") },
             &["layer 0 (conv2d)", "padding_mode \"reflect\" on a 28×28 input", "use padding_mode \"zeros\""]),
            (|v| v["layers"][0]["padding"] = json!(100_000), &["layer 0 (conv2d): padding is 100000", "above 65536"]),
            (|v| v["layers"][7]["out_features"] = json!(0), &["layer 7 (linear): out_features is 0"]),
            (|v| layers(v).insert(8, json!({"type": "dropout", "p": 1.5})), &["layer 8 (dropout): p is 1.5"]),
            (|v| layers(v).insert(8, json!({"type": "batch_norm2d"})),
             &["layer 8 (batch_norm2d): needs an image input", "use batch_norm1d after flatten"]),
            (|v| layers(v).insert(1, json!({"type": "batch_norm1d"})),
             &["layer 1 (batch_norm1d): needs a feature vector", "6×28×28", "use batch_norm2d before flatten"]),
            (|v| layers(v).insert(1, json!({"type": "batch_norm2d", "num_features": 4})),
             &["layer 1 (batch_norm2d): num_features is 4 but layer 0 (conv2d) outputs 6 channels"]),
            (|v| layers(v).insert(1, json!({"type": "batch_norm2d", "eps": 0})), &["layer 1 (batch_norm2d): eps is 0"]),
            (|v| layers(v).insert(1, json!({"type": "batch_norm2d", "momentum": 2})),
             &["layer 1 (batch_norm2d): momentum is 2"]),
            (|v| { v["layers"][7]["out_features"] = json!(1_000_000_000_000u64); v["layers"][9]["in_features"] = json!(null) },
             &["GiB to train", "the largest layer is", "Reduce its size"]),
            // The kinds of the model zoo's families.
            (|v| layers(v).insert(1, json!({"type": "drop_path", "p": 1.5})), &["layer 1 (drop_path): p is 1.5"]),
            (|v| layers(v).insert(1, json!({"type": "gate", "layers": []})),
             &["layer 1 (gate): `layers` is empty", "squeeze-and-excitation"]),
            (|v| layers(v).insert(1, json!({"type": "gate", "layers": [
                {"type": "adaptive_avg_pool2d", "output_size": 1},
                {"type": "conv2d", "out_channels": 2, "kernel_size": 1}, {"type": "relu"},
                {"type": "conv2d", "out_channels": 6, "kernel_size": 1}, {"type": "sigmoid"}]})), &[]),
            (|v| layers(v).insert(1, json!({"type": "gate", "layers": [
                {"type": "adaptive_avg_pool2d", "output_size": 1},
                {"type": "conv2d", "out_channels": 4, "kernel_size": 1}]})),
             &["layer 1 (gate): the gate's layers output 4×1×1", "one factor per channel (6×1×1"]),
            (|v| layers(v).insert(7, json!({"type": "gate", "layers": [{"type": "sigmoid"}]})),
             &["layer 7 (gate): needs an image input"]),
            (|v| layers(v).insert(1, json!({"type": "layer_norm2d", "eps": 0})), &["layer 1 (layer_norm2d): eps is 0"]),
            (|v| layers(v).insert(7, json!({"type": "layer_norm2d"})), &["layer 7 (layer_norm2d): needs an image input"]),
            (|v| layers(v).insert(1, json!({"type": "channel_linear", "out_features": 0})),
             &["layer 1 (channel_linear): out_features is 0"]),
            (|v| layers(v).insert(7, json!({"type": "layer_scale"})), &["layer 7 (layer_scale): needs an image input"]),
            (|v| v["input_shape"] = json!([1, 0, 28]), &["input_shape is [1, 0, 28]"]),
            (|v| v["num_classes"] = json!(1), &["num_classes is 1; a classifier needs at least 2 classes"]),
            (|v| v["layers"] = json!([]), &["`layers` is empty"]),
            (|v| v["layers"] = json!([{"type": "flatten"}, {"type": "relu"}]),
             &["the network ends with 784 outputs"]),
            (|v| { v["num_classes"] = json!(784); v["layers"] = json!([{"type": "flatten"}]) },
             &["no trainable parameters"]),
        ];
        for (i, (modify, needles)) in cases.iter().enumerate() {
            let result = plan_lenet(*modify);
            if needles.is_empty() {
                assert!(result.is_ok(), "case {i}: {:#}", result.unwrap_err());
                continue;
            }
            let err = match result {
                Ok(_) => panic!("case {i}: planned, but should fail with {needles:?}"),
                Err(e) => e,
            };
            assert_eq!(crate::error::exit_code(&err), 2, "case {i}: {err:#}");
            let msg = format!("{err:#}");
            for needle in needles.iter() {
                assert!(
                    msg.contains(needle),
                    "case {i}: {msg:?}\n  lacks {needle:?}"
                );
            }
        }
    }

    /// Accepted configs: output shape, parameters and multiply-adds of one
    /// layer, as PyTorch and the output-size formula give them.
    #[test]
    fn shape_inference_follows_the_output_size_formula() {
        #[rustfmt::skip]
        let cases: &[(Value, [usize; 3], u128, u128)] = &[
            // (layer on a 1×28×28 input, output c/h/w, params, macs)
            (json!({"type": "conv2d", "out_channels": 6, "kernel_size": 5}), [6, 24, 24], 156, 6 * 24 * 24 * 25),
            (json!({"type": "conv2d", "out_channels": 6, "kernel_size": 5, "padding": 2}), [6, 28, 28], 156, 6 * 28 * 28 * 25),
            (json!({"type": "conv2d", "out_channels": 4, "kernel_size": 4, "padding": "same"}), [4, 28, 28], 68, 4 * 28 * 28 * 16),
            (json!({"type": "conv2d", "out_channels": 4, "kernel_size": 3, "padding": "valid", "bias": false}), [4, 26, 26], 36, 4 * 26 * 26 * 9),
            (json!({"type": "conv2d", "out_channels": 2, "kernel_size": 3, "stride": 2, "padding": 1}), [2, 14, 14], 20, 2 * 14 * 14 * 9),
            (json!({"type": "conv2d", "out_channels": 2, "kernel_size": [3, 5], "stride": [1, 2]}), [2, 26, 12], 32, 2 * 26 * 12 * 15),
            (json!({"type": "conv2d", "out_channels": 2, "kernel_size": 3, "dilation": 2}), [2, 24, 24], 20, 2 * 24 * 24 * 9),
            (json!({"type": "conv2d", "out_channels": 2, "kernel_size": 3, "padding": 1, "padding_mode": "circular"}), [2, 28, 28], 20, 2 * 28 * 28 * 9),
            (json!({"type": "max_pool2d", "kernel_size": 2}), [1, 14, 14], 0, 0),
            (json!({"type": "max_pool2d", "kernel_size": 3, "stride": 2, "padding": 1}), [1, 14, 14], 0, 0),
            (json!({"type": "avg_pool2d", "kernel_size": [2, 4]}), [1, 14, 7], 0, 0),
            (json!({"type": "batch_norm2d"}), [1, 28, 28], 2, 0),
            (json!({"type": "batch_norm2d", "affine": false}), [1, 28, 28], 0, 0),
            (json!({"type": "dropout"}), [1, 28, 28], 0, 0),
            (json!({"type": "leaky_relu", "negative_slope": 0.2}), [1, 28, 28], 0, 0),
        ];
        for (i, (layer, [c, h, w], params, macs)) in cases.iter().enumerate() {
            let layers = vec![serde_json::from_value(layer.clone()).unwrap()];
            let input = Shape::Image { c: 1, h: 28, w: 28 };
            let nodes =
                layers::plan_list(&layers, input).unwrap_or_else(|e| panic!("case {i}: {e:#}"));
            let n = &nodes[0];
            assert_eq!(
                n.output,
                Shape::Image {
                    c: *c,
                    h: *h,
                    w: *w
                },
                "case {i}"
            );
            assert_eq!((n.params, n.macs), (*params, *macs), "case {i}");
        }
    }

    /// A small residual network on 1×28×28, changed by `modify`, planned.
    fn plan_blocks(modify: fn(&mut Value)) -> Result<Plan> {
        let conv = |c: usize, s: usize| json!({"type": "conv2d", "out_channels": c, "kernel_size": 3, "stride": s, "padding": 1});
        let mut v = json!({
            "input_shape": [1, 28, 28],
            "num_classes": 10,
            "layers": [
                conv(8, 1),
                {"type": "residual", "layers": [conv(8, 1), {"type": "relu"}, conv(8, 1)], "activation": "relu"},
                {"type": "residual", "layers": [conv(16, 2), {"type": "batch_norm2d"}],
                 "shortcut": [{"type": "conv2d", "out_channels": 16, "kernel_size": 1, "stride": 2}]},
                {"type": "concat", "branches": [[conv(4, 1)], [], [{"type": "max_pool2d", "kernel_size": 3, "stride": 1, "padding": 1}]]},
                {"type": "global_avg_pool2d"},
                {"type": "linear", "out_features": 10}
            ]
        });
        modify(&mut v);
        let config = Config::from_value(v).map_err(|e| crate::input_error!("{e}"))?;
        plan(&config)
    }

    #[test]
    fn blocks_resolve_their_lists_and_name_their_tensors_down_the_nesting() {
        let plan = plan_blocks(|_| {}).unwrap();
        let shapes: Vec<String> = plan.layers.iter().map(|l| l.output.to_string()).collect();
        assert_eq!(
            shapes,
            ["8×28×28", "8×28×28", "16×14×14", "36×14×14", "36", "10"]
        );
        let names: Vec<String> = plan.layers[2]
            .tensors()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(
            names,
            [
                "layers.2.layers.0.weight",
                "layers.2.layers.0.bias",
                "layers.2.layers.1.weight",
                "layers.2.layers.1.bias",
                "layers.2.layers.1.running_mean",
                "layers.2.layers.1.running_var",
                "layers.2.shortcut.0.weight",
                "layers.2.shortcut.0.bias"
            ]
        );
        assert_eq!(
            plan.layers[3].tensors()[0].0,
            "layers.3.branches.0.0.weight"
        );
        // A block's counts are its layers'.
        assert_eq!(plan.layers[1].params, 2 * (8 * 8 * 9 + 8));
        assert_eq!(plan.layers[1].macs, 2 * 8 * 28 * 28 * 8 * 9);
        assert_eq!(
            plan.params(),
            plan.layers.iter().map(|l| l.params).sum::<u128>()
        );
    }

    #[test]
    fn blocks_refuse_what_does_not_fit_and_name_the_path() {
        #[rustfmt::skip]
        let cases: &[Case] = &[
            (|v| v["layers"][1]["layers"] = json!([]), &["layer 1 (residual): `layers` is empty"]),
            (|v| v["layers"][2]["shortcut"] = json!([]), &["layer 2 (residual): `shortcut` is empty", "leave it out"]),
            (|v| { v["layers"][2].as_object_mut().unwrap().remove("shortcut"); },
             &["layer 2 (residual): the block's layers output 16×14×14 but its identity shortcut passes the input, 8×28×28",
               "\"kernel_size\": 1, \"stride\": 2"]),
            (|v| v["layers"][2]["shortcut"] = json!([{"type": "conv2d", "out_channels": 16, "kernel_size": 1}]),
             &["layer 2 (residual): the block's layers output 16×14×14 but its shortcut outputs 16×28×28", "\"stride\": 2"]),
            (|v| v["layers"][1]["layers"][2]["kernel_size"] = json!(40),
             &["layer 1 (residual) → layers.2 (conv2d): the 40×40 kernel does not fit the 28×28 input"]),
            (|v| v["layers"][2]["shortcut"][0]["in_channels"] = json!(3),
             &["layer 2 (residual) → shortcut.0 (conv2d): in_channels is 3 but the block's input is 8 channels"]),
            (|v| v["layers"][1]["layers"][1]["in_channels"] = json!(3),
             &["layer 1 (residual) → layers.1 (relu): unknown field `in_channels`"]),
            (|v| v["layers"][1]["layers"][0]["kernal_size"] = json!(3),
             &["layer 1 (residual) → layers.0 (conv2d): unknown field `kernal_size`"]),
            (|v| v["layers"][1]["activation"] = json!("conv2d"), &["layer 1 (residual): activation is \"conv2d\""]),
            (|v| v["layers"][3]["branches"][0][0]["stride"] = json!(2),
             &["layer 3 (concat)", "same height and width", "branch 0: 4×7×7, branch 1: 16×14×14"]),
            (|v| v["layers"][3]["branches"] = json!([[]]), &["layer 3 (concat): `branches` has 1 branch(es)"]),
            (|v| v["layers"][3]["branches"][1] = json!([{"type": "flatten"}]), &["layer 3 (concat)", "images and others vectors"]),
            (|v| v["layers"].as_array_mut().unwrap().insert(5, json!({"type": "max_pool2d", "kernel_size": 2})),
             &["layer 5 (max_pool2d): needs an image input", "layer 4 (global_avg_pool2d) outputs 36 features",
               "a global pool already reduced each channel"]),
            (|v| v["layers"][4] = json!({"type": "adaptive_avg_pool2d", "output_size": 20}),
             &["layer 4 (adaptive_avg_pool2d): output_size is 20 but the input is only 14×14"]),
            (|v| {
                let mut inner = json!({"type": "relu"});
                for _ in 0..10 {
                    inner = json!({"type": "residual", "layers": [inner]});
                }
                v["layers"][1] = inner;
            }, &["nested more than 8 deep"]),
            (|v| { v["layers"].as_array_mut().unwrap().truncate(4); },
             &["layer 3 (concat): the network ends with an image of 36×14×14"]),
            (|v| v["layers"][5] = json!({"type": "concat", "branches": [[{"type": "linear", "out_features": 4}], [{"type": "linear", "out_features": 4}]]}),
             &["layer 5 (concat): the network ends with 8 outputs but num_classes is 10"]),
        ];
        for (i, (modify, needles)) in cases.iter().enumerate() {
            let err = match plan_blocks(*modify) {
                Ok(_) => panic!("case {i}: planned, but should fail with {needles:?}"),
                Err(e) => e,
            };
            assert_eq!(crate::error::exit_code(&err), 2, "case {i}: {err:#}");
            let msg = format!("{err:#}");
            for needle in needles.iter() {
                assert!(
                    msg.contains(needle),
                    "case {i}: {msg:?}\n  lacks {needle:?}"
                );
            }
        }
    }

    #[test]
    fn shipped_configs_have_pytorchs_parameter_counts() {
        for (text, params) in [
            (include_str!("../configs/oneconv.json"), 52_084),
            (include_str!("../configs/three-conv.json"), 123_222),
            (include_str!("../configs/two-conv.json"), 141_258),
            (include_str!("../configs/lenet.json"), 61_706),
            (include_str!("../configs/mlp.json"), 79_510),
        ] {
            let config = Config::from_value(serde_json::from_str(text).unwrap()).unwrap();
            assert_eq!(plan(&config).unwrap().params(), params);
        }
    }
}
