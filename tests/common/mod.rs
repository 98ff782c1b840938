//! Helpers shared by the integration tests: the `cnn` binary with a clean
//! environment, the committed MNIST subset, and small config files.
#![allow(dead_code)]

use assert_cmd::Command;
use std::path::{Path, PathBuf};

/// The `cnn` binary, run in `dir`, with no data directory from the environment.
pub fn cnn(dir: &Path) -> Command {
    let mut cmd = Command::cargo_bin("cnn").expect("binary built");
    cmd.current_dir(dir)
        .env_remove("CNN_DATA_DIR")
        .env("RAYON_NUM_THREADS", "2");
    cmd
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
