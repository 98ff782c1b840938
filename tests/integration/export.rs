//! `cnn export` checked by a second implementation: every shipped config,
//! trained for a few steps on real data, and networks that use every layer
//! kind are exported and run by ONNX Runtime (from PyPI, in the venv that
//! scripts/dev/onnx-venv.sh makes on first use; CNN_ONNX_PYTHON names
//! another Python that has onnxruntime, onnx and numpy) on 1,000 real test
//! images. The outputs must match cnn's logits within 1e-4 and give the
//! same classes. Then the refusals: files that are not cnn checkpoints, an
//! existing output without --force, the checkpoint itself as the output.

use crate::cifar::{colourise, write_cifar};
use crate::common::*;
use candle_core::{Device, Tensor};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command as StdCommand;
use std::sync::OnceLock;

/// The largest difference allowed between cnn's and ONNX Runtime's logits.
const TOLERANCE: f32 = 1e-4;

/// The shipped configs (and recipes) by the data they train on here.
const MNIST_CONFIGS: [&str; 6] = [
    "mlp.json",
    "oneconv.json",
    "lenet.json",
    "two-conv.json",
    "three-conv.json",
    "recipes/mnist-99.json",
];
const CIFAR_CONFIGS: [&str; 4] = [
    "cifar10-cnn.json",
    "resnet20-cifar10.json",
    "resnet9-cifar10.json",
    "recipes/cifar10-94.json",
];

/// The Python that has ONNX Runtime: CNN_ONNX_PYTHON, or the venv of
/// scripts/dev/onnx-venv.sh (made once per process; the script locks).
fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        if let Some(p) = std::env::var_os("CNN_ONNX_PYTHON") {
            return PathBuf::from(p);
        }
        let out = StdCommand::new(repo().join("scripts/dev/onnx-venv.sh"))
            .output()
            .expect("bash runs scripts/dev/onnx-venv.sh");
        assert!(
            out.status.success(),
            "scripts/dev/onnx-venv.sh failed (it installs onnxruntime from PyPI):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    })
}

/// Real test images as bytes, `n × c × h × w`.
struct Images {
    pixels: Vec<u8>,
    shape: [usize; 3],
}

impl Images {
    fn n(&self) -> usize {
        self.pixels.len() / self.shape.iter().product::<usize>()
    }
}

/// The 1,000 test images of the committed MNIST subset.
fn mnist_test() -> Images {
    let (_, _, test, _) = mnist_arrays();
    assert_eq!(test.len(), 1000 * 784);
    Images {
        pixels: test,
        shape: [1, 28, 28],
    }
}

/// The same 1,000 digits as the CIFAR-format fixture draws them.
fn cifar_test() -> Images {
    let (_, _, test, labels) = mnist_arrays();
    Images {
        pixels: colourise(&test, &labels, 1000),
        shape: [3, 32, 32],
    }
}

/// cnn's logits for `images` from a checkpoint, as `cnn eval` computes
/// them (normalised as the checkpoint records, evaluation mode).
fn cnn_logits(checkpoint: &Path, images: &Images) -> Vec<f32> {
    let loaded = cnn::commands::load_model(checkpoint, None, &Device::Cpu).unwrap();
    let norm = loaded.normalization.as_ref().unwrap();
    let batcher = cnn::data::Batcher::new(norm, &Device::Cpu);
    let per = images.shape.iter().product::<usize>();
    let xs: Vec<Tensor> = images
        .pixels
        .chunks(per)
        .map(|p| batcher.tensor_from_pixels(p, images.shape).unwrap())
        .collect();
    let mut out = Vec::new();
    for chunk in xs.chunks(100) {
        let x = Tensor::cat(chunk, 0).unwrap();
        let y = loaded.model.logits(&x, cnn::layers::Pass::eval()).unwrap();
        out.extend(y.flatten_all().unwrap().to_vec1::<f32>().unwrap());
    }
    out
}

/// ONNX Runtime's outputs for `images` (pixels / 255) and what
/// scripts/dev/onnx_compare.py says of the model.
fn onnx_outputs(dir: &Path, model: &Path, images: &Images) -> (Vec<f32>, Value) {
    let inputs = dir.join("inputs.f32");
    let outputs = dir.join("outputs.f32");
    let bytes: Vec<u8> = images
        .pixels
        .iter()
        .flat_map(|&p| (p as f32 / 255.0).to_le_bytes())
        .collect();
    std::fs::write(&inputs, bytes).unwrap();
    let [c, h, w] = images.shape;
    let out = StdCommand::new(python())
        .arg(repo().join("scripts/dev/onnx_compare.py"))
        .arg(model)
        .arg(&inputs)
        .args([images.n(), c, h, w].map(|v| v.to_string()))
        .arg(&outputs)
        .env("RAYON_NUM_THREADS", "2")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ONNX Runtime could not run {}:\n{}",
        model.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let info: Value = serde_json::from_slice(&out.stdout).unwrap();
    let values = std::fs::read(&outputs)
        .unwrap()
        .chunks(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    (values, info)
}

fn argmax(row: &[f32]) -> usize {
    (0..row.len()).fold(0, |best, i| if row[i] > row[best] { i } else { best })
}

fn probabilities(row: &[f32]) -> Vec<f32> {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = row.iter().map(|v| (v - max).exp()).collect();
    let sum: f32 = e.iter().sum();
    e.iter().map(|v| v / sum).collect()
}

/// At most [`TOLERANCE`] apart everywhere, and the same class for every
/// image. Returns how many classes cnn predicts.
fn assert_same(ours: &[f32], theirs: &[f32], classes: usize, what: &str) -> usize {
    assert_eq!(ours.len(), theirs.len(), "{what}: output sizes");
    let (at, worst) = ours
        .iter()
        .zip(theirs)
        .map(|(a, b)| (a - b).abs())
        .enumerate()
        .fold(
            (0, 0f32),
            |best, (i, d)| if d > best.1 { (i, d) } else { best },
        );
    let largest = ours.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(
        worst <= TOLERANCE,
        "{what}: ONNX Runtime's outputs differ from cnn's by up to {worst:e} (image {}, class {}: \
         {} against {}; the largest output is {largest})",
        at / classes,
        at % classes,
        theirs[at],
        ours[at]
    );
    let differ = ours
        .chunks(classes)
        .zip(theirs.chunks(classes))
        .filter(|(a, b)| argmax(a) != argmax(b))
        .count();
    assert_eq!(differ, 0, "{what}: {differ} images get another class");
    // A comparison that means something: outputs that vary from image to
    // image far more than the tolerance.
    let first = &ours[..classes];
    let spread = ours
        .chunks(classes)
        .flat_map(|r| r.iter().zip(first).map(|(a, b)| (a - b).abs()))
        .fold(0f32, f32::max);
    assert!(
        spread > 100.0 * TOLERANCE,
        "{what}: the outputs hardly vary between images (by {spread})"
    );
    let mut predicted: Vec<usize> = ours.chunks(classes).map(argmax).collect();
    predicted.sort_unstable();
    predicted.dedup();
    predicted.len()
}

/// Trains `config` for a few steps (`train` holds the flags), exports its
/// best checkpoint (with `--softmax` when asked), and checks ONNX Runtime's
/// outputs on `images` against cnn's. Returns what the model says of itself
/// and how many classes cnn predicts.
fn check(
    dir: &Path,
    config: &Path,
    train: &[&str],
    images: &Images,
    softmax: bool,
) -> (Value, usize) {
    let name = config.file_name().unwrap().to_string_lossy().into_owned();
    let run_dir = dir.join(format!("run-{name}"));
    let (code, _, err) = run(cnn(dir)
        .args(["train", "--quiet", "--epochs", "1", "--out"])
        .arg(&run_dir)
        .args(train)
        .arg("--config")
        .arg(config));
    assert_eq!(code, 0, "{name}: {err}");
    let checkpoint = run_dir.join("best.safetensors");
    let model = dir.join(format!("{name}.onnx"));
    let mut cmd = cnn(dir);
    cmd.args(["export", "--checkpoint"])
        .arg(&checkpoint)
        .arg("-o")
        .arg(&model);
    if softmax {
        cmd.arg("--softmax");
    }
    let (code, out, err) = run(&mut cmd);
    assert_eq!(code, 0, "{name}: {err}");
    assert!(out.contains("opset 13"), "{out}");

    let ours = cnn_logits(&checkpoint, images);
    let (theirs, info) = onnx_outputs(dir, &model, images);
    let classes = ours.len() / images.n();
    let ours = if softmax {
        ours.chunks(classes).flat_map(probabilities).collect()
    } else {
        ours
    };
    let predicted = assert_same(&ours, &theirs, classes, &name);
    let [c, h, w] = images.shape;
    assert_eq!(info["opset"][""], 13, "{info}");
    assert_eq!(info["input"]["name"], "pixels");
    assert_eq!(info["input"]["shape"], json!(["batch", c, h, w]));
    let output = if softmax { "probabilities" } else { "logits" };
    assert_eq!(info["output"]["name"], output);
    assert_eq!(info["output"]["shape"], json!(["batch", classes]));
    let names: Vec<String> =
        serde_json::from_str(info["metadata"]["classes"].as_str().unwrap()).unwrap();
    assert_eq!(names.len(), classes, "{info}");
    (info, predicted)
}

fn mnist_flags(data: &Path) -> Vec<String> {
    let mut v: Vec<String> = ["--limit-train", "500", "--batch-size", "50"]
        .map(String::from)
        .to_vec();
    v.extend([
        "--set".into(),
        "data.val_size=100".into(),
        "--data-dir".into(),
    ]);
    v.push(data.display().to_string());
    v
}

#[test]
fn every_shipped_config_is_checked_here() {
    let mut shipped: Vec<String> = Vec::new();
    for (folder, prefix) in [("configs", ""), ("configs/recipes", "recipes/")] {
        shipped.extend(
            std::fs::read_dir(repo().join(folder))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".json"))
                .map(|n| format!("{prefix}{n}")),
        );
    }
    shipped.sort();
    let mut here: Vec<String> = MNIST_CONFIGS
        .iter()
        .chain(&CIFAR_CONFIGS)
        .map(|s| s.to_string())
        .collect();
    here.sort();
    assert_eq!(shipped, here, "add new configs to the lists in export.rs");
}

#[test]
fn mnist_configs_give_onnx_runtime_the_same_logits() {
    let dir = tempfile::tempdir().unwrap();
    let images = mnist_test();
    let flags = mnist_flags(&mnist_small());
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    for name in MNIST_CONFIGS {
        let (info, predicted) = check(dir.path(), &config_path(name), &flags, &images, false);
        assert!(predicted > 1, "{name}: one class for every image");
        assert_eq!(info["metadata"]["dataset"], "mnist");
        let norm: Value =
            serde_json::from_str(info["metadata"]["normalization"].as_str().unwrap()).unwrap();
        assert!(norm["mean"][0].as_f64().unwrap() > 0.1, "{norm}");
    }
}

/// Trains and checks a CIFAR-10 config on the CIFAR-format fixture (at
/// learning rate `lr` when given: the ResNets' own rates, meant for batches
/// of 128 and 512 over many epochs, make a few steps of 8 images diverge).
fn check_cifar(name: &str, lr: Option<&str>) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("cifar");
    write_cifar(&data, 40, 10);
    let data = data.display().to_string();
    // Small batches, so that batch norm's running statistics (momentum 0.1)
    // settle within the few steps a test affords.
    let mut flags = vec![
        "--limit-train",
        "160",
        "--batch-size",
        "8",
        "--set",
        "data.val_size=10",
        "--set",
        r#"training.lr_schedule={"type": "constant"}"#,
        "--data-dir",
        &data,
    ];
    if let Some(lr) = lr {
        flags.extend(["--lr", lr]);
    }
    let (info, predicted) = check(dir.path(), &config_path(name), &flags, &cifar_test(), false);
    assert!(predicted > 1, "{name}: one class for every image");
    info
}

#[test]
fn cifar10_cnn_gives_onnx_runtime_the_same_logits() {
    let info = check_cifar("cifar10-cnn.json", None);
    assert_eq!(info["metadata"]["dataset"], "cifar10");
    let classes: Vec<String> =
        serde_json::from_str(info["metadata"]["classes"].as_str().unwrap()).unwrap();
    assert_eq!(classes[0], "airplane");
    // Batch norm in its inference form; dropout left out.
    let ops = info["operators"].as_array().unwrap();
    assert!(ops.contains(&json!("BatchNormalization")), "{ops:?}");
    assert!(!ops.contains(&json!("Dropout")), "{ops:?}");
}

#[test]
fn resnet20_gives_onnx_runtime_the_same_logits() {
    let info = check_cifar("resnet20-cifar10.json", Some("0.02"));
    let ops = info["operators"].as_array().unwrap();
    assert!(ops.contains(&json!("Add")), "{ops:?}");
    assert!(ops.contains(&json!("ReduceMean")), "{ops:?}");
}

/// Patch whitening, GELU as erf, fixed-scale batch norm, and the TTA views
/// left to the caller.
#[test]
fn cifar10_94_recipe_gives_onnx_runtime_the_same_logits() {
    let info = check_cifar("recipes/cifar10-94.json", Some("0.05"));
    let ops = info["operators"].as_array().unwrap();
    assert!(ops.contains(&json!("Erf")), "{ops:?}");
}

#[test]
fn resnet9_gives_onnx_runtime_the_same_logits() {
    let info = check_cifar("resnet9-cifar10.json", Some("0.001"));
    let ops = info["operators"].as_array().unwrap();
    assert!(ops.contains(&json!("ReduceMax")), "{ops:?}");
}

/// Networks on MNIST that use every layer kind and the settings with their
/// own ONNX form: reflect, replicate and circular padding, asymmetric
/// "same" padding, dilation, groups, padded pooling, uneven adaptive
/// windows, blocks with and without a shortcut, an empty concat branch,
/// batch norm without affine, a linear layer without bias.
fn every_kind() -> Vec<Value> {
    let conv = |out: usize, k: usize, more: Value| {
        let mut c = json!({"type": "conv2d", "out_channels": out, "kernel_size": k});
        c.as_object_mut()
            .unwrap()
            .extend(more.as_object().unwrap().clone());
        c
    };
    let head = vec![
        conv(4, 3, json!({"padding": 1, "padding_mode": "reflect"})),
        json!({"type": "batch_norm2d"}),
        json!({"type": "relu"}),
        conv(
            4,
            4,
            json!({"padding": "same", "padding_mode": "replicate"}),
        ),
        json!({"type": "residual",
            "layers": [
                conv(8, 3, json!({"padding": 2, "dilation": 2, "groups": 2})),
                json!({"type": "batch_norm2d", "affine": false}),
                json!({"type": "gelu"})
            ],
            "shortcut": [conv(8, 1, json!({"bias": false}))],
            "activation": "leaky_relu"}),
        json!({"type": "concat", "branches": [
            [],
            [conv(4, 3, json!({"padding": [1, 2], "padding_mode": "circular", "stride": [1, 1], "kernel_size": [3, 5]})),
             json!({"type": "tanh"})],
            [{"type": "max_pool2d", "kernel_size": 3, "stride": 1, "padding": 1}]
        ]}),
        json!({"type": "avg_pool2d", "kernel_size": 3, "stride": 2, "padding": 1}),
        json!({"type": "residual", "layers": [conv(20, 3, json!({"padding": 1})), json!({"type": "sigmoid"})]}),
        json!({"type": "dropout", "p": 0.2}),
        // MobileNet's and EfficientNet's kinds: a depthwise conv, the
        // activations, squeeze-and-excitation gates (per channel and per
        // value) and stochastic depth in an inverted residual.
        json!({"type": "residual", "layers": [
            conv(40, 1, json!({})),
            json!({"type": "relu6"}),
            conv(40, 3, json!({"padding": 1, "groups": 40})),
            json!({"type": "hardswish"}),
            json!({"type": "gate", "layers": [
                {"type": "adaptive_avg_pool2d", "output_size": 1},
                conv(8, 1, json!({})),
                {"type": "silu"},
                conv(40, 1, json!({})),
                {"type": "hardsigmoid"}
            ]}),
            json!({"type": "gate", "layers": [conv(40, 1, json!({})), {"type": "sigmoid"}]}),
            conv(20, 1, json!({})),
            json!({"type": "drop_path", "p": 0.2})
        ]}),
        // ConvNeXt's: a block of a depthwise 7×7 conv, layer norm over the
        // channels, linear layers along them and a layer scale.
        json!({"type": "residual", "layers": [
            conv(20, 7, json!({"padding": 3, "groups": 20})),
            json!({"type": "layer_norm2d"}),
            json!({"type": "channel_linear", "out_features": 80}),
            json!({"type": "gelu"}),
            json!({"type": "channel_linear", "out_features": 20, "bias": false}),
            json!({"type": "layer_scale", "init": 0.5})
        ]}),
    ];
    let flat = |to_vector: Value, last: Option<Value>| {
        let mut layers = head.clone();
        layers.push(to_vector);
        layers.push(json!({"type": "batch_norm1d"}));
        layers.push(json!({"type": "linear", "out_features": 10, "bias": false}));
        layers.extend(last);
        json!({"input_shape": [1, 28, 28], "num_classes": 10, "layers": layers,
               "data": {"dataset": "mnist", "val_size": 100}})
    };
    let mut adaptive = head.clone();
    adaptive.push(json!({"type": "adaptive_avg_pool2d", "output_size": [5, 3]}));
    adaptive.push(json!({"type": "flatten"}));
    adaptive.push(json!({"type": "linear", "out_features": 10}));
    adaptive.push(json!({"type": "log_softmax"}));
    vec![
        json!({"input_shape": [1, 28, 28], "num_classes": 10, "layers": adaptive,
               "data": {"dataset": "mnist", "val_size": 100}}),
        flat(
            json!({"type": "global_avg_pool2d"}),
            Some(json!({"type": "softmax"})),
        ),
        flat(json!({"type": "global_max_pool2d"}), None),
    ]
}

#[test]
fn every_layer_kind_gives_onnx_runtime_the_same_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let images = mnist_test();
    let data = mnist_small().display().to_string();
    let flags = [
        "--limit-train",
        "1000",
        "--batch-size",
        "50",
        "--lr",
        "0.003",
        "--data-dir",
        &data,
    ];
    let mut kinds = std::collections::BTreeSet::new();
    for (i, config) in every_kind().into_iter().enumerate() {
        collect_kinds(&config["layers"], &mut kinds);
        let path = write_config(dir.path(), &format!("kinds{i}.json"), &config);
        // The second network also as probabilities.
        let softmax = i == 1;
        let (info, _) = check(dir.path(), &path, &flags, &images, softmax);
        let ops = info["operators"].as_array().unwrap();
        if i == 0 {
            for op in ["Pad", "Slice", "Concat", "MatMul", "Erf", "LeakyRelu"] {
                assert!(ops.contains(&json!(op)), "{op} missing from {ops:?}");
            }
        }
    }
    let all: std::collections::BTreeSet<String> = cnn::layers::KINDS
        .iter()
        .map(|k| k.name.to_string())
        .collect();
    assert_eq!(kinds, all, "add new kinds to these networks");
}

/// The `type` of every layer of a list, inside blocks too.
fn collect_kinds(list: &Value, out: &mut std::collections::BTreeSet<String>) {
    for layer in list.as_array().unwrap() {
        out.insert(layer["type"].as_str().unwrap().to_string());
        if let Some(act) = layer.get("activation") {
            out.insert(act.as_str().unwrap().to_string());
        }
        for key in ["layers", "shortcut"] {
            if layer.get(key).is_some() {
                collect_kinds(&layer[key], out);
            }
        }
        if let Some(branches) = layer.get("branches") {
            for b in branches.as_array().unwrap() {
                collect_kinds(b, out);
            }
        }
    }
}

#[test]
fn export_refuses_what_it_cannot_use_and_never_overwrites_silently() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A trained checkpoint.
    let (code, _, err) = run(cnn(d)
        .args(["train", "--quiet", "--epochs", "1", "--out", "run"])
        .args([
            "--limit-train",
            "100",
            "--set",
            "data.val_size=100",
            "--data-dir",
        ])
        .arg(mnist_small())
        .arg("--config")
        .arg(config_path("mlp.json")));
    assert_eq!(code, 0, "{err}");
    let checkpoint = d.join("run/best.safetensors");
    let original = std::fs::read(&checkpoint).unwrap();
    let export = |args: &[&str]| {
        let mut cmd = cnn(d);
        cmd.arg("export").args(args);
        cmd
    };

    // Not a checkpoint at all, and a safetensors file without cnn's metadata.
    std::fs::write(d.join("notes.txt"), "hello").unwrap();
    assert_usage_error(
        &mut export(&["--checkpoint", "notes.txt", "-o", "a.onnx"]),
        &["notes.txt", "not a valid safetensors file"],
    );
    let t = Tensor::zeros((2, 2), candle_core::DType::F32, &Device::Cpu).unwrap();
    candle_core::safetensors::save(
        &[("0.weight", t)].into_iter().collect(),
        d.join("torch.safetensors"),
    )
    .unwrap();
    assert_usage_error(
        &mut export(&["--checkpoint", "torch.safetensors", "-o", "a.onnx"]),
        &["torch.safetensors", "not a cnn checkpoint", "cnn train"],
    );
    assert_usage_error(
        &mut export(&["--checkpoint", "missing.safetensors", "-o", "a.onnx"]),
        &["missing.safetensors"],
    );
    assert!(!d.join("a.onnx").exists());

    // An existing output is kept unless --force.
    std::fs::write(d.join("model.onnx"), "keep me").unwrap();
    let ck = checkpoint.display().to_string();
    assert_usage_error(
        &mut export(&["--checkpoint", &ck, "-o", "model.onnx"]),
        &["model.onnx already exists", "--force"],
    );
    assert_eq!(std::fs::read(d.join("model.onnx")).unwrap(), b"keep me");
    let (code, _, err) = run(&mut export(&[
        "--checkpoint",
        &ck,
        "-o",
        "model.onnx",
        "--force",
    ]));
    assert_eq!(code, 0, "{err}");
    let bytes = std::fs::read(d.join("model.onnx")).unwrap();
    let model = <cnn::onnx::proto::ModelProto as prost::Message>::decode(bytes.as_slice()).unwrap();
    assert_eq!(model.graph.unwrap().output[0].name, "logits");

    // Never the checkpoint itself, --force or not; a missing folder is named.
    assert_usage_error(
        &mut export(&["--checkpoint", &ck, "-o", &ck, "--force"]),
        &["is the checkpoint being exported"],
    );
    assert_eq!(std::fs::read(&checkpoint).unwrap(), original);
    assert_usage_error(
        &mut export(&["--checkpoint", &ck, "-o", "no/such/dir/m.onnx"]),
        &["no/such/dir", "does not exist"],
    );
    // No temporary file is left behind.
    for entry in std::fs::read_dir(d).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!name.contains(".tmp"), "left behind: {name}");
    }
}
