//! The training features fast recipes need (issue #16, part 1) on real
//! data: an average of the weights (EMA) for evaluation and `best`,
//! test-time augmentation, parameter groups, patch whitening, the recipes'
//! augmentation; and a run using every control at once, killed and
//! resumed, ending bit for bit where an uninterrupted run ends.

use crate::common::*;
use crate::controls::weights;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn train_args(config: &Path, out: &Path, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = vec![
        "train".into(),
        "--quiet".into(),
        "--config".into(),
        config.display().to_string(),
        "--data-dir".into(),
        mnist_small().display().to_string(),
        "--out".into(),
        out.display().to_string(),
        "--set".into(),
        "data.val_size=500".into(),
    ];
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

fn train_ok(dir: &Path, config: &Path, out: &str, extra: &[&str]) -> PathBuf {
    let (code, _, err) = run(cnn(dir).args(train_args(config, &dir.join(out), extra)));
    assert_eq!(code, 0, "{err}");
    dir.join(out)
}

#[test]
fn the_average_of_the_weights_is_evaluated_and_saved_as_best() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let run_dir = train_ok(
        d,
        &config_path("lenet.json"),
        "ema",
        &["--epochs", "2", "--set", r#"training.ema={"decay": 0.98}"#],
    );
    let h = history(&run_dir);
    assert!(h[1]["test_acc"].as_f64().unwrap() > 0.8, "{h:?}");
    // last.safetensors: the average as layers.*, the trained weights as raw.*.
    let last = weights(&run_dir.join("last.safetensors"));
    for name in ["layers.0.weight", "layers.11.bias"] {
        let raw = &last[&format!("raw.{name}")];
        assert_ne!(
            &last[name], raw,
            "{name}: the average differs from the weights"
        );
    }
    // Evaluating the files gives the history's numbers: both hold the
    // average (best at its epoch, last at the last).
    let best_epoch = cnn::checkpoint::load(&run_dir.join("best.safetensors"))
        .unwrap()
        .meta
        .epoch;
    let e = eval_json(d, &run_dir.join("best.safetensors"), &[]);
    assert_eq!(e["accuracy"], h[best_epoch - 1]["test_acc"]);
    let e = eval_json(d, &run_dir.join("last.safetensors"), &[]);
    assert_eq!(e["accuracy"], h[1]["test_acc"]);
    assert!(!weights(&run_dir.join("best.safetensors")).contains_key("raw.layers.0.weight"));
}

#[test]
fn test_time_augmentation_in_the_history_and_in_eval() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let run_dir = train_ok(
        d,
        &config_path("lenet.json"),
        "tta",
        &["--epochs", "2", "--set", r#"data.tta={"translate": 1}"#],
    );
    let h = &history(&run_dir)[1];
    let best = run_dir.join("last.safetensors");
    // eval takes the config's data.tta: the history's numbers.
    let with = eval_json(d, &best, &[]);
    assert_eq!(with["accuracy"], h["test_acc"]);
    assert_eq!(with["tta"], json!({"flip": false, "translate": 1}));
    let without = eval_json(d, &best, &["--no-tta"]);
    assert_eq!(without["tta"], Value::Null);
    assert_ne!(without["loss"], with["loss"]);
    let flip = eval_json(d, &best, &["--tta", r#"{"flip": true}"#]);
    assert_eq!(flip["tta"], json!({"flip": true, "translate": 0}));
    for e in [&with, &without] {
        assert!(e["accuracy"].as_f64().unwrap() > 0.75, "{e}");
    }
    // (Mirrored digits are other shapes: flip is for pictures such as
    // clothes, below; on digits it costs accuracy.)
    assert!(flip["accuracy"].as_f64().unwrap() < without["accuracy"].as_f64().unwrap());
    assert_usage_error(
        cnn(d)
            .args(["eval", "--tta", r#"{"flop": true}"#, "--checkpoint"])
            .arg(&best),
        &["--tta", "unknown field `flop`"],
    );
    assert_usage_error(
        cnn(d)
            .args(["eval", "--tta", r#"{"translate": 28}"#, "--checkpoint"])
            .arg(&best),
        &["data.tta.translate is 28"],
    );
}

#[test]
fn fashion_mnist_with_the_recipe_augmentation_and_flip_tta() {
    let fashion = Path::new("/usr/share/datasets/fashion-mnist");
    assert!(
        cnn::data::idx::find_files(fashion).is_ok(),
        "install Debian's dataset-fashion-mnist"
    );
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (code, _, err) = run(cnn(d)
        .args(["train", "--quiet", "--dataset", "fashion-mnist", "--epochs", "2"])
        .args(["--limit-train", "5000", "--limit-test", "2000", "--out", "run"])
        .args([
            "--set",
            r#"data.augment={"random_crop": {"padding": 2, "padding_mode": "reflect"}, "horizontal_flip": "alternate"}"#,
        ])
        .arg("--config")
        .arg(config_path("lenet.json")));
    assert_eq!(code, 0, "{err}");
    let best = d.join("run/best.safetensors");
    let plain = eval_json(d, &best, &[]);
    let tta = eval_json(d, &best, &["--tta"]);
    assert_eq!(tta["tta"], json!({"flip": true, "translate": 1}));
    let (p, t) = (
        plain["accuracy"].as_f64().unwrap(),
        tta["accuracy"].as_f64().unwrap(),
    );
    // Clothes look the same mirrored: averaging over copies does not hurt.
    assert!(p > 0.7 && t > p - 0.02, "plain {p}, tta {t}");
}

#[test]
fn a_parameter_group_with_a_tiny_rate_barely_moves() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let lenet = config_path("lenet.json");
    let start = weights(
        &train_ok(
            d,
            &lenet,
            "start",
            &["--epochs", "1", "--limit-train", "64", "--lr", "1e-30"],
        )
        .join("last.safetensors"),
    );
    let slow = weights(
        &train_ok(
            d,
            &lenet,
            "slow",
            &[
                "--epochs",
                "1",
                "--set",
                r#"training.param_groups=[{"layers": ["0"], "lr_scale": 1e-6}]"#,
            ],
        )
        .join("last.safetensors"),
    );
    let moved = |name: &str| {
        start[name]
            .iter()
            .zip(&slow[name])
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max)
    };
    // Adam moves each value by about lr · scale per step: 40 steps of 1e-9.
    assert!(
        moved("layers.0.weight") < 1e-6,
        "{}",
        moved("layers.0.weight")
    );
    assert!(moved("layers.3.weight") > 1e-3);
}

#[test]
fn patch_whitening_whitens_the_training_patches_on_any_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let config = json!({
        "input_shape": [1, 28, 28], "num_classes": 10,
        "layers": [
            {"type": "conv2d", "out_channels": 8, "kernel_size": 2, "trainable": false,
             "init": {"type": "patch_whitening", "eps": 5e-4}},
            {"type": "gelu"},
            {"type": "max_pool2d", "kernel_size": 3},
            {"type": "flatten"},
            {"type": "linear", "out_features": 10}],
        "training": {"epochs": 1}
    });
    let path = write_config(d, "whiten.json", &config);
    // All training images (no validation split), so the test knows them.
    let run_dir = train_ok(d, &path, "run", &["--set", "data.val_size=0"]);
    let w = weights(&run_dir.join("last.safetensors"))["layers.0.weight"].clone();
    assert!(history(&run_dir)[0]["test_acc"].as_f64().unwrap() > 0.8);
    // The second four filters are the first four negated.
    for i in 0..16 {
        assert_eq!(w[16 + i], -w[i]);
    }
    // W Σ Wᵀ = diag(λ / (λ + eps)) ≈ I for the covariance Σ of every 2×2
    // patch of the normalised training images.
    let cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("config.json")).unwrap())
            .unwrap();
    let mean = cfg["data"]["normalize"]["mean"][0].as_f64().unwrap();
    let std = cfg["data"]["normalize"]["std"][0].as_f64().unwrap();
    let (train, _, _, _) = mnist_arrays();
    let x = |img: usize, y: usize, x: usize| {
        (train[img * 784 + y * 28 + x] as f64 / 255.0 - mean) / std
    };
    let mut cov = [[0f64; 4]; 4];
    let mut n = 0f64;
    for img in 0..train.len() / 784 {
        for y in 0..27 {
            for xx in 0..27 {
                let p = [
                    x(img, y, xx),
                    x(img, y, xx + 1),
                    x(img, y + 1, xx),
                    x(img, y + 1, xx + 1),
                ];
                for i in 0..4 {
                    for j in 0..4 {
                        cov[i][j] += p[i] * p[j];
                    }
                }
                n += 1.0;
            }
        }
    }
    for i in 0..4 {
        for j in 0..4 {
            let wsw: f64 = (0..4)
                .flat_map(|a| (0..4).map(move |b| (a, b)))
                .map(|(a, b)| w[i * 4 + a] as f64 * cov[a][b] / n * w[j * 4 + b] as f64)
                .sum();
            if i == j {
                assert!(wsw > 0.9 && wsw < 1.0, "({i}, {i}): {wsw}");
            } else {
                assert!(wsw.abs() < 1e-3, "({i}, {j}): {wsw}");
            }
        }
    }
    // The same weights on one thread.
    let (code, _, err) = run(cnn(d).env("RAYON_NUM_THREADS", "1").args(train_args(
        &path,
        &d.join("one"),
        &["--set", "data.val_size=0"],
    )));
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        weights(&d.join("one/last.safetensors"))["layers.0.weight"],
        w
    );
    // Fine-tuning: a weight that `training.init_from` gives is kept, not
    // recomputed from the data.
    let given: Vec<f32> = w.iter().map(|v| v * 2.0).collect();
    let file = d.join("given.safetensors");
    let t = candle_core::Tensor::from_vec(given.clone(), (8, 1, 2, 2), &candle_core::Device::Cpu)
        .unwrap();
    candle_core::safetensors::save(
        &std::collections::HashMap::from([("layers.0.weight".to_string(), t)]),
        &file,
    )
    .unwrap();
    let (code, _, err) = run(cnn(d).args(train_args(
        &path,
        &d.join("tuned"),
        &[
            "--set",
            "data.val_size=0",
            "--init-from",
            file.to_str().unwrap(),
        ],
    )));
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        weights(&d.join("tuned/last.safetensors"))["layers.0.weight"],
        given
    );
    // Odd filter counts cannot come in pairs.
    let mut odd = config.clone();
    odd["layers"][0]["out_channels"] = json!(7);
    let odd = write_config(d, "odd.json", &odd);
    assert_usage_error(
        cnn(d).args(["train", "--config"]).arg(&odd),
        &[
            "layer 0 (conv2d)",
            "out_channels must be even and at most 8; it is 7",
        ],
    );
}

/// LeNet with every control of both issues on: an average of the weights,
/// clipping, mixup and CutMix, class weights, the balanced sampler, label
/// smoothing, a plateau schedule that reduces, frozen layers unfrozen
/// after epoch 1, parameter groups, kept checkpoints, reflect crops, the
/// alternating flip and test-time augmentation.
fn everything(dir: &Path) -> PathBuf {
    let mut c = shipped("lenet.json");
    c["training"] = json!({
        "epochs": 3, "batch_size": 64,
        "optimizer": {"type": "adam", "lr": 0.001, "weight_decay": 1e-4},
        "label_smoothing": 0.1,
        "ema": {"decay": 0.99, "every": 2},
        "grad_clip": {"max_norm": 2.0},
        "mixup": {"alpha": 0.4, "cutmix_alpha": 1.0, "prob": 0.8},
        "class_weights": "balanced",
        "lr_schedule": {"type": "reduce_on_plateau", "patience": 0, "factor": 0.5, "threshold": 10},
        "freeze": ["0"], "unfreeze_after": 1,
        "param_groups": [{"tensors": ["bias"], "lr_scale": 2, "weight_decay": 0}],
        "keep_best": 2, "keep_every_epochs": 2
    });
    c["data"] = json!({
        "dataset": "mnist", "sampler": "balanced",
        "augment": {"random_crop": {"padding": 2, "padding_mode": "reflect"}, "horizontal_flip": "alternate"},
        "tta": {"translate": 1}
    });
    write_config(dir, "everything.json", &c)
}

#[test]
fn a_run_with_every_control_resumes_bit_for_bit_after_kills_and_ctrl_c() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let config = everything(d);
    let (full, killed) = (d.join("full"), d.join("killed"));
    let extra = ["--checkpoint-every", "7"];
    assert_eq!(
        spawn(d, &train_args(&config, &full, &extra), "2")
            .wait()
            .unwrap()
            .code(),
        Some(0)
    );
    assert_eq!(saved_step(&full), 120);
    // The plateau schedule reduced the rate for epoch 3.
    let lrs: Vec<f64> = history(&full)
        .iter()
        .map(|r| r["lr"].as_f64().unwrap())
        .collect();
    assert_eq!(lrs, vec![1e-3, 1e-3, 5e-4]);

    let mut child = spawn(d, &train_args(&config, &killed, &extra), "2");
    wait_for_step(&mut child, &killed, 7);
    child.kill().unwrap();
    child.wait().unwrap();
    let resume: Vec<String> = ["train", "--resume", killed.to_str().unwrap(), "--quiet"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    // Kills in epoch 1 (frozen), epoch 2 (unfrozen) and epoch 3 (reduced
    // rate), on one thread and two.
    for (i, target) in [30, 55, 90].into_iter().enumerate() {
        let mut child = spawn(d, &resume, if i % 2 == 0 { "1" } else { "2" });
        wait_for_step(&mut child, &killed, target);
        std::thread::sleep(Duration::from_millis(15 * i as u64));
        child.kill().unwrap();
        child.wait().unwrap();
    }
    // Then Ctrl-C once, and the rest.
    let mut child = spawn(d, &resume, "2");
    wait_for_step(&mut child, &killed, 100);
    // SAFETY: kill(2) on a process this test started; no memory is involved.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let code = child.wait().unwrap().code();
    assert!(code == Some(130) || code == Some(0), "{code:?}");
    assert_eq!(spawn(d, &resume, "2").wait().unwrap().code(), Some(0));

    let (a, b) = (tensors(&full), tensors(&killed));
    let names: Vec<&String> = a.iter().map(|(k, _)| k).collect();
    for want in [
        "raw.layers.0.weight",
        "layers.0.weight",
        "optim.layers.0.weight.step",
    ] {
        assert!(names.iter().any(|k| *k == want), "{want} is saved");
    }
    assert_eq!(a.len(), b.len());
    for ((ka, va), (kb, vb)) in a.iter().zip(&b) {
        assert_eq!(ka, kb);
        assert!(va == vb, "{ka} differs after resuming");
    }
    assert_eq!(
        history_without_timing(&full),
        history_without_timing(&killed)
    );
    assert_eq!(
        std::fs::read_to_string(full.join("steps.csv")).unwrap(),
        std::fs::read_to_string(killed.join("steps.csv")).unwrap()
    );
    for f in ["best.safetensors", "epoch-2.safetensors"] {
        assert_eq!(weights(&full.join(f)), weights(&killed.join(f)), "{f}");
    }
    let kept = |run: &Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(run)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("best-"))
            .collect();
        v.sort();
        v
    };
    assert_eq!(kept(&full), kept(&killed));
    assert_eq!(kept(&full).len(), 2);
}

/// `training.eval_every`: the validation and test passes run after every
/// N-th epoch and the last; the other epochs record training metrics only
/// (null in history.json, empty in history.csv, no test part in the epoch
/// line), are never `best`, and the run ends with a test accuracy.
#[test]
fn eval_every_skips_the_passes_between_evaluations() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut args = train_args(
        &config_path("lenet.json"),
        &d.join("run"),
        &["--epochs", "3", "--set", "training.eval_every=2"],
    );
    args.retain(|a| a != "--quiet");
    let (code, _, err) = run(cnn(d).args(&args));
    assert_eq!(code, 0, "{err}");
    let h = history(&d.join("run"));
    assert_eq!(h.len(), 3);
    for (r, evaluated) in h.iter().zip([false, true, true]) {
        for key in [
            "val_acc",
            "val_loss",
            "test_acc",
            "test_loss",
            "test_macro_f1",
        ] {
            assert_eq!(
                !r[key].is_null(),
                evaluated,
                "epoch {}: {key} in {r}",
                r["epoch"]
            );
        }
        assert!(r["train_acc"].as_f64().unwrap() > 0.0);
    }
    assert!(h[2]["test_acc"].as_f64().unwrap() > 0.8, "{h:?}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("epoch ")).collect();
    assert_eq!(lines.len(), 3, "{err}");
    assert!(
        !lines[0].contains("test") && lines[1].contains("test loss"),
        "{err}"
    );
    let csv = std::fs::read_to_string(d.join("run/history.csv")).unwrap();
    let first: Vec<&str> = csv.lines().nth(1).unwrap().split(',').collect();
    assert_eq!((first[6], first[7]), ("", ""), "{csv}");
    // best.safetensors is an evaluated epoch's, and evaluates to its number.
    let best = d.join("run/best.safetensors");
    let epoch = cnn::checkpoint::load(&best).unwrap().meta.epoch;
    assert!(epoch >= 2, "best is epoch {epoch}");
    assert_eq!(
        eval_json(d, &best, &[])["accuracy"],
        h[epoch - 1]["test_acc"]
    );
}
