//! The road from flags to a run (`src/settings.rs`): the file, then
//! `--set`, then the dedicated flags, then every check, the same for every
//! command. `cnn train --show-config` prints where it leads.

use crate::common::*;

/// `cnn train --show-config` with `args`, in `dir`: its stdout as JSON.
fn show_config(dir: &std::path::Path, args: &[&str]) -> serde_json::Value {
    let (code, out, err) = run(cnn(dir)
        .args(["train", "--show-config", "--config"])
        .arg(config_path("lenet.json"))
        .args(args));
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[test]
fn a_flag_and_the_set_it_stands_for_resolve_to_the_same_config() {
    let dir = tempfile::tempdir().unwrap();
    let by_flag = show_config(dir.path(), &["--epochs", "3", "--lr", "0.02"]);
    let by_set = show_config(
        dir.path(),
        &[
            "--set",
            "training.epochs=3",
            "--set",
            "training.optimizer.lr=0.02",
        ],
    );
    assert_eq!(by_flag, by_set);
    assert_eq!(by_flag["training"]["epochs"], 3);
    // The flag wins over --set, whatever their order.
    let both = show_config(dir.path(), &["--epochs", "4", "--set", "training.epochs=7"]);
    assert_eq!(both["training"]["epochs"], 4);
    // Nothing was made: no run directory, no data read.
    assert!(!dir.path().join("runs").exists());
}

/// The whole resolved LeNet config, every default written out, against
/// the snapshot in tests/snapshots (`CNN_UPDATE_SNAPSHOTS=1` rewrites it
/// after a deliberate change of a default).
#[test]
fn the_resolved_lenet_config_matches_its_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let got = show_config(dir.path(), &["--epochs", "3", "--batch-size", "32"]);
    let path = repo().join("tests/snapshots/lenet-show-config.json");
    if std::env::var_os("CNN_UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, serde_json::to_string_pretty(&got).unwrap() + "\n").unwrap();
    }
    let want: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(
        got, want,
        "rerun with CNN_UPDATE_SNAPSHOTS=1 if the change is meant"
    );
}

/// A config that does not check out is refused by --show-config as by a run.
#[test]
fn show_config_runs_every_check() {
    let dir = tempfile::tempdir().unwrap();
    assert_usage_error(
        cnn(dir.path())
            .args(["train", "--show-config", "--config"])
            .arg(config_path("lenet.json"))
            .args(["--set", "training.freeze=[\"layers.99\"]"]),
        &["training.freeze.0"],
    );
}

#[test]
fn a_resume_shows_the_stored_config_with_its_new_epochs() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = run(cnn(dir.path())
        .args([
            "train",
            "--out",
            "run",
            "--epochs",
            "1",
            "--limit-train",
            "256",
            "--quiet",
        ])
        .args(["--set", "data.val_size=64", "--data-dir"])
        .arg(mnist_small())
        .arg("--config")
        .arg(config_path("mlp.json")));
    assert_eq!(code, 0, "{err}");
    let (code, out, err) =
        run(cnn(dir.path()).args(["train", "--resume", "run", "--epochs", "5", "--show-config"]));
    assert_eq!(code, 0, "{err}");
    let shown: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["training"]["epochs"], 5);
    assert_eq!(shown["data"]["limit_train"], 256);
    // Shown, not run: the run still has one epoch.
    assert_eq!(history(&dir.path().join("run")).len(), 1);
}
