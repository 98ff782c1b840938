//! What `cnn export` writes: a checkpoint's network as an ONNX model for
//! inference, needing nothing else to run.
//!
//! - Input `pixels`: float32 `[batch, C, H, W]`, pixel values scaled to
//!   [0, 1] (byte / 255, as torchvision's `ToTensor`), gray or RGB as the
//!   network takes. The normalisation the checkpoint records is the graph's
//!   first two nodes (`Sub` the mean, `Div` by the std, per channel).
//! - Then every layer in evaluation form (each kind writes its own nodes:
//!   `layers::Run::onnx`): batch norm on its running statistics, dropout
//!   left out.
//! - Output `logits`: float32 `[batch, classes]`, the scores `cnn eval`
//!   ranks (a final softmax or log-softmax of the config is left out, as the
//!   loss leaves it out), or `probabilities` with a softmax appended.
//! - `metadata_props`: the class names (`classes`, a JSON array), the
//!   normalisation, the input and output, the dataset and the config.
//!
//! The batch dimension is dynamic; the opset is [`onnx::OPSET`].

use crate::arch::Plan;
use crate::config::Config;
use crate::data::Normalization;
use crate::geometry::Shape;
use crate::layers;
use crate::onnx::{self, Attr, Graph, ModelInfo};
use anyhow::Result;
use candle_core::Tensor;

/// The input's name.
pub const INPUT: &str = "pixels";
/// The output's name without `--softmax`.
pub const LOGITS: &str = "logits";
/// The output's name with `--softmax`.
pub const PROBABILITIES: &str = "probabilities";

/// A trained network as a checkpoint describes it.
pub struct Network<'a> {
    pub config: &'a Config,
    pub plan: &'a Plan,
    /// Every tensor of the plan in checkpoint order ([`layers::Node::tensors`]).
    pub tensors: &'a [Tensor],
    pub normalization: &'a Normalization,
    pub classes: &'a [String],
    pub dataset: &'a str,
    /// Epochs the weights were trained for.
    pub epoch: usize,
}

/// Builds the ONNX model of `net`; with `softmax`, the output is the class
/// probabilities.
pub fn model(net: &Network, softmax: bool) -> Result<onnx::proto::ModelProto> {
    let Shape::Image { c, h, w } = net.plan.input else {
        crate::bail_input!("the network's input is not an image; cnn exports image classifiers");
    };
    let mut g = Graph::new(INPUT);
    let per_channel = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
    let norm = net.normalization;
    let mean = g.floats("normalize.mean", &[1, c, 1, 1], &per_channel(&norm.mean));
    let std = g.floats("normalize.std", &[1, c, 1, 1], &per_channel(&norm.std));
    let centred = g.node("Sub", "normalize.centred", &[INPUT, &mean], &[]);
    let x = g.node("Div", "normalize", &[&centred, &std], &[]);

    let plan = net.plan;
    let end = plan.output_activation().unwrap_or(plan.layers.len());
    let mut y = layers::onnx_list(&plan.layers, net.tensors, &mut g, &x, end)?;
    let output = if softmax {
        y = g.node("Softmax", "softmax", &[&y], &[("axis", Attr::Int(-1))]);
        PROBABILITIES
    } else {
        LOGITS
    };
    let output = g.rename(&y, output);

    let classes = plan.num_classes;
    let channels = if c == 3 { "RGB" } else { "gray" };
    let input_doc = format!(
        "float32 [batch, {c}, {h}, {w}]: {channels} pixels scaled to [0, 1] (byte value / 255); \
         the graph normalises them itself"
    );
    let output_doc = if softmax {
        format!("float32 [batch, {classes}]: class probabilities (metadata \"classes\" names them)")
    } else {
        format!(
            "float32 [batch, {classes}]: class scores (logits; softmax gives probabilities, \
             metadata \"classes\" names them)"
        )
    };
    let metadata = vec![
        ("classes".to_string(), json(&net.classes)),
        ("normalization".to_string(), json(norm)),
        ("input".to_string(), input_doc.clone()),
        ("output".to_string(), output_doc.clone()),
        ("dataset".to_string(), net.dataset.to_string()),
        ("epoch".to_string(), net.epoch.to_string()),
        ("config".to_string(), json(net.config)),
    ];
    let info = ModelInfo {
        name: net.config.display_name(),
        doc: net.config.description.as_deref().unwrap_or(""),
        input: (INPUT, vec![c, h, w], &input_doc),
        output: (&output, vec![classes], &output_doc),
        metadata,
    };
    Ok(onnx::model(g, info))
}

/// A metadata value as JSON text.
fn json<T: serde::Serialize + ?Sized>(v: &T) -> String {
    serde_json::to_string(v).expect("metadata serialises")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::{KINDS, Node};
    use candle_core::{DType, Device};
    use serde_json::{Value, json};
    use std::collections::BTreeSet;

    fn example(name: &str) -> Value {
        let k = KINDS.iter().find(|k| k.name == name).unwrap();
        serde_json::from_str(k.example).unwrap()
    }

    /// The model of `layers` on 1×8×8 inputs with zero weights.
    fn export(layers: Vec<Value>, softmax: bool) -> Result<onnx::proto::ModelProto> {
        let config =
            json!({"name": "all", "input_shape": [1, 8, 8], "num_classes": 10, "layers": layers});
        let config = Config::from_value(config).unwrap();
        let plan = crate::arch::plan(&config).unwrap();
        let tensors: Vec<Tensor> = plan
            .layers
            .iter()
            .flat_map(Node::tensors)
            .map(|(_, spec)| Tensor::zeros(spec.dims, DType::F32, &Device::Cpu).unwrap())
            .collect();
        let classes: Vec<String> = (0..10).map(|i| i.to_string()).collect();
        let net = Network {
            config: &config,
            plan: &plan,
            tensors: &tensors,
            normalization: &Normalization::identity(1),
            classes: &classes,
            dataset: "mnist",
            epoch: 1,
        };
        model(&net, softmax)
    }

    fn operators(m: &onnx::proto::ModelProto) -> BTreeSet<String> {
        let g = m.graph.as_ref().unwrap();
        g.node.iter().map(|n| n.op_type.clone()).collect()
    }

    /// Fails for a kind added to the registry without an ONNX form (or
    /// left out of these networks).
    #[test]
    fn every_kind_has_an_onnx_form() {
        let image = [
            "conv2d",
            "batch_norm2d",
            "relu",
            "residual",
            "concat",
            "gate",
            "layer_norm2d",
            "layer_scale",
            "channel_linear",
            "max_pool2d",
            "leaky_relu",
            "adaptive_avg_pool2d",
            "avg_pool2d",
            "sigmoid",
            "tanh",
            "gelu",
            "relu6",
            "hardsigmoid",
            "hardswish",
            "silu",
            "dropout",
            "drop_path",
        ];
        let mut seen = BTreeSet::new();
        for (to_vector, last) in [
            ("flatten", "log_softmax"),
            ("global_avg_pool2d", "softmax"),
            ("global_max_pool2d", "softmax"),
        ] {
            let names: Vec<&str> = image
                .iter()
                .copied()
                .chain([to_vector, "batch_norm1d", "linear", last])
                .collect();
            let layers = names.iter().map(|n| example(n)).collect();
            let m = export(layers, false).unwrap_or_else(|e| panic!("exporting {names:?}: {e:#}"));
            let ops = operators(&m);
            for op in ["Conv", "BatchNormalization", "Add", "Concat", "Gemm", "Erf"] {
                assert!(ops.contains(op), "{op} missing from {ops:?}");
            }
            // The final softmax/log-softmax is left out of the logits.
            assert!(!ops.contains("Softmax") && !ops.contains("LogSoftmax"));
            seen.extend(names.iter().map(|s| s.to_string()));
        }
        let all: BTreeSet<String> = KINDS.iter().map(|k| k.name.to_string()).collect();
        assert_eq!(seen, all, "add new kinds to these networks");
    }

    #[test]
    fn padding_modes_become_pad_nodes_or_slices() {
        let conv = |mode: &str| json!({"type": "conv2d", "out_channels": 2, "kernel_size": 3, "padding": 1, "padding_mode": mode});
        let tail = [
            json!({"type": "flatten"}),
            json!({"type": "linear", "out_features": 10}),
        ];
        for (mode, op) in [
            ("zeros", "Conv"),
            ("reflect", "Pad"),
            ("replicate", "Pad"),
            ("circular", "Slice"),
        ] {
            let layers = std::iter::once(conv(mode)).chain(tail.clone()).collect();
            let m = export(layers, false).unwrap();
            let g = m.graph.as_ref().unwrap();
            assert!(operators(&m).contains(op), "{mode}: {:?}", operators(&m));
            let conv = g.node.iter().find(|n| n.op_type == "Conv").unwrap();
            let pads = &conv
                .attribute
                .iter()
                .find(|a| a.name == "pads")
                .unwrap()
                .ints;
            let expected: Vec<i64> = if mode == "zeros" {
                vec![1; 4]
            } else {
                vec![0; 4]
            };
            assert_eq!(pads, &expected, "{mode}");
        }
    }

    #[test]
    fn the_model_describes_its_input_output_and_classes() {
        let layers = vec![
            json!({"type": "flatten"}),
            json!({"type": "linear", "out_features": 10}),
        ];
        for (softmax, name) in [(false, LOGITS), (true, PROBABILITIES)] {
            let m = export(layers.clone(), softmax).unwrap();
            assert_eq!(m.opset_import[0].version, onnx::OPSET);
            let g = m.graph.as_ref().unwrap();
            assert_eq!(g.input[0].name, INPUT);
            assert_eq!(g.output[0].name, name);
            let last = g.node.last().unwrap();
            assert_eq!(last.output, [name]);
            assert_eq!(last.op_type, if softmax { "Softmax" } else { "Gemm" });
            let meta: std::collections::HashMap<_, _> = m
                .metadata_props
                .iter()
                .map(|p| (p.key.as_str(), p.value.as_str()))
                .collect();
            let classes: Vec<String> = serde_json::from_str(meta["classes"]).unwrap();
            assert_eq!(classes.len(), 10);
            assert!(meta["input"].contains("[0, 1]"), "{}", meta["input"]);
        }
    }
}
