//! Training on real MNIST images (the committed subset) and evaluating the
//! checkpoint alone: the network learns, the files are complete, eval
//! reproduces the history, and an existing run directory is never touched.

use crate::common::*;
use serde_json::Value;
use std::path::Path;

/// `cnn train` on the MNIST subset with a 500-image validation split.
fn train(dir: &Path, config: &Path, out: &str, extra: &[&str]) -> (i32, String, String) {
    run(cnn(dir)
        .args([
            "train",
            "--out",
            out,
            "--set",
            "data.val_size=500",
            "--data-dir",
        ])
        .arg(mnist_small())
        .arg("--config")
        .arg(config)
        .args(extra))
}

#[test]
fn lenet_learns_and_eval_of_the_checkpoint_alone_reproduces_the_history() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = train(
        dir.path(),
        &config_path("lenet.json"),
        "run",
        &["--epochs", "2"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("best epoch"), "{out}");
    let run_dir = dir.path().join("run");
    for f in [
        "config.json",
        "history.json",
        "history.csv",
        "last.safetensors",
        "best.safetensors",
    ] {
        assert!(run_dir.join(f).is_file(), "missing {f}");
    }

    // One row per epoch with every documented key; accuracies are fractions.
    let h = history(&run_dir);
    assert_eq!(h.len(), 2);
    for (i, row) in h.iter().enumerate() {
        assert_eq!(row["epoch"], i + 1);
        for key in [
            "lr",
            "train_loss",
            "train_acc",
            "val_loss",
            "val_acc",
            "test_loss",
            "test_acc",
            "epoch_seconds",
            "images_per_second",
        ] {
            assert!(row[key].is_number(), "{key} in {row}");
        }
        assert!(row["test_acc"].as_f64().unwrap() <= 1.0);
    }
    let csv = std::fs::read_to_string(run_dir.join("history.csv")).unwrap();
    assert_eq!(csv.lines().count(), 3);
    assert!(csv.starts_with("epoch,lr,train_loss,train_acc,val_loss,val_acc,test_loss,test_acc,epoch_seconds,images_per_second"));

    // Random weights get ~10%; 2,500 images for 2 epochs are enough for far more.
    let last = &h[1];
    assert!(last["test_acc"].as_f64().unwrap() > 0.80, "{last}");
    assert!(last["train_loss"].as_f64().unwrap() < h[0]["train_loss"].as_f64().unwrap());

    // The checkpoint alone (data dir recorded in it) gives the same numbers.
    let best_epoch = h
        .iter()
        .max_by(|a, b| {
            a["val_acc"]
                .as_f64()
                .partial_cmp(&b["val_acc"].as_f64())
                .unwrap()
        })
        .unwrap();
    let other = tempfile::tempdir().unwrap();
    let e = eval_json(other.path(), &run_dir.join("best.safetensors"), &[]);
    assert_eq!(e["split"], "test");
    assert_eq!(e["samples"], 1000);
    assert_eq!(e["accuracy"], best_epoch["test_acc"]);
    assert!((e["loss"].as_f64().unwrap() - best_epoch["test_loss"].as_f64().unwrap()).abs() < 1e-6);
    let v = eval_json(
        other.path(),
        &run_dir.join("best.safetensors"),
        &["--split", "val"],
    );
    assert_eq!(v["samples"], 500);
    assert_eq!(v["accuracy"], best_epoch["val_acc"]);

    // The resolved config records what was used.
    let cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("config.json")).unwrap())
            .unwrap();
    assert_eq!(cfg["training"]["epochs"], 2);
    assert!(cfg["data"]["normalize"]["mean"].is_array());
}

#[test]
fn existing_run_directory_is_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("taken");
    std::fs::create_dir(&run_dir).unwrap();
    std::fs::write(run_dir.join("history.json"), "precious").unwrap();
    let (code, _, err) = train(
        dir.path(),
        &config_path("mlp.json"),
        "taken",
        &["--epochs", "1"],
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("already exists and is not empty") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(run_dir.join("history.json")).unwrap(),
        "precious"
    );
    assert_eq!(std::fs::read_dir(&run_dir).unwrap().count(), 1);

    // --force replaces the run files and keeps the rest.
    std::fs::write(run_dir.join("notes.txt"), "mine").unwrap();
    let (code, _, err) = train(
        dir.path(),
        &config_path("mlp.json"),
        "taken",
        &["--epochs", "1", "--force", "--limit-train", "500"],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(history(&run_dir).len(), 1);
    assert_eq!(
        std::fs::read_to_string(run_dir.join("notes.txt")).unwrap(),
        "mine"
    );
}

#[test]
fn default_run_directory_is_runs_slash_config_name() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = run(cnn(dir.path())
        .args([
            "train",
            "--quiet",
            "--epochs",
            "1",
            "--limit-train",
            "300",
            "--set",
            "data.val_size=100",
            "--data-dir",
        ])
        .arg(mnist_small())
        .arg("--config")
        .arg(config_path("mlp.json")));
    assert_eq!(code, 0, "{err}");
    assert!(dir.path().join("runs/mlp/best.safetensors").is_file());
}

#[test]
fn same_seed_gives_the_same_history_and_another_seed_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--epochs", "1", "--limit-train", "600", "--quiet"];
    let strip = |h: Vec<Value>| -> Vec<Value> {
        h.into_iter()
            .map(|mut r| {
                r.as_object_mut().unwrap().remove("epoch_seconds");
                r.as_object_mut().unwrap().remove("images_per_second");
                r
            })
            .collect()
    };
    for out in ["a", "b"] {
        assert_eq!(
            train(dir.path(), &config_path("lenet.json"), out, &args).0,
            0
        );
    }
    let mut c_args = args.to_vec();
    c_args.extend(["--seed", "7"]);
    assert_eq!(
        train(dir.path(), &config_path("lenet.json"), "c", &c_args).0,
        0
    );
    let a = strip(history(&dir.path().join("a")));
    assert_eq!(a, strip(history(&dir.path().join("b"))));
    assert_ne!(a, strip(history(&dir.path().join("c"))));
    let tensors = |run: &str| {
        let (_, t) =
            cnn::checkpoint::read_raw(&dir.path().join(run).join("last.safetensors")).unwrap();
        let mut v: Vec<(String, Vec<f32>)> = t
            .into_iter()
            .map(|(k, t)| (k, t.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    let (ta, tb) = (tensors("a"), tensors("b"));
    assert!(ta.len() > 10);
    assert!(ta == tb, "same seed, same weights and optimizer state");
}

// Seed 002 ends with a softmax and then applies cross-entropy: a double
// softmax. cnn warns and takes the loss from the logits, so it still learns.
#[test]
fn final_softmax_warns_and_still_learns() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = shipped("mlp.json");
    cfg["layers"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"type": "softmax"}));
    let p = write_config(dir.path(), "double.json", &cfg);
    let (code, _, err) = train(dir.path(), &p, "run", &["--epochs", "2"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("warning: layer 4 (softmax)"), "{err}");
    assert!(
        history(&dir.path().join("run"))[1]["test_acc"]
            .as_f64()
            .unwrap()
            > 0.8
    );
}

#[test]
fn final_log_softmax_trains_like_plain_logits() {
    let dir = tempfile::tempdir().unwrap();
    let mut with = shipped("mlp.json");
    with["layers"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"type": "log_softmax"}));
    let p = write_config(dir.path(), "with.json", &with);
    let args = ["--epochs", "1", "--limit-train", "500", "--quiet"];
    assert_eq!(train(dir.path(), &p, "with", &args).0, 0);
    assert_eq!(
        train(dir.path(), &config_path("mlp.json"), "without", &args).0,
        0
    );
    let (a, b) = (
        history(&dir.path().join("with")),
        history(&dir.path().join("without")),
    );
    assert_eq!(a[0]["test_acc"], b[0]["test_acc"]);
    assert_eq!(a[0]["train_loss"], b[0]["train_loss"]);
}

#[test]
fn piped_output_is_one_plain_line_per_epoch_and_quiet_is_silent() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = train(
        dir.path(),
        &config_path("mlp.json"),
        "a",
        &["--epochs", "2", "--limit-train", "500"],
    );
    assert_eq!(code, 0);
    let epoch_lines: Vec<&str> = err.lines().filter(|l| l.starts_with("epoch ")).collect();
    assert_eq!(epoch_lines.len(), 2, "{err}");
    assert!(
        epoch_lines[0].contains("train loss") && epoch_lines[0].contains("img/s"),
        "{err}"
    );
    assert!(
        !err.contains('\u{1b}'),
        "no terminal escapes when piped: {err:?}"
    );
    let (code, out, err) = train(
        dir.path(),
        &config_path("mlp.json"),
        "b",
        &["--epochs", "1", "--limit-train", "500", "--quiet"],
    );
    assert_eq!(code, 0);
    assert_eq!((out.as_str(), err.as_str()), ("", ""));
}

#[test]
fn every_layer_type_trains() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = serde_json::json!({
        "input_shape": [1, 28, 28],
        "num_classes": 10,
        "layers": [
            {"type": "conv2d", "out_channels": 4, "kernel_size": 3, "padding": "same", "padding_mode": "reflect"},
            {"type": "batch_norm2d"},
            {"type": "leaky_relu", "negative_slope": 0.1},
            {"type": "max_pool2d", "kernel_size": 3, "stride": 2, "padding": 1},
            {"type": "conv2d", "out_channels": 8, "kernel_size": [3, 2], "groups": 2, "dilation": 2, "bias": false},
            {"type": "gelu"},
            {"type": "avg_pool2d", "kernel_size": 2, "padding": 1},
            {"type": "tanh"},
            {"type": "flatten"},
            {"type": "dropout", "p": 0.2},
            {"type": "linear", "out_features": 32},
            {"type": "batch_norm1d"},
            {"type": "sigmoid"},
            {"type": "linear", "out_features": 10},
            {"type": "log_softmax"}
        ],
        "training": {"optimizer": {"type": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": true, "weight_decay": 1e-4}}
    });
    let p = write_config(dir.path(), "zoo.json", &cfg);
    let (code, _, err) = train(
        dir.path(),
        &p,
        "run",
        &["--epochs", "1", "--limit-train", "1000"],
    );
    assert_eq!(code, 0, "{err}");
    let h = history(&dir.path().join("run"));
    assert!(h[0]["test_acc"].as_f64().unwrap() > 0.3, "{:?}", h[0]);
    let e = eval_json(dir.path(), &dir.path().join("run/best.safetensors"), &[]);
    assert_eq!(e["accuracy"], h[0]["test_acc"]);
}

// The variables that choose kernels take a few values; a typo is named in a
// warning and the run goes on with the defaults.
#[test]
fn unknown_kernel_choices_are_warned_about_and_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = run(cnn(dir.path())
        .env("CNN_KERNELS", "candel")
        .env("CNN_DIRECT_CONV", "avx3")
        .args([
            "train",
            "--out",
            "run",
            "--epochs",
            "1",
            "--limit-train",
            "256",
            "--quiet",
        ])
        .args(["--set", "data.val_size=64", "--data-dir"])
        .arg(mnist_small())
        .arg("--config")
        .arg(config_path("three-conv.json")));
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("warning: CNN_KERNELS=\"candel\" is not one of candle; ignored"),
        "{err}"
    );
    assert!(
        err.contains("warning: CNN_DIRECT_CONV=\"avx3\" is not one of 0, avx2; ignored"),
        "{err}"
    );
}

// What CUDA runs: candle's own ops instead of the CPU kernels (conv, pooling
// with overlapping windows, linear, cross-entropy, the tensor-op optimizer).
// Forced on the CPU with CNN_KERNELS=candle, the same run learns alike.
#[test]
fn candle_ops_path_trains_like_the_cpu_kernels() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = serde_json::json!({
        "input_shape": [1, 28, 28],
        "num_classes": 10,
        "layers": [
            {"type": "conv2d", "out_channels": 8, "kernel_size": 3, "padding": 1},
            {"type": "relu"},
            {"type": "max_pool2d", "kernel_size": 3, "stride": 2, "padding": 1},
            {"type": "conv2d", "out_channels": 16, "kernel_size": 3},
            {"type": "batch_norm2d"},
            {"type": "relu"},
            {"type": "avg_pool2d", "kernel_size": 2},
            {"type": "flatten"},
            {"type": "dropout", "p": 0.2},
            {"type": "linear", "out_features": 10}
        ]
    });
    let p = write_config(dir.path(), "mix.json", &cfg);
    let args = ["--epochs", "2", "--limit-train", "1200", "--quiet"];
    let (code, _, err) = train(dir.path(), &p, "native", &args);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run(cnn(dir.path())
        .env("CNN_KERNELS", "candle")
        .args([
            "train",
            "--out",
            "candle",
            "--set",
            "data.val_size=500",
            "--data-dir",
        ])
        .arg(mnist_small())
        .arg("--config")
        .arg(&p)
        .args(args));
    assert_eq!(code, 0, "{err}");
    let (a, b) = (
        history(&dir.path().join("native")),
        history(&dir.path().join("candle")),
    );
    let acc = |h: &[Value]| h[1]["test_acc"].as_f64().unwrap();
    assert!(acc(&a) > 0.75 && acc(&b) > 0.75, "{} {}", acc(&a), acc(&b));
    assert!(
        (acc(&a) - acc(&b)).abs() < 0.03,
        "native {} vs candle ops {}",
        acc(&a),
        acc(&b)
    );
    // The first epoch's training loss agrees closely: same data, same init.
    let loss = |h: &[Value]| h[0]["train_loss"].as_f64().unwrap();
    assert!(
        (loss(&a) - loss(&b)).abs() < 0.01,
        "{} vs {}",
        loss(&a),
        loss(&b)
    );
}

// The op-by-op check a GPU machine runs (scripts/gpu-check.sh), here with
// candle's operations on the CPU against the kernels: every layer output and
// gradient of every shipped config agrees.
#[test]
fn check_device_compares_every_layer_and_gradient_of_the_shipped_configs() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = cnn(dir.path());
    cmd.args(["check-device", "--device", "cpu", "--json"]);
    let mut configs: Vec<_> = std::fs::read_dir(repo().join("configs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    configs.sort();
    for c in &configs {
        cmd.arg("--config").arg(c);
    }
    let (code, out, err) = run(&mut cmd);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["failed"], 0, "{out}");
    let results = v["results"].as_array().unwrap();
    for c in &configs {
        let name = c.file_stem().unwrap().to_str().unwrap();
        let outputs = results
            .iter()
            .filter(|r| r["config"] == name && r["what"] == "output")
            .count();
        assert!(outputs > 2, "{name}: {outputs} outputs compared");
    }
    assert!(
        results
            .iter()
            .any(|r| r["name"] == "layers.6.shortcut.0.weight")
    );
}
