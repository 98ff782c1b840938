//! Regression tests for what the second hardening probe found (issue 35),
//! each named after the behaviour it keeps: the input, the exit code, the
//! message, and that nothing was written or lost.

use crate::common::*;
use std::path::{Path, PathBuf};

/// An MLP trained for one epoch on 200 images into `dir/name`.
fn mlp_run(dir: &Path, name: &str, extra: &[&str]) -> PathBuf {
    let out = dir.join(name);
    let (code, _, err) = run(cnn(dir)
        .args(["train", "--quiet", "--epochs", "1", "--limit-train", "200"])
        .args([
            "--set",
            "data.val_size=100",
            "--limit-test",
            "100",
            "--data-dir",
        ])
        .arg(mnist_small())
        .arg("--config")
        .arg(config_path("mlp.json"))
        .arg("--out")
        .arg(&out)
        .args(extra));
    assert_eq!(code, 0, "{err}");
    out
}

/// The files of `dir` and their bytes (but the lock, which says who holds it).
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && !p.ends_with(".lock"))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn resume_refuses_the_last_checkpoint_of_another_run_and_says_how_to_start_from_it() {
    let tmp = tempfile::tempdir().unwrap();
    let a = mlp_run(tmp.path(), "a", &[]);
    // The same config, seed and data: only the run differs.
    let b = mlp_run(tmp.path(), "b", &[]);
    std::fs::copy(b.join("last.safetensors"), a.join("last.safetensors")).unwrap();
    let before = files(&a);
    assert_usage_error(
        cnn(tmp.path())
            .args(["train", "--resume"])
            .arg(&a)
            .args(["--epochs", "2"]),
        &["written by another run", "--init-from"],
    );
    assert!(files(&a) == before, "the run directory changed");
    // Its own checkpoint resumes.
    let (code, _, err) = run(cnn(tmp.path())
        .args(["train", "--resume"])
        .arg(&b)
        .args(["--epochs", "2"]));
    assert_eq!(code, 0, "{err}");
    assert_eq!(history(&b).len(), 2);
}

/// With no validation split the training accuracy is judged, and the
/// message names it (it said val_acc while showing the training accuracy).
#[test]
fn early_stopping_without_a_validation_split_names_the_training_metric() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let (code, _, err) = run(cnn(tmp.path())
        .args([
            "train",
            "--epochs",
            "30",
            "--limit-train",
            "64",
            "--limit-test",
            "50",
        ])
        .args([
            "--set",
            "data.val_size=0",
            "--set",
            "training.optimizer.lr=1e-12",
        ])
        .args([
            "--set",
            r#"training.early_stopping={"patience": 0}"#,
            "--data-dir",
        ])
        .arg(mnist_small())
        .arg("--config")
        .arg(config_path("mlp.json"))
        .arg("--out")
        .arg(&out));
    assert_eq!(code, 0, "{err}");
    // At a rate of 1e-12 the 64 images are classified alike every epoch, so
    // nothing improves after epoch 1: patience 0 stops at epoch 2.
    assert_eq!(history(&out).len(), 2, "{err}");
    assert!(
        err.contains("early stopping: train_acc has not improved"),
        "{err}"
    );
    let status = std::fs::read_to_string(out.join("status.json")).unwrap();
    assert!(
        status.contains("train_acc had not improved for 1 epoch"),
        "{status}"
    );
}

/// A freeze list covering every trained layer trains nothing: refused up
/// front as `"trainable": false` on all of them is, by train and lr-find
/// (which said "the sweep took only 20 steps").
#[test]
fn a_freeze_list_that_leaves_nothing_to_train_is_refused_by_train_and_lr_find() {
    let tmp = tempfile::tempdir().unwrap();
    let all = r#"training.freeze=["0", "3", "7", "9", "11"]"#;
    assert_usage_error(
        cnn(tmp.path())
            .args(["train", "--show-config", "--set", all, "--config"])
            .arg(config_path("lenet.json")),
        &["training.freeze covers every parameter"],
    );
    assert_usage_error(
        cnn(tmp.path())
            .args(["lr-find", "--set", all, "--data-dir"])
            .arg(mnist_small())
            .arg("--config")
            .arg(config_path("lenet.json")),
        &["training.freeze covers every parameter"],
    );
    // Frozen until epoch 2, or all but one layer: accepted.
    for sets in [
        vec![all, "training.unfreeze_after=1"],
        vec![r#"training.freeze=["0", "3", "7", "9"]"#],
    ] {
        let mut cmd = cnn(tmp.path());
        cmd.args(["train", "--show-config", "--config"])
            .arg(config_path("lenet.json"));
        for s in sets {
            cmd.args(["--set", s]);
        }
        let (code, _, err) = run(&mut cmd);
        assert_eq!(code, 0, "{err}");
    }
}

/// A parameter group whose parameters earlier groups all took changes
/// nothing: refused, naming it (the README says a group that selects no
/// parameter is an error).
#[test]
fn a_parameter_group_shadowed_by_earlier_ones_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let groups = r#"training.param_groups=[{"layers": ["7", "9"], "lr_scale": 0.1}, {"layers": ["9"], "lr_scale": 2}]"#;
    assert_usage_error(
        cnn(tmp.path())
            .args(["summary", "--set", groups, "--config"])
            .arg(config_path("lenet.json")),
        &["training.param_groups.1", "earlier groups already took"],
    );
}

/// A conv's `init` takes only its own settings: a misspelt field beside
/// `dirac` or `default` is refused as it is beside `patch_whitening`.
#[test]
fn unknown_fields_inside_a_conv_init_are_refused_for_every_kind() {
    let tmp = tempfile::tempdir().unwrap();
    for init in [
        r#"{"type": "dirac", "gain": 2}"#,
        r#"{"type": "default", "scale": 2}"#,
        r#"{"type": "patch_whitening", "epsilon": 1}"#,
    ] {
        assert_usage_error(
            cnn(tmp.path())
                .args([
                    "summary",
                    "--set",
                    &format!("layers.3.init={init}"),
                    "--config",
                ])
                .arg(config_path("lenet.json")),
            &["layer 3 (conv2d)", "init", "unknown field"],
        );
    }
}
