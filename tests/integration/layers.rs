//! The layer kinds as the registry (`cnn::layers::KINDS`) defines them agree
//! with everything else that lists them: the the guide's layer table (docs/src/guide/config.md), the
//! PyTorch reference script (`scripts/torch_reference.py`), the config
//! parser and `cnn summary`.

use crate::common::*;
use cnn::layers::{KINDS, Layer};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};

/// A kind's config fields, from its example with every default written out
/// (without `trainable`, which every kind takes and the guide documents
/// once).
fn fields(example: &str) -> BTreeSet<String> {
    let layer: Layer = serde_json::from_str(example).unwrap();
    let Value::Object(map) = serde_json::to_value(&layer).unwrap() else {
        panic!("{example} is not an object")
    };
    assert_eq!(map["trainable"], true, "{example}");
    map.keys()
        .filter(|k| *k != "type" && *k != "trainable")
        .cloned()
        .collect()
}

/// Backticked words of a markdown table cell.
fn ticked(cell: &str) -> Vec<String> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .map(String::from)
        .collect()
}

#[test]
fn every_example_parses_as_its_own_kind() {
    for k in KINDS {
        let layer: Layer = serde_json::from_str(k.example)
            .unwrap_or_else(|e| panic!("{}: example {}: {e}", k.name, k.example));
        assert_eq!(layer.kind(), k.name);
        for alias in k.aliases {
            let mut v: Value = serde_json::from_str(k.example).unwrap();
            v["type"] = json!(alias);
            let layer: Layer = serde_json::from_value(v).unwrap();
            assert_eq!(layer.kind(), k.name, "alias {alias}");
        }
    }
}

#[test]
fn the_guide_documents_every_kind_its_aliases_and_its_fields() {
    let guide = std::fs::read_to_string(repo().join("docs/src/guide/config.md")).unwrap();
    let section = guide
        .split("## Layers")
        .nth(1)
        .expect("the guide's config chapter has a Layers section");
    let mut documented = BTreeMap::new();
    for line in section.lines().take_while(|l| !l.starts_with("##")) {
        let cells: Vec<&str> = line.split(" | ").collect();
        if !line.starts_with("| `") || cells.len() < 2 {
            continue;
        }
        for name in ticked(cells[0]) {
            documented.insert(name, ticked(cells[1]));
        }
    }
    for k in KINDS {
        let settings = documented.get(k.name).unwrap_or_else(|| {
            panic!(
                "the guide's layer table (docs/src/guide/config.md) lacks `{}`",
                k.name
            )
        });
        for f in fields(k.example) {
            assert!(
                settings.contains(&f),
                "the guide's row for `{}` lacks its field `{f}`",
                k.name
            );
        }
        for alias in k.aliases {
            assert!(
                documented.contains_key(*alias),
                "the guide lacks alias `{alias}`"
            );
        }
    }
    let known: BTreeSet<&str> = KINDS
        .iter()
        .flat_map(|k| std::iter::once(k.name).chain(k.aliases.iter().copied()))
        .collect();
    for name in documented.keys() {
        assert!(
            known.contains(name.as_str()),
            "the guide documents `{name}`, which cnn does not know"
        );
    }
}

#[test]
fn the_pytorch_reference_knows_every_kind_with_the_same_fields() {
    let script = std::fs::read_to_string(repo().join("scripts/torch_reference.py")).unwrap();
    let table = script
        .split("LAYER_FIELDS = {")
        .nth(1)
        .and_then(|t| t.split("\n}\n").next())
        .expect("torch_reference.py has LAYER_FIELDS");
    // "conv2d": {"in_channels", ...}, possibly over several lines; set() when empty.
    let mut python: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for entry in table.split("},").flat_map(|e| e.split("set(),")) {
        let mut quoted = entry.split('"').skip(1).step_by(2).map(String::from);
        if let Some(kind) = quoted.next() {
            python.insert(kind, quoted.collect());
        }
    }
    for k in KINDS {
        let theirs = python
            .get(k.name)
            .unwrap_or_else(|| panic!("LAYER_FIELDS in torch_reference.py lacks {}", k.name));
        assert_eq!(*theirs, fields(k.example), "fields of {}", k.name);
        for alias in k.aliases {
            assert!(
                script.contains(&format!("\"{alias}\": \"{}\"", k.name)),
                "LAYER_ALIASES in torch_reference.py lacks {alias}"
            );
        }
        assert!(
            script.contains(&format!("nn.{}", k.torch))
                || script.contains(&format!("class {}(nn.Module)", k.torch)),
            "torch_reference.py never builds {} for {}",
            k.torch,
            k.name
        );
    }
    assert_eq!(python.len(), KINDS.len(), "LAYER_FIELDS has other kinds");
}

#[test]
fn summary_shows_every_kind_of_a_network_that_uses_them_all() {
    let dir = tempfile::tempdir().unwrap();
    let example = |name: &str| -> Value {
        let k = KINDS.iter().find(|k| k.name == name).unwrap();
        serde_json::from_str(k.example).unwrap()
    };
    // Image kinds, then one way to a vector, then flat ones and an output
    // activation; each way to a vector and each output activation once.
    let image = [
        "conv2d",
        "batch_norm2d",
        "relu",
        "residual",
        "concat",
        "gate",
        "layer_norm2d",
        "layer_scale",
        "channel_linear",
        "max_pool2d",
        "leaky_relu",
        "adaptive_avg_pool2d",
        "avg_pool2d",
        "sigmoid",
        "tanh",
        "gelu",
        "relu6",
        "hardsigmoid",
        "hardswish",
        "silu",
        "dropout",
        "drop_path",
    ];
    let mut seen = BTreeSet::new();
    for (to_vector, last) in [
        ("flatten", "log_softmax"),
        ("global_avg_pool2d", "softmax"),
        ("global_max_pool2d", "softmax"),
    ] {
        let names: Vec<&str> = image
            .iter()
            .copied()
            .chain([to_vector, "batch_norm1d", "linear", last])
            .collect();
        let layers: Vec<Value> = names.iter().map(|n| example(n)).collect();
        let config = json!({"input_shape": [1, 8, 8], "num_classes": 10, "layers": layers});
        let path = write_config(dir.path(), "all.json", &config);
        let (code, out, err) = run(cnn(dir.path())
            .args(["summary", "--json", "--config"])
            .arg(&path));
        assert_eq!(code, 0, "{err}");
        let summary: Value = serde_json::from_str(&out).unwrap();
        let types: Vec<&str> = summary["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["type"].as_str().unwrap())
            .collect();
        assert_eq!(types, names);
        seen.extend(types.iter().map(|t| t.to_string()));
    }
    let all: BTreeSet<String> = KINDS.iter().map(|k| k.name.to_string()).collect();
    assert_eq!(seen, all, "add new kinds to this network");
}
