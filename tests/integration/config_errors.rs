//! Broken configs and wrong flags: exit code 2, a message that names the
//! file, field or layer and says what to do, and never a panic. (Shape
//! inference's own cases are a table of unit tests in `src/arch.rs`; the
//! ones here go through the binary.)

use crate::common::*;
use serde_json::json;

/// Runs `cnn summary` on a modified LeNet config and checks the error.
fn summary_error(modify: impl FnOnce(&mut serde_json::Value), needles: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = shipped("lenet.json");
    modify(&mut cfg);
    let path = write_config(dir.path(), "broken.json", &cfg);
    assert_usage_error(
        cnn(dir.path()).args(["summary", "--config"]).arg(path),
        needles,
    )
}

#[test]
fn invalid_json_names_the_file_and_position() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.json");
    std::fs::write(&p, "{\"input_shape\": [1, 28, 28],\n \"layers\": [}").unwrap();
    assert_usage_error(
        cnn(dir.path()).args(["summary", "--config"]).arg(&p),
        &["bad.json is not valid JSON", "line 2"],
    );
}

#[test]
fn missing_config_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    assert_usage_error(
        cnn(dir.path()).args(["train", "--config", "nope.json"]),
        &["cannot read config file nope.json"],
    );
}

#[test]
fn unknown_top_level_field_is_named() {
    summary_error(|c| c["trainig"] = json!({}), &["unknown field `trainig`"]);
}

#[test]
fn unknown_layer_field_names_field_and_layer_index() {
    summary_error(
        |c| c["layers"][3]["kernal_size"] = json!(3),
        &[
            "layer 3 (conv2d)",
            "unknown field `kernal_size`",
            "kernel_size",
        ],
    );
}

#[test]
fn unknown_field_on_a_layer_without_settings_is_an_error() {
    summary_error(
        |c| c["layers"][1]["inplace"] = json!(true),
        &["layer 1 (relu)", "unknown field `inplace`"],
    );
}

#[test]
fn unknown_layer_type_lists_the_valid_ones() {
    summary_error(
        |c| c["layers"][0]["type"] = json!("conv"),
        &[
            "layer 0: unknown layer type \"conv\"",
            "conv2d",
            "max_pool2d",
        ],
    );
}

#[test]
fn missing_layer_type_is_named() {
    summary_error(
        |c| c["layers"][2] = json!({"kernel_size": 2}),
        &["layer 2: missing \"type\""],
    );
}

#[test]
fn wrong_value_type_names_the_field() {
    summary_error(
        |c| c["layers"][0]["out_channels"] = json!("six"),
        &["layer 0 (conv2d): field `out_channels`: expected a non-negative integer, got \"six\""],
    );
    summary_error(
        |c| c["layers"][0]["out_channels"] = json!(-6),
        &["layer 0 (conv2d): field `out_channels`", "got -6"],
    );
    summary_error(
        |c| c["training"]["epochs"] = json!("ten"),
        &["field `training.epochs`: expected a non-negative integer, got \"ten\""],
    );
}

// The example from the issue: a stated in_features that disagrees with the
// flattened conv output.
#[test]
fn wrong_in_features_says_what_the_previous_layer_outputs() {
    summary_error(
        |c| c["layers"][7]["in_features"] = json!(16),
        &[
            "layer 7 (linear): in_features is 16 but layer 6 (flatten) outputs 16×5×5 = 400",
            "set it to 400",
        ],
    );
}

// Seed 003 flattens to a hand-computed size that does not match its convs.
#[test]
fn hand_computed_flatten_size_from_seed_003_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = shipped("three-conv.json");
    cfg["layers"][9]["in_features"] = json!(64 * 4 * 4);
    let p = write_config(dir.path(), "seed003.json", &cfg);
    assert_usage_error(
        cnn(dir.path()).args(["summary", "--config"]).arg(p),
        &["layer 9 (linear): in_features is 1024 but layer 8 (flatten) outputs 64×3×3 = 576"],
    );
}

#[test]
fn final_softmax_is_a_warning_not_a_silent_double_softmax() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = shipped("two-conv.json");
    cfg["layers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "softmax"}));
    let p = write_config(dir.path(), "seed002.json", &cfg);
    let (code, _, err) = run(cnn(dir.path()).args(["summary", "--config"]).arg(p));
    assert_eq!(code, 0);
    assert!(
        err.contains("warning: layer 6 (softmax)") && err.contains("applied twice"),
        "{err}"
    );
}

#[test]
fn set_with_unknown_path_lists_the_fields() {
    let dir = tempfile::tempdir().unwrap();
    assert_usage_error(
        cnn(dir.path())
            .args(["summary", "--set", "training.optimiser.lr=0.1", "--config"])
            .arg(config_path("lenet.json")),
        &[
            "--set training.optimiser.lr=0.1",
            "`training` has no field `optimiser`",
            "optimizer",
        ],
    );
    assert_usage_error(
        cnn(dir.path())
            .args(["summary", "--set", "layers.99.out_channels=3", "--config"])
            .arg(config_path("lenet.json")),
        &["`layers` has 12 entries", "no entry 99"],
    );
    assert_usage_error(
        cnn(dir.path())
            .args(["summary", "--set", "layers.0.out_channels", "--config"])
            .arg(config_path("lenet.json")),
        &["expected PATH=VALUE"],
    );
}

#[test]
fn set_is_type_checked() {
    let dir = tempfile::tempdir().unwrap();
    assert_usage_error(
        cnn(dir.path())
            .args(["summary", "--set", "training.epochs=abc", "--config"])
            .arg(config_path("lenet.json")),
        &["field `training.epochs`: expected a non-negative integer, got \"abc\""],
    );
}

#[test]
fn training_settings_are_checked_before_any_data_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let lenet = config_path("lenet.json");
    assert_usage_error(
        cnn(dir.path())
            .args(["train", "--epochs", "0", "--config"])
            .arg(&lenet),
        &["training.epochs is 0"],
    );
    assert_usage_error(
        cnn(dir.path())
            .args(["train", "--lr", "-1", "--config"])
            .arg(&lenet),
        &["training.optimizer.lr is -1"],
    );
    assert_usage_error(
        cnn(dir.path())
            .args([
                "train",
                "--set",
                "training.optimizer.type=adamw",
                "--config",
            ])
            .arg(&lenet),
        &["weight_decay must be given for adamw"],
    );
    assert_usage_error(
        cnn(dir.path())
            .args([
                "train",
                "--set",
                "training.optimizer.momentum=0.9",
                "--config",
            ])
            .arg(&lenet),
        &["momentum applies to sgd only"],
    );
    assert!(
        !dir.path().join("runs").exists(),
        "no run directory for a refused run"
    );
}

#[test]
fn wrong_flags_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let lenet = config_path("lenet.json");
    assert_usage_error(
        cnn(dir.path())
            .args(["train", "--device", "tpu", "--config"])
            .arg(&lenet),
        &["not a device"],
    );
    assert_usage_error(
        cnn(dir.path())
            .args(["train", "--epochs", "-3", "--config"])
            .arg(&lenet),
        &["--epochs"],
    );
    assert_usage_error(
        cnn(dir.path())
            .args(["train", "--bogus", "--config"])
            .arg(&lenet),
        &["--bogus"],
    );
    assert_usage_error(cnn(dir.path()).args(["train"]), &["--config"]);
    assert_usage_error(
        cnn(dir.path())
            .args(["train", "--dataset", "imagenet", "--config"])
            .arg(&lenet),
        &["--dataset", "unknown dataset `imagenet`"],
    );
    assert_usage_error(
        cnn(dir.path()).args(["eval", "--split", "dev", "--checkpoint", "x"]),
        &["--split"],
    );
    assert_usage_error(
        cnn(dir.path())
            .args(["--threads", "0", "summary", "--config"])
            .arg(&lenet),
        &["--threads 0"],
    );
}

#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_in_a_cpu_build_says_how_to_get_it() {
    let dir = tempfile::tempdir().unwrap();
    assert_usage_error(
        cnn(dir.path())
            .args(["train", "--device", "cuda", "--config"])
            .arg(config_path("lenet.json")),
        &["built without CUDA support", "scripts/build-cuda.sh"],
    );
}

#[test]
fn help_has_an_example_for_every_command() {
    let dir = tempfile::tempdir().unwrap();
    for cmd in ["train", "eval", "summary"] {
        let (code, out, _) = run(cnn(dir.path()).args([cmd, "--help"]));
        assert_eq!(code, 0);
        assert!(
            out.contains("Examples:") && out.contains(&format!("cnn {cmd} ")),
            "{cmd}:\n{out}"
        );
    }
}

#[test]
fn an_unknown_padding_mode_is_not_called_an_unknown_layer_type() {
    let err = summary_error(
        |c| c["layers"][0]["padding_mode"] = json!("mirror"),
        &["layer 0 (conv2d)", "`mirror`", "reflect"],
    );
    assert!(!err.contains("unknown layer type"), "{err}");
    summary_error(
        |c| {
            c["layers"][0]["padding"] = json!(30);
            c["layers"][0]["padding_mode"] = json!("reflect");
        },
        &[
            "padding_mode \"reflect\"",
            "28×28",
            "use padding_mode \"zeros\"",
        ],
    );
}

#[test]
fn summary_checks_the_training_section_as_train_does() {
    summary_error(
        |c| c["training"]["batch_size"] = json!(0),
        &["training.batch_size is 0"],
    );
}

#[test]
fn a_name_that_is_a_path_does_not_place_the_run_outside_runs() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = shipped("oneconv.json");
    cfg["name"] = json!("../escaped");
    let path = write_config(dir.path(), "c.json", &cfg);
    assert_usage_error(
        cnn(dir.path())
            .args(["train", "--config"])
            .arg(path)
            .arg("--data-dir")
            .arg(mnist_small()),
        &["\"../escaped\"", "--out"],
    );
    assert!(!dir.path().join("escaped").exists());
}

#[test]
fn absurd_thread_counts_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    assert_usage_error(
        cnn(dir.path())
            .args(["--threads", "100000", "summary", "--config"])
            .arg(config_path("oneconv.json")),
        &["--threads 100000", "at most"],
    );
}

/// A change to a config.
type Modify = fn(&mut serde_json::Value);

/// Issue #21, item 8: each message names the field and shows the value, in
/// JSON terms (no Rust type such as `usize` or `struct TrainingConfig`).
#[test]
fn messages_name_the_field_and_the_value_in_json_terms() {
    #[rustfmt::skip]
    let cases: &[(Modify, &str)] = &[
        (|c| c["layers"][0]["kernel_size"] = json!([3]),
         "layer 0 (conv2d): field `kernel_size`: expected a non-negative integer or a pair [height, width], got [3]"),
        (|c| c["layers"][0]["kernel_size"] = json!("3"),
         "layer 0 (conv2d): field `kernel_size`: expected a non-negative integer or a pair [height, width], got \"3\"; write the number without quotes"),
        (|c| c["layers"][0]["stride"] = json!(-1), "layer 0 (conv2d): field `stride`: expected a non-negative integer or a pair [height, width], got -1"),
        (|c| c["layers"][0]["padding"] = json!(-1), "layer 0 (conv2d): field `padding`: expected a non-negative integer, a pair [height, width], \"same\" or \"valid\", got -1"),
        (|c| c["training"] = json!(5), "field `training`: expected an object {...}, got 5"),
        (|c| c["data"] = json!([]), "field `data`: expected an object {...}, got []"),
        (|c| c["training"]["optimizer"] = json!("adam"), "field `training.optimizer`: expected an object {...}, got \"adam\""),
        (|c| c["training"]["lr_schedule"] = json!({"type": "multistep", "milestones": [-1], "gamma": 0.1}),
         "field `training.lr_schedule.milestones[0]`: expected a non-negative integer, got -1"),
        (|c| c["training"]["lr_schedule"] = json!({"type": "constant", "gamma": 0.1}),
         "field `training.lr_schedule`: unknown field `gamma`: the constant schedule takes no settings"),
        (|c| c["input_shape"] = json!([1, 28]), "field `input_shape`: expected a list of 3 values, got [1,28]"),
        (|c| c["layers"][1] = json!({"type": "relu", "negative_slope": 0.1}), "layer 1 (relu): unknown field `negative_slope`; this takes no fields"),
        (|c| c["layers"][0]["bias"] = json!(1), "layer 0 (conv2d): field `bias`: expected true or false, got 1"),
    ];
    for (modify, needle) in cases {
        let err = summary_error(modify, &[needle]);
        for rust in ["usize", "struct ", "u64", "f64", "a sequence", "a map"] {
            assert!(!err.contains(rust), "{rust:?} in {err}");
        }
    }
}

/// Issue #21, item 8: a byte-order mark is not an error; a key given twice
/// is one (JSON parsers otherwise keep the last value silently).
#[test]
fn a_byte_order_mark_is_read_and_a_duplicate_key_is_refused_with_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(config_path("lenet.json")).unwrap();
    let bom = dir.path().join("bom.json");
    std::fs::write(&bom, format!("\u{feff}{text}")).unwrap();
    let (code, out, err) = run(cnn(dir.path()).args(["summary", "--config"]).arg(&bom));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("61,706"), "{out}");

    let twice = text.replacen(
        "\"num_classes\": 10,",
        "\"num_classes\": 10, \"num_classes\": 3,",
        1,
    );
    assert_ne!(twice, text);
    let dup = dir.path().join("dup.json");
    std::fs::write(&dup, twice).unwrap();
    assert_usage_error(
        cnn(dir.path()).args(["summary", "--config"]).arg(&dup),
        &[
            "dup.json is not valid JSON",
            "`num_classes` is given twice in the top level",
            "line ",
        ],
    );
    let twice = text.replacen(
        "\"kernel_size\": 5,",
        "\"kernel_size\": 5, \"kernel_size\": 3,",
        1,
    );
    assert_ne!(twice, text);
    std::fs::write(&dup, twice).unwrap();
    assert_usage_error(
        cnn(dir.path()).args(["summary", "--config"]).arg(&dup),
        &["`kernel_size` is given twice in `layers[0]`"],
    );
}
