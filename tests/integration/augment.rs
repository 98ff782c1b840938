//! Augmentation in training runs: it changes what the network sees, it still
//! learns, evaluation never augments, and a run killed and resumed with
//! augmentation on ends with bit-identical weights and history.

use crate::common::*;
use std::path::Path;

const AUGMENT: &str = r#"data.augment={"random_crop": {"padding": 2},
    "affine": {"degrees": 10, "translate": 0.05, "scale": [0.9, 1.1]}}"#;

fn args(out: &Path, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = ["train", "--quiet", "--set", "data.val_size=500", "--config"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    v.push(config_path("lenet.json").display().to_string());
    v.push("--data-dir".into());
    v.push(mnist_small().display().to_string());
    v.push("--out".into());
    v.push(out.display().to_string());
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

#[test]
fn augmented_training_learns_and_evaluation_is_not_augmented() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain");
    let aug = dir.path().join("aug");
    let (code, _, err) = run(cnn(dir.path()).args(args(&plain, &["--epochs", "1"])));
    assert_eq!(code, 0, "{err}");
    let (code, _, err) =
        run(cnn(dir.path()).args(args(&aug, &["--epochs", "4", "--set", AUGMENT])));
    assert_eq!(code, 0, "{err}");
    let (hp, ha) = (history(&plain), history(&aug));
    // Augmentation changes the training batches...
    assert_ne!(hp[0]["train_loss"], ha[0]["train_loss"]);
    // ...and the network still learns (chance is 10%), if more slowly on
    // 2,500 images.
    assert!(ha[3]["test_acc"].as_f64().unwrap() > 0.8, "{ha:?}");
    // The recorded config keeps the setting.
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(aug.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["data"]["augment"]["random_crop"]["padding"], 2);
    // Evaluation sees the plain images: eval reproduces the epoch's test
    // accuracy exactly, every time.
    let best = aug.join("best.safetensors");
    let untimed = |mut v: serde_json::Value| {
        let o = v.as_object_mut().unwrap();
        o.remove("eval_seconds");
        o.remove("images_per_second");
        v
    };
    let a = untimed(eval_json(dir.path(), &best, &[]));
    let b = untimed(eval_json(dir.path(), &best, &[]));
    assert_eq!(a, b);
    assert!(ha.iter().any(|r| r["test_acc"] == a["accuracy"]), "{a}");
}

#[test]
fn bad_augment_settings_are_named() {
    let dir = tempfile::tempdir().unwrap();
    for (set, needle) in [
        (
            r#"data.augment={"horizontal_flip": 2}"#,
            "data.augment.horizontal_flip is 2",
        ),
        (
            r#"data.augment={"random_crop": {"padding": 30}}"#,
            "data.augment.random_crop.padding is 30 but the images are 28×28",
        ),
        (
            r#"data.augment={"affine": {"scale": [0, 1]}}"#,
            "data.augment.affine.scale is [0, 1]",
        ),
        (r#"data.augment={"afine": {}}"#, "unknown field `afine`"),
    ] {
        assert_usage_error(
            cnn(dir.path()).args(args(&dir.path().join("x"), &["--set", set])),
            &[needle],
        );
    }
}

#[test]
fn a_killed_augmented_run_resumes_to_identical_tensors_and_history() {
    let dir = tempfile::tempdir().unwrap();
    let full = dir.path().join("full");
    let killed = dir.path().join("killed");
    let extra = [
        "--epochs",
        "2",
        "--limit-train",
        "1200",
        "--checkpoint-every",
        "4",
        "--set",
        AUGMENT,
    ];
    let status = spawn(dir.path(), &args(&full, &extra), "2").wait().unwrap();
    assert_eq!(status.code(), Some(0));

    // Kill -9 once the first mid-epoch checkpoint exists, then resume.
    let mut child = spawn(dir.path(), &args(&killed, &extra), "2");
    wait_for_step(&mut child, &killed, 4);
    child.kill().unwrap();
    child.wait().unwrap();
    let stopped_at = saved_step(&killed);
    assert!(
        stopped_at < 2 * 1200u64.div_ceil(64),
        "killed before the end"
    );
    let resume: Vec<String> = ["train", "--quiet", "--resume", killed.to_str().unwrap()]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(
        spawn(dir.path(), &resume, "2").wait().unwrap().code(),
        Some(0)
    );

    let (a, b) = (tensors(&full), tensors(&killed));
    assert_eq!(a.len(), b.len());
    for ((ka, va), (kb, vb)) in a.iter().zip(&b) {
        assert_eq!(ka, kb);
        assert!(
            va == vb,
            "{ka} differs after resuming from step {stopped_at}"
        );
    }
    assert_eq!(
        history_without_timing(&full),
        history_without_timing(&killed)
    );
}

#[test]
fn samples_show_augmented_copies_reproducibly() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = shipped("lenet.json");
    config["data"]["augment"] = serde_json::json!({"random_crop": {"padding": 3}});
    let config = write_config(dir.path(), "aug.json", &config);
    let picture = |name: &str, seed: &str| {
        let out = dir.path().join(name);
        let (code, _, err) = run(cnn(dir.path())
            .args([
                "samples",
                "--augmented",
                "3",
                "--count",
                "4",
                "--seed",
                seed,
            ])
            .arg("--config")
            .arg(&config)
            .arg("--data-dir")
            .arg(mnist_small())
            .arg("-o")
            .arg(&out));
        assert_eq!(code, 0, "{err}");
        image::open(&out).unwrap().to_rgb8()
    };
    let (a, b, c) = (
        picture("a.png", "1"),
        picture("b.png", "1"),
        picture("c.png", "2"),
    );
    // Four rows of an original and three copies: taller than wide.
    assert!(a.height() > a.width() / 2, "{}x{}", a.width(), a.height());
    assert_eq!(a, b, "the same seed draws the same copies");
    assert_ne!(a, c, "another seed draws other images and copies");

    // A config without augmentation has nothing to show.
    let (code, _, err) = run(cnn(dir.path())
        .args(["samples", "--augmented", "--config"])
        .arg(config_path("lenet.json"))
        .arg("--data-dir")
        .arg(mnist_small())
        .arg("-o")
        .arg(dir.path().join("d.png")));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("lenet.json") && err.contains("data.augment"),
        "{err}"
    );

    // Settings training would refuse are refused here too.
    let mut bad = shipped("lenet.json");
    bad["data"]["augment"] = serde_json::json!({"horizontal_flip": 2});
    let bad = write_config(dir.path(), "bad.json", &bad);
    assert_usage_error(
        cnn(dir.path())
            .args(["samples", "--augmented", "--config"])
            .arg(&bad)
            .arg("--data-dir")
            .arg(mnist_small())
            .arg("-o")
            .arg(dir.path().join("e.png")),
        &["bad.json", "data.augment.horizontal_flip is 2", "[0, 1]"],
    );
}
