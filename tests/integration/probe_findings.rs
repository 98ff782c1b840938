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

/// Raw OS errors with exit 1 where bad input is exit 2: a run whose
/// `tensorboard/` was replaced by a file, resumed.
#[test]
fn a_run_whose_tensorboard_folder_is_a_file_is_refused_on_resume_with_what_to_do() {
    let tmp = tempfile::tempdir().unwrap();
    let run_dir = mlp_run(tmp.path(), "run", &[]);
    std::fs::remove_dir_all(run_dir.join("tensorboard")).unwrap();
    std::fs::write(run_dir.join("tensorboard"), b"not a folder").unwrap();
    assert_usage_error(
        cnn(tmp.path())
            .args(["train", "--resume"])
            .arg(&run_dir)
            .args(["--epochs", "2"]),
        &["tensorboard is not a folder", "move it"],
    );
}

/// Unclear messages the probe met, each now naming the field and the fix.
#[test]
fn settings_that_cannot_train_are_refused_up_front_naming_the_field() {
    let tmp = tempfile::tempdir().unwrap();
    let summary = |set: &str| {
        let mut cmd = cnn(tmp.path());
        cmd.args(["summary", "--set", set, "--config"])
            .arg(config_path("lenet.json"));
        cmd
    };
    assert_usage_error(
        &mut summary("training.class_weights=[1e30, 1, 1, 1, 1, 1, 1, 1, 1, 1]"),
        &["training.class_weights", "apart"],
    );
    assert_usage_error(
        &mut summary(r#"training.param_groups=[{"layers": ["7"], "lr_scale": 1e9}]"#),
        &["training.param_groups.0.lr_scale", "at most 1000"],
    );
    assert_usage_error(
        &mut summary("layers.11.init_scale=1e30"),
        &["layer 11", "init_scale", "up to 100"],
    );
    // `layers..0` was read as `layers.0` without a word.
    assert_usage_error(
        &mut summary("layers..0.out_channels=8"),
        &["empty part", "layers.0.out_channels"],
    );
}

/// The shape mismatch of an --init-from that fits nothing is shown with the
/// shapes, not as a name mismatch.
#[test]
fn init_from_a_checkpoint_of_other_sizes_shows_the_shapes() {
    let tmp = tempfile::tempdir().unwrap();
    let run_dir = mlp_run(tmp.path(), "run", &[]);
    let err = assert_usage_error(
        cnn(tmp.path())
            .args([
                "lr-find",
                "--set",
                "layers.1.out_features=50",
                "--set",
                "layers.3.out_features=10",
            ])
            .args([
                "--set",
                "layers.1.bias=false",
                "--set",
                "layers.3.bias=false",
            ])
            .arg("--init-from")
            .arg(run_dir.join("best.safetensors"))
            .arg("--config")
            .arg(config_path("mlp.json"))
            .args(["--set", "data.val_size=100", "--data-dir"])
            .arg(mnist_small()),
        &[
            "other shapes",
            "layers.1.weight (file [100, 784], network [50, 784])",
        ],
    );
    assert!(!err.contains("panicked"));
}

/// `report` showed a config.json that is not a config as an ordinary run.
#[test]
fn report_marks_a_run_whose_config_is_junk_unreadable() {
    let tmp = tempfile::tempdir().unwrap();
    let run_dir = mlp_run(tmp.path(), "run", &[]);
    mlp_run(tmp.path(), "good", &[]);
    std::fs::write(run_dir.join("config.json"), "[1, 2").unwrap();
    let (code, out, err) = run(cnn(tmp.path()).args(["report", "--json"]).arg(tmp.path()));
    assert_eq!(code, 0, "{err}");
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    let bad = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["run"] == "run")
        .unwrap();
    assert_eq!(bad["status"], "unreadable", "{bad}");
    assert!(
        bad["error"].as_str().unwrap().contains("config.json"),
        "{bad}"
    );
}

/// training.ema.every past the run's last step: the average is never made.
#[test]
fn an_ema_that_would_never_update_is_warned_about() {
    let tmp = tempfile::tempdir().unwrap();
    let (code, _, err) = run(cnn(tmp.path())
        .args([
            "train",
            "--epochs",
            "1",
            "--limit-train",
            "128",
            "--limit-test",
            "50",
        ])
        .args([
            "--set",
            "data.val_size=64",
            "--set",
            r#"training.ema={"decay": 0.9, "every": 1000}"#,
        ])
        .arg("--data-dir")
        .arg(mnist_small())
        .arg("--config")
        .arg(config_path("mlp.json"))
        .args(["--out", "run"]));
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("training.ema.every is 1000, more than the run's 2 steps"),
        "{err}"
    );
}

/// lr-find --plot into a folder that does not exist is refused before the
/// sweep runs.
#[test]
fn lr_find_refuses_a_plot_path_before_it_sweeps() {
    let tmp = tempfile::tempdir().unwrap();
    let err = assert_usage_error(
        cnn(tmp.path())
            .args(["lr-find", "--plot", "no/such/folder/lr.png", "--data-dir"])
            .arg(mnist_small())
            .arg("--config")
            .arg(config_path("lenet.json")),
        &["--plot no/such/folder/lr.png", "does not exist"],
    );
    assert!(!err.contains("lr-find:"), "the sweep started: {err}");
}

/// Data files that are not files, and twins, said plainly.
#[test]
fn dataset_files_that_are_folders_fifos_or_twins_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("mnist");
    std::fs::create_dir(&data).unwrap();
    for f in std::fs::read_dir(mnist_small()).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, data.join(f.file_name().unwrap())).unwrap();
    }
    // The raw twin of a .gz file: the note says which one is read.
    let gz = data.join("t10k-labels-idx1-ubyte.gz");
    let mut raw = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(std::fs::File::open(&gz).unwrap()),
        &mut raw,
    )
    .unwrap();
    std::fs::write(data.join("t10k-labels-idx1-ubyte"), raw).unwrap();
    let (code, _, err) = run(cnn(tmp.path())
        .args([
            "train",
            "--epochs",
            "1",
            "--limit-train",
            "64",
            "--set",
            "data.val_size=32",
        ])
        .arg("--data-dir")
        .arg(&data)
        .arg("--config")
        .arg(config_path("mlp.json"))
        .args(["--out", "run"]));
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("holds t10k-labels-idx1-ubyte as well as t10k-labels-idx1-ubyte.gz; reading t10k-labels-idx1-ubyte"),
        "{err}"
    );
    // A folder, then a FIFO, where a file should be.
    let images = data.join("train-images-idx3-ubyte.gz");
    std::fs::remove_file(&images).unwrap();
    std::fs::create_dir(&images).unwrap();
    let mut cmd = cnn(tmp.path());
    cmd.args(["eval", "--checkpoint"])
        .arg(tmp.path().join("run/best.safetensors"))
        .arg("--data-dir")
        .arg(&data)
        .args(["--split", "train"]);
    assert_usage_error(
        &mut cmd,
        &["train-images-idx3-ubyte.gz is a directory, not a file"],
    );
    std::fs::remove_dir(&images).unwrap();
    let c = std::ffi::CString::new(images.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: mkfifo(3) with a NUL-terminated path in the test's folder.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let mut cmd = cnn(tmp.path());
    cmd.args(["eval", "--checkpoint"])
        .arg(tmp.path().join("run/best.safetensors"))
        .arg("--data-dir")
        .arg(&data)
        .args(["--split", "train"]);
    assert_usage_error(
        &mut cmd,
        &["train-images-idx3-ubyte.gz is a FIFO, not a file"],
    );
}

/// eval --split test reads only the test files (it failed when only the
/// training file was damaged); the other splits still need them.
#[test]
fn eval_of_the_test_split_needs_only_the_test_files() {
    let tmp = tempfile::tempdir().unwrap();
    let run_dir = mlp_run(tmp.path(), "run", &[]);
    let data = tmp.path().join("mnist");
    std::fs::create_dir(&data).unwrap();
    for f in std::fs::read_dir(mnist_small()).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, data.join(f.file_name().unwrap())).unwrap();
    }
    let before = eval_json(tmp.path(), &run_dir.join("best.safetensors"), &[]);
    std::fs::write(data.join("train-images-idx3-ubyte.gz"), b"damaged").unwrap();
    let after = eval_json(
        tmp.path(),
        &run_dir.join("best.safetensors"),
        &["--data-dir", data.to_str().unwrap()],
    );
    assert_eq!(after["accuracy"], before["accuracy"]);
    assert_eq!(after["samples"], before["samples"]);
    assert_usage_error(
        cnn(tmp.path())
            .args(["eval", "--split", "val", "--checkpoint"])
            .arg(run_dir.join("best.safetensors"))
            .arg("--data-dir")
            .arg(&data),
        &["train-images-idx3-ubyte.gz"],
    );
}
