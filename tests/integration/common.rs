//! Helpers shared by the integration tests: the `cnn` binary with a clean
//! environment, the committed MNIST subset, and small config files.
#![allow(dead_code)]

use assert_cmd::Command;
use std::path::{Path, PathBuf};
use std::process::{Child, Command as StdCommand, Stdio};
use std::time::{Duration, Instant};

/// The `cnn` binary, run in `dir`, with no data directory from the
/// environment and the Hugging Face Hub out of reach (offline, with an
/// empty cache of its own under `dir`).
pub fn cnn(dir: &Path) -> Command {
    let mut cmd = Command::cargo_bin("cnn").expect("binary built");
    cmd.current_dir(dir)
        .env_remove("CNN_DATA_DIR")
        .env("RAYON_NUM_THREADS", "2");
    isolate_hub(&mut cmd, dir);
    cmd
}

/// No hub endpoint or cache from the environment: `HF_HOME` under `dir`,
/// `HF_HUB_OFFLINE=1`.
pub fn isolate_hub(cmd: &mut Command, dir: &Path) {
    for var in [
        "HF_ENDPOINT",
        "HF_HUB_CACHE",
        "HUGGINGFACE_HUB_CACHE",
        "XDG_CACHE_HOME",
        "HF_TOKEN",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("HF_HOME", dir.join("hf-home"))
        .env("HF_HUB_OFFLINE", "1");
}

/// Images (`n×28×28` bytes) and labels of the committed MNIST subset:
/// (train images, train labels, test images, test labels).
pub fn mnist_arrays() -> (Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>) {
    use cnn::data::idx;
    let dir = mnist_small();
    let train = idx::read_images(&dir.join("train-images-idx3-ubyte.gz")).unwrap();
    let train_labels = idx::read_labels(&dir.join("train-labels-idx1-ubyte.gz")).unwrap();
    let test = idx::read_images(&dir.join("t10k-images-idx3-ubyte.gz")).unwrap();
    let test_labels = idx::read_labels(&dir.join("t10k-labels-idx1-ubyte.gz")).unwrap();
    (train.pixels, train_labels, test.pixels, test_labels)
}

/// `history.json` of a run directory.
pub fn history(run_dir: &Path) -> Vec<serde_json::Value> {
    serde_json::from_str(&std::fs::read_to_string(run_dir.join("history.json")).unwrap()).unwrap()
}

/// The history without the timing columns, to compare runs.
pub fn history_without_timing(run_dir: &Path) -> Vec<serde_json::Value> {
    history(run_dir)
        .into_iter()
        .map(|mut r| {
            let o = r.as_object_mut().unwrap();
            o.remove("epoch_seconds");
            o.remove("images_per_second");
            r
        })
        .collect()
}

/// `cnn eval --json` of a checkpoint, run in `dir`.
pub fn eval_json(dir: &Path, checkpoint: &Path, extra: &[&str]) -> serde_json::Value {
    let (code, out, err) = run(cnn(dir)
        .args(["eval", "--json", "--checkpoint"])
        .arg(checkpoint)
        .args(extra));
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap()
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// 3,000 training and 1,000 test images of real MNIST (tests/fixtures).
pub fn mnist_small() -> PathBuf {
    repo().join("tests/fixtures/mnist-small")
}

pub fn config_path(name: &str) -> PathBuf {
    repo().join("configs").join(name)
}

/// Writes `json` as `name` in `dir` and returns its path.
pub fn write_config(dir: &Path, name: &str, json: &serde_json::Value) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, serde_json::to_string_pretty(json).unwrap()).unwrap();
    p
}

/// A shipped config as JSON, to modify in a test.
pub fn shipped(name: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(config_path(name)).unwrap()).unwrap()
}

/// Runs `cnn` and returns (exit code, stdout, stderr).
pub fn run(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().expect("cnn runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Asserts exit code 2 and that stderr contains every needle; never a panic.
pub fn assert_usage_error(cmd: &mut Command, needles: &[&str]) -> String {
    let (code, _, err) = run(cmd);
    assert_eq!(code, 2, "expected exit 2, got {code}; stderr:\n{err}");
    assert!(!err.contains("panicked"), "panic:\n{err}");
    for n in needles {
        assert!(err.contains(n), "stderr lacks {n:?}:\n{err}");
    }
    err
}

/// `cnn ARGS` started in `dir` on `threads` threads, to be killed or waited
/// for (stdout discarded, stderr piped).
pub fn spawn(dir: &Path, args: &[String], threads: &str) -> Child {
    StdCommand::new(assert_cmd::cargo::cargo_bin("cnn"))
        .current_dir(dir)
        .args(args)
        .env_remove("CNN_DATA_DIR")
        .env("RAYON_NUM_THREADS", threads)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The `step` recorded in a run's last.safetensors (0 when absent).
pub fn saved_step(run: &Path) -> u64 {
    cnn::checkpoint::load(&run.join("last.safetensors")).map_or(0, |c| c.meta.step)
}

/// Waits until the run has checkpointed past `step` (or ended).
pub fn wait_for_step(child: &mut Child, run: &Path, step: u64) {
    let start = Instant::now();
    while saved_step(run) < step && child.try_wait().unwrap().is_none() {
        assert!(start.elapsed() < Duration::from_secs(120), "no checkpoint");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Every tensor of a run's last.safetensors, by name.
pub fn tensors(run: &Path) -> Vec<(String, Vec<f32>)> {
    let (_, t) = cnn::checkpoint::read_raw(&run.join("last.safetensors")).unwrap();
    let mut v: Vec<_> = t
        .into_iter()
        .map(|(k, t)| (k, t.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}
