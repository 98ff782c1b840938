//! `cnn report` on the command line: exit codes for directories without
//! runs, a corrupt history listed rather than fatal, and output into a pipe
//! that closes early.

use crate::common::*;
use serde_json::json;
use std::path::Path;
use std::process::{Command, Stdio};

/// A finished run directory with a two-epoch history, as cnn train leaves it.
fn write_run(dir: &Path, lr: f64) {
    std::fs::create_dir_all(dir).unwrap();
    let epoch = |e: u64, acc: f64| {
        json!({"epoch": e, "lr": lr, "train_loss": 0.5, "train_acc": 0.8, "val_loss": 0.4,
               "val_acc": acc, "test_loss": 0.4, "test_acc": acc - 0.01,
               "epoch_seconds": 1.5, "images_per_second": 1000.0})
    };
    let history = json!([epoch(1, 0.9), epoch(2, 0.95)]);
    std::fs::write(dir.join("history.json"), history.to_string()).unwrap();
    let status = json!({"status": "done", "message": null, "exit_code": 0, "pid": 1,
                        "host": "elsewhere", "started_at": 100.0, "updated_at": 104.0});
    std::fs::write(dir.join("status.json"), status.to_string()).unwrap();
    let config = json!({"training": {"optimizer": {"lr": lr}}});
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
}

#[test]
fn a_directory_without_runs_is_a_usage_error_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    assert_usage_error(
        cnn(tmp.path()).args(["report", "no-such-dir"]),
        &["no-such-dir", "no such directory"],
    );
    std::fs::create_dir(tmp.path().join("empty")).unwrap();
    assert_usage_error(
        cnn(tmp.path()).args(["report", "empty"]),
        &["empty holds no runs", "manifest.json"],
    );
    write_run(&tmp.path().join("runs/a"), 0.1);
    assert_usage_error(
        cnn(tmp.path()).args(["report", "runs", "--plot", "chart.jpg"]),
        &["--plot chart.jpg", ".png or .svg"],
    );
    assert_usage_error(
        cnn(tmp.path()).args(["report", "runs", "--sort", "speed"]),
        &["--sort speed", "best_val_acc"],
    );
}

#[test]
fn a_corrupt_history_is_listed_as_unreadable_and_the_rest_reported() {
    let tmp = tempfile::tempdir().unwrap();
    write_run(&tmp.path().join("runs/a"), 0.1);
    write_run(&tmp.path().join("runs/b"), 0.01);
    std::fs::write(tmp.path().join("runs/b/history.json"), "[{\"epoch\": ").unwrap();
    let (code, stdout, stderr) = run(cnn(tmp.path()).args(["report", "runs", "--json"]));
    assert_eq!(code, 0, "{stderr}");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&stdout).unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["run"], "a");
    assert_eq!(rows[0]["best_val_acc"], 0.95);
    assert_eq!(rows[0]["best_epoch"], 2);
    assert_eq!(rows[0]["test_acc"], 0.94);
    assert_eq!(rows[0]["seconds"], 4.0);
    assert_eq!(rows[0]["training.optimizer.lr"], 0.1);
    assert_eq!(rows[1]["status"], "unreadable");
    assert!(
        rows[1]["error"].as_str().unwrap().contains("history.json"),
        "{}",
        rows[1]
    );
    let (code, table, _) = run(cnn(tmp.path()).args(["report", "runs"]));
    assert_eq!(code, 0);
    assert!(table.contains("| unreadable: "), "{table}");
    assert!(table.contains("95.00%"), "{table}");
}

#[test]
fn a_reader_that_stops_early_is_not_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    write_run(&tmp.path().join("runs/a"), 0.1);
    let mut child = Command::new(assert_cmd::cargo::cargo_bin("cnn"))
        .current_dir(tmp.path())
        .args(["report", "runs", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // `| head` that has read enough
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    // Like other command-line tools: success, or ended quietly by SIGPIPE.
    #[cfg(unix)]
    let by_sigpipe = std::os::unix::process::ExitStatusExt::signal(&out.status) == Some(13);
    #[cfg(not(unix))]
    let by_sigpipe = false;
    assert!(
        out.status.code() == Some(0) || by_sigpipe,
        "{:?} {stderr}",
        out.status
    );
}
