//! Run directories and sweeps written by hand, for the report's tests.

use crate::history::EpochRecord;
use crate::status::{self, RunStatus, State};
use crate::sweep::manifest::FILE as MANIFEST;
use serde_json::json;
use std::path::Path;

pub fn record(epoch: usize, val_acc: Option<f64>, test_acc: f64) -> EpochRecord {
    EpochRecord {
        epoch,
        lr: 0.001,
        train_loss: 0.5,
        train_acc: 0.8,
        val_loss: val_acc.map(|_| 0.4),
        val_acc,
        test_loss: Some(0.4),
        test_acc: Some(test_acc),
        epoch_seconds: 2.0,
        images_per_second: 100.0,
        val_macro_f1: None,
        test_macro_f1: None,
        val_top_k_acc: None,
        test_top_k_acc: None,
        precision: Default::default(),
    }
}

/// Writes a run directory with a status and a history.
pub fn write_run(dir: &Path, state: State, message: Option<&str>, history: &[EpochRecord]) {
    std::fs::create_dir_all(dir).unwrap();
    let s = RunStatus {
        status: state,
        message: message.map(String::from),
        exit_code: Some(if state == State::Done { 0 } else { 1 }),
        pid: std::process::id(),
        host: status::hostname(),
        started_at: 1000.0,
        updated_at: 1010.0,
        run_id: None,
    };
    std::fs::write(
        dir.join(status::FILE),
        serde_json::to_string_pretty(&s).unwrap(),
    )
    .unwrap();
    crate::history::write(dir, history).unwrap();
}

/// A sweep of lr × batch_size: two done, one failed, one not started,
/// one with a corrupt history.
pub fn sweep(dir: &Path) {
    let points = [
        ("lr=0.1,batch_size=64", "0.1", "64"),
        ("lr=0.1,batch_size=128", "0.1", "128"),
        ("lr=0.01,batch_size=64", "0.01", "64"),
        ("lr=0.01,batch_size=128", "0.01", "128"),
        ("lr=1,batch_size=64", "1", "64"),
    ];
    let manifest = json!({
        "format": 1,
        "axes": [
            {"key": "training.optimizer.lr", "values": ["0.1", "0.01", "1"]},
            {"key": "training.batch_size", "values": ["64", "128"]},
            {"key": "training.epochs", "values": ["2"]},
        ],
        "points": points.iter().enumerate().map(|(i, (name, lr, b))| json!({
            "index": i, "name": name, "dir": format!("runs/{name}"),
            "params": {"training.optimizer.lr": lr, "training.batch_size": b, "training.epochs": "2"},
            "command": "cnn train ...",
        })).collect::<Vec<_>>(),
    });
    std::fs::write(dir.join(MANIFEST), manifest.to_string()).unwrap();
    let runs = dir.join("runs");
    write_run(
        &runs.join(points[0].0),
        State::Done,
        None,
        &[record(1, Some(0.90), 0.89), record(2, Some(0.93), 0.92)],
    );
    write_run(
        &runs.join(points[1].0),
        State::Done,
        None,
        &[record(1, Some(0.95), 0.94), record(2, Some(0.95), 0.96)],
    );
    write_run(
        &runs.join(points[2].0),
        State::Failed,
        Some("training diverged at step 3\nCaused by: loss 1e9"),
        &[],
    );
    write_run(&runs.join(points[4].0), State::Done, None, &[]);
    std::fs::write(runs.join(points[4].0).join("history.json"), "[{").unwrap();
}
