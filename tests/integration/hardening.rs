//! Issue #21: regression tests for what an independent probe found. Each
//! feeds the bad input or fault and checks the exit code, the message and
//! that nothing was written or lost.

use crate::common::*;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn train_args(config: &str, out: &Path, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = vec!["train".into(), "--config".into()];
    v.push(config_path(config).display().to_string());
    v.extend(["--data-dir".into(), mnist_small().display().to_string()]);
    v.extend(["--out".into(), out.display().to_string()]);
    v.extend(
        ["--set", "data.val_size=500", "--quiet"]
            .iter()
            .map(|s| s.to_string()),
    );
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

/// A finished small run (MLP, one epoch on 200 images).
fn small_run(dir: &Path) -> PathBuf {
    let out = dir.join("run");
    let (code, _, err) = run(cnn(dir).args(train_args(
        "mlp.json",
        &out,
        &["--epochs", "1", "--limit-train", "200"],
    )));
    assert_eq!(code, 0, "{err}");
    out
}

/// The files in `dir` and their contents, to show nothing changed.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
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

/// Rewrites a safetensors file through `edit` of its header and data.
fn rewrite(
    from: &Path,
    to: &Path,
    edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>, &mut Vec<u8>),
) {
    let bytes = std::fs::read(from).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let mut data = bytes[8 + n..].to_vec();
    edit(&mut header, &mut data);
    let mut h = serde_json::to_vec(&header).unwrap();
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend(h);
    out.extend(data);
    std::fs::write(to, out).unwrap();
}

/// Item 1: one writer per run directory. While a run trains, a second
/// `train --out D --force` and a `--resume D` are refused naming the
/// holder's pid, and change nothing; killed with -9, its lock goes with it
/// and --resume continues.
#[test]
fn a_run_directory_has_one_writer_and_kill_9_leaves_no_stale_lock() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let args = train_args(
        "lenet.json",
        &out,
        &["--epochs", "3", "--checkpoint-every", "5"],
    );
    let mut first = spawn(dir.path(), &args, "1");
    wait_for_step(&mut first, &out, 5);
    assert!(first.try_wait().unwrap().is_none(), "still training");
    let pid = first.id().to_string();
    let config = std::fs::read(out.join("config.json")).unwrap();
    let mut second = train_args("mlp.json", &out, &["--epochs", "1", "--force"]);
    second.retain(|a| a != "--quiet");
    assert_usage_error(cnn(dir.path()).args(&second), &["is in use", &pid]);
    assert_usage_error(
        cnn(dir.path()).args(["train", "--resume"]).arg(&out),
        &["is in use", &pid],
    );
    assert_eq!(std::fs::read(out.join("config.json")).unwrap(), config);
    // kill -9: the OS releases the lock; the run resumes and finishes.
    first.kill().unwrap();
    first.wait().unwrap();
    let (code, _, err) = run(cnn(dir.path())
        .args(["train", "--quiet", "--resume"])
        .arg(&out));
    assert_eq!(code, 0, "{err}");
    assert_eq!(std::fs::read(out.join("config.json")).unwrap(), config);
    assert_eq!(
        cnn::status::read(&out).unwrap().status,
        cnn::status::State::Done
    );
}

/// Item 7: --resume of a directory that is not a run writes nothing into it.
#[test]
fn resume_of_a_directory_that_is_not_a_run_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("not-a-run");
    std::fs::create_dir(&empty).unwrap();
    std::fs::write(empty.join("notes.txt"), "mine").unwrap();
    let before = snapshot(&empty);
    assert_usage_error(
        cnn(dir.path()).args(["train", "--resume"]).arg(&empty),
        &["has no last.safetensors"],
    );
    assert_eq!(snapshot(&empty), before);
    assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 1);
}

/// Item 6: integer, NaN and stripped checkpoints are refused naming the
/// file and tensor; a resume without optimizer state needs --fresh-optimizer.
#[test]
fn damaged_checkpoints_are_refused_naming_the_file_and_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = small_run(dir.path());
    let last = run_dir.join("last.safetensors");
    let eval = |ck: &Path| {
        let mut c = cnn(dir.path());
        c.args(["eval", "--checkpoint"])
            .arg(ck)
            .arg("--data-dir")
            .arg(mnist_small());
        c
    };
    let ints = dir.path().join("ints.safetensors");
    rewrite(&last, &ints, |h, _| {
        h["layers.1.weight"]["dtype"] = "I32".into();
    });
    assert_usage_error(
        &mut eval(&ints),
        &[
            "ints.safetensors",
            "tensor layers.1.weight holds I32 values",
        ],
    );
    let nan = dir.path().join("nan.safetensors");
    rewrite(&last, &nan, |h, data| {
        let start = h["layers.1.bias"]["data_offsets"][0].as_u64().unwrap() as usize;
        data[start..start + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    });
    assert_usage_error(
        &mut eval(&nan),
        &[
            "nan.safetensors",
            "tensor layers.1.bias holds NaN or infinite values",
        ],
    );
    // The same weights without the optimizer's tensors.
    let stripped = dir.path().join("stripped");
    std::fs::create_dir(&stripped).unwrap();
    for f in ["config.json", "history.json", "history.csv", "steps.csv"] {
        if run_dir.join(f).exists() {
            std::fs::copy(run_dir.join(f), stripped.join(f)).unwrap();
        }
    }
    rewrite(&last, &stripped.join("last.safetensors"), |h, data| {
        let mut kept = Vec::new();
        let names: Vec<String> = h.keys().cloned().collect();
        for name in names {
            if name.starts_with("optim.") {
                h.remove(&name);
            } else if name != "__metadata__" {
                let o = &h[&name]["data_offsets"];
                let (s, e) = (
                    o[0].as_u64().unwrap() as usize,
                    o[1].as_u64().unwrap() as usize,
                );
                h[&name]["data_offsets"] = serde_json::json!([kept.len(), kept.len() + e - s]);
                kept.extend_from_slice(&data[s..e]);
            }
        }
        *data = kept;
    });
    let before = std::fs::read(stripped.join("last.safetensors")).unwrap();
    let resume = |extra: &[&str]| {
        let mut c = cnn(dir.path());
        c.args(["train", "--quiet", "--epochs", "2", "--data-dir"])
            .arg(mnist_small())
            .args(extra)
            .arg("--resume")
            .arg(&stripped);
        c
    };
    assert_usage_error(
        &mut resume(&[]),
        &["has no optimizer state", "--fresh-optimizer"],
    );
    assert_eq!(
        std::fs::read(stripped.join("last.safetensors")).unwrap(),
        before,
        "nothing was written"
    );
    let (code, _, err) = run(&mut resume(&["--fresh-optimizer"]));
    assert_eq!(code, 0, "{err}");
    // Only a resume can start its optimizer afresh.
    let mut fresh_run = train_args("mlp.json", &dir.path().join("new"), &["--fresh-optimizer"]);
    fresh_run.retain(|a| a != "--quiet");
    assert_usage_error(
        cnn(dir.path()).args(&fresh_run),
        &["--fresh-optimizer", "--resume RUN_DIR"],
    );
    assert!(!dir.path().join("new").exists());
}

/// Items 10 and 4: one unreadable image among good ones is reported in its
/// place and the others are classified (exit 2); an image declaring a huge
/// size is refused before it is decoded.
#[test]
fn predict_reports_bad_files_in_place_and_classifies_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = small_run(dir.path());
    let good = dir.path().join("digit.png");
    image::GrayImage::from_fn(28, 28, |x, _| image::Luma([(x * 9) as u8]))
        .save(&good)
        .unwrap();
    let junk = dir.path().join("junk.png");
    std::fs::write(&junk, b"not a picture").unwrap();
    let huge = dir.path().join("huge.png");
    image::GrayImage::new(20_000, 1_000).save(&huge).unwrap();
    let (code, out, err) = run(cnn(dir.path())
        .args(["predict", "--json", "--checkpoint"])
        .arg(run_dir.join("best.safetensors"))
        .args([&good, &junk, &huge, &good]));
    assert_eq!(code, 2, "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains("2 of 4 images could not be read"), "{err}");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(rows.len(), 4);
    assert!(rows[0].get("error").is_none() && rows[3].get("error").is_none());
    assert_eq!(rows[0]["top"], rows[3]["top"], "{out}");
    let e1 = rows[1]["error"].as_str().unwrap();
    assert!(
        e1.contains("junk.png") && e1.contains("not an image"),
        "{e1}"
    );
    let e2 = rows[2]["error"].as_str().unwrap();
    assert!(e2.contains("huge.png") && e2.contains("too large"), "{e2}");
}

/// Item 11: a FIFO as config, checkpoint or image, and /dev/zero as
/// config, are refused at once, naming the path.
#[cfg(unix)]
#[test]
fn special_files_are_refused_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("pipe");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let started = Instant::now();
    let fifo_s = fifo.display().to_string();
    assert_usage_error(
        cnn(dir.path()).args(["summary", "--config", &fifo_s]),
        &[&fifo_s],
    );
    assert_usage_error(
        cnn(dir.path()).args(["train", "--config", "/dev/zero"]),
        &["/dev/zero"],
    );
    assert_usage_error(
        cnn(dir.path()).args(["eval", "--checkpoint", &fifo_s]),
        &[&fifo_s],
    );
    let run_dir = small_run(dir.path());
    let (code, _, err) = run(cnn(dir.path())
        .args(["predict", "--checkpoint"])
        .arg(run_dir.join("best.safetensors"))
        .arg(&fifo));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(&fifo_s), "{err}");
    // The whole test, with a training run, in well under a minute.
    assert!(started.elapsed() < Duration::from_secs(60));
}

/// Item 3: a network too large for this machine is refused before it is
/// allocated, saying what it needs and how to override.
#[test]
fn a_run_that_cannot_fit_in_memory_is_refused_before_it_starts() {
    let dir = tempfile::tempdir().unwrap();
    let mut huge = shipped("mlp.json");
    // About 2.4 G parameters.
    huge["layers"] = serde_json::json!([
        {"type": "flatten"},
        {"type": "linear", "out_features": 3_000_000},
        {"type": "relu"},
        {"type": "linear", "out_features": 10}
    ]);
    let path = write_config(dir.path(), "huge.json", &huge);
    let out = dir.path().join("run");
    assert_usage_error(
        cnn(dir.path())
            .args(["train", "--config"])
            .arg(&path)
            .arg("--data-dir")
            .arg(mnist_small())
            .args(["--set", "data.val_size=500", "--out"])
            .arg(&out),
        &["would need about", "is available", "--no-memory-check"],
    );
    assert!(!out.exists(), "nothing is written");
}

/// Item 4: counts that would make enormous pictures are refused.
#[test]
fn output_pictures_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let data = mnist_small().display().to_string();
    let config = config_path("mlp.json").display().to_string();
    assert_usage_error(
        cnn(dir.path()).args([
            "samples",
            "--data-dir",
            &data,
            "--config",
            &config,
            "--augmented",
            "100000",
            "--output",
            "a.png",
        ]),
        &["--augmented 100000", "at most"],
    );
    assert_usage_error(
        cnn(dir.path()).args([
            "feature-maps",
            "--data-dir",
            &data,
            "--kernel",
            "vertical-edge",
            "--count",
            "1000000",
            "--output",
            "b.png",
        ]),
        &["--count 1000000", "at most"],
    );
    assert!(!dir.path().join("a.png").exists() && !dir.path().join("b.png").exists());
}
