//! The recipes in `configs/recipes/` stay valid: each trains for one epoch on
//! a few hundred real images (CIFAR-10's recipes on MNIST digits coloured and
//! written in CIFAR-10's format) and writes a checkpoint that evaluates. (How
//! fast and how well a whole recipe trains is measured by
//! `scripts/time-to-accuracy.sh`, not here.)

use crate::common::*;

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
            .args([
                "train",
                "--quiet",
                "--epochs",
                "1",
                "--limit-train",
                "300",
                "--limit-test",
                "200",
            ])
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
