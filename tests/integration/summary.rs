//! `cnn summary` on the shipped configs: shapes and parameter counts equal
//! PyTorch's for the same models.

use crate::common::*;

fn summary_json(name: &str) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = run(cnn(dir.path())
        .args(["summary", "--json", "--config"])
        .arg(config_path(name)));
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap()
}

// PyTorch: sum(p.numel() for p in model.parameters()) for the seed models.
#[test]
fn shipped_configs_have_pytorch_parameter_counts() {
    for (name, params) in [
        ("oneconv.json", 52_084),
        ("three-conv.json", 123_222),
        ("two-conv.json", 141_258),
        ("lenet.json", 61_706),
        ("mlp.json", 79_510),
    ] {
        let s = summary_json(name);
        assert_eq!(s["total_params"], params, "{name}");
    }
}

#[test]
fn every_config_in_configs_builds_and_summarises() {
    for entry in std::fs::read_dir(repo().join("configs")).unwrap() {
        let path = entry.unwrap().path();
        // Configs only, not the recipes/ folder beside them.
        if !path.is_file() {
            continue;
        }
        let dir = tempfile::tempdir().unwrap();
        let (code, out, err) = run(cnn(dir.path()).args(["summary", "--config"]).arg(&path));
        assert_eq!(code, 0, "{}: {err}", path.display());
        assert!(out.contains("Total params"), "{out}");
    }
}

#[test]
fn three_conv_shapes_follow_the_seed_notebook() {
    let s = summary_json("three-conv.json");
    let shapes: Vec<String> = s["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| format!("{}", l["output_shape"]))
        .collect();
    // Comments of seed 001: 16×24×24, 32×20×20, 32×10×10, 64×6×6, 64×3×3, flatten 576.
    assert_eq!(shapes[0], "[16,24,24]");
    assert_eq!(shapes[2], "[32,20,20]");
    assert_eq!(shapes[4], "[32,10,10]");
    assert_eq!(shapes[5], "[64,6,6]");
    assert_eq!(shapes[7], "[64,3,3]");
    assert_eq!(shapes[8], "[576]");
}

#[test]
fn text_summary_shows_totals_with_separators() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, _) = run(cnn(dir.path())
        .args(["summary", "--config"])
        .arg(config_path("three-conv.json")));
    assert_eq!(code, 0);
    assert!(out.contains("Total params: 123,222"), "{out}");
    assert!(out.contains("64×3×3"), "{out}");
}

#[test]
fn lenet_multiply_adds_match_hand_count() {
    // conv 6·28·28·25 + conv 16·10·10·150 + 400·120 + 120·84 + 84·10
    let s = summary_json("lenet.json");
    assert_eq!(s["total_macs"], 117_600 + 240_000 + 48_000 + 10_080 + 840);
}

#[test]
fn summary_accepts_set_overrides() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = run(cnn(dir.path())
        .args([
            "summary",
            "--json",
            "--set",
            "layers.0.out_channels=12",
            "--config",
        ])
        .arg(config_path("oneconv.json")));
    assert_eq!(code, 0, "{err}");
    let s: serde_json::Value = serde_json::from_str(&out).unwrap();
    // conv 12·25+12, linear 12·24·24·10+10
    assert_eq!(s["total_params"], 312 + 69_130);
}

// What the CPU runs each convolution with, as the kernels would pick it:
// listed by summary, and following the variables that choose kernels.
#[test]
fn summary_names_the_cpu_kernels_of_every_convolution() {
    let dir = tempfile::tempdir().unwrap();
    let kernels = |env: &[(&str, &str)]| {
        let mut cmd = cnn(dir.path());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let (code, out, err) = run(cmd
            .args(["summary", "--json", "--config"])
            .arg(config_path("resnet20-cifar10.json")));
        assert_eq!(code, 0, "{err}");
        let s: serde_json::Value = serde_json::from_str(&out).unwrap();
        s["cpu_kernels"].as_object().unwrap().clone()
    };
    let all = kernels(&[]);
    // 21 convolutions: the stem, two in each of 9 blocks, two shortcuts.
    assert_eq!(all.len(), 21, "{all:?}");
    assert!(
        all["layers.0"]["backward"]
            .as_str()
            .unwrap()
            .ends_with("(no input gradient)"),
        "{all:?}"
    );
    let im2col = kernels(&[("CNN_DIRECT_CONV", "0")]);
    assert!(
        im2col.values().all(|k| k["forward"] == "im2col+gemm"
            && k["backward"].as_str().unwrap().starts_with("im2col+gemm")),
        "{im2col:?}"
    );
    if all
        .values()
        .any(|k| k["forward"].as_str().unwrap().starts_with("winograd"))
    {
        let off = kernels(&[("CNN_WINOGRAD", "0")]);
        assert!(
            off.values()
                .all(|k| !k["forward"].as_str().unwrap().starts_with("winograd")),
            "{off:?}"
        );
    }
    assert!(kernels(&[("CNN_KERNELS", "candle")]).is_empty());
}
