//! The photo pipeline on real photos (the committed pets, CIFAR-10 cats and
//! dogs, also written larger as JPEGs): image folders streamed from their
//! files (`data.cache: "none"`) train to the same bits as folders decoded
//! into memory, at any thread count and with or without threads decoding
//! ahead; the random resized crop cuts from the photo itself when streamed;
//! the whole augmentation chain (resized crop, flip, colour jitter,
//! TrivialAugment / RandAugment, random erasing) trains and shows in
//! `cnn samples`; and a damaged photo found only when a batch reads it is
//! named.

use crate::common::*;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

fn pets() -> PathBuf {
    repo().join("tests/fixtures/pets")
}

/// The pets written as `w×h` JPEGs (a stretched upscale: larger photos of
/// another aspect ratio, as a camera's are).
fn jpeg_pets(root: &Path, w: u32, h: u32) -> PathBuf {
    let out = root.join("pets-jpeg");
    for class in ["cat", "dog"] {
        std::fs::create_dir_all(out.join(class)).unwrap();
        for entry in std::fs::read_dir(pets().join(class)).unwrap() {
            let path = entry.unwrap().path();
            let img = image::open(&path).unwrap().to_rgb8();
            let big = image::imageops::resize(&img, w, h, image::imageops::FilterType::CatmullRom);
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            big.save(out.join(class).join(format!("{name}.jpg")))
                .unwrap();
        }
    }
    out
}

/// cifar10-cnn for the 2 pet classes, 2 short epochs.
fn config(dir: &Path, name: &str, data: Value) -> PathBuf {
    let mut cfg = shipped("cifar10-cnn.json");
    cfg["name"] = json!(name);
    cfg["num_classes"] = json!(2);
    let layers = cfg["layers"].as_array_mut().unwrap();
    let head = layers
        .iter_mut()
        .rev()
        .find(|l| l["type"] == "linear")
        .unwrap();
    head["out_features"] = json!(2);
    let mut d =
        json!({"dataset": "imagefolder", "val_size": 8, "test_size": 8, "eval_batch_size": 16});
    for (k, v) in data.as_object().unwrap() {
        d[k] = v.clone();
    }
    cfg["data"] = d;
    cfg["training"]["epochs"] = json!(2);
    cfg["training"]["batch_size"] = json!(8);
    write_config(dir, &format!("{name}.json"), &cfg)
}

fn train(dir: &Path, config: &Path, data_dir: &Path, out: &str, threads: &str) -> String {
    let (code, stdout, err) = run(cnn(dir)
        .env("RAYON_NUM_THREADS", threads)
        .args(["train", "--config"])
        .arg(config)
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--out", out]));
    assert_eq!(code, 0, "{err}");
    format!("{stdout}{err}")
}

fn every_transform() -> Value {
    json!({
        "random_resized_crop": {"scale": [0.35, 1.0]},
        "horizontal_flip": 0.5,
        "color_jitter": {"brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.1},
        "auto_augment": {"policy": "trivial_augment_wide"},
        "random_erasing": {"p": 0.5, "value": "random"}
    })
}

#[test]
fn streamed_folders_train_to_the_bits_of_folders_in_memory_with_every_transform() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // At the photos' own size, memory and files hold the same images, so the
    // resized crop's source is the same too.
    let memory = config(d, "memory", json!({"augment": every_transform()}));
    let streamed = config(
        d,
        "streamed",
        json!({"augment": every_transform(), "cache": "none"}),
    );
    let inline = config(
        d,
        "inline",
        json!({"augment": every_transform(), "cache": "none", "workers": 0}),
    );
    train(d, &memory, &pets(), "m", "2");
    let text = train(d, &streamed, &pets(), "s", "2");
    assert!(
        text.contains("reading the 48 image(s)") && text.contains("data.cache is \"none\""),
        "{text}"
    );
    train(d, &inline, &pets(), "i", "1");
    let reference = tensors(&d.join("m"));
    assert_eq!(tensors(&d.join("s")), reference);
    assert_eq!(tensors(&d.join("i")), reference);
    // The augmentation changes what is learnt (it is not silently skipped).
    let plain = config(d, "plain", json!({}));
    train(d, &plain, &pets(), "p", "2");
    assert_ne!(tensors(&d.join("p")), reference);
    // The run's config records the pipeline as given.
    let recorded: Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("s/config.json")).unwrap()).unwrap();
    assert_eq!(recorded["data"]["cache"], "none");
    assert_eq!(
        recorded["data"]["augment"]["auto_augment"]["policy"],
        "trivial_augment_wide"
    );
}

#[test]
fn large_photos_stream_and_the_resized_crop_cuts_from_the_photo_itself() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let photos = jpeg_pets(d, 120, 90);
    let resize = json!({"shorter_side": 36});
    // Without the resized crop both read the same fitted images.
    let memory = config(d, "memory", json!({"resize": resize}));
    let streamed = config(d, "streamed", json!({"resize": resize, "cache": "none"}));
    train(d, &memory, &photos, "m", "2");
    train(d, &streamed, &photos, "s", "2");
    assert_eq!(tensors(&d.join("s")), tensors(&d.join("m")));
    let metrics = |run: &str| {
        let h = history(&d.join(run));
        h.last().unwrap()["test_acc"].clone()
    };
    assert_eq!(metrics("s"), metrics("m"));

    // With it, a folder in memory crops its 32×32 images; a streamed one
    // crops the 120×90 photo, so the images (and the weights) differ.
    let crop = json!({"random_resized_crop": {}, "horizontal_flip": 0.5});
    let memory = config(d, "memory-crop", json!({"resize": resize, "augment": crop}));
    let streamed = config(
        d,
        "streamed-crop",
        json!({"resize": resize, "augment": crop, "cache": "none"}),
    );
    train(d, &memory, &photos, "mc", "2");
    train(d, &streamed, &photos, "sc", "2");
    assert_ne!(tensors(&d.join("sc")), tensors(&d.join("mc")));
    // The streamed checkpoint evaluates with nothing else given.
    let e = eval_json(d, &d.join("sc/best.safetensors"), &[]);
    assert_eq!(e["samples"], 8, "{e}");

    // The augmented copies as training draws them.
    let (code, _, err) = run(cnn(d)
        .args(["samples", "--config"])
        .arg(&streamed)
        .arg("--data-dir")
        .arg(&photos)
        .args(["--augmented", "3", "--count", "4", "-o", "aug.png"]));
    assert_eq!(code, 0, "{err}");
    let shown = image::open(d.join("aug.png")).unwrap();
    assert!(shown.width() > 200, "{}", shown.width());
}

#[test]
fn rand_augment_and_erasing_train_on_grayscale_digits_too() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut cfg = shipped("lenet.json");
    cfg["training"]["epochs"] = json!(3);
    cfg["data"]["val_size"] = json!(500);
    cfg["data"]["augment"] = json!({
        "random_resized_crop": {"scale": [0.7, 1.0], "ratio": [0.9, 1.1]},
        "color_jitter": {"brightness": 0.3, "contrast": 0.3},
        "auto_augment": {"policy": "rand_augment", "num_ops": 2, "magnitude": 5},
        "random_erasing": {"p": 0.25}
    });
    let path = write_config(d, "lenet.json", &cfg);
    let (code, _, err) = run(cnn(d)
        .args(["train", "--config"])
        .arg(&path)
        .arg("--data-dir")
        .arg(mnist_small())
        .args(["--out", "r"]));
    assert_eq!(code, 0, "{err}");
    let h = history(&d.join("r"));
    let acc = h.last().unwrap()["test_acc"].as_f64().unwrap();
    // Three epochs of 2,500 heavily augmented digits still learn (83% here;
    // 88% without the augmentation).
    assert!(acc > 0.75, "test accuracy {acc}");
}

#[test]
fn a_photo_found_damaged_mid_run_and_misplaced_settings_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let photos = jpeg_pets(d, 40, 40);
    let streamed = config(d, "streamed", json!({"cache": "none", "workers": 0}));
    // A PNG cut short still declares its size, so listing passes it; the
    // batch that reads it stops the run with the file named.
    let jpeg = photos.join("dog/dog-09.jpg");
    let victim = photos.join("dog/dog-09.png");
    image::open(&jpeg).unwrap().save(&victim).unwrap();
    std::fs::remove_file(&jpeg).unwrap();
    let bytes = std::fs::read(&victim).unwrap();
    std::fs::write(&victim, &bytes[..bytes.len() * 3 / 5]).unwrap();
    let err = assert_usage_error(
        cnn(d)
            .args(["train", "--config"])
            .arg(&streamed)
            .arg("--data-dir")
            .arg(&photos)
            .args(["--out", "broken", "--epochs", "1"]),
        &["dog-09.png", "damaged", "data.cache \"memory\""],
    );
    assert!(!err.contains("panicked"), "{err}");
    // In memory the same file is refused before training.
    let memory = config(d, "memory", json!({}));
    assert_usage_error(
        cnn(d)
            .args(["train", "--config"])
            .arg(&memory)
            .arg("--data-dir")
            .arg(&photos)
            .args(["--out", "again"]),
        &["cannot read image", "dog-09.png", "on_bad_image"],
    );
    // A file that is no image at all is caught when listing, and skipped as
    // data.on_bad_image says.
    std::fs::write(&victim, b"not a jpeg").unwrap();
    let (code, stdout, err) = run(cnn(d)
        .args(["train", "--config"])
        .arg(&streamed)
        .arg("--data-dir")
        .arg(&photos)
        .args([
            "--set",
            "data.on_bad_image=\"skip\"",
            "--epochs",
            "1",
            "--out",
            "skipped",
        ]));
    assert_eq!(code, 0, "{err}");
    assert!(
        format!("{stdout}{err}").contains("skipped 1 unreadable image"),
        "{stdout}{err}"
    );

    // Streaming is for image folders; unknown caches are named with the choices.
    let lenet = config_path("lenet.json");
    assert_usage_error(
        cnn(d).args(["train", "--config"]).arg(&lenet).args([
            "--set",
            "data.cache=\"none\"",
            "--epochs",
            "1",
        ]),
        &["data.cache is \"none\" but data.dataset is mnist"],
    );
    assert_usage_error(
        cnn(d)
            .args(["train", "--config"])
            .arg(&lenet)
            .args(["--set", "data.cache=\"disk\""]),
        &["data.cache", "memory", "none"],
    );
}
