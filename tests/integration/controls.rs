//! The training controls of issue #19 on real data: fine-tuning from a
//! checkpoint or a PyTorch state_dict with freezing and unfreezing, class
//! weights and the balanced sampler on imbalanced MNIST, precision, recall,
//! F1 and top-k in `cnn eval` and the history, mixup and CutMix, gradient
//! clipping with the norm in steps.csv, `reduce_on_plateau`, the kept
//! checkpoints and `cnn lr-find`; and a clear error, exit 2, for every bad
//! setting.

use crate::common::*;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// `cnn train` on the MNIST subset (500 validation images), quiet.
fn train(dir: &Path, config: &str, out: &str, extra: &[&str]) -> (i32, String, String) {
    run(cnn(dir)
        .args([
            "train",
            "--quiet",
            "--out",
            out,
            "--set",
            "data.val_size=500",
        ])
        .arg("--data-dir")
        .arg(mnist_small())
        .arg("--config")
        .arg(config_path(config))
        .args(extra))
}

fn train_ok(dir: &Path, config: &str, out: &str, extra: &[&str]) -> PathBuf {
    let (code, _, err) = train(dir, config, out, extra);
    assert_eq!(code, 0, "{err}");
    dir.join(out)
}

/// The tensors of a safetensors file, flattened, by name.
pub fn weights(path: &Path) -> HashMap<String, Vec<f32>> {
    let (_, t) = cnn::checkpoint::read_raw(path).unwrap();
    t.into_iter()
        .map(|(k, t)| (k, t.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
        .collect()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn l2_diff(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| ((x - y) as f64).powi(2))
        .sum::<f64>()
        .sqrt()
}

#[test]
fn fine_tuning_takes_matching_tensors_freezes_and_unfreezes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let source = train_ok(d, "lenet.json", "source", &["--epochs", "1"]);
    let src = weights(&source.join("best.safetensors"));

    // A PyTorch-style state_dict of the same network with a head for 2
    // classes: keys under `model.`, the last layer of another shape.
    let (_, tensors) = cnn::checkpoint::read_raw(&source.join("best.safetensors")).unwrap();
    let mut foreign: HashMap<String, candle_core::Tensor> = tensors
        .into_iter()
        .map(|(k, t)| (k.replacen("layers.", "model.", 1), t))
        .collect();
    let head =
        candle_core::Tensor::zeros((2, 84), candle_core::DType::F32, &candle_core::Device::Cpu)
            .unwrap();
    foreign.insert("model.11.weight".into(), head);
    foreign.insert(
        "model.1.num_batches_tracked".into(),
        candle_core::Tensor::new(&[3i64], &candle_core::Device::Cpu).unwrap(),
    );
    let state_dict = d.join("torch.safetensors");
    candle_core::safetensors::save(&foreign, &state_dict).unwrap();

    // Frozen conv layers stay exactly the source's; the rest trains; the
    // reshaped head starts from the seed and says so.
    let (code, _, err) = run(cnn(d)
        .args([
            "train",
            "--out",
            "frozen",
            "--epochs",
            "1",
            "--set",
            "data.val_size=500",
        ])
        .arg("--data-dir")
        .arg(mnist_small())
        .arg("--config")
        .arg(config_path("lenet.json"))
        .arg("--init-from")
        .arg(&state_dict)
        .args(["--set", r#"training.freeze=["0", "3.weight"]"#]));
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("took 9 tensors")
            && err.contains("layers.11.weight (file [2, 84], network [10, 84])"),
        "{err}"
    );
    let frozen = weights(&d.join("frozen/last.safetensors"));
    for name in ["layers.0.weight", "layers.0.bias", "layers.3.weight"] {
        assert_eq!(frozen[name], src[name], "{name} is frozen");
    }
    for name in ["layers.3.bias", "layers.7.weight", "layers.11.bias"] {
        assert_ne!(frozen[name], src[name], "{name} trains");
    }
    // The optimizer never touched the frozen tensors.
    assert!(!frozen.contains_key("optim.layers.0.weight.exp_avg"));
    assert!(frozen.contains_key("optim.layers.3.bias.exp_avg"));
    let cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("frozen/config.json")).unwrap())
            .unwrap();
    assert_eq!(
        cfg["training"]["init_from"],
        state_dict.canonicalize().unwrap().display().to_string()
    );

    // Unfrozen after epoch 1: epoch 2 trains them too, their optimizer
    // state counting only the steps since (2,500 images, batch 64: 40).
    let unfrozen = train_ok(
        d,
        "lenet.json",
        "unfrozen",
        &[
            "--epochs",
            "2",
            "--init-from",
            source.join("best.safetensors").to_str().unwrap(),
            "--set",
            r#"training.freeze=["0"]"#,
            "--set",
            "training.unfreeze_after=1",
        ],
    );
    let after = weights(&unfrozen.join("last.safetensors"));
    assert_ne!(after["layers.0.weight"], src["layers.0.weight"]);
    assert_eq!(after["optim.layers.0.weight.step"], vec![40.0]);
    assert_eq!(after["optim.layers.3.weight.step"], vec![80.0]);
}

#[test]
fn trainable_false_and_a_fixed_batch_norm_scale_keep_their_values() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut config = shipped("lenet.json");
    config["layers"][0]["trainable"] = json!(false);
    config["layers"]
        .as_array_mut()
        .unwrap()
        .insert(4, json!({"type": "batch_norm2d", "fixed_scale": true}));
    let path = write_config(d, "frozen-lenet.json", &config);
    let (code, out, err) = run(cnn(d).args(["summary", "--config"]).arg(&path));
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("(61,566 trainable, 156 frozen by \"trainable\": false)"),
        "{out}"
    );
    let (code, _, err) = run(cnn(d)
        .args(["train", "--quiet", "--epochs", "1", "--out", "run"])
        .args(["--set", "data.val_size=500", "--data-dir"])
        .arg(mnist_small())
        .arg("--config")
        .arg(&path));
    assert_eq!(code, 0, "{err}");
    let w = weights(&d.join("run/last.safetensors"));
    // The seed's initialisation of layer 0, as a run with nothing trained
    // would keep it: compare with one step at a vanishing rate.
    let (code, _, err) = run(cnn(d)
        .args(["train", "--quiet", "--epochs", "1", "--out", "still"])
        .args(["--set", "data.val_size=500", "--limit-train", "64"])
        .args(["--set", "training.optimizer.lr=1e-30", "--data-dir"])
        .arg(mnist_small())
        .arg("--config")
        .arg(&path));
    assert_eq!(code, 0, "{err}");
    let init = weights(&d.join("still/last.safetensors"));
    assert_eq!(w["layers.0.weight"], init["layers.0.weight"]);
    assert_eq!(w["layers.0.bias"], init["layers.0.bias"]);
    assert_ne!(w["layers.3.weight"], init["layers.3.weight"]);
    // Batch norm: the scale stays 1, the shift and statistics move.
    assert!(w["layers.4.weight"].iter().all(|&v| v == 1.0));
    assert!(w["layers.4.bias"].iter().any(|&v| v != 0.0));
    assert!(w["layers.4.running_mean"].iter().any(|&v| v != 0.0));
    assert!(!w.contains_key("optim.layers.4.weight.exp_avg"));
    assert!(history(&d.join("run"))[0]["test_acc"].as_f64().unwrap() > 0.7);

    // With the average of the weights, the frozen layer's average stays
    // exactly its value, while a frozen batch norm's statistics, which
    // still move in training, are averaged.
    let (code, _, err) = run(cnn(d)
        .args(["train", "--quiet", "--epochs", "1", "--out", "ema"])
        .args(["--set", "data.val_size=500", "--data-dir"])
        .arg(mnist_small())
        .arg("--config")
        .arg(&path)
        .args(["--set", r#"training.ema={"decay": 0.9}"#])
        .args(["--set", "layers.4.trainable=false"]));
    assert_eq!(code, 0, "{err}");
    let e = weights(&d.join("ema/last.safetensors"));
    assert_eq!(e["layers.0.weight"], init["layers.0.weight"]);
    assert_eq!(e["raw.layers.0.weight"], init["layers.0.weight"]);
    assert_eq!(e["layers.4.bias"], e["raw.layers.4.bias"]);
    assert!(e["layers.4.running_mean"].iter().any(|&v| v != 0.0));
    assert_ne!(e["layers.4.running_mean"], e["raw.layers.4.running_mean"]);
    assert_ne!(e["layers.3.weight"], e["raw.layers.3.weight"]);
}

/// MNIST's committed subset with classes 5 to 9 cut to 15 images each: an
/// imbalanced training set; the test images stay balanced.
fn imbalanced_mnist(dir: &Path) -> PathBuf {
    use cnn::data::idx::{encode_images, encode_labels};
    let (train, train_labels, test, test_labels) = mnist_arrays();
    let mut seen = [0usize; 10];
    let (mut pixels, mut labels) = (Vec::new(), Vec::new());
    for (i, &l) in train_labels.iter().enumerate() {
        seen[l as usize] += 1;
        if l < 5 || seen[l as usize] <= 15 {
            pixels.extend_from_slice(&train[i * 784..(i + 1) * 784]);
            labels.push(l);
        }
    }
    let out = dir.join("imbalanced");
    std::fs::create_dir_all(&out).unwrap();
    let write = |name: &str, bytes: Vec<u8>| std::fs::write(out.join(name), bytes).unwrap();
    write(
        "train-images-idx3-ubyte",
        encode_images(labels.len(), 28, 28, &pixels),
    );
    write("train-labels-idx1-ubyte", encode_labels(&labels));
    write(
        "t10k-images-idx3-ubyte",
        encode_images(test_labels.len(), 28, 28, &test),
    );
    write("t10k-labels-idx1-ubyte", encode_labels(&test_labels));
    out
}

/// Mean recall of classes 5 to 9 on the test split, from `cnn eval --json`.
fn minority_recall(dir: &Path, run: &Path) -> f64 {
    let e = eval_json(dir, &run.join("last.safetensors"), &[]);
    (5..10)
        .map(|c| e["per_class"][c]["recall"].as_f64().unwrap())
        .sum::<f64>()
        / 5.0
}

#[test]
fn class_weights_and_the_balanced_sampler_lift_the_rare_classes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = imbalanced_mnist(d);
    let go = |out: &str, epochs: &str, extra: &[&str]| -> PathBuf {
        let (code, _, err) = run(cnn(d)
            .args(["train", "--quiet", "--epochs", epochs, "--out", out])
            .args(["--set", "data.val_size=100", "--data-dir"])
            .arg(&data)
            .arg("--config")
            .arg(config_path("lenet.json"))
            .args(extra));
        assert_eq!(code, 0, "{err}");
        d.join(out)
    };
    let plain = minority_recall(d, &go("plain", "3", &[]));
    let weighted = minority_recall(
        d,
        &go(
            "weighted",
            "3",
            &["--set", r#"training.class_weights="balanced""#],
        ),
    );
    let sampled = minority_recall(d, &go("sampled", "3", &["--set", "data.sampler=balanced"]));
    eprintln!("rare-class recall: plain {plain:.3}, weighted {weighted:.3}, sampled {sampled:.3}");
    assert!(
        weighted > plain + 0.1 && sampled > plain + 0.1,
        "recall of the rare classes: plain {plain:.3}, weighted {weighted:.3}, sampled {sampled:.3}"
    );
    // A list of weights works too, and must have one per class.
    go(
        "listed",
        "1",
        &[
            "--set",
            "training.class_weights=[1, 1, 1, 1, 1, 20, 20, 20, 20, 20]",
        ],
    );
    assert_usage_error(
        cnn(d)
            .args(["train", "--config"])
            .arg(config_path("lenet.json"))
            .args(["--set", "training.class_weights=[1, 2]"]),
        &["training.class_weights lists 2 weights but the network has 10 classes"],
    );
}

#[test]
fn eval_and_the_history_report_precision_recall_f1_and_top_k() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let run_dir = train_ok(
        d,
        "lenet.json",
        "run",
        &["--epochs", "1", "--set", "training.top_k=3"],
    );
    let e = eval_json(d, &run_dir.join("best.safetensors"), &[]);
    let confusion: Vec<Vec<u64>> = serde_json::from_value(e["confusion"].clone()).unwrap();
    let mut f1s = Vec::new();
    for c in 0..10 {
        let tp = confusion[c][c] as f64;
        let support: u64 = confusion[c].iter().sum();
        let predicted: u64 = confusion.iter().map(|r| r[c]).sum();
        // A class never predicted has precision 0 (scikit-learn's
        // zero_division=0), as can happen after one epoch.
        let p = if predicted == 0 {
            0.0
        } else {
            tp / predicted as f64
        };
        let r = tp / support as f64;
        let row = &e["per_class"][c];
        assert!(
            (row["precision"].as_f64().unwrap() - p).abs() < 1e-12,
            "class {c}: {row} vs precision {p}"
        );
        assert!((row["recall"].as_f64().unwrap() - r).abs() < 1e-12);
        let f1 = if p + r == 0.0 {
            0.0
        } else {
            2.0 * p * r / (p + r)
        };
        assert!((row["f1"].as_f64().unwrap() - f1).abs() < 1e-12);
        f1s.push(f1);
    }
    let macro_f1 = f1s.iter().sum::<f64>() / 10.0;
    assert!((e["macro"]["f1"].as_f64().unwrap() - macro_f1).abs() < 1e-12);
    // Top-3 (the run's k) is at least the accuracy; top-10 of 10 is all.
    assert_eq!(e["top_k"], 3);
    let top3 = e["top_k_accuracy"].as_f64().unwrap();
    // (Some mistakes have the right class second or third.)
    assert!(
        top3 > e["accuracy"].as_f64().unwrap() && top3 > 0.8,
        "{top3}"
    );
    let all = eval_json(d, &run_dir.join("best.safetensors"), &["--top-k", "10"]);
    assert_eq!(all["top_k_accuracy"], 1.0);
    // The history has the same numbers for the test split.
    let h = &history(&run_dir)[0];
    assert!((h["test_macro_f1"].as_f64().unwrap() - macro_f1).abs() < 1e-12);
    assert_eq!(h["test_top_k_acc"].as_f64().unwrap(), top3);
    assert!(h["val_macro_f1"].as_f64().unwrap() > 0.5);
    // The text report shows them.
    let (code, out, _) = run(cnn(d)
        .args(["eval", "--checkpoint"])
        .arg(run_dir.join("best.safetensors")));
    assert_eq!(code, 0);
    assert!(
        out.contains("top-3") && out.contains("macro       precision") && out.contains("F1"),
        "{out}"
    );
    // val_macro_f1 can pick the best checkpoint.
    train_ok(
        d,
        "mlp.json",
        "f1",
        &[
            "--epochs",
            "2",
            "--limit-train",
            "500",
            "--set",
            "training.monitor=val_macro_f1",
        ],
    );
}

#[test]
fn mixup_and_cutmix_train_and_count_accuracy_by_the_mixed_targets() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let plain = train_ok(d, "lenet.json", "plain", &["--epochs", "2"]);
    let mixed = train_ok(
        d,
        "lenet.json",
        "mixed",
        &[
            "--epochs",
            "2",
            "--set",
            r#"training.mixup={"alpha": 0.4, "cutmix_alpha": 1.0}"#,
        ],
    );
    let (p, m) = (history(&plain), history(&mixed));
    assert_ne!(p[0]["train_loss"], m[0]["train_loss"]);
    // Still learns (if slower: chance is 0.1); training accuracy against
    // mixed targets is lower than the plain run's (mixed images are harder
    // to call).
    assert!(m[1]["test_acc"].as_f64().unwrap() > 0.7, "{m:?}");
    assert!(m[1]["train_acc"].as_f64().unwrap() < p[1]["train_acc"].as_f64().unwrap());
    // Same seed, same numbers.
    let again = train_ok(
        d,
        "lenet.json",
        "again",
        &[
            "--epochs",
            "1",
            "--set",
            r#"training.mixup={"alpha": 0.4, "cutmix_alpha": 1.0}"#,
        ],
    );
    assert_eq!(
        history_without_timing(&again)[0],
        history_without_timing(&mixed)[0]
    );
}

#[test]
fn gradient_clipping_bounds_the_update_and_steps_csv_has_the_norm() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // One SGD step at rate 1 on 64 images: the update is the gradient.
    let one_step = |out: &str, extra: &[&str]| -> HashMap<String, Vec<f32>> {
        let mut args = vec![
            "--epochs",
            "1",
            "--limit-train",
            "64",
            "--set",
            "training.optimizer.type=sgd",
        ];
        args.extend_from_slice(extra);
        weights(&train_ok(d, "lenet.json", out, &args).join("last.safetensors"))
    };
    let start = one_step("start", &["--lr", "1e-30"]);
    let by_norm = one_step(
        "norm",
        &[
            "--lr",
            "1",
            "--set",
            r#"training.grad_clip={"max_norm": 0.01}"#,
        ],
    );
    let by_value = one_step(
        "value",
        &[
            "--lr",
            "1",
            "--set",
            r#"training.grad_clip={"max_value": 0.001}"#,
        ],
    );
    let params: Vec<&String> = start.keys().filter(|k| k.starts_with("layers.")).collect();
    let moved: f64 = params
        .iter()
        .map(|k| l2_diff(&by_norm[*k], &start[*k]).powi(2))
        .sum::<f64>()
        .sqrt();
    assert!((moved - 0.01).abs() < 1e-4, "moved {moved}");
    let largest = params
        .iter()
        .map(|k| max_abs_diff(&by_value[*k], &start[*k]))
        .fold(0.0, f32::max);
    assert!((largest - 0.001).abs() < 1e-6, "largest change {largest}");
    // The norm before clipping, logged.
    let steps = std::fs::read_to_string(d.join("norm/steps.csv")).unwrap();
    let mut lines = steps.lines();
    assert_eq!(lines.next(), Some("step,epoch,loss,accuracy,lr,grad_norm"));
    let norm: f64 = lines
        .next()
        .unwrap()
        .rsplit(',')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(norm > 0.01 && norm.is_finite(), "{norm}");
}

#[test]
fn reduce_on_plateau_lowers_the_rate_after_patience_and_warmup() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A threshold nothing can beat: every epoch after the first is "bad".
    let run_dir = train_ok(
        d,
        "mlp.json",
        "plateau",
        &[
            "--epochs",
            "4",
            "--limit-train",
            "300",
            "--set",
            r#"training.lr_schedule={"type": "reduce_on_plateau", "patience": 0, "factor": 0.1, "threshold": 10, "monitor": "val_loss"}"#,
        ],
    );
    let lrs: Vec<f64> = history(&run_dir)
        .iter()
        .map(|r| r["lr"].as_f64().unwrap())
        .collect();
    assert_eq!(lrs.len(), 4);
    let want = [1e-3, 1e-3, 1e-4, 1e-5];
    for (got, want) in lrs.iter().zip(want) {
        assert!((got - want).abs() < 1e-15, "{lrs:?}");
    }
    let state = cnn::checkpoint::load(&run_dir.join("last.safetensors"))
        .unwrap()
        .meta
        .state
        .unwrap();
    assert!((state.plateau.lr.unwrap() - 1e-6).abs() < 1e-18);
    // With a warmup of 1 epoch the first judged epoch is the second.
    let warm = train_ok(
        d,
        "mlp.json",
        "warm",
        &[
            "--epochs",
            "3",
            "--limit-train",
            "300",
            "--set",
            r#"training.lr_schedule={"type": "reduce_on_plateau", "patience": 0, "factor": 0.1, "threshold": 10, "warmup_epochs": 1}"#,
        ],
    );
    let last = history(&warm)[2]["lr"].as_f64().unwrap();
    assert!((last - 1e-3).abs() < 1e-15, "{last}");
}

#[test]
fn the_best_k_and_every_nth_epoch_are_kept_and_force_removes_them() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let args = [
        "--epochs",
        "4",
        "--limit-train",
        "300",
        "--set",
        "training.keep_best=2",
        "--set",
        "training.keep_every_epochs=2",
        "--set",
        "training.monitor=val_loss",
    ];
    let run_dir = train_ok(d, "mlp.json", "run", &args);
    let h = history(&run_dir);
    let mut ranked: Vec<(f64, usize)> = h
        .iter()
        .map(|r| {
            (
                r["val_loss"].as_f64().unwrap(),
                r["epoch"].as_u64().unwrap() as usize,
            )
        })
        .collect();
    ranked.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let mut files: Vec<String> = std::fs::read_dir(&run_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".safetensors"))
        .collect();
    files.sort();
    let mut want = vec![
        format!("best-{}.safetensors", ranked[0].1),
        format!("best-{}.safetensors", ranked[1].1),
        "best.safetensors".to_string(),
        "epoch-2.safetensors".to_string(),
        "epoch-4.safetensors".to_string(),
        "last.safetensors".to_string(),
    ];
    want.sort();
    assert_eq!(files, want);
    // best.safetensors is the best of them, and each file is whole.
    assert_eq!(
        weights(&run_dir.join("best.safetensors")),
        weights(&run_dir.join(format!("best-{}.safetensors", ranked[0].1)))
    );
    let e = cnn::checkpoint::load(&run_dir.join("epoch-2.safetensors")).unwrap();
    assert_eq!(e.meta.epoch, 2);
    // --force replaces the run, kept files included.
    let mut again = args.to_vec();
    again[1] = "1";
    again.push("--force");
    train_ok(d, "mlp.json", "run", &again);
    let left: Vec<String> = std::fs::read_dir(&run_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("epoch-") || n.starts_with("best-"))
        .collect();
    assert_eq!(left, vec!["best-1.safetensors".to_string()]);
}

#[test]
fn lr_find_suggests_a_rate_plots_it_and_writes_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A run directory where `cnn train` would write: left as it is.
    std::fs::create_dir_all(d.join("runs/lenet")).unwrap();
    std::fs::write(d.join("runs/lenet/config.json"), "{}").unwrap();
    let (code, out, err) = run(cnn(d)
        .args(["lr-find", "--json", "--plot", "lr.png", "--steps", "100"])
        .args(["--set", "data.val_size=500"])
        .args(["--start-lr", "1e-5", "--end-lr", "10", "--data-dir"])
        .arg(mnist_small())
        .arg("--config")
        .arg(config_path("lenet.json")));
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let lrs: Vec<f64> = serde_json::from_value(v["lrs"].clone()).unwrap();
    let losses: Vec<f64> = serde_json::from_value(v["losses"].clone()).unwrap();
    assert!(lrs.len() <= 100 && lrs.len() > 50 && lrs.len() == losses.len());
    assert!((lrs[0] - 1e-5).abs() < 1e-18);
    // Exponential: a constant ratio between steps.
    let ratio = (10f64 / 1e-5).powf(1.0 / 99.0);
    assert!(
        lrs.windows(2)
            .all(|w| (w[1] / w[0] / ratio - 1.0).abs() < 1e-9)
    );
    // Adam on LeNet: a suggestion in the range people use, and the loss
    // went down before it went up.
    let suggested = v["suggested_lr"].as_f64().unwrap();
    assert!((1e-4..1.0).contains(&suggested), "{suggested}");
    let smoothed: Vec<f64> = serde_json::from_value(v["smoothed_losses"].clone()).unwrap();
    let lowest = smoothed.iter().copied().fold(f64::INFINITY, f64::min);
    assert!(lowest < smoothed[0] - 0.2, "{smoothed:?}");
    assert!(std::fs::metadata(d.join("lr.png")).unwrap().len() > 1000);
    let mut entries: Vec<String> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "hf-home")
        .collect();
    entries.sort();
    assert_eq!(entries, vec!["lr.png", "runs"]);
    let run_files: Vec<_> = std::fs::read_dir(d.join("runs/lenet")).unwrap().collect();
    assert_eq!(run_files.len(), 1);
    assert_eq!(
        std::fs::read_to_string(d.join("runs/lenet/config.json")).unwrap(),
        "{}"
    );
    // Text output names the suggestion.
    let (code, out, err) = run(cnn(d)
        .args([
            "lr-find",
            "--quiet",
            "--steps",
            "40",
            "--set",
            "data.val_size=500",
        ])
        .arg("--data-dir")
        .arg(mnist_small())
        .arg("--config")
        .arg(config_path("mlp.json")));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("suggested learning rate"), "{out}");
    // Bad ranges are refused.
    assert_usage_error(
        cnn(d)
            .args(["lr-find", "--start-lr", "1", "--end-lr", "0.1", "--config"])
            .arg(config_path("mlp.json")),
        &["--start-lr 1 and --end-lr 0.1"],
    );
    assert_usage_error(
        cnn(d)
            .args(["lr-find", "--steps", "5", "--config"])
            .arg(config_path("mlp.json")),
        &["--steps 5"],
    );
}

#[test]
fn bad_control_settings_name_the_field_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cases: &[(&str, &str)] = &[
        (
            r#"training.grad_clip={"max_norm": 1, "max_value": 1}"#,
            "training.grad_clip needs exactly one of max_norm",
        ),
        (
            r#"training.grad_clip={"max_norm": -1}"#,
            "training.grad_clip.max_norm is -1",
        ),
        (
            r#"training.ema={"decay": 1.5}"#,
            "training.ema.decay is 1.5",
        ),
        (
            r#"training.ema={"decay": 0.9, "every": 0}"#,
            "training.ema.every is 0",
        ),
        (
            r#"training.mixup={"alpha": 0}"#,
            "training.mixup has alpha and cutmix_alpha both 0",
        ),
        (
            r#"training.mixup={"alpha": 0.2, "prob": 2}"#,
            "training.mixup.prob is 2",
        ),
        (
            r#"training.class_weights="heavy""#,
            "\"heavy\" is not a class weighting",
        ),
        (
            "training.class_weights=[1, 1, 1, 1, 1, 1, 1, 1, 1, -1]",
            "training.class_weights holds -1",
        ),
        ("data.sampler=weighted", "unknown variant `weighted`"),
        (
            r#"data.tta={"flip": false}"#,
            "data.tta has flip false and translate 0",
        ),
        (r#"data.tta={"translate": 30}"#, "data.tta.translate is 30"),
        ("training.top_k=0", "training.top_k is 0"),
        (
            "training.unfreeze_after=2",
            "training.unfreeze_after is set but training.freeze is empty",
        ),
        (
            r#"training.freeze=["6"]"#,
            "training.freeze.0 is \"6\", a layer without parameters",
        ),
        (
            r#"training.freeze=["12"]"#,
            "training.freeze.0 is \"12\", which names no layer or parameter",
        ),
        (
            r#"training.freeze=["0.scale"]"#,
            "training.freeze.0 is \"0.scale\"",
        ),
        (
            r#"training.lr_schedule={"type": "reduce_on_plateau", "factor": 1.5}"#,
            "training.lr_schedule.factor is 1.5",
        ),
        (
            r#"training.param_groups=[{"lr_scale": 2}]"#,
            "training.param_groups.0 selects nothing",
        ),
        (
            r#"training.param_groups=[{"kinds": ["batch_norm2d"]}]"#,
            "training.param_groups.0 selects no parameter",
        ),
        (
            r#"training.param_groups=[{"tensors": ["bias"], "lr_scale": 0}]"#,
            "training.param_groups.0.lr_scale is 0",
        ),
        (
            r#"training.init_from="nowhere.safetensors""#,
            "nowhere.safetensors",
        ),
        (
            "layers.0.trainable=\"no\"",
            "layer 0 (conv2d): field `trainable`: expected true or false",
        ),
        (
            r#"layers.3.init={"type": "patch_whitening"}"#,
            "layer 3 (conv2d): init patch_whitening computes the filters from the input images",
        ),
        (
            r#"layers.0.init={"type": "patch_whitening", "eps": 0}"#,
            "layer 0 (conv2d): init.eps is 0",
        ),
        (
            r#"layers.0.init={"type": "patch_whitening", "images": 0}"#,
            "init.images is 0",
        ),
        (
            r#"layers.3={"type": "conv2d", "out_channels": 16, "kernel_size": 5, "groups": 2, "init": {"type": "dirac"}}"#,
            "layer 3 (conv2d): init dirac needs groups 1 (it has 2)",
        ),
        (
            "layers.11.init_scale=0",
            "layer 11 (linear): init_scale is 0",
        ),
        (
            r#"training.lr_schedule={"type": "one_cycle", "anneal_strategy": "cosine"}"#,
            "unknown variant `cosine`, expected `cos` or `linear`",
        ),
        ("training.eval_every=0", "training.eval_every is 0"),
        (
            r#"training={"eval_every": 2, "early_stopping": {"patience": 2}}"#,
            "training.eval_every is 2 but training.early_stopping judges every epoch's metrics",
        ),
        (
            r#"data.augment={"random_crop": {"padding": 2, "padding_mode": "wrap"}}"#,
            "unknown variant `wrap`",
        ),
        (
            r#"data.augment={"horizontal_flip": "sometimes"}"#,
            "\"sometimes\" is not a flip",
        ),
    ];
    for (set, needle) in cases {
        assert_usage_error(
            cnn(d)
                .args(["train", "--config"])
                .arg(config_path("lenet.json"))
                .args(["--out", "x", "--data-dir"])
                .arg(mnist_small())
                .args(["--set", set]),
            &[needle],
        );
        assert!(!d.join("x").exists(), "{set}: nothing is created");
    }
    // `cnn summary` checks the names of a config's layers as train does.
    assert_usage_error(
        cnn(d)
            .args(["summary", "--config"])
            .arg(config_path("lenet.json"))
            .args(["--set", r#"training.freeze=["12"]"#]),
        &["training.freeze.0 is \"12\", which names no layer or parameter"],
    );
    // Every layer frozen: nothing to train.
    let mut config = shipped("mlp.json");
    for i in [1, 3] {
        config["layers"][i]["trainable"] = json!(false);
    }
    let path = write_config(d, "all-frozen.json", &config);
    assert_usage_error(
        cnn(d).args(["train", "--config"]).arg(&path),
        &["every layer with parameters has \"trainable\": false"],
    );
    // A file that shares nothing with the network.
    let other = d.join("other.safetensors");
    let t =
        candle_core::Tensor::zeros(3, candle_core::DType::F32, &candle_core::Device::Cpu).unwrap();
    candle_core::safetensors::save(&HashMap::from([("w".to_string(), t)]), &other).unwrap();
    assert_usage_error(
        cnn(d)
            .args(["train", "--config"])
            .arg(config_path("mlp.json"))
            .arg("--init-from")
            .arg(&other),
        &[
            "training.init_from",
            "no tensor of",
            "has the name and shape",
        ],
    );
    // --init-from is a new run's flag.
    assert_usage_error(
        cnn(d).args(["train", "--init-from", "x", "--resume", "somewhere"]),
        &["--init-from"],
    );
}
