//! Fashion-MNIST where Debian's `dataset-fashion-mnist` package puts it:
//! found with no flag beyond `--dataset fashion-mnist`, trained, and
//! evaluated with its class names. CI installs the package; without it
//! these tests fail and say how to install it.

use crate::common::*;
use std::path::Path;

const SYSTEM_DIR: &str = "/usr/share/datasets/fashion-mnist";

fn require_package() {
    assert!(
        cnn::data::idx::find_files(Path::new(SYSTEM_DIR)).is_ok(),
        "Fashion-MNIST is not installed in {SYSTEM_DIR}; install Debian's package: \
         apt-get install dataset-fashion-mnist"
    );
}

#[test]
fn fashion_mnist_is_found_in_the_debian_package_and_learns() {
    require_package();
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = run(cnn(dir.path())
        .args(["train", "--dataset", "fashion-mnist", "--epochs", "2"])
        .args([
            "--limit-train",
            "5000",
            "--limit-test",
            "2000",
            "--out",
            "run",
        ])
        .arg("--config")
        .arg(config_path("lenet.json")));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("best epoch"), "{out}");
    assert!(
        err.contains("5000 train / 10000 val / 2000 test images"),
        "{err}"
    );
    let run_dir = dir.path().join("run");
    let h = history(&run_dir);
    // Chance is 10%; LeNet on 5,000 images for 2 epochs gets far more.
    assert!(h[1]["test_acc"].as_f64().unwrap() > 0.7, "{h:?}");

    // The resolved config records the dataset, where it was and the default
    // validation size.
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("config.json")).unwrap())
            .unwrap();
    assert_eq!(cfg["data"]["dataset"], "fashion-mnist");
    assert_eq!(cfg["data"]["dir"], SYSTEM_DIR);
    assert_eq!(cfg["data"]["val_size"], 10000);

    let other = tempfile::tempdir().unwrap();
    let e = eval_json(other.path(), &run_dir.join("best.safetensors"), &[]);
    assert_eq!(e["dataset"], "fashion-mnist");
    assert_eq!(e["data_dir"], SYSTEM_DIR);
    assert_eq!(e["classes"][0], "T-shirt/top");
    assert_eq!(e["classes"][9], "Ankle boot");
    let (code, out, err) = run(cnn(other.path())
        .args(["eval", "--checkpoint"])
        .arg(run_dir.join("best.safetensors")));
    assert_eq!(code, 0, "{err}");
    for name in ["T-shirt/top", "Ankle boot"] {
        assert!(
            out.lines().any(|l| l.starts_with(name) && l.contains('%')),
            "per-class row of {name}: {out}"
        );
    }
}

#[test]
fn fashion_mnist_trains_with_augmentation() {
    require_package();
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = run(cnn(dir.path())
        .args([
            "train",
            "--dataset",
            "fashion-mnist",
            "--epochs",
            "2",
            "--quiet",
        ])
        .args([
            "--limit-train",
            "5000",
            "--limit-test",
            "2000",
            "--out",
            "run",
        ])
        .args([
            "--set",
            r#"data.augment={"random_crop": {"padding": 2}, "horizontal_flip": 0.5,
                "affine": {"degrees": 8, "translate": 0.05, "scale": [0.95, 1.05]}}"#,
        ])
        .arg("--config")
        .arg(config_path("lenet.json")));
    assert_eq!(code, 0, "{err}");
    let h = history(&dir.path().join("run"));
    assert!(h[1]["test_acc"].as_f64().unwrap() > 0.65, "{h:?}");
}
