//! The model zoo (`configs/zoo/`) against torchvision itself: for every zoo
//! config, torchvision (from PyPI, in the venv of scripts/dev/torch-venv.sh;
//! CNN_TORCH_PYTHON names another Python with torch and torchvision) builds
//! the network with its own random initialisation and random batch-norm
//! statistics and saves its state_dict; `cnn import` makes it a checkpoint,
//! whose logits on real photos (the committed pets, resized as cnn resizes
//! them) must be torchvision's within a relative 1e-4, with the same
//! parameter count; `cnn export --format torchvision` must give a file that
//! `load_state_dict(strict=True)` takes, with the same logits again. Then
//! what `cnn import` refuses, and fine-tuning an imported network for the
//! classes of a photo folder.

use crate::common::*;
use candle_core::{Device, Tensor};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command as StdCommand;
use std::sync::OnceLock;

/// Largest difference allowed, relative to the largest logit.
const RELATIVE: f32 = 1e-4;

/// The zoo's configs and the torchvision builder each copies.
const ZOO: [(&str, &str); 6] = [
    ("resnet18.json", "resnet18"),
    ("resnet50.json", "resnet50"),
    ("mobilenet_v2.json", "mobilenet_v2"),
    ("mobilenet_v3_large.json", "mobilenet_v3_large"),
    ("efficientnet_b0.json", "efficientnet_b0"),
    ("convnext_tiny.json", "convnext_tiny"),
];

/// The Python with torch and torchvision: CNN_TORCH_PYTHON, or the venv
/// scripts/dev/torch-venv.sh makes (once; ~2.4 GB from PyPI).
fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        if let Some(p) = std::env::var_os("CNN_TORCH_PYTHON") {
            return PathBuf::from(p);
        }
        let venv = std::env::var_os("HOME")
            .map(|h| PathBuf::from(h).join(".cache/cnn/torch-venv"))
            .expect("HOME is set");
        let out = StdCommand::new(repo().join("scripts/dev/torch-venv.sh"))
            .env("CNN_TORCH_VENV", &venv)
            .output()
            .expect("bash runs scripts/dev/torch-venv.sh");
        assert!(
            out.status.success(),
            "scripts/dev/torch-venv.sh failed (it installs torch from PyPI):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8(out.stdout).unwrap();
        PathBuf::from(stdout.lines().last().unwrap().trim())
    })
}

/// The committed pets (real CIFAR-10 photos), as `cnn` makes a 3×h×w
/// input of them: resized, normalised as `norm` says. `n × 3 × h × w`.
fn photos(n: usize, h: usize, w: usize, mean: &[f64], std: &[f64]) -> Vec<f32> {
    let mut files: Vec<PathBuf> = ["cat", "dog"]
        .iter()
        .flat_map(|c| std::fs::read_dir(repo().join("tests/fixtures/pets").join(c)).unwrap())
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let step = files.len() / n;
    let norm = cnn::data::Normalization {
        mean: mean.to_vec(),
        std: std.to_vec(),
    };
    let batcher = cnn::data::Batcher::new(&norm, &Device::Cpu);
    let mut out = Vec::new();
    for f in files.iter().step_by(step).take(n) {
        let fit = cnn::data::convert::Fit::Stretch;
        let pixels = cnn::data::convert::load_image(f, 3, h, w, fit, None).unwrap();
        let x = batcher.tensor_from_pixels(&pixels, [3, h, w]).unwrap();
        out.extend(x.flatten_all().unwrap().to_vec1::<f32>().unwrap());
    }
    out
}

fn write_f32(path: &Path, values: &[f32]) {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(path, bytes).unwrap();
}

fn read_f32(path: &Path) -> Vec<f32> {
    std::fs::read(path)
        .unwrap()
        .chunks(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

/// Runs scripts/dev/zoo_reference.py (torchvision's models, or timm's as
/// `timm:NAME`); returns what it prints.
fn torchvision(args: &[String]) -> Value {
    let out = StdCommand::new(python())
        .arg(repo().join("scripts/dev/zoo_reference.py"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "zoo_reference.py {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// cnn's logits for the `n` inputs from a checkpoint, in evaluation mode.
fn cnn_logits(checkpoint: &Path, inputs: &[f32], n: usize, shape: [usize; 3]) -> Vec<f32> {
    let loaded = cnn::commands::load_model(checkpoint, None, &Device::Cpu).unwrap();
    let [c, h, w] = shape;
    let x = Tensor::from_slice(inputs, (n, c, h, w), &Device::Cpu).unwrap();
    let y = loaded.model.logits(&x, cnn::layers::Pass::eval()).unwrap();
    y.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// Within [`RELATIVE`] of the largest logit everywhere, same classes, and
/// logits that differ between images by far more than that.
fn assert_close(ours: &[f32], theirs: &[f32], classes: usize, what: &str) {
    assert_eq!(ours.len(), theirs.len(), "{what}: sizes");
    let largest = theirs.iter().fold(0f32, |m, v| m.max(v.abs()));
    let (at, worst) = ours
        .iter()
        .zip(theirs)
        .map(|(a, b)| (a - b).abs())
        .enumerate()
        .fold((0, 0f32), |b, (i, d)| if d > b.1 { (i, d) } else { b });
    assert!(
        worst <= RELATIVE * largest,
        "{what}: cnn's logits differ from torchvision's by {worst:e} (image {}, class {}: {} \
         against {}), more than {RELATIVE} of the largest, {largest}",
        at / classes,
        at % classes,
        ours[at],
        theirs[at]
    );
    println!(
        "{what}: largest difference {worst:e}, {:e} of the largest logit {largest}",
        worst / largest
    );
    let argmax = |r: &[f32]| (0..r.len()).fold(0, |b, i| if r[i] > r[b] { i } else { b });
    for (i, (a, b)) in ours.chunks(classes).zip(theirs.chunks(classes)).enumerate() {
        assert_eq!(argmax(a), argmax(b), "{what}: image {i} gets another class");
    }
    let spread = ours[..classes]
        .iter()
        .zip(&ours[classes..2 * classes])
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(
        spread > 100.0 * RELATIVE * largest,
        "{what}: two images get nearly the same logits ({spread}); the check would mean little"
    );
}

#[test]
fn every_zoo_config_imports_torchvision_weights_exactly_and_exports_them_back() {
    let dir = tempfile::tempdir().unwrap();
    for (file, arch) in ZOO {
        imports_exactly(dir.path(), file, "torchvision", arch);
    }
}

/// The zoo's configs whose family timm has, and timm's model of each
/// (`timm.create_model(NAME)`; timm's MobileNetV3 differs from
/// torchvision's in its batch norm's eps and head, so it has no timm names).
const TIMM: [(&str, &str); 5] = [
    ("resnet18.json", "resnet18"),
    ("resnet50.json", "resnet50"),
    ("mobilenet_v2.json", "mobilenetv2_100"),
    ("efficientnet_b0.json", "efficientnet_b0"),
    ("convnext_tiny.json", "convnext_tiny"),
];

#[test]
fn timm_state_dicts_import_exactly_where_timm_has_the_family_and_export_back() {
    let dir = tempfile::tempdir().unwrap();
    for (file, arch) in TIMM {
        imports_exactly(dir.path(), file, "timm", arch);
    }
}

/// `arch` of `source` (torchvision or timm) from its random initialisation,
/// imported into the zoo config `file`: the same parameters, multiply-adds
/// and logits on the pets, a self-describing checkpoint, and an export
/// back under the source's names that it loads strictly with the same
/// logits.
fn imports_exactly(d: &Path, file: &str, source: &str, arch: &str) {
    let n = 4;
    let config = repo().join("configs/zoo").join(file);
    let json: Value = serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    let shape: [usize; 3] = serde_json::from_value(json["input_shape"].clone()).unwrap();
    let norm = &json["data"]["normalize"];
    let floats = |v: &Value| -> Vec<f64> { serde_json::from_value(v.clone()).unwrap() };
    let inputs = photos(
        n,
        shape[1],
        shape[2],
        &floats(&norm["mean"]),
        &floats(&norm["std"]),
    );
    let what = format!("{source} {arch}");
    let reference = if source == "timm" {
        format!("timm:{arch}")
    } else {
        arch.to_string()
    };
    let tag = format!("{source}-{arch}");
    let x = d.join(format!("{tag}.inputs"));
    write_f32(&x, &inputs);
    let dims = [n, shape[0], shape[1], shape[2]].map(|v| v.to_string());
    let state = d.join(format!("{tag}.state.safetensors"));
    let logits = d.join(format!("{tag}.logits"));
    let s = |p: &Path| p.display().to_string();
    let mut args = vec![
        "make".into(),
        reference.clone(),
        "7".into(),
        s(&state),
        s(&x),
    ];
    args.extend(dims.iter().cloned());
    args.push(s(&logits));
    let made = torchvision(&args);

    let ckpt = d.join(format!("{tag}.safetensors"));
    let (code, out, err) = run(cnn(d)
        .args(["import", "--from", source, "--config"])
        .arg(&config)
        .arg(&state)
        .arg("-o")
        .arg(&ckpt));
    assert_eq!(code, 0, "cnn import {what}: {err}");
    let params = made["params"].as_u64().unwrap();
    let shown = params.to_string();
    let mut with_commas = String::new();
    for (i, ch) in shown.chars().enumerate() {
        if i > 0 && (shown.len() - i).is_multiple_of(3) {
            with_commas.push(',');
        }
        with_commas.push(ch);
    }
    assert!(
        out.contains(&format!("{with_commas} parameters")),
        "{what}: {out}"
    );
    let summary = summary(d, &config);
    assert_eq!(
        summary["total_params"].as_u64(),
        Some(params),
        "{what}: cnn summary's parameters against {source}'s"
    );
    assert_eq!(
        summary["total_macs"], made["macs"],
        "{what}: cnn summary's multiply-adds against {source}'s"
    );

    let theirs = read_f32(&logits);
    let ours = cnn_logits(&ckpt, &inputs, n, shape);
    assert_close(&ours, &theirs, 1000, &format!("{what} imported"));

    // The checkpoint describes itself: ImageNet's classes and mean/std.
    let info = cnn::checkpoint::load(&ckpt).unwrap().meta;
    assert_eq!(info.classes.len(), 1000);
    assert_eq!(info.classes[0], "tench");
    assert_eq!(info.normalization.mean, floats(&norm["mean"]));

    // Back to the source's names: a strict load_state_dict takes it.
    let back = d.join(format!("{tag}.back.safetensors"));
    let (code, _, err) = run(cnn(d)
        .args(["export", "--format", source, "--checkpoint"])
        .arg(&ckpt)
        .arg("-o")
        .arg(&back));
    assert_eq!(code, 0, "cnn export --format {source} {arch}: {err}");
    let again = d.join(format!("{tag}.again"));
    let mut args = vec!["load".into(), reference, s(&back), s(&x)];
    args.extend(dims.iter().cloned());
    args.push(s(&again));
    torchvision(&args);
    assert_close(
        &read_f32(&again),
        &ours,
        1000,
        &format!("{what} exported back"),
    );
}

/// `cnn summary --json`.
fn summary(dir: &Path, config: &Path) -> Value {
    let (code, out, err) = run(cnn(dir).args(["summary", "--json", "--config"]).arg(config));
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap()
}

/// A small network named as a torchvision module tree would name it.
fn tiny_config(dir: &Path) -> PathBuf {
    write_config(
        dir,
        "tiny.json",
        &json!({
            "name": "tiny", "input_shape": [3, 8, 8], "num_classes": 3,
            "data": {"dataset": "imagefolder", "normalize": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}},
            "layers": [
                {"type": "conv2d", "out_channels": 4, "kernel_size": 3, "padding": 1, "bias": false, "torch_name": "stem.conv"},
                {"type": "batch_norm2d", "torch_name": "stem.bn"},
                {"type": "relu"},
                {"type": "global_avg_pool2d"},
                {"type": "flatten"},
                {"type": "linear", "out_features": 3, "torch_name": {"torchvision": "fc", "timm": "head.fc"}}
            ]
        }),
    )
}

/// The tiny network's state_dict under `names` (torchvision's by default).
fn tiny_state(names: &[(&str, &[usize])]) -> HashMap<String, Tensor> {
    names
        .iter()
        .enumerate()
        .map(|(i, (n, d))| {
            let len: usize = d.iter().product();
            let v: Vec<f32> = (0..len)
                .map(|j| ((i * 31 + j * 7) % 13) as f32 / 13.0 + 0.1)
                .collect();
            (
                n.to_string(),
                Tensor::from_vec(v, d.to_vec(), &Device::Cpu).unwrap(),
            )
        })
        .collect()
}

const TINY: [(&str, &[usize]); 7] = [
    ("stem.conv.weight", &[4, 3, 3, 3]),
    ("stem.bn.weight", &[4]),
    ("stem.bn.bias", &[4]),
    ("stem.bn.running_mean", &[4]),
    ("stem.bn.running_var", &[4]),
    ("fc.weight", &[3, 4]),
    ("fc.bias", &[3]),
];

fn save(path: &Path, tensors: &HashMap<String, Tensor>) {
    candle_core::safetensors::save(tensors, path).unwrap();
}

#[test]
fn import_maps_by_the_declared_names_and_lists_what_does_not_fit() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let config = tiny_config(d);
    let good = d.join("good.safetensors");
    let mut state = tiny_state(&TINY);
    state.insert(
        "stem.bn.num_batches_tracked".into(),
        Tensor::new(5i64, &Device::Cpu).unwrap(),
    );
    save(&good, &state);
    let ckpt = d.join("tiny.safetensors");
    let (code, out, err) = run(cnn(d)
        .args(["import", "--from", "torchvision", "--config"])
        .arg(&config)
        .arg(&good)
        .args(["-o", "tiny.safetensors"]));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("3 classes"), "{out}");
    // Each tensor went where its name says, not where its order would.
    let weights = cnn::checkpoint::load(&ckpt).unwrap().weights;
    for (torch, cnn_name) in [
        ("stem.bn.running_var", "layers.1.running_var"),
        ("stem.bn.running_mean", "layers.1.running_mean"),
        ("fc.weight", "layers.5.weight"),
    ] {
        let a = state[torch]
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let b = weights[cnn_name]
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(a, b, "{torch} -> {cnn_name}");
    }
    // Evaluating it works with nothing else given (eval's data would be an
    // image folder; predict needs none).
    let (code, _, err) = run(cnn(d)
        .args(["predict", "--checkpoint", "tiny.safetensors", "--json"])
        .arg(repo().join("tests/fixtures/pets/cat/cat-00.png")));
    assert_eq!(code, 0, "{err}");
    // An existing output is kept without --force.
    let err = assert_usage_error(
        cnn(d)
            .args(["import", "--from", "torchvision", "--config"])
            .arg(&config)
            .arg(&good)
            .args(["-o", "tiny.safetensors"]),
        &["tiny.safetensors", "--force"],
    );
    assert!(!err.contains("panicked"));
    // timm names the head otherwise: the same file misses head.fc.*.
    assert_usage_error(
        cnn(d)
            .args(["import", "--from", "timm", "--config"])
            .arg(&config)
            .arg(&good)
            .args(["-o", "timm.safetensors"]),
        &[
            "missing (2)",
            "head.fc.weight [3, 4]",
            "unexpected (2)",
            "fc.bias [3]",
        ],
    );
    assert!(!d.join("timm.safetensors").exists());

    // One list of everything wrong at once.
    let mut bad = tiny_state(&TINY);
    bad.remove("stem.bn.running_var");
    bad.insert(
        "fc.weight".into(),
        Tensor::zeros((5, 4), candle_core::DType::F32, &Device::Cpu).unwrap(),
    );
    bad.insert(
        "extra.weight".into(),
        Tensor::zeros(2, candle_core::DType::F32, &Device::Cpu).unwrap(),
    );
    let badf = d.join("bad.safetensors");
    save(&badf, &bad);
    assert_usage_error(
        cnn(d)
            .args(["import", "--from", "torchvision", "--config"])
            .arg(&config)
            .arg(&badf)
            .args(["-o", "bad-out.safetensors"]),
        &[
            "missing (1)",
            "stem.bn.running_var [4] (layer 1 (batch_norm2d))",
            "wrong shape (1)",
            "fc.weight: file has [5, 4]",
            "unexpected (1)",
            "extra.weight [2]",
        ],
    );
    assert!(!d.join("bad-out.safetensors").exists());

    // A Lightning (`model.`) or DDP (`module.`) wrapper's prefix is taken off.
    let wrapped: HashMap<String, Tensor> = tiny_state(&TINY)
        .into_iter()
        .map(|(k, t)| (format!("model.{k}"), t))
        .collect();
    save(&d.join("wrapped.safetensors"), &wrapped);
    let (code, _, err) = run(cnn(d)
        .args(["import", "--from", "torchvision", "--config"])
        .arg(&config)
        .args(["wrapped.safetensors", "-o", "wrapped-out.safetensors"]));
    assert_eq!(code, 0, "{err}");

    // A pickle is named as one, with the conversion.
    std::fs::write(d.join("model.pth"), b"PK\x03\x04 not really a zip").unwrap();
    assert_usage_error(
        cnn(d)
            .args(["import", "--from", "torchvision", "--config"])
            .arg(&config)
            .args(["model.pth", "-o", "p.safetensors"]),
        &[
            "model.pth is a PyTorch pickle",
            "safetensors.torch",
            "save_file",
        ],
    );

    // A config without names says which layers need one.
    let plain = write_config(
        d,
        "plain.json",
        &json!({"input_shape": [3, 8, 8], "num_classes": 3,
                "data": {"normalize": "none"},
                "layers": [{"type": "flatten"}, {"type": "linear", "out_features": 3}]}),
    );
    assert_usage_error(
        cnn(d)
            .args(["import", "--from", "torchvision", "--config"])
            .arg(&plain)
            .args(["good.safetensors", "-o", "plain-out.safetensors"]),
        &[
            "no torchvision module for 1 layer",
            "layer 1 (linear)",
            "torch_name",
        ],
    );

    // A bad torch_name in a config is a config error naming the field.
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    v["layers"][0]["torch_name"] = json!("stem..conv");
    let broken = write_config(d, "broken.json", &v);
    assert_usage_error(
        cnn(d).args(["summary", "--config"]).arg(&broken),
        &[
            "layer 0",
            "torch_name",
            "\"stem..conv\" is not a module path",
        ],
    );
    // Class names from a file, checked against num_classes.
    std::fs::write(d.join("two.txt"), "cat\ndog\n").unwrap();
    assert_usage_error(
        cnn(d)
            .args(["import", "--from", "torchvision", "--config"])
            .arg(&config)
            .args([
                "good.safetensors",
                "-o",
                "c.safetensors",
                "--classes",
                "two.txt",
            ]),
        &["--classes two.txt lists 2 names", "num_classes 3"],
    );
}

#[test]
fn an_exported_state_dict_has_torch_names_and_counters() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let config = tiny_config(d);
    save(&d.join("good.safetensors"), &tiny_state(&TINY));
    let (code, _, err) = run(cnn(d)
        .args(["import", "--from", "torchvision", "--config"])
        .arg(&config)
        .args(["good.safetensors", "-o", "tiny.safetensors"]));
    assert_eq!(code, 0, "{err}");
    for (format, head) in [("torchvision", "fc"), ("timm", "head.fc")] {
        let out = format!("{format}.safetensors");
        let (code, _, err) = run(cnn(d).args([
            "export",
            "--checkpoint",
            "tiny.safetensors",
            "--format",
            format,
            "-o",
            &out,
        ]));
        assert_eq!(code, 0, "{err}");
        let back = candle_core::safetensors::load(d.join(&out), &Device::Cpu).unwrap();
        let mut names: Vec<&String> = back.keys().collect();
        names.sort();
        let mut wanted: Vec<String> = TINY
            .iter()
            .map(|(n, _)| n.replace("fc.", &format!("{head}.")))
            .chain(["stem.bn.num_batches_tracked".to_string()])
            .collect();
        wanted.sort();
        assert_eq!(names, wanted.iter().collect::<Vec<_>>(), "{format}");
        assert_eq!(
            back["stem.bn.num_batches_tracked"].dtype(),
            candle_core::DType::I64
        );
    }
}

#[test]
fn a_torchvision_resnet18_fine_tunes_on_a_photo_folder_with_a_new_head() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let s = |p: &Path| p.display().to_string();
    // torchvision's network and its state_dict (logits of two photos, unused).
    let x = d.join("x.inputs");
    write_f32(&x, &vec![0.0; 2 * 3 * 64 * 64]);
    let state = d.join("resnet18.safetensors");
    torchvision(&[
        "make".into(),
        "resnet18".into(),
        "3".into(),
        s(&state),
        s(&x),
        "2".into(),
        "3".into(),
        "64".into(),
        "64".into(),
        s(&d.join("unused.logits")),
    ]);
    let config = repo().join("configs/zoo/resnet18.json");
    // Straight from the state_dict, and from the checkpoint `cnn import` makes.
    let (code, _, err) = run(cnn(d)
        .args(["import", "--from", "torchvision", "--config"])
        .arg(&config)
        .arg(&state)
        .args(["-o", "imported.safetensors"]));
    assert_eq!(code, 0, "{err}");
    for (from, run_dir) in [
        (s(&state), "from-state"),
        ("imported.safetensors".into(), "from-import"),
    ] {
        let (code, out, err) = run(cnn(d)
            .args(["train", "--config"])
            .arg(&config)
            .args([
                "--init-from",
                &from,
                "--num-classes",
                "2",
                "--dataset",
                "imagefolder",
            ])
            .arg("--data-dir")
            .arg(repo().join("tests/fixtures/pets"))
            .args([
                "--set",
                "input_shape=[3,64,64]",
                "--set",
                "data.resize=\"stretch\"",
            ])
            .args([
                "--set",
                "data.val_size=8",
                "--set",
                "data.test_size=8",
                "--batch-size",
                "16",
            ])
            .args(["--epochs", "1", "--out", run_dir]));
        assert_eq!(code, 0, "{run_dir}: {err}");
        let err = format!("{out}{err}");
        // Every backbone tensor came from the file (102 less the head's 2);
        // the head is new.
        assert!(err.contains("took 100 tensors"), "{run_dir}: {err}");
        assert!(
            err.contains("layers.14.weight (file [1000, 512], network [2, 512])")
                && err.contains("layers.14.bias"),
            "{run_dir}: {err}"
        );
        let info = eval_json(d, &d.join(run_dir).join("best.safetensors"), &[]);
        assert_eq!(info["classes"], json!(["cat", "dog"]), "{info}");
    }
}

#[test]
fn the_zoo_configs_are_what_make_zoo_py_writes() {
    let out = StdCommand::new("python3")
        .arg(repo().join("scripts/dev/make_zoo.py"))
        .arg("--check")
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "configs/zoo/ differs from scripts/dev/make_zoo.py (run it):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn init_from_and_import_fetch_hf_addresses_once_into_the_hub_cache() {
    use crate::download::{Hub, closed_port, online};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let config = tiny_config(d);
    // timm's names: the head is head.fc.
    let timm: HashMap<String, Tensor> = tiny_state(&TINY)
        .into_iter()
        .map(|(k, t)| (k.replace("fc.", "head.fc."), t))
        .collect();
    save(&d.join("timm.safetensors"), &timm);
    let bytes = std::fs::read(d.join("timm.safetensors")).unwrap();
    let hub = Hub::start(HashMap::from([
        (
            "someone/tiny.in1k/resolve/main/model.safetensors".to_string(),
            bytes.clone(),
        ),
        (
            "someone/tiny.in1k/resolve/v2/weights/other.safetensors".to_string(),
            bytes,
        ),
    ]));
    let home = d.join("hf-cache-home");
    let pets = repo().join("tests/fixtures/pets");
    let train = |cmd: &mut assert_cmd::Command, from: &str, out: &str| {
        cmd.args(["train", "--config"])
            .arg(&config)
            .args([
                "--init-from",
                from,
                "--num-classes",
                "2",
                "--dataset",
                "imagefolder",
            ])
            .arg("--data-dir")
            .arg(&pets)
            .args([
                "--set",
                "data.val_size=8",
                "--set",
                "data.test_size=8",
                "--epochs",
                "1",
            ])
            .args(["--out", out]);
        run(cmd)
    };
    let (code, out, err) = train(
        &mut online(d, &hub.endpoint(), &home),
        "hf://someone/tiny.in1k",
        "a",
    );
    assert_eq!(code, 0, "{err}");
    let text = format!("{out}{err}");
    // The backbone from the file by timm's names; the 3-class head is new.
    assert!(text.contains("took 5 tensors"), "{text}");
    assert!(
        text.contains("layers.5.weight (file [3, 4], network [2, 4])"),
        "{text}"
    );
    // The run records the address as given.
    let recorded: Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("a/config.json")).unwrap()).unwrap();
    assert_eq!(recorded["training"]["init_from"], "hf://someone/tiny.in1k");
    // Another file at a revision, for cnn import.
    let (code, _, err) = run(online(d, &hub.endpoint(), &home)
        .args(["import", "--from", "timm", "--config"])
        .arg(&config)
        .args([
            "hf://someone/tiny.in1k@v2/weights/other.safetensors",
            "-o",
            "imported.safetensors",
        ]));
    assert_eq!(code, 0, "{err}");
    let fetched = hub
        .requests()
        .iter()
        .filter(|r| r.starts_with("GET /cdn/"))
        .count();
    assert_eq!(fetched, 2, "{:?}", hub.requests());
    drop(hub);
    // The hub gone: the cache serves, online or offline.
    let gone = format!("http://127.0.0.1:{}", closed_port());
    let (code, _, err) = train(&mut online(d, &gone, &home), "hf://someone/tiny.in1k", "b");
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = train(
        online(d, &gone, &home).env("HF_HUB_OFFLINE", "1"),
        "hf://someone/tiny.in1k",
        "c",
    );
    assert_eq!(code, 0, "{err}");
    // What is not cached, offline: said plainly, nothing trained.
    let err = assert_usage_error(
        online(d, &gone, &home)
            .env("HF_HUB_OFFLINE", "1")
            .args(["train", "--config"])
            .arg(&config)
            .args(["--init-from", "hf://someone/other", "--out", "d"]),
        &[
            "training.init_from hf://someone/other",
            "HF_HUB_OFFLINE",
            "not in the hub's cache",
        ],
    );
    assert!(!d.join("d").exists(), "{err}");
    // Unreachable and not cached: the address it tried.
    assert_usage_error(
        online(d, &gone, &home)
            .args(["train", "--config"])
            .arg(&config)
            .args(["--init-from", "hf://someone/other", "--out", "e"]),
        &["could not download model.safetensors from", &gone],
    );
    // A malformed address.
    assert_usage_error(
        cnn(d).args(["train", "--config"]).arg(&config).args([
            "--init-from",
            "hf://only-owner",
            "--out",
            "f",
        ]),
        &[
            "hf://only-owner is not a Hugging Face Hub address",
            "hf://OWNER/NAME",
        ],
    );
}

#[test]
fn fine_tune_trains_the_head_first_and_can_keep_the_batch_norm_statistics() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let config = tiny_config(d);
    let state = tiny_state(&TINY);
    save(&d.join("pretrained.safetensors"), &state);
    let values = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    for freeze_bn in [true, false] {
        let out_dir = format!("ft-{freeze_bn}");
        let (code, out, err) = run(cnn(d)
            .args(["train", "--config"])
            .arg(&config)
            .args([
                "--init-from",
                "pretrained.safetensors",
                "--num-classes",
                "2",
            ])
            .args(["--dataset", "imagefolder", "--data-dir"])
            .arg(repo().join("tests/fixtures/pets"))
            .args([
                "--set",
                "data.val_size=8",
                "--set",
                "data.test_size=8",
                "--epochs",
                "2",
            ])
            .arg("--set")
            .arg(format!(
                "training.fine_tune={{\"head_epochs\": 1, \"freeze_bn_stats\": {freeze_bn}}}"
            ))
            .args(["--out", &out_dir]));
        assert_eq!(code, 0, "{err}");
        let text = format!("{out}{err}");
        assert!(
            text.contains("fine-tuning: epoch 1 trains the head alone (layer 5, linear), the 2 layers before it frozen"),
            "{text}"
        );
        let trained = cnn::checkpoint::load(&d.join(&out_dir).join("last.safetensors"))
            .unwrap()
            .weights;
        // The backbone trained in epoch 2.
        assert_ne!(
            values(&trained["layers.0.weight"]),
            values(&state["stem.conv.weight"])
        );
        let kept = values(&trained["layers.1.running_var"])
            == values(&state["stem.bn.running_var"])
            && values(&trained["layers.1.running_mean"]) == values(&state["stem.bn.running_mean"]);
        assert_eq!(kept, freeze_bn, "batch-norm statistics kept: {kept}");
    }
}

#[test]
fn new_flags_and_formats_refuse_what_they_cannot_do() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mnist = mnist_small();
    // A checkpoint whose config names no torchvision modules.
    let (code, _, err) = run(cnn(d)
        .args(["train", "--config"])
        .arg(config_path("mlp.json"))
        .arg("--data-dir")
        .arg(&mnist)
        .args([
            "--epochs",
            "1",
            "--limit-train",
            "300",
            "--set",
            "data.val_size=100",
            "--quiet",
        ])
        .args(["--out", "mlp"]));
    assert_eq!(code, 0, "{err}");
    assert_usage_error(
        cnn(d).args([
            "export",
            "--checkpoint",
            "mlp/best.safetensors",
            "-o",
            "mlp.safetensors",
        ]),
        &[
            "names no torchvision module for",
            "layer 1 (linear)",
            "torch_name",
        ],
    );
    assert!(!d.join("mlp.safetensors").exists());
    // --num-classes: at least 2, and a network with a linear head.
    assert_usage_error(
        cnn(d)
            .args(["train", "--config"])
            .arg(config_path("mlp.json"))
            .args(["--num-classes", "1", "--out", "one"]),
        &["num_classes is 1; a classifier needs at least 2 classes"],
    );
    let conv_only = write_config(
        d,
        "conv-only.json",
        &json!({"input_shape": [1, 28, 28], "num_classes": 10, "layers": [
            {"type": "conv2d", "out_channels": 10, "kernel_size": 28}, {"type": "flatten"}]}),
    );
    assert_usage_error(
        cnn(d).args(["train", "--config"]).arg(&conv_only).args([
            "--num-classes",
            "2",
            "--out",
            "conv",
        ]),
        &["--num-classes: the network has no linear layer", "--set"],
    );
    // A missing --classes file is named.
    let config = tiny_config(d);
    save(&d.join("good.safetensors"), &tiny_state(&TINY));
    assert_usage_error(
        cnn(d)
            .args(["import", "--from", "torchvision", "--config"])
            .arg(&config)
            .args([
                "good.safetensors",
                "-o",
                "c.safetensors",
                "--classes",
                "nowhere.txt",
            ]),
        &["--classes nowhere.txt"],
    );
}
