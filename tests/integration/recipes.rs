//! The recipes in `configs/recipes/` stay valid: each trains for one epoch on
//! a few hundred real images (CIFAR-10's recipes on MNIST digits coloured and
//! written in CIFAR-10's format) and writes a checkpoint that evaluates. (How
//! fast and how well a whole recipe trains is measured by
//! `scripts/time-to-accuracy.sh`, not here; what is tested here is that the
//! script continues a stopped measurement and reports what it holds.)

use crate::common::*;

/// `cnn train` flags for one epoch on a few hundred images.
const SMALL_RUN: [&str; 6] = [
    "--epochs",
    "1",
    "--limit-train",
    "300",
    "--limit-test",
    "200",
];

#[test]
fn every_recipe_trains_on_a_few_hundred_images() {
    let dir = tempfile::tempdir().unwrap();
    let mut recipes: Vec<_> = std::fs::read_dir(config_path("recipes"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    recipes.sort();
    assert!(!recipes.is_empty(), "no recipes in configs/recipes");
    for recipe in recipes {
        let config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&recipe).unwrap()).unwrap();
        let dataset = config["data"]["dataset"].as_str().unwrap_or("mnist");
        let data = match dataset {
            "mnist" => mnist_small(),
            "cifar10" => {
                let data = dir.path().join("cifar");
                crate::cifar::write_cifar(&data, 60, 200);
                data
            }
            other => panic!(
                "{}: give this test a small {other} dataset",
                recipe.display()
            ),
        };
        let name = recipe.file_stem().unwrap().to_str().unwrap().to_string();
        let out = dir.path().join(&name);
        let (code, _, err) = run(cnn(dir.path())
            .args(["train", "--quiet"])
            .args(SMALL_RUN)
            .arg("--config")
            .arg(&recipe)
            .arg("--data-dir")
            .arg(&data)
            .arg("--out")
            .arg(&out));
        assert_eq!(code, 0, "{name}: {err}");
        let (code, stdout, err) = run(cnn(dir.path())
            .args(["eval", "--json", "--checkpoint"])
            .arg(out.join("best.safetensors")));
        assert_eq!(code, 0, "{name}: {err}");
        let eval: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(eval["samples"], 200, "{name}: {stdout}");
    }
}

/// `bash scripts/time-to-accuracy.sh RECIPE --out OUT ARGS -- TRAIN` with the
/// freshly built binary, on the committed MNIST subset.
fn time_to_accuracy(out: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    run(assert_cmd::Command::new("bash")
        .arg(repo().join("scripts/time-to-accuracy.sh"))
        .arg(config_path("recipes/mnist-99.json"))
        .arg("--out")
        .arg(out)
        .arg("--data-dir")
        .arg(mnist_small())
        .args(args)
        .arg("--")
        .args(SMALL_RUN)
        .env("CNN", assert_cmd::cargo::cargo_bin("cnn"))
        .env_remove("CNN_DATA_DIR"))
}

/// The table row of `seed` ("| 1 | 4.2 | 91.00% |") split into its cells.
fn table_row(stdout: &str, seed: &str) -> Vec<String> {
    let line = stdout
        .lines()
        .find(|l| l.starts_with(&format!("| {seed} |")))
        .unwrap_or_else(|| panic!("no row for {seed} in\n{stdout}"));
    line.trim_matches('|')
        .split('|')
        .map(|c| c.trim().to_string())
        .collect()
}

#[test]
fn time_to_accuracy_continues_a_stopped_measurement_and_reports_what_it_holds() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("tta");
    let (code, stdout, err) = time_to_accuracy(&out, &["--seeds", "1"]);
    assert_eq!(code, 0, "{err}");
    let acc = history(&out.join("cnn-seed-1")).last().unwrap()["test_acc"]
        .as_f64()
        .unwrap();
    let row = table_row(&stdout, "1");
    assert_eq!(row[2], format!("{:.2}%", 100.0 * acc), "{stdout}");
    let secs: f64 = std::fs::read_to_string(out.join("cnn-seed-1.secs"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(row[1], format!("{secs:.1}"), "{stdout}");
    assert!(secs > 0.0);

    // A run stopped midway leaves its directory without a .secs file: the
    // next invocation keeps seed 1, moves the unfinished seed 2 aside (its
    // files intact) and runs it again.
    std::fs::create_dir(out.join("cnn-seed-2")).unwrap();
    std::fs::write(out.join("cnn-seed-2/steps.csv"), "unfinished").unwrap();
    let (code, stdout, err) = time_to_accuracy(&out, &["--seeds", "2"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("seed 1: measured already"), "{err}");
    assert!(
        err.contains("moving the unfinished cnn-seed-2 aside"),
        "{err}"
    );
    assert_eq!(table_row(&stdout, "1")[1], format!("{secs:.1}"), "{stdout}");
    assert!(out.join("cnn-seed-2.secs").is_file());
    assert_eq!(history(&out.join("cnn-seed-2")).len(), 1);
    let aside: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("cnn-seed-2.partial-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(
        std::fs::read_to_string(out.join(&aside[0]).join("steps.csv")).unwrap(),
        "unfinished"
    );

    // --report runs nothing: a seed not run yet and the PyTorch runs not made
    // show as "—", and each mean says how many runs it covers.
    std::fs::write(out.join("torch-seed-1.json"), r#"{"test_acc": 0.5}"#).unwrap();
    std::fs::write(out.join("torch-seed-1.secs"), "12.3\n").unwrap();
    let (code, stdout, err) = time_to_accuracy(&out, &["--seeds", "3", "--report"]);
    assert_eq!(code, 0, "{err}");
    assert!(!out.join("cnn-seed-3").exists(), "--report ran seed 3");
    assert_eq!(table_row(&stdout, "1")[3..], ["12.3", "50.00%"], "{stdout}");
    assert_eq!(table_row(&stdout, "2")[3..], ["—", "—"], "{stdout}");
    assert_eq!(
        table_row(&stdout, "3")[1..],
        ["—", "—", "—", "—"],
        "{stdout}"
    );
    let mean = table_row(&stdout, "mean ± std");
    assert!(mean[1].ends_with("s (n=2)"), "{stdout}");
    assert_eq!(mean[4], "50.00 ± 0.00% (n=1)", "{stdout}");

    // --report without an earlier measurement is a usage error.
    let (code, _, err) = time_to_accuracy(&dir.path().join("none"), &["--report"]);
    assert_eq!(code, 2);
    assert!(err.contains("--report needs the --out DIR"), "{err}");
}
