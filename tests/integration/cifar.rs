//! CIFAR-10's binary format: files made here in that format (real MNIST
//! digits padded to 32×32 and coloured by class, as no CIFAR-10 data is on
//! these machines) train with the shipped configs/cifar10-cnn.json, eval shows the
//! CIFAR class names, and a wrong file size, a bad label or a missing file
//! is a clear error naming the file.

use crate::common::*;
use cnn::data::cifar;
use serde_json::json;
use std::path::Path;

/// A colour per class, so that colour and shape both tell the class (the
/// slow-to-train network then learns within the few steps a test affords).
const PALETTE: [[u16; 3]; 10] = [
    [255, 80, 80],
    [80, 255, 80],
    [90, 90, 255],
    [255, 255, 60],
    [60, 255, 255],
    [255, 60, 255],
    [255, 255, 255],
    [255, 160, 40],
    [140, 140, 140],
    [40, 160, 255],
];

/// 28×28 digits → 3×32×32 images in their class's colour (2-pixel black
/// border).
pub fn colourise(pixels: &[u8], labels: &[u8], n: usize) -> Vec<u8> {
    let mut out = vec![0u8; n * 3072];
    for i in 0..n {
        let colour = PALETTE[labels[i] as usize];
        for y in 0..28 {
            for x in 0..28 {
                let p = pixels[i * 784 + y * 28 + x] as u16;
                for (c, &k) in colour.iter().enumerate() {
                    out[i * 3072 + c * 1024 + (y + 2) * 32 + x + 2] = (p * k / 255) as u8;
                }
            }
        }
    }
    out
}

/// The six batch files: five of `per_file` training images, and the test file.
pub fn write_cifar(dir: &Path, per_file: usize, test_images: usize) {
    let (train, train_labels, test, test_labels) = mnist_arrays();
    std::fs::create_dir_all(dir).unwrap();
    let all = colourise(&train, &train_labels, 5 * per_file);
    for (k, name) in cifar::TRAIN_FILES.iter().enumerate() {
        let range = k * per_file..(k + 1) * per_file;
        let bytes = cifar::encode(
            &all[range.start * 3072..range.end * 3072],
            &train_labels[range],
        );
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    let bytes = cifar::encode(
        &colourise(&test, &test_labels, test_images),
        &test_labels[..test_images],
    );
    std::fs::write(dir.join(cifar::TEST_FILE), bytes).unwrap();
}

#[test]
fn cifar_binary_files_train_with_the_shipped_config() {
    let dir = tempfile::tempdir().unwrap();
    // The archive's own folder name, found inside --data-dir.
    let data = dir.path().join("cifar/cifar-10-batches-bin");
    write_cifar(&data, 120, 200);
    let (code, _, err) = run(cnn(dir.path())
        .args([
            "train",
            "--epochs",
            "2",
            "--batch-size",
            "25",
            "--out",
            "run",
        ])
        .args(["--set", "data.val_size=100"])
        // Few images and steps here (the net is slow to train in a debug
        // build): no warmup.
        .args(["--set", r#"training.lr_schedule={"type": "constant"}"#])
        .arg("--data-dir")
        .arg(dir.path().join("cifar"))
        .arg("--config")
        .arg(config_path("cifar10-cnn.json")));
    assert_eq!(code, 0, "{err}");
    let h = history(&dir.path().join("run"));
    let last = h.last().unwrap();
    // Chance is 10%. Two epochs of 600 images end anywhere between 50% and
    // 62% with the CPU kernels, candle's ops, or Winograd or the direct
    // kernels off (rounding alone moves it), so the bar is lower.
    assert!(last["test_acc"].as_f64().unwrap() > 0.4, "{h:?}");

    // Eval needs nothing but the checkpoint, and names CIFAR's classes.
    let other = tempfile::tempdir().unwrap();
    let e = eval_json(other.path(), &dir.path().join("run/best.safetensors"), &[]);
    assert_eq!(e["dataset"], "cifar10");
    assert_eq!(e["samples"], 200);
    assert_eq!(e["classes"][0], "airplane");
    assert_eq!(e["classes"][9], "truck");
    assert!(
        e["data_dir"]
            .as_str()
            .unwrap()
            .ends_with("cifar-10-batches-bin")
    );

    // The per-channel statistics are stored: blue-ish and red-ish digits
    // alike, three means and three stds.
    let ck = cnn::checkpoint::load(&dir.path().join("run/best.safetensors")).unwrap();
    assert_eq!(ck.meta.normalization.mean.len(), 3);
    assert!(ck.meta.normalization.std.iter().all(|&s| s > 0.1));
    // The default validation size of CIFAR-10 is 5,000: more than the 600 here.
    let (code, _, err) = run(cnn(dir.path())
        .args(["train", "--epochs", "2", "--out", "run2", "--data-dir"])
        .arg(&data)
        .arg("--config")
        .arg(config_path("cifar10-cnn.json")));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("data.val_size asks for 5000 validation images"),
        "{err}"
    );
}

#[test]
fn broken_cifar_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("cifar");
    write_cifar(&data, 20, 20);
    let train = |extra: &[&str]| {
        let mut c = cnn(dir.path());
        c.args(["train", "--out", "x", "--data-dir"])
            .arg(&data)
            .arg("--config")
            .arg(config_path("cifar10-cnn.json"))
            .args(extra);
        c
    };

    // A file cut short.
    let f = data.join("data_batch_4.bin");
    let good = std::fs::read(&f).unwrap();
    std::fs::write(&f, &good[..good.len() - 100]).unwrap();
    assert_usage_error(
        &mut train(&[]),
        &[
            "data_batch_4.bin is 61360 bytes",
            "multiple of 3073",
            "binary version",
        ],
    );
    // A label outside 0..9.
    let mut bad = good.clone();
    bad[3073 * 7] = 12;
    std::fs::write(&f, &bad).unwrap();
    assert_usage_error(
        &mut train(&[]),
        &["data_batch_4.bin: image 7 has label 12", "0..9"],
    );
    std::fs::write(&f, &good).unwrap();
    // A missing file: the only place named by --data-dir is listed.
    std::fs::remove_file(data.join("test_batch.bin")).unwrap();
    assert_usage_error(
        &mut train(&[]),
        &[
            "cannot find the cifar10 dataset",
            "(--data-dir): no complete set of CIFAR-10 binary files",
            "test_batch.bin",
            "cifar-10-binary.tar.gz",
        ],
    );
    // A 1-channel config on 3-channel images.
    write_cifar(&data, 20, 20);
    let mut cfg = shipped("lenet.json");
    cfg["data"] = json!({"dataset": "cifar10", "val_size": 10});
    let p = write_config(dir.path(), "gray.json", &cfg);
    assert_usage_error(
        cnn(dir.path())
            .args(["train", "--data-dir"])
            .arg(&data)
            .arg("--config")
            .arg(p),
        &[
            "cifar10 images are 3×32×32",
            "set input_shape to [3, 32, 32]",
        ],
    );
}
