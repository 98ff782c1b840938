//! Residual and concat blocks and global pooling, through every command: a
//! small residual network learns real MNIST digits, resumes bit for bit,
//! gives the same numbers on one thread or two, and eval, predict,
//! summary, feature-maps, filters and `--set` all reach inside its blocks.

use crate::common::*;
use serde_json::{Value, json};
use std::path::Path;
use std::sync::OnceLock;

/// conv 8 → residual (identity) → residual (stride 2, projection) →
/// concat (3×3 conv, identity, pooling) → concat (adaptive average pool,
/// global max and average pools) → linear.
fn resnet(bn: bool) -> Value {
    let conv = |c: usize, s: usize| json!({"type": "conv2d", "out_channels": c, "kernel_size": 3, "stride": s, "padding": 1, "bias": !bn});
    let norm = |layers: Vec<Value>| -> Vec<Value> {
        layers
            .into_iter()
            .flat_map(|l| {
                let is_conv = l["type"] == "conv2d";
                std::iter::once(l).chain((bn && is_conv).then(|| json!({"type": "batch_norm2d"})))
            })
            .collect()
    };
    json!({
        "name": "tiny-resnet",
        "input_shape": [1, 28, 28],
        "num_classes": 10,
        "layers": norm(vec![conv(8, 1)]).into_iter().chain([
            json!({"type": "relu"}),
            json!({"type": "residual", "layers": norm(vec![conv(8, 1), json!({"type": "relu"}), conv(8, 1)]), "activation": "relu"}),
            json!({"type": "residual", "layers": norm(vec![conv(16, 2), json!({"type": "relu"}), conv(16, 1)]),
                   "shortcut": norm(vec![json!({"type": "conv2d", "out_channels": 16, "kernel_size": 1, "stride": 2, "bias": !bn})]),
                   "activation": "relu"}),
            json!({"type": "concat", "branches": [
                [conv(8, 1), {"type": "relu"}],
                [],
                [{"type": "max_pool2d", "kernel_size": 3, "stride": 1, "padding": 1}]
            ]}),
            // Three summaries of the maps side by side: 16×36 + 36 + 36 values.
            json!({"type": "concat", "branches": [
                [{"type": "adaptive_avg_pool2d", "output_size": 4}, {"type": "flatten"}],
                [{"type": "global_max_pool2d"}],
                [{"type": "global_avg_pool2d"}]
            ]}),
            json!({"type": "linear", "out_features": 10})
        ]).collect::<Vec<_>>(),
        "training": {"optimizer": {"type": "adam", "lr": 0.01}, "batch_size": 64},
        "data": {"val_size": 500}
    })
}

fn train(dir: &Path, config: &Path, out: &str, extra: &[&str]) -> (i32, String, String) {
    run(cnn(dir)
        .args(["train", "--quiet", "--out", out, "--data-dir"])
        .arg(mnist_small())
        .arg("--config")
        .arg(config)
        .args(extra))
}

/// The batch-norm residual network trained for 3 epochs, shared.
fn trained() -> &'static Path {
    static RUN: OnceLock<tempfile::TempDir> = OnceLock::new();
    RUN.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let p = write_config(dir.path(), "resnet.json", &resnet(true));
        let (code, _, err) = train(dir.path(), &p, "run", &["--epochs", "3"]);
        assert_eq!(code, 0, "{err}");
        dir
    })
    .path()
}

#[test]
fn a_residual_network_learns_and_eval_reads_its_checkpoint() {
    let dir = trained();
    let run_dir = dir.join("run");
    let h = history(&run_dir);
    let best = h
        .iter()
        .map(|r| r["test_acc"].as_f64().unwrap())
        .fold(0.0, f64::max);
    assert!(best > 0.85, "{h:?}");
    let e = eval_json(dir, &run_dir.join("best.safetensors"), &[]);
    assert!((e["accuracy"].as_f64().unwrap() - best).abs() < 1e-9, "{e}");
    // The tensors are named down the nesting, as PyTorch names them.
    let names: Vec<String> = tensors(&run_dir).into_iter().map(|(n, _)| n).collect();
    for name in [
        "layers.3.layers.0.weight",
        "layers.3.layers.1.running_var",
        "layers.4.shortcut.0.weight",
        "layers.4.shortcut.1.running_mean",
        "layers.5.branches.0.0.weight",
    ] {
        assert!(names.iter().any(|n| n == name), "{name} not in {names:?}");
    }
}

#[test]
fn the_looking_inside_commands_reach_into_blocks() {
    let dir = trained();
    let ck = dir.join("run/best.safetensors");
    let (code, _, err) = run(cnn(dir)
        .args([
            "feature-maps",
            "--index",
            "0",
            "-o",
            "maps.png",
            "--checkpoint",
        ])
        .arg(&ck));
    assert_eq!(code, 0, "{err}");
    assert!(dir.join("maps.png").metadata().unwrap().len() > 1000);
    let (code, _, err) = run(cnn(dir)
        .args([
            "filters",
            "--layer",
            "4.shortcut.0",
            "-o",
            "f.png",
            "--checkpoint",
        ])
        .arg(&ck));
    assert_eq!(code, 0, "{err}");
    assert_usage_error(
        cnn(dir)
            .args([
                "filters",
                "--layer",
                "3.layers.2",
                "-o",
                "f2.png",
                "--checkpoint",
            ])
            .arg(&ck),
        &[
            "--layer 3.layers.2 is a relu layer",
            "3.layers.0",
            "4.shortcut.0",
        ],
    );
    let png = dir.join("digit.png");
    let (_, _, test, labels) = mnist_arrays();
    image::GrayImage::from_raw(28, 28, test[..784].to_vec())
        .unwrap()
        .save(&png)
        .unwrap();
    let (code, out, err) = run(cnn(dir)
        .args(["predict", "--json", "--checkpoint"])
        .arg(&ck)
        .arg(&png));
    assert_eq!(code, 0, "{err}");
    let p: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(p[0]["class"], json!(labels[0]), "{p}");
}

#[test]
fn summary_nests_blocks_and_set_reaches_inside_them() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_config(dir.path(), "resnet.json", &resnet(false));
    let (code, out, err) = run(cnn(dir.path())
        .args(["summary", "--json", "--config"])
        .arg(&p)
        .args(["--set", "layers.3.layers.2.out_channels=32"])
        .args(["--set", "layers.3.shortcut.0.out_channels=32"]));
    assert_eq!(code, 0, "{err}");
    let s: Value = serde_json::from_str(&out).unwrap();
    let block = &s["layers"][3];
    assert_eq!(block["type"], "residual");
    assert_eq!(block["output_shape"], json!([32, 14, 14]));
    assert_eq!(block["layers"][2]["path"], "layers.3.layers.2");
    assert_eq!(block["shortcut"][0]["output_shape"], json!([32, 14, 14]));
    assert_eq!(s["layers"][4]["branches"][0][0]["type"], "conv2d");
    let inner: u64 = ["layers", "shortcut"]
        .iter()
        .flat_map(|l| block[l].as_array().unwrap())
        .map(|l| l["params"].as_u64().unwrap())
        .sum();
    assert_eq!(block["params"].as_u64().unwrap(), inner);
    // Only one of the two changed: the sum does not fit, and the message says so.
    assert_usage_error(
        cnn(dir.path())
            .args(["summary", "--config"])
            .arg(&p)
            .args(["--set", "layers.3.layers.2.out_channels=32"]),
        &[
            "layer 3 (residual): the block's layers output 32×14×14 but its shortcut outputs 16×14×14",
        ],
    );
    let (code, out, _) = run(cnn(dir.path()).args(["summary", "--config"]).arg(&p));
    assert_eq!(code, 0);
    assert!(out.contains("\n3.shortcut.0      conv2d  "), "{out}");
}

#[test]
fn a_block_network_resumes_bit_for_bit_and_ignores_the_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    // Without batch norm the batch is cut into micro-batches on threads.
    let p = write_config(dir.path(), "resnet.json", &resnet(false));
    let args = ["--limit-train", "640", "--checkpoint-every", "3"];
    let (code, _, err) = train(
        dir.path(),
        &p,
        "whole",
        &[&["--epochs", "2"][..], &args].concat(),
    );
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = train(
        dir.path(),
        &p,
        "cut",
        &[&["--epochs", "1"][..], &args].concat(),
    );
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run(cnn(dir.path())
        .args([
            "train",
            "--quiet",
            "--epochs",
            "2",
            "--resume",
            "cut",
            "--data-dir",
        ])
        .arg(mnist_small()));
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        tensors(&dir.path().join("whole")),
        tensors(&dir.path().join("cut"))
    );
    assert_eq!(
        history_without_timing(&dir.path().join("whole")),
        history_without_timing(&dir.path().join("cut"))
    );
    let (code, _, err) = run(cnn(dir.path())
        .env("RAYON_NUM_THREADS", "1")
        .args([
            "--threads",
            "1",
            "train",
            "--quiet",
            "--out",
            "one",
            "--epochs",
            "2",
            "--data-dir",
        ])
        .arg(mnist_small())
        .arg("--config")
        .arg(&p)
        .args(args));
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        tensors(&dir.path().join("whole")),
        tensors(&dir.path().join("one"))
    );
}

// What CUDA runs: candle's ops for every layer of a block network, forced
// on the CPU with CNN_KERNELS=candle; it learns as the CPU kernels do.
#[test]
fn blocks_train_on_the_candle_ops_path_like_on_the_cpu_kernels() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_config(dir.path(), "resnet.json", &resnet(true));
    let mut acc = Vec::new();
    for kernels in ["native", "candle"] {
        let mut cmd = cnn(dir.path());
        if kernels == "candle" {
            cmd.env("CNN_KERNELS", "candle");
        }
        let (code, _, err) = run(cmd
            .args([
                "train",
                "--quiet",
                "--out",
                kernels,
                "--epochs",
                "2",
                "--limit-train",
                "1000",
            ])
            .args(["--lr", "0.003", "--data-dir"])
            .arg(mnist_small())
            .arg("--config")
            .arg(&p));
        assert_eq!(code, 0, "{err}");
        let h = history(&dir.path().join(kernels));
        acc.push(h[1]["test_acc"].as_f64().unwrap());
    }
    assert!(acc[0] > 0.5 && acc[1] > 0.5, "{acc:?}");
    assert!((acc[0] - acc[1]).abs() < 0.06, "{acc:?}");
}

#[test]
fn bad_blocks_are_refused_by_path_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = resnet(false);
    cfg["layers"][3].as_object_mut().unwrap().remove("shortcut");
    let p = write_config(dir.path(), "bad.json", &cfg);
    assert_usage_error(
        cnn(dir.path())
            .args(["train", "--data-dir"])
            .arg(mnist_small())
            .arg("--config")
            .arg(&p),
        &[
            "layer 3 (residual): the block's layers output 16×14×14 but its identity shortcut passes the input, 8×28×28",
            "\"shortcut\": [{\"type\": \"conv2d\", \"out_channels\": 16, \"kernel_size\": 1, \"stride\": 2",
        ],
    );
    assert!(!dir.path().join("runs").exists());
}
