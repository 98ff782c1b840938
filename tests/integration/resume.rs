//! Never lose a run: kill -9 at any moment and --resume gives bit-identical
//! weights, optimizer state and history; Ctrl-C saves and exits 130; a
//! diverging run stops with finite checkpoints; schedules and early stopping
//! show in the history; bad or missing checkpoints are clear errors.

use crate::common::*;
use serde_json::Value;
use std::path::Path;
use std::process::Command as StdCommand;
use std::time::Duration;

const BASE: &[&str] = &["--set", "data.val_size=500", "--quiet"];

fn train_args(config: &str, out: &Path, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = ["train", "--config"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    v.push(config_path(config).display().to_string());
    v.push("--data-dir".into());
    v.push(mnist_small().display().to_string());
    v.push("--out".into());
    v.push(out.display().to_string());
    v.extend(BASE.iter().map(|s| s.to_string()));
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

fn assert_same_run(a: &Path, b: &Path) {
    let (ta, tb) = (tensors(a), tensors(b));
    assert!(
        ta.iter().any(|(k, _)| k.starts_with("optim.")),
        "optimizer state is saved"
    );
    assert_eq!(ta.len(), tb.len());
    for ((ka, va), (kb, vb)) in ta.iter().zip(&tb) {
        assert_eq!(ka, kb);
        assert!(va == vb, "{ka} differs after resuming");
    }
    assert_eq!(history_without_timing(a), history_without_timing(b));
    assert_eq!(
        std::fs::read_to_string(a.join("steps.csv")).unwrap(),
        std::fs::read_to_string(b.join("steps.csv")).unwrap()
    );
}

#[test]
fn killed_runs_resume_to_identical_tensors_and_history() {
    let dir = tempfile::tempdir().unwrap();
    let full = dir.path().join("full");
    let killed = dir.path().join("killed");
    let extra = ["--checkpoint-every", "7", "--epochs", "2"];
    assert_eq!(
        spawn(dir.path(), &train_args("lenet.json", &full, &extra), "2")
            .wait()
            .unwrap()
            .code(),
        Some(0)
    );
    let steps = saved_step(&full);
    assert_eq!(steps, 2 * 2500u64.div_ceil(64));

    // SIGKILL after the first mid-epoch checkpoint, then at several later
    // moments, resuming each time (with another thread count, too).
    let mut child = spawn(dir.path(), &train_args("lenet.json", &killed, &extra), "2");
    wait_for_step(&mut child, &killed, 7);
    child.kill().unwrap();
    child.wait().unwrap();
    let resume: Vec<String> = ["train", "--resume", killed.to_str().unwrap(), "--quiet"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for (i, target) in [20, 45, 60].into_iter().enumerate() {
        let mut child = spawn(dir.path(), &resume, if i % 2 == 0 { "1" } else { "2" });
        wait_for_step(&mut child, &killed, target);
        // Let it run a little past the checkpoint, so the kill lands mid-step.
        std::thread::sleep(Duration::from_millis(20 * i as u64));
        child.kill().unwrap();
        child.wait().unwrap();
    }
    assert_eq!(
        cnn::status::read(&killed).unwrap().status,
        cnn::status::State::Killed
    );
    let status = spawn(dir.path(), &resume, "2").wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert_eq!(
        cnn::status::read(&killed).unwrap().status,
        cnn::status::State::Done
    );
    assert_eq!(saved_step(&killed), steps);
    assert_same_run(&full, &killed);

    // Resuming a finished run does nothing, and says so.
    let (code, _, err) = run(cnn(dir.path()).args(["train", "--resume"]).arg(&killed));
    assert_eq!(code, 0);
    assert!(
        err.contains("nothing to resume") && err.contains("--epochs"),
        "{err}"
    );
    // --epochs extends it.
    let (code, _, err) = run(cnn(dir.path())
        .args(["train", "--quiet", "--epochs", "3", "--resume"])
        .arg(&killed));
    assert_eq!(code, 0, "{err}");
    assert_eq!(history_without_timing(&killed).len(), 3);
}

#[cfg(unix)]
#[test]
fn ctrl_c_saves_an_evaluable_checkpoint_and_exits_130() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let mut child = spawn(
        dir.path(),
        &train_args(
            "lenet.json",
            &out,
            &["--checkpoint-every", "5", "--epochs", "2"],
        ),
        "2",
    );
    wait_for_step(&mut child, &out, 5);
    // SAFETY: kill(2) on a process this test started; no memory is involved.
    unsafe { libc_kill(child.id() as i32, 2) };
    let output = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{err}");
    assert!(
        err.contains("interrupted") && err.contains("cnn train --resume"),
        "{err}"
    );
    assert_eq!(
        cnn::status::read(&out).unwrap().status,
        cnn::status::State::Interrupted
    );
    let (code, out_json, err) = run(cnn(dir.path())
        .args(["eval", "--json", "--checkpoint"])
        .arg(out.join("last.safetensors")));
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out_json).unwrap();
    assert!(v["accuracy"].as_f64().unwrap() > 0.1);
    let (code, _, err) = run(cnn(dir.path())
        .args(["train", "--quiet", "--resume"])
        .arg(&out));
    assert_eq!(code, 0, "{err}");
    assert_eq!(history_without_timing(&out).len(), 2);
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

#[test]
fn a_diverging_run_stops_with_a_clear_message_and_finite_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("nan");
    let (code, _, err) = run(cnn(dir.path()).args(train_args(
        "lenet.json",
        &out,
        &["--lr", "1e6", "--checkpoint-every", "1", "--epochs", "2"],
    )));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("training diverged") && err.contains("epoch 1") && err.contains("lower"),
        "{err}"
    );
    assert!(!err.contains("panicked"));
    let status = cnn::status::read(&out).unwrap();
    assert_eq!(status.status, cnn::status::State::Failed);
    assert!(status.message.unwrap().contains("training diverged"));
    for f in ["last.safetensors", "best.safetensors"] {
        let p = out.join(f);
        if p.exists() {
            let (_, t) = cnn::checkpoint::read_raw(&p).unwrap();
            for (k, t) in t {
                let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                assert!(v.iter().all(|x| x.is_finite()), "{f}: {k} is not finite");
            }
        }
    }
}

#[test]
fn schedules_show_in_the_history_and_early_stopping_ends_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("step");
    let extra = [
        "--epochs",
        "3",
        "--limit-train",
        "300",
        "--set",
        r#"training.lr_schedule={"type": "step", "step_size": 1, "gamma": 0.5}"#,
    ];
    let (code, _, err) = run(cnn(dir.path()).args(train_args("mlp.json", &out, &extra)));
    assert_eq!(code, 0, "{err}");
    let lrs: Vec<f64> = history_without_timing(&out)
        .iter()
        .map(|r| r["lr"].as_f64().unwrap())
        .collect();
    assert_eq!(lrs, vec![1e-3, 5e-4, 2.5e-4]);

    // Patience 1 with a min_delta nothing can beat: stops after epoch 2.
    let out = dir.path().join("early");
    let extra = [
        "--epochs",
        "5",
        "--limit-train",
        "300",
        "--set",
        r#"training.early_stopping={"patience": 1, "min_delta": 10}"#,
        "--set",
        "training.monitor=val_loss",
    ];
    let (code, _, err) = run(cnn(dir.path()).args(train_args("mlp.json", &out, &extra)));
    assert_eq!(code, 0, "{err}");
    assert_eq!(history_without_timing(&out).len(), 2);
    let state = cnn::checkpoint::load(&out.join("last.safetensors"))
        .unwrap()
        .meta
        .state
        .unwrap();
    assert!(
        state.stopped_early && state.epochs_without_improvement == 1,
        "{err}"
    );
    let (code, _, err) = run(cnn(dir.path()).args(["train", "--resume"]).arg(&out));
    assert_eq!(code, 0);
    assert!(
        err.contains("nothing to resume") && err.contains("stopped early"),
        "{err}"
    );
}

/// A warm-up as long as the run (a shipped config's, run with a small
/// `--epochs`) is shortened to half the run with a warning, not refused.
#[test]
fn a_warmup_longer_than_the_run_is_shortened_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x");
    let mut args = train_args(
        "mlp.json",
        &out,
        &[
            "--epochs",
            "1",
            "--set",
            r#"training.lr_schedule={"type": "cosine", "warmup_epochs": 1}"#,
        ],
    );
    args.retain(|a| a != "--quiet");
    let (code, _, err) = run(cnn(dir.path()).args(&args));
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("warning: training.lr_schedule.warmup_epochs is 1 but the run has only 1 epoch; the warm-up is shortened to 0.5 epochs"),
        "{err}"
    );
}

#[test]
fn bad_schedule_settings_name_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, &str)] = &[
        (
            r#"training.lr_schedule={"type": "step", "step_size": 0, "gamma": 0.5}"#,
            "training.lr_schedule.step_size is 0",
        ),
        (
            r#"training.lr_schedule={"type": "cosine", "warmup_epochs": -1}"#,
            "training.lr_schedule.warmup_epochs is -1",
        ),
        (
            r#"training.lr_schedule={"type": "warp"}"#,
            "field `training.lr_schedule.type`: unknown schedule \"warp\"",
        ),
        (
            r#"training.lr_schedule={"type": "step", "gama": 0.1, "step_size": 1}"#,
            "unknown field `gama`",
        ),
        (
            r#"training.early_stopping={"patience": 2, "min_delta": -1}"#,
            "min_delta is -1",
        ),
        (
            "training.monitor=val_accuracy",
            "unknown variant `val_accuracy`",
        ),
    ];
    for (set, needle) in cases {
        assert_usage_error(
            cnn(dir.path()).args(train_args(
                "mlp.json",
                &dir.path().join("x"),
                &["--set", set],
            )),
            &[needle],
        );
    }
}

#[test]
fn resume_refuses_what_would_change_the_run_and_missing_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    assert_eq!(
        run(cnn(dir.path()).args(train_args(
            "mlp.json",
            &out,
            &["--epochs", "1", "--limit-train", "200"]
        )))
        .0,
        0
    );
    assert_usage_error(
        cnn(dir.path())
            .args([
                "train",
                "--lr",
                "0.1",
                "--set",
                "training.seed=3",
                "--resume",
            ])
            .arg(&out),
        &["--lr, --set cannot be used with it", "--epochs"],
    );
    assert_usage_error(
        cnn(dir.path()).args(["train", "--resume", "nowhere"]),
        &["--resume nowhere: no such run directory"],
    );
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    assert_usage_error(
        cnn(dir.path()).args(["train", "--resume"]).arg(&empty),
        &["has no last.safetensors"],
    );
    // best.safetensors carries no run state.
    let copy = dir.path().join("copy");
    std::fs::create_dir(&copy).unwrap();
    std::fs::copy(out.join("best.safetensors"), copy.join("last.safetensors")).unwrap();
    assert_usage_error(
        cnn(dir.path()).args(["train", "--resume"]).arg(&copy),
        &["holds no training state"],
    );
}

#[test]
fn corrupt_and_foreign_checkpoints_are_clear_errors_and_nothing_is_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    assert_eq!(
        run(cnn(dir.path()).args(train_args(
            "mlp.json",
            &out,
            &["--epochs", "1", "--limit-train", "200"]
        )))
        .0,
        0
    );
    let last = out.join("last.safetensors");
    let good = std::fs::read(&last).unwrap();

    // Truncated.
    std::fs::write(&last, &good[..good.len() / 2]).unwrap();
    assert_usage_error(
        cnn(dir.path()).args(["train", "--resume"]).arg(&out),
        &["last.safetensors is not a valid safetensors file"],
    );
    assert_usage_error(
        cnn(dir.path()).args(["eval", "--checkpoint"]).arg(&last),
        &["not a valid safetensors file"],
    );
    assert_eq!(
        std::fs::read(&last).unwrap().len(),
        good.len() / 2,
        "left as it was"
    );
    // Garbage.
    std::fs::write(&last, b"not a checkpoint at all").unwrap();
    assert_usage_error(
        cnn(dir.path()).args(["eval", "--checkpoint"]).arg(&last),
        &["not a valid safetensors file"],
    );
    // A safetensors file that is not a cnn checkpoint.
    let foreign = dir.path().join("foreign.safetensors");
    let t = candle_core::Tensor::zeros((2, 2), candle_core::DType::F32, &candle_core::Device::Cpu)
        .unwrap();
    candle_core::safetensors::save(
        &std::collections::HashMap::from([("w".to_string(), t)]),
        &foreign,
    )
    .unwrap();
    assert_usage_error(
        cnn(dir.path()).args(["eval", "--checkpoint"]).arg(&foreign),
        &["not a cnn checkpoint", "--config"],
    );
    // Weights of another architecture.
    assert_usage_error(
        cnn(dir.path())
            .args(["eval", "--config"])
            .arg(config_path("lenet.json"))
            .arg("--checkpoint")
            .arg(out.join("best.safetensors")),
        &[
            "do not match the architecture",
            "missing",
            "layers.0.weight",
        ],
    );
}

#[test]
fn an_unwritable_run_directory_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    assert_usage_error(
        cnn(dir.path()).args(train_args("mlp.json", &file.join("run"), &[])),
        &["cannot create run directory"],
    );
}

#[cfg(unix)]
#[test]
fn a_second_ctrl_c_exits_at_once_without_a_corrupt_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let mut child = spawn(
        dir.path(),
        &train_args(
            "lenet.json",
            &out,
            &["--checkpoint-every", "3", "--epochs", "2"],
        ),
        "2",
    );
    wait_for_step(&mut child, &out, 3);
    // SAFETY: kill(2) on a process this test started; no memory is involved.
    unsafe {
        libc_kill(child.id() as i32, 2);
        libc_kill(child.id() as i32, 2);
    }
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    let ck =
        cnn::checkpoint::load(&out.join("last.safetensors")).expect("last.safetensors is whole");
    assert!(ck.meta.step >= 3);
    // Issue #21, item 12: the status says so, never "running".
    assert_eq!(
        cnn::status::read(&out).unwrap().status,
        cnn::status::State::Interrupted
    );
    let leftovers: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(
        leftovers.len() <= 1,
        "at most the one file being written when the second signal came"
    );
}

/// A small tmpfs stands in for a full disk (needs root; skipped otherwise).
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(path: &Path, size: &str) -> Option<SmallDisk> {
        std::fs::create_dir_all(path).ok()?;
        let ok = StdCommand::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .ok()?
            .success();
        ok.then(|| SmallDisk(path.to_path_buf()))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = StdCommand::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_is_a_clear_error_and_leaves_whole_files() {
    let dir = tempfile::tempdir().unwrap();
    let Some(disk) = SmallDisk::mount(&dir.path().join("small"), "700k") else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    };
    let out = disk.0.join("run");
    // MLP: best.safetensors is ~320 KB, last.safetensors with Adam state ~960 KB.
    let (code, _, err) = run(cnn(dir.path()).args(train_args(
        "mlp.json",
        &out,
        &["--epochs", "2", "--limit-train", "200"],
    )));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("disk full") && err.contains("last.safetensors"),
        "{err}"
    );
    for entry in std::fs::read_dir(&out).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!name.contains(".tmp-"), "temporary file {name} left behind");
        if name.ends_with(".safetensors") {
            cnn::checkpoint::load(&out.join(&name)).expect("a checkpoint on disk is whole");
        }
    }
}

#[test]
fn a_checkpoint_from_another_run_is_refused_and_nothing_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let (mlp, one) = (dir.path().join("mlp"), dir.path().join("one"));
    let quick = ["--epochs", "1", "--limit-train", "200"];
    assert_eq!(
        run(cnn(dir.path()).args(train_args("mlp.json", &mlp, &quick))).0,
        0
    );
    assert_eq!(
        run(cnn(dir.path()).args(train_args("oneconv.json", &one, &quick))).0,
        0
    );
    // Copy the MLP's last checkpoint over the OneConv run's.
    std::fs::copy(mlp.join("last.safetensors"), one.join("last.safetensors")).unwrap();
    let before: Vec<Vec<u8>> = ["best.safetensors", "config.json", "history.json"]
        .iter()
        .map(|f| std::fs::read(one.join(f)).unwrap())
        .collect();
    assert_usage_error(
        cnn(dir.path())
            .args(["train", "--epochs", "2", "--resume"])
            .arg(&one),
        &[
            "does not belong to this run",
            "layers",
            "nothing was changed",
        ],
    );
    let after: Vec<Vec<u8>> = ["best.safetensors", "config.json", "history.json"]
        .iter()
        .map(|f| std::fs::read(one.join(f)).unwrap())
        .collect();
    assert!(before == after, "the run's files are untouched");

    // A checkpoint whose metadata no longer matches its network: a class
    // list of the wrong length, or a std of zero.
    let tamper = |key: &str, value: &str, needles: &[&str]| {
        let (meta, tensors) = cnn::checkpoint::read_raw(&mlp.join("best.safetensors")).unwrap();
        let mut meta = meta.unwrap();
        meta.insert(key.into(), value.into());
        let tampered = dir.path().join("tampered.safetensors");
        safetensors::serialize_to_file(
            tensors
                .iter()
                .map(|(k, t)| {
                    (
                        k.clone(),
                        SafeView(
                            t.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                            t.dims().to_vec(),
                        ),
                    )
                })
                .collect::<Vec<_>>(),
            Some(meta),
            &tampered,
        )
        .unwrap();
        assert_usage_error(
            cnn(dir.path())
                .args(["eval", "--checkpoint"])
                .arg(&tampered),
            needles,
        );
    };
    tamper(
        "classes",
        "[\"a\", \"b\"]",
        &["\"classes\" names 2 classes", "10 outputs"],
    );
    tamper(
        "normalization",
        "{\"mean\": [0.1], \"std\": [0.0]}",
        &["\"normalization\"", "positive stds"],
    );
}

/// f32 values and a shape, as safetensors writes them.
struct SafeView(Vec<f32>, Vec<usize>);

impl safetensors::View for SafeView {
    fn dtype(&self) -> safetensors::Dtype {
        safetensors::Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        &self.1
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        self.0
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<u8>>()
            .into()
    }
    fn data_len(&self) -> usize {
        self.0.len() * 4
    }
}

/// On a GPU the loop reads the steps' losses from the device many at once
/// (`CNN_READ_EVERY`, which the CPU takes too for batches run in one piece,
/// as here with 32 images): the weights, optimizer state, history and
/// steps.csv are those of reading every step, and a divergence still stops
/// the run before any non-finite checkpoint is written.
#[test]
fn losses_read_many_steps_at_once_change_no_number() {
    let dir = tempfile::tempdir().unwrap();
    let extra = [
        "--batch-size",
        "32",
        "--checkpoint-every",
        "7",
        "--set",
        "data.limit_train=600",
    ];
    let each = dir.path().join("each");
    let (code, _, err) = run(cnn(dir.path()).args(train_args("lenet.json", &each, &extra)));
    assert_eq!(code, 0, "{err}");
    let batched = dir.path().join("batched");
    let (code, _, err) = run(cnn(dir.path()).env("CNN_READ_EVERY", "5").args(train_args(
        "lenet.json",
        &batched,
        &extra,
    )));
    assert_eq!(code, 0, "{err}");
    assert_same_run(&each, &batched);

    // A value that is not a whole number of steps is named and ignored: the
    // run reads every step, as without it.
    let junk = dir.path().join("junk");
    let (code, _, err) = run(cnn(dir.path())
        .env("CNN_READ_EVERY", "0.5")
        .args(train_args("lenet.json", &junk, &extra)));
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("CNN_READ_EVERY=\"0.5\"") && err.contains("ignored"),
        "{err}"
    );
    assert_same_run(&each, &junk);

    let nan = dir.path().join("nan");
    let (code, _, err) = run(cnn(dir.path()).env("CNN_READ_EVERY", "5").args(train_args(
        "lenet.json",
        &nan,
        &[
            "--batch-size",
            "32",
            "--lr",
            "1e6",
            "--checkpoint-every",
            "3",
        ],
    )));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("training diverged"), "{err}");
    if nan.join("last.safetensors").exists() {
        let (_, t) = cnn::checkpoint::read_raw(&nan.join("last.safetensors")).unwrap();
        for (k, t) in t {
            let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert!(
                v.iter().all(|x| x.is_finite()),
                "last.safetensors: {k} is not finite"
            );
        }
    }
}
