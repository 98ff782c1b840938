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
        .args(["--set", "data.val_size=100", "--limit-test", "100", "--data-dir"])
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
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap()))
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
        cnn(tmp.path()).args(["train", "--resume"]).arg(&a).args(["--epochs", "2"]),
        &["written by another run", "--init-from"],
    );
    assert!(files(&a) == before, "the run directory changed");
    // Its own checkpoint resumes.
    let (code, _, err) = run(cnn(tmp.path()).args(["train", "--resume"]).arg(&b).args(["--epochs", "2"]));
    assert_eq!(code, 0, "{err}");
    assert_eq!(history(&b).len(), 2);
}
