//! `SWEEP_DIR/manifest.json`: the base config, the axes, how the points
//! were drawn, the arguments every run gets, and every point (index, name,
//! run directory, its `KEY -> value` map and its exact command). Written
//! before anything runs; the point runner and `cnn report` read it.
//!
//! Format 2 stores the flags every run gets as values (`train`, the fields
//! of `cli::TrainFlags`). Format 1 (what scripts/sweep.sh wrote when the
//! sweep lived in bash, and cnn until format 2) held them as the argument
//! strings after `--` (`extra`); such manifests are read, their strings
//! parsed once into the same values.

use super::plan::{Draw, Plan};
use crate::cli::TrainFlags;
use anyhow::Result;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const FILE: &str = "manifest.json";
/// The format this cnn writes and the newest it reads.
pub const FORMAT: u32 = 2;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    #[serde(default = "format_1")]
    pub format: u32,
    /// The base config, as an absolute path.
    #[serde(default)]
    pub base: String,
    #[serde(default)]
    pub base_sha256: String,
    pub axes: Vec<Axis>,
    #[serde(default)]
    pub random: Option<Random>,
    /// The flags given to every `cnn train`.
    #[serde(default)]
    pub train: TrainFlags,
    /// Format 1's arguments after `--`, as strings: read and turned into
    /// `train`, never written.
    #[serde(default, skip_serializing)]
    extra: Vec<String>,
    pub points: Vec<Point>,
}

fn format_1() -> u32 {
    1
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Axis {
    pub key: String,
    pub values: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Random {
    pub points: u64,
    pub seed: u64,
    pub grid_points: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub index: usize,
    pub name: String,
    /// The run directory, relative to the sweep directory (`runs/NAME`).
    pub dir: String,
    /// The point's value of each axis, by key.
    pub params: BTreeMap<String, String>,
    /// The `cnn train` command that starts it, for people to read (its
    /// paths are those of the sweep directory when it was planned).
    #[serde(default)]
    pub command: String,
}

impl Manifest {
    /// The manifest of `plan` (without the points' commands).
    pub fn new(plan: &Plan, base: String, base_sha256: String, train: TrainFlags) -> Manifest {
        Manifest {
            format: FORMAT,
            base,
            base_sha256,
            axes: plan
                .axes
                .iter()
                .map(|a| Axis {
                    key: a.key.clone(),
                    values: a.values.clone(),
                })
                .collect(),
            random: plan.random.map(
                |Draw {
                     points,
                     seed,
                     grid_points,
                 }| Random {
                    points,
                    seed,
                    grid_points,
                },
            ),
            train,
            extra: Vec::new(),
            points: plan
                .points
                .iter()
                .map(|p| Point {
                    index: p.index,
                    name: p.name.clone(),
                    dir: format!("runs/{}", p.name),
                    params: plan
                        .axes
                        .iter()
                        .zip(&p.values)
                        .map(|(a, v)| (a.key.clone(), v.clone()))
                        .collect(),
                    command: String::new(),
                })
                .collect(),
        }
    }

    /// Reads `SWEEP_DIR/manifest.json`.
    pub fn read(sweep_dir: &Path) -> Result<Manifest> {
        let path = sweep_dir.join(FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                crate::input_error!(
                    "{} is missing; is {} a sweep directory (made by scripts/sweep.sh)?",
                    path.display(),
                    sweep_dir.display()
                )
            } else {
                crate::input_error!("cannot read {}: {e}", path.display())
            }
        })?;
        let m = Manifest::from_json(&text).map_err(|e| {
            crate::input_error!(
                "{} is not a sweep manifest ({e}); it is written by scripts/sweep.sh — re-run the sweep \
                 command to rewrite it, or delete it to report the run directories as they are",
                path.display()
            )
        })?;
        if m.format > FORMAT {
            crate::bail_input!(
                "{} is of format {}, newer than this cnn reads ({FORMAT}); use the cnn that made the sweep",
                path.display(),
                m.format
            );
        }
        Ok(m)
    }

    /// Decodes a manifest of any format, format 1's argument strings parsed
    /// into `train`.
    pub fn from_json(text: &str) -> std::result::Result<Manifest, String> {
        let mut m: Manifest = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if !m.extra.is_empty() {
            let extra = std::mem::take(&mut m.extra);
            let (train, own) = crate::cli::parse_train_flags(&extra).map_err(|e| {
                format!("its train arguments {extra:?} do not parse ({})", e.kind())
            })?;
            if !own.is_empty() {
                return Err(format!("its train arguments set {} itself", own.join(", ")));
            }
            m.train = train;
        }
        Ok(m)
    }

    /// The pretty-printed JSON that [`Manifest::read`] reads back.
    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).expect("a manifest is plain data");
        text.push('\n');
        text
    }

    pub fn point(&self, index: usize) -> Result<&Point> {
        self.points
            .iter()
            .find(|p| p.index == index)
            .ok_or_else(|| {
                crate::input_error!(
                    "the sweep has no point {index}; its points are numbered 0 to {}",
                    self.points.len().saturating_sub(1)
                )
            })
    }

    /// The point's run directory inside `sweep_dir`.
    pub fn run_dir(sweep_dir: &Path, point: &Point) -> PathBuf {
        sweep_dir.join(&point.dir)
    }

    /// The point's `KEY=VALUE` assignments, in the axes' order.
    pub fn assignments(&self, point: &Point) -> Result<Vec<String>> {
        self.axes
            .iter()
            .map(|a| match point.params.get(&a.key) {
                Some(v) => Ok(format!("{}={v}", a.key)),
                None => crate::bail_input!(
                    "point {} ({}) of the manifest has no value for {}; re-run the sweep command to rewrite it",
                    point.index,
                    point.name,
                    a.key
                ),
            })
            .collect()
    }

    /// How this manifest and `other` differ as sweeps, one line per field
    /// (`  random: ... in manifest.json, ... here`); empty when they are the
    /// same sweep. The format and the commands (which hold absolute paths,
    /// so that moving a sweep directory does not make it another sweep) do
    /// not count.
    pub fn differences(&self, other: &Manifest) -> Vec<String> {
        let field = |m: &Manifest| -> Vec<(&'static str, Value)> {
            let points: Vec<Value> = m
                .points
                .iter()
                .map(|p| serde_json::json!({"index": p.index, "name": p.name, "dir": p.dir, "params": p.params}))
                .collect();
            vec![
                ("base", Value::from(m.base.clone())),
                ("base_sha256", Value::from(m.base_sha256.clone())),
                ("axes", serde_json::to_value(&m.axes).unwrap_or(Value::Null)),
                (
                    "random",
                    serde_json::to_value(m.random).unwrap_or(Value::Null),
                ),
                (
                    "train",
                    Value::from(super::point::shown(&m.train.to_args())),
                ),
                ("points", Value::from(points)),
            ]
        };
        let mut lines = Vec::new();
        for ((name, a), (_, b)) in field(self).into_iter().zip(field(other)) {
            if a == b {
                continue;
            }
            if name == "points" {
                lines.push(
                    "  points: the same grid gives other names or run directories (made by another \
                     version of cnn)"
                        .to_string(),
                );
            } else {
                lines.push(format!(
                    "  {name}: {} in {FILE}, {} here",
                    one_line(&a),
                    one_line(&b)
                ));
            }
        }
        lines
    }
}

/// JSON on one line, spaced for people: `{"points": 3, "seed": 7}`.
fn one_line(v: &Value) -> String {
    match v {
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(one_line).collect();
            format!("[{}]", items.join(", "))
        }
        Value::Object(map) => {
            let items: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{}: {}", Value::from(k.clone()), one_line(v)))
                .collect();
            format!("{{{}}}", items.join(", "))
        }
        v => v.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sweep::plan::{Plan, parse_axes};

    /// What scripts/sweep.sh wrote for `--base base.json --out out --random 3
    /// --seed 7 training.optimizer.lr=0.1,0.01,0.001 layers.0.kernel_size=[3,3],[5,5]
    /// -- --epochs 2 --set 'description="a b"' --no-download` before the sweep
    /// moved into Rust.
    const BASH_MANIFEST: &str = r#"{
  "format": 1,
  "base": "/tmp/sv/base.json",
  "base_sha256": "ca3d163bab055381827226140568f3bef7eaac187cebd76878e0b63e9e442356",
  "axes": [
    {"key": "training.optimizer.lr", "values": ["0.1", "0.01", "0.001"]},
    {"key": "layers.0.kernel_size", "values": ["[3,3]", "[5,5]"]}
  ],
  "random": {"points": 3, "seed": 7, "grid_points": 6},
  "extra": ["--epochs", "2", "--set", "description=\"a b\"", "--no-download"],
  "points": [
    {
      "index": 0,
      "name": "lr=0.1,kernel_size=_3_3_",
      "dir": "runs/lr=0.1,kernel_size=_3_3_",
      "params": {"training.optimizer.lr": "0.1", "layers.0.kernel_size": "[3,3]"},
      "command": "cnn train --config /tmp/sv/base.json --set training.optimizer.lr=0.1 --set 'layers.0.kernel_size=[3,3]' --out /tmp/sv/out/runs/lr=0.1,kernel_size=_3_3_ --epochs 2 --set 'description=\"a b\"' --no-download"
    },
    {
      "index": 1,
      "name": "lr=0.1,kernel_size=_5_5_",
      "dir": "runs/lr=0.1,kernel_size=_5_5_",
      "params": {"training.optimizer.lr": "0.1", "layers.0.kernel_size": "[5,5]"},
      "command": "cnn train --config /tmp/sv/base.json --set training.optimizer.lr=0.1 --set 'layers.0.kernel_size=[5,5]' --out /tmp/sv/out/runs/lr=0.1,kernel_size=_5_5_ --epochs 2 --set 'description=\"a b\"' --no-download"
    },
    {
      "index": 2,
      "name": "lr=0.01,kernel_size=_5_5_",
      "dir": "runs/lr=0.01,kernel_size=_5_5_",
      "params": {"training.optimizer.lr": "0.01", "layers.0.kernel_size": "[5,5]"},
      "command": "cnn train --config /tmp/sv/base.json --set training.optimizer.lr=0.01 --set 'layers.0.kernel_size=[5,5]' --out /tmp/sv/out/runs/lr=0.01,kernel_size=_5_5_ --epochs 2 --set 'description=\"a b\"' --no-download"
    }
  ]
}
"#;

    fn planned(seed: u64, extra: &[&str]) -> Manifest {
        let words: Vec<String> = [
            "training.optimizer.lr=0.1,0.01,0.001",
            "layers.0.kernel_size=[3,3],[5,5]",
        ]
        .iter()
        .map(|w| w.to_string())
        .collect();
        let plan = Plan::new(parse_axes(&words).unwrap(), Some(3), seed).unwrap();
        Manifest::new(
            &plan,
            "/tmp/sv/base.json".into(),
            "ca3d163bab055381827226140568f3bef7eaac187cebd76878e0b63e9e442356".into(),
            crate::cli::parse_train_flags(&extra.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap()
                .0,
        )
    }

    const EXTRA: &[&str] = &[
        "--epochs",
        "2",
        "--set",
        "description=\"a b\"",
        "--no-download",
    ];

    #[test]
    fn a_manifest_written_by_the_bash_sweep_is_the_same_sweep_as_the_same_command_now() {
        let old = Manifest::from_json(BASH_MANIFEST).unwrap();
        let new = planned(7, EXTRA);
        assert_eq!(old.differences(&new), Vec::<String>::new());
        // Written and read back, it is unchanged.
        let back = Manifest::from_json(&new.to_json()).unwrap();
        assert_eq!(back, new);
    }

    #[test]
    fn another_seed_base_or_extra_argument_is_another_sweep_and_says_which() {
        let old = Manifest::from_json(BASH_MANIFEST).unwrap();
        let d = old.differences(&planned(8, EXTRA));
        assert_eq!(
            d[0],
            r#"  random: {"grid_points": 6, "points": 3, "seed": 7} in manifest.json, {"grid_points": 6, "points": 3, "seed": 8} here"#
        );
        assert!(d[1].starts_with("  points:"), "{d:?}");
        let mut other = planned(7, &["--epochs", "3"]);
        other.base_sha256 = "00".into();
        let d = old.differences(&other);
        assert_eq!(d.len(), 2, "{d:?}");
        assert!(d[0].starts_with("  base_sha256: \"ca3d"), "{d:?}");
        assert!(d[1].ends_with(r#""--epochs 3" here"#), "{d:?}");
    }

    #[test]
    fn a_point_command_follows_the_axes_order_and_unknown_points_are_input_errors() {
        let m = planned(7, EXTRA);
        assert_eq!(
            m.assignments(m.point(2).unwrap()).unwrap(),
            ["training.optimizer.lr=0.01", "layers.0.kernel_size=[5,5]"]
        );
        let err = m.point(3).unwrap_err();
        assert_eq!(crate::error::exit_code(&err), 2);
        assert!(err.to_string().contains("numbered 0 to 2"), "{err}");
    }

    #[test]
    fn a_manifest_from_a_newer_cnn_or_not_a_manifest_is_refused_with_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let err = Manifest::read(dir.path()).unwrap_err();
        assert!(
            err.to_string().contains("manifest.json is missing"),
            "{err}"
        );
        std::fs::write(dir.path().join(FILE), "{").unwrap();
        let err = Manifest::read(dir.path()).unwrap_err();
        assert!(err.to_string().contains("is not a sweep manifest"), "{err}");
        let mut m = planned(7, EXTRA);
        m.format = 3;
        std::fs::write(dir.path().join(FILE), m.to_json()).unwrap();
        let err = Manifest::read(dir.path()).unwrap_err();
        assert_eq!(crate::error::exit_code(&err), 2);
        assert!(err.to_string().contains("format 3"), "{err}");
    }
}
