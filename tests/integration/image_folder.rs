//! Image folders (`root/<class>/*.png`): a folder of real MNIST digits as
//! PNG and BMP files of mixed sizes, some inverted, trains; the checkpoint
//! evaluates and predicts held-back digits with the folder names as class
//! names; the
//! seeded test split is rebuilt exactly by `cnn eval`; and every broken
//! layout is a clear error.

use crate::common::*;
use image::GrayImage;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

/// Folder names in digit order; sorted they are not, so labels come from
/// the names and not from the digits.
const NAMES: [&str; 10] = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
];

/// Writes images `range` of `pixels` (28×28 each) into `root/<name>/`:
/// every third image at 28×28, 36×36 or 20×20, every tenth inverted,
/// every fifth a BMP.
fn write_digits(root: &Path, pixels: &[u8], labels: &[u8], range: std::ops::Range<usize>) {
    for i in range {
        let dir = root.join(NAMES[labels[i] as usize]);
        std::fs::create_dir_all(&dir).unwrap();
        let mut img = GrayImage::from_raw(28, 28, pixels[i * 784..(i + 1) * 784].to_vec()).unwrap();
        if i % 10 == 7 {
            image::imageops::invert(&mut img);
        }
        let side = [28, 36, 20][i % 3];
        if side != 28 {
            img = image::imageops::resize(&img, side, side, image::imageops::FilterType::Triangle);
        }
        let ext = if i % 5 == 4 { "bmp" } else { "png" };
        img.save(dir.join(format!("{i:05}.{ext}"))).unwrap();
    }
}

/// LeNet reading an image folder of 28×28 grayscale images.
fn folder_config(dir: &Path, data: Value) -> PathBuf {
    let mut cfg = shipped("lenet.json");
    cfg["name"] = json!("digits");
    cfg["data"] = data;
    cfg["data"]["dataset"] = json!("imagefolder");
    write_config(dir, "digits.json", &cfg)
}

fn sorted_names() -> Vec<String> {
    let mut names: Vec<String> = NAMES.iter().map(|s| s.to_string()).collect();
    names.sort();
    names
}

#[test]
fn a_folder_of_png_digits_trains_and_its_checkpoint_labels_held_back_digits_by_folder_name() {
    let dir = tempfile::tempdir().unwrap();
    let (train, train_labels, test, test_labels) = mnist_arrays();
    let root = dir.path().join("digits");
    let held = dir.path().join("held-back");
    write_digits(&root, &train, &train_labels, 0..3000);
    write_digits(&held, &test, &test_labels, 0..1000);
    let cfg = folder_config(
        dir.path(),
        json!({"dir": root, "test_dir": held, "val_size": 300}),
    );
    let (code, _, err) = run(cnn(dir.path())
        .args(["train", "--epochs", "6", "--out", "run", "--config"])
        .arg(&cfg));
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("resized 2000 of 3000 image(s)") && err.contains("to 28×28"),
        "{err}"
    );
    let run_dir = dir.path().join("run");
    let h = history(&run_dir);
    let last = h.last().unwrap();
    assert!(last["test_acc"].as_f64().unwrap() > 0.85, "{last}");

    // The resolved config states the folders and the split sizes used.
    let resolved: Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("config.json")).unwrap())
            .unwrap();
    assert_eq!(resolved["data"]["val_size"], 300);
    assert_eq!(resolved["data"]["test_size"], Value::Null);
    assert!(
        resolved["data"]["test_dir"]
            .as_str()
            .unwrap()
            .ends_with("held-back")
    );

    // The checkpoint alone, from elsewhere: class names are the folder names.
    let other = tempfile::tempdir().unwrap();
    let best = run_dir.join("best.safetensors");
    let e = eval_json(other.path(), &best, &[]);
    assert_eq!(e["dataset"], "imagefolder");
    assert_eq!(e["samples"], 1000);
    assert!(e["data_dir"].as_str().unwrap().ends_with("digits"));
    assert!(e["test_dir"].as_str().unwrap().ends_with("held-back"));
    let classes: Vec<String> = serde_json::from_value(e["classes"].clone()).unwrap();
    assert_eq!(classes, sorted_names());
    let best_row = h.iter().find(|r| r["test_acc"] == e["accuracy"]);
    assert!(
        best_row.is_some(),
        "eval reproduces an epoch's test accuracy: {e}"
    );

    // `cnn predict` names held-back digits by their folder names.
    let mut files: Vec<PathBuf> = Vec::new();
    for name in NAMES {
        let mut in_class: Vec<PathBuf> = std::fs::read_dir(held.join(name))
            .unwrap()
            .map(|f| f.unwrap().path())
            .collect();
        in_class.sort();
        files.extend(in_class.into_iter().take(5));
    }
    let (code, out, err) = run(cnn(other.path())
        .args(["predict", "--json", "--checkpoint"])
        .arg(&best)
        .args(&files));
    assert_eq!(code, 0, "{err}");
    let predictions: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(predictions.len(), 50);
    let right = predictions
        .iter()
        .zip(&files)
        .filter(|(p, f)| {
            let folder = f.parent().unwrap().file_name().unwrap().to_str().unwrap();
            p["label"] == folder
        })
        .count();
    assert!(right >= 40, "{right}/50 named by their folder: {out}");

    // A folder of only two classes: labels still follow the checkpoint's names.
    let few = dir.path().join("few");
    for name in ["seven", "three"] {
        let from = held.join(name);
        std::fs::create_dir_all(few.join(name)).unwrap();
        for f in std::fs::read_dir(&from).unwrap().take(40) {
            let f = f.unwrap().path();
            std::fs::copy(&f, few.join(name).join(f.file_name().unwrap())).unwrap();
        }
    }
    let e = eval_json(other.path(), &best, &["--test-dir", few.to_str().unwrap()]);
    assert_eq!(e["samples"], 80);
    assert!(e["accuracy"].as_f64().unwrap() > 0.8, "{e}");
    let (code, out, err) = run(cnn(other.path())
        .args(["eval", "--test-dir", few.to_str().unwrap(), "--checkpoint"])
        .arg(&best));
    assert_eq!(code, 0, "{err}");
    // The per-class table names the folders: 40 images of each present
    // class, none of the others.
    let rows: Vec<&str> = out
        .lines()
        .filter(|l| {
            sorted_names()
                .iter()
                .any(|n| l.split_whitespace().next() == Some(n))
        })
        .take(10)
        .collect();
    assert_eq!(rows.len(), 10, "{out}");
    for row in rows {
        let cells: Vec<&str> = row.split_whitespace().collect();
        let expected = if ["seven", "three"].contains(&cells[0]) {
            "40"
        } else {
            "0"
        };
        assert_eq!(cells[1], expected, "{out}");
    }
    let per_class = e["per_class"].as_array().unwrap();
    let seven = per_class.iter().find(|c| c["label"] == "seven").unwrap();
    assert_eq!(seven["samples"], 40);
}

#[test]
fn the_seeded_test_split_is_rebuilt_by_eval_and_unreadable_images_can_be_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let (train, train_labels, _, _) = mnist_arrays();
    let root = dir.path().join("digits");
    write_digits(&root, &train, &train_labels, 0..1200);
    std::fs::write(root.join("three/broken.png"), b"\x89PNG but not really").unwrap();
    std::fs::write(root.join("three/README.txt"), b"not an image").unwrap();
    let cfg = folder_config(dir.path(), json!({"dir": root}));

    // The default: fail, naming the file and the way out.
    assert_usage_error(
        cnn(dir.path())
            .args(["train", "--out", "a", "--config"])
            .arg(&cfg),
        &["cannot read image", "three/broken.png", "data.on_bad_image"],
    );
    let (code, _, err) = run(cnn(dir.path())
        .args(["train", "--epochs", "1", "--out", "run"])
        .args(["--set", "data.on_bad_image=skip", "--config"])
        .arg(&cfg));
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("skipped 1 unreadable image(s)") && err.contains("broken.png"),
        "{err}"
    );
    assert!(err.contains("ignored 1 file(s)"), "{err}");

    // 1,200 images: 10% test, then 10% of the rest for validation.
    let run_dir = dir.path().join("run");
    let resolved: Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("config.json")).unwrap())
            .unwrap();
    assert_eq!(resolved["data"]["test_size"], 120);
    assert_eq!(resolved["data"]["val_size"], 108);
    let h = history(&run_dir);
    let other = tempfile::tempdir().unwrap();
    let best = run_dir.join("best.safetensors");
    let e = eval_json(other.path(), &best, &[]);
    assert_eq!(e["samples"], 120);
    assert_eq!(e["accuracy"], h[0]["test_acc"]);
    let v = eval_json(other.path(), &best, &["--split", "val"]);
    assert_eq!(v["samples"], 108);
    assert_eq!(v["accuracy"], h[0]["val_acc"]);
    let t = eval_json(other.path(), &best, &["--split", "train"]);
    assert_eq!(t["samples"], 1200 - 120 - 108);
}

#[test]
fn broken_folder_layouts_are_named_with_a_fix() {
    let dir = tempfile::tempdir().unwrap();
    let (train, labels, _, _) = mnist_arrays();
    let train_cmd = |data: Value, extra: &[&str]| {
        let cfg = folder_config(dir.path(), data);
        let mut c = cnn(dir.path());
        c.args(["train", "--out", "x", "--config"])
            .arg(cfg)
            .args(extra);
        c
    };

    // No folder given at all.
    assert_usage_error(
        &mut train_cmd(json!({}), &[]),
        &["no folder is given", "data.dir", "--data-dir"],
    );
    // A folder that is not there.
    assert_usage_error(
        &mut train_cmd(json!({"dir": dir.path().join("nope")}), &[]),
        &["image folder", "nope does not exist"],
    );
    // Images straight in the root: no class folders.
    let flat = dir.path().join("flat");
    std::fs::create_dir(&flat).unwrap();
    GrayImage::new(28, 28).save(flat.join("a.png")).unwrap();
    assert_usage_error(
        &mut train_cmd(json!({"dir": flat}), &[]),
        &[
            "no class sub-folders",
            "1 image(s) directly",
            "one sub-folder per class",
        ],
    );
    // An empty class folder.
    let root = dir.path().join("digits");
    write_digits(&root, &train, &labels, 0..200);
    std::fs::create_dir(root.join("ten")).unwrap();
    assert_usage_error(
        &mut train_cmd(json!({"dir": root}), &[]),
        &["class folder", "ten has no images", "remove the folder"],
    );
    std::fs::remove_dir(root.join("ten")).unwrap();
    // The class count must match num_classes, and the message lists them.
    let six = dir.path().join("six-classes");
    write_digits(&six, &train, &labels, 0..200);
    for name in ["six", "seven", "eight", "nine"] {
        std::fs::remove_dir_all(six.join(name)).unwrap();
    }
    assert_usage_error(
        &mut train_cmd(json!({"dir": six}), &[]),
        &[
            "num_classes is 10 but the image folder",
            "has 6 class folders (five, four, one, three, two, zero)",
            "set num_classes to 6",
        ],
    );
    // One class folder is no classifier, whatever num_classes says.
    let one = dir.path().join("one-class");
    write_digits(&one, &train, &labels, 0..200);
    for name in NAMES.iter().filter(|n| **n != "zero") {
        std::fs::remove_dir_all(one.join(name)).unwrap();
    }
    let err = assert_usage_error(
        &mut train_cmd(json!({"dir": one}), &[]),
        &[
            "has 1 class folders (zero)",
            "at least 2 classes",
            "add a sub-folder",
        ],
    );
    assert!(!err.contains("set num_classes to 1"), "{err}");
    // A test folder with a class training never saw.
    let test = dir.path().join("test");
    write_digits(&test, &train, &labels, 200..260);
    std::fs::create_dir(test.join("eleven")).unwrap();
    GrayImage::new(28, 28)
        .save(test.join("eleven/x.png"))
        .unwrap();
    assert_usage_error(
        &mut train_cmd(json!({"dir": root, "test_dir": test}), &[]),
        &["eleven is not one of the classes eight, five"],
    );
    // Channels other than grayscale or RGB.
    let mut cfg = shipped("lenet.json");
    cfg["input_shape"] = json!([2, 28, 28]);
    cfg["data"] = json!({"dataset": "imagefolder", "dir": root});
    let p = write_config(dir.path(), "two.json", &cfg);
    assert_usage_error(
        cnn(dir.path()).args(["train", "--config"]).arg(p),
        &["grayscale (1 channel) or RGB", "input_shape[0]"],
    );
    // Folder-only settings elsewhere, and both test settings at once.
    assert_usage_error(
        cnn(dir.path())
            .args(["train", "--set", "data.test_size=0.2", "--config"])
            .arg(config_path("lenet.json")),
        &["data.test_size is set but data.dataset is mnist"],
    );
    assert_usage_error(
        &mut train_cmd(
            json!({"dir": root, "test_dir": test, "test_size": 0.2}),
            &[],
        ),
        &["data.test_size and data.test_dir are both set"],
    );
}

#[test]
fn rgb_folders_read_colour_and_train() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("colours");
    // Red images and blue images, with noise: a 3-channel net tells them apart.
    for (class, rgb) in [("blue", [20u8, 30, 220]), ("red", [220u8, 30, 20])] {
        std::fs::create_dir_all(root.join(class)).unwrap();
        for i in 0..40u32 {
            let img = image::RgbImage::from_fn(12, 10, |x, y| {
                let n = ((x * 7 + y * 13 + i * 31) % 40) as u8;
                image::Rgb([rgb[0] - n / 2, rgb[1] + n, rgb[2] - n / 2])
            });
            img.save(root.join(class).join(format!("{i}.png"))).unwrap();
        }
    }
    let cfg = json!({
        "name": "colours",
        "input_shape": [3, 8, 8],
        "num_classes": 2,
        "layers": [
            {"type": "conv2d", "out_channels": 4, "kernel_size": 3},
            {"type": "relu"},
            {"type": "flatten"},
            {"type": "linear", "out_features": 2}
        ],
        "training": {"epochs": 3, "batch_size": 8, "optimizer": {"type": "adam", "lr": 0.01}},
        "data": {"dataset": "imagefolder", "dir": root, "test_size": 20, "val_size": 10}
    });
    let p = write_config(dir.path(), "colours.json", &cfg);
    let (code, _, err) = run(cnn(dir.path())
        .args(["train", "--out", "run", "--config"])
        .arg(p));
    assert_eq!(code, 0, "{err}");
    let h = history(&dir.path().join("run"));
    assert_eq!(h.last().unwrap()["test_acc"], 1.0, "{h:?}");
    // Per-channel statistics: green is the darkest channel of both classes.
    let ck = cnn::checkpoint::load(&dir.path().join("run/best.safetensors")).unwrap();
    let mean = &ck.meta.normalization.mean;
    assert_eq!(mean.len(), 3);
    assert!(mean[1] < mean[0] && mean[1] < mean[2], "{mean:?}");
    assert_eq!(ck.meta.classes, vec!["blue", "red"]);
}
