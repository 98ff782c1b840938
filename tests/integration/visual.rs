//! The looking-inside commands: each writes a picture of the expected size
//! that decodes; predict on exported test digits agrees with eval; bad
//! images, layers and run directories are clear errors.

use crate::common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// One LeNet trained for 2 epochs on the MNIST subset, shared by the tests.
pub fn trained() -> &'static Path {
    static RUN: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &RUN.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("lenet");
        let (code, _, err) = run(cnn(dir.path())
            .args([
                "train",
                "--quiet",
                "--epochs",
                "2",
                "--set",
                "data.val_size=500",
                "--data-dir",
            ])
            .arg(mnist_small())
            .arg("--config")
            .arg(config_path("lenet.json"))
            .arg("--out")
            .arg(&out));
        assert_eq!(code, 0, "{err}");
        (dir, out)
    })
    .1
}

fn png_size(path: &Path) -> (u32, u32) {
    let img =
        image::open(path).unwrap_or_else(|e| panic!("{} does not decode: {e}", path.display()));
    (img.width(), img.height())
}

#[test]
fn plot_draws_one_or_several_runs_as_png_and_svg() {
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("h.png");
    let (code, _, err) = run(cnn(dir.path())
        .arg("plot")
        .arg(trained())
        .arg("-o")
        .arg(&png));
    assert_eq!(code, 0, "{err}");
    assert_eq!(png_size(&png), (1800, 620));
    let svg = dir.path().join("h.svg");
    let (code, _, err) = run(cnn(dir.path())
        .arg("plot")
        .arg(trained())
        .arg(trained())
        .arg("-o")
        .arg(&svg));
    assert_eq!(code, 0, "{err}");
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.contains("<svg") && text.contains("Accuracy") && text.contains("epoch"));

    // A directory that is not a run, and a picture format cnn does not write.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    assert_usage_error(
        cnn(dir.path())
            .arg("plot")
            .arg(&empty)
            .args(["-o", "x.png"]),
        &["history.json", "run directory"],
    );
    assert_usage_error(
        cnn(dir.path())
            .arg("plot")
            .arg(trained())
            .args(["-o", "x.gif"]),
        &["must end in .png or .svg"],
    );
    // A picture whose folder is missing, or a directory where the file goes.
    assert_usage_error(
        cnn(dir.path())
            .arg("plot")
            .arg(trained())
            .args(["-o", "no/such/folder/x.png"]),
        &[
            "its folder no/such/folder does not exist",
            "create the folder",
        ],
    );
    std::fs::create_dir(dir.path().join("taken.png")).unwrap();
    assert_usage_error(
        cnn(dir.path())
            .arg("plot")
            .arg(trained())
            .args(["-o", "taken.png"]),
        &["taken.png is a directory"],
    );
}

#[test]
fn filters_draw_each_conv_layer_and_name_the_valid_layers() {
    let dir = tempfile::tempdir().unwrap();
    let ck = trained().join("best.safetensors");
    for layer in ["0", "3"] {
        let out = dir.path().join(format!("f{layer}.png"));
        let (code, _, err) = run(cnn(dir.path())
            .args(["filters", "--layer", layer, "--checkpoint"])
            .arg(&ck)
            .arg("-o")
            .arg(&out));
        assert_eq!(code, 0, "{err}");
        let (w, h) = png_size(&out);
        assert!(w >= 320 && h >= 100, "{w}×{h}");
    }
    assert_usage_error(
        cnn(dir.path())
            .args(["filters", "--layer", "20", "-o", "x.png", "--checkpoint"])
            .arg(&ck),
        &["--layer 20", "12 layers", "conv2d layers are 0, 3"],
    );
    assert_usage_error(
        cnn(dir.path())
            .args(["filters", "--layer", "7", "-o", "x.png", "--checkpoint"])
            .arg(&ck),
        &["--layer 7 is a linear layer"],
    );
}

#[test]
fn feature_maps_of_a_test_image_a_file_and_a_fixed_kernel() {
    let dir = tempfile::tempdir().unwrap();
    let ck = trained().join("best.safetensors");
    let out = dir.path().join("maps.png");
    let (code, _, err) = run(cnn(dir.path())
        .args(["feature-maps", "--index", "5", "--checkpoint"])
        .arg(&ck)
        .arg("-o")
        .arg(&out));
    assert_eq!(code, 0, "{err}");
    png_size(&out);
    let digit = dir.path().join("digit.png");
    image::GrayImage::from_fn(40, 40, |x, y| {
        image::Luma([if (18..22).contains(&x) && (5..35).contains(&y) {
            0
        } else {
            255
        }])
    })
    .save(&digit)
    .unwrap();
    let (code, _, err) = run(cnn(dir.path())
        .args(["feature-maps", "--image"])
        .arg(&digit)
        .arg("--checkpoint")
        .arg(&ck)
        .arg("-o")
        .arg(&out)
        .arg("--force"));
    assert_eq!(code, 0, "{err}");
    for kernel in ["vertical-edge", "horizontal-edge"] {
        // Over the picture before it: an existing output needs --force.
        let (code, _, err) = run(cnn(dir.path())
            .args(["feature-maps", "--force", "--kernel", kernel, "--data-dir"])
            .arg(mnist_small())
            .arg("-o")
            .arg(&out));
        assert_eq!(code, 0, "{err}");
        let (w, _) = png_size(&out);
        assert!(w >= 8 * 96, "eight images side by side");
    }
    let k = dir.path().join("k.json");
    std::fs::write(&k, "[[1, 2], [3]]").unwrap();
    assert_usage_error(
        cnn(dir.path())
            .args(["feature-maps", "-o", "x.png", "--kernel"])
            .arg(&k)
            .arg("--data-dir")
            .arg(mnist_small()),
        &["k.json", "rectangle"],
    );
    assert_usage_error(
        cnn(dir.path())
            .args([
                "feature-maps",
                "-o",
                "x.png",
                "--index",
                "5000",
                "--checkpoint",
            ])
            .arg(&ck),
        &["--index 5000", "1000 images"],
    );
}

#[test]
fn samples_and_eval_pictures() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("s.png");
    let (code, _, err) = run(cnn(dir.path())
        .args(["samples", "--count", "12", "--data-dir"])
        .arg(mnist_small())
        .arg("-o")
        .arg(&out));
    assert_eq!(code, 0, "{err}");
    png_size(&out);

    let ck = trained().join("best.safetensors");
    let (conf, mis) = (dir.path().join("c.png"), dir.path().join("m.svg"));
    let (code, stdout, err) = run(cnn(dir.path())
        .args(["eval", "--json", "--mistakes", "10", "--checkpoint"])
        .arg(&ck)
        .arg("--confusion-png")
        .arg(&conf)
        .arg("--mistakes-png")
        .arg(&mis));
    assert_eq!(code, 0, "{err}");
    png_size(&conf);
    assert!(std::fs::read_to_string(&mis).unwrap().contains("<svg"));
    let v: Value = serde_json::from_str(&stdout).unwrap();
    let confusion: Vec<Vec<u64>> = serde_json::from_value(v["confusion"].clone()).unwrap();
    assert_eq!(confusion.iter().flatten().sum::<u64>(), 1000);
    let diagonal: u64 = (0..10).map(|i| confusion[i][i]).sum();
    assert_eq!(diagonal, v["correct"].as_u64().unwrap());
    let per_class = v["per_class"].as_array().unwrap();
    assert_eq!(per_class.len(), 10);
    assert_eq!(per_class[3]["label"], "3");
    assert_eq!(
        per_class
            .iter()
            .map(|c| c["samples"].as_u64().unwrap())
            .sum::<u64>(),
        1000
    );
    // The text output has the per-class table and the matrix.
    let (_, text, _) = run(cnn(dir.path()).args(["eval", "--checkpoint"]).arg(&ck));
    assert!(
        text.contains("class") && text.contains("confusion matrix"),
        "{text}"
    );
}

/// Writes test image `i` of the fixture as a PNG, scaled by `scale` and
/// optionally drawn black on white.
fn export(dir: &Path, i: usize, pixels: &[u8], scale: u32, invert: bool) -> PathBuf {
    let img = image::GrayImage::from_fn(28 * scale, 28 * scale + 7 * scale, |x, y| {
        let (sx, sy) = ((x / scale) as usize, (y / scale) as usize);
        let v = if sy < 28 { pixels[sy * 28 + sx] } else { 0 };
        image::Luma([if invert { 255 - v } else { v }])
    });
    let p = dir.join(format!("digit-{i}.png"));
    img.save(&p).unwrap();
    p
}

#[test]
fn predict_agrees_with_eval_and_reads_digits_of_any_size() {
    let dir = tempfile::tempdir().unwrap();
    let ck = trained().join("best.safetensors");
    let data = cnn::data::Dataset::load_data(
        &cnn::config::DataConfig::default(),
        None,
        &cnn::data::LoadOptions {
            data_dir: Some(&mnist_small()),
            ..Default::default()
        },
    )
    .unwrap();
    let test = data.test_images();

    // Exported at 28×28 and read with --preprocess stretch, predict sees
    // exactly what eval sees: the same classes with the same probabilities.
    let n = 60;
    let paths: Vec<PathBuf> = (0..n)
        .map(|i| {
            let p = dir.path().join(format!("plain-{i}.png"));
            image::GrayImage::from_raw(28, 28, test.image(i).to_vec())
                .unwrap()
                .save(&p)
                .unwrap();
            p
        })
        .collect();
    let (code, out, err) = run(cnn(dir.path())
        .args([
            "predict",
            "--json",
            "--top",
            "3",
            "--preprocess",
            "stretch",
            "--checkpoint",
        ])
        .arg(&ck)
        .args(&paths));
    assert_eq!(code, 0, "{err}");
    let predictions: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(predictions.len(), n);
    let loaded = cnn::commands::load_model(&ck, None, &candle_core::Device::Cpu).unwrap();
    let batcher = cnn::data::Batcher::new(
        loaded.normalization.as_ref().unwrap(),
        &candle_core::Device::Cpu,
    );
    let indices: Vec<u32> = (0..n as u32).collect();
    let (x, _) = batcher.batch(test, &indices).unwrap();
    let probs = loaded
        .model
        .probabilities(&x)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    for (p, row) in predictions.iter().zip(&probs) {
        let (best, conf) = cnn::train::eval::top(&row.iter().map(|v| v.ln()).collect::<Vec<_>>());
        assert_eq!(p["class"].as_u64().unwrap(), best as u64, "{p}");
        assert_eq!(p["label"], best.to_string());
        let top = p["top"].as_array().unwrap();
        assert_eq!(top.len(), 3);
        assert!((top[0]["probability"].as_f64().unwrap() - conf as f64).abs() < 1e-5);
    }

    // Digits of other sizes, a third of them black on white, read with the
    // default (MNIST-style) preprocessing: about as accurate as eval.
    let mut paths = Vec::new();
    let mut labels = Vec::new();
    for i in 0..150 {
        paths.push(export(
            dir.path(),
            i,
            test.image(i),
            1 + (i % 4) as u32,
            i % 3 == 0,
        ));
        labels.push(test.labels[i] as u64);
    }
    let (code, out, err) = run(cnn(dir.path())
        .args(["predict", "--json", "--checkpoint"])
        .arg(&ck)
        .args(&paths));
    assert_eq!(code, 0, "{err}");
    let predictions: Vec<Value> = serde_json::from_str(&out).unwrap();
    let right = predictions
        .iter()
        .zip(&labels)
        .filter(|(p, l)| p["class"].as_u64() == Some(**l))
        .count();
    let (_, eval_out, _) = run(cnn(dir.path())
        .args(["eval", "--json", "--checkpoint"])
        .arg(&ck));
    let eval_acc = serde_json::from_str::<Value>(&eval_out).unwrap()["accuracy"]
        .as_f64()
        .unwrap();
    let acc = right as f64 / labels.len() as f64;
    assert!(acc > eval_acc - 0.06, "predict {acc} vs eval {eval_acc}");

    // Text output names the file and the class.
    let (code, out, _) = run(cnn(dir.path())
        .args(["predict", "--checkpoint"])
        .arg(&ck)
        .arg(&paths[0]));
    assert_eq!(code, 0);
    assert!(
        out.starts_with(&format!("{}: ", paths[0].display())),
        "{out}"
    );
}

#[test]
fn bad_image_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let ck = trained().join("best.safetensors");
    let bad = dir.path().join("broken.png");
    std::fs::write(&bad, b"\x89PNG\r\n\x1a\nnot really").unwrap();
    assert_usage_error(
        cnn(dir.path())
            .args(["predict", "--checkpoint"])
            .arg(&ck)
            .arg(&bad),
        &["broken.png", "not an image"],
    );
    assert_usage_error(
        cnn(dir.path())
            .args(["predict", "--checkpoint"])
            .arg(&ck)
            .arg("missing.png"),
        &["cannot read image missing.png"],
    );
    assert_usage_error(
        cnn(dir.path())
            .args(["predict", "--top", "0", "--checkpoint"])
            .arg(&ck)
            .arg(&bad),
        &["--top 0"],
    );
}

#[test]
fn steps_csv_logs_every_step() {
    let steps = std::fs::read_to_string(trained().join("steps.csv")).unwrap();
    let mut lines = steps.lines();
    assert_eq!(lines.next(), Some("step,epoch,loss,accuracy,lr,grad_norm"));
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 2 * 40);
    assert!(rows[0].starts_with("1,1,") && rows[79].starts_with("80,2,"));
    // And TensorBoard event files beside it.
    let events: Vec<_> = std::fs::read_dir(trained().join("tensorboard"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(events.len(), 1);
    assert!(
        events[0]
            .file_name()
            .to_string_lossy()
            .starts_with("events.out.tfevents.")
    );
    assert!(
        events[0].metadata().unwrap().len() > 80 * 40,
        "a record per step"
    );
}
