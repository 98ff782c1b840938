//! The points of a sweep: grid axes from `KEY=V1,V2,...` words, every
//! combination or a seeded random sample of them, and a run name per point.
//! Pure functions; nothing here reads a config or touches the disk.
//!
//! Names and random samples are the ones scripts/sweep.sh made when this
//! lived in bash (same seed, same points), so sweeps made then resume now.

use anyhow::Result;
use std::collections::{HashMap, HashSet};

/// A grid axis: a config path as `--set` takes it and its values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Axis {
    pub key: String,
    pub values: Vec<String>,
}

/// A grid larger than this is refused even for a random sample.
pub const MAX_GRID: u64 = 100_000_000;
/// The most points (runs) one sweep may have.
pub const MAX_POINTS: u64 = 100_000;
/// A point name longer than this is shortened (file names have limits).
const MAX_NAME: usize = 200;

/// Whether `word` is an axis: a config path (`a.b.0.c` or `a.b[0].c`), then `=`.
pub fn is_axis(word: &str) -> bool {
    let Some((key, _)) = word.split_once('=') else {
        return false;
    };
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut rest = key;
    // The first segment: a letter or underscore, then word characters.
    match rest.chars().next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
        _ => return false,
    }
    let end = rest.find(|c| !ident(c)).unwrap_or(rest.len());
    rest = &rest[end..];
    // Then `.segment` or `[index]`, any number of times.
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(|c| !ident(c)).unwrap_or(r.len());
            if end == 0 {
                return false;
            }
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(|c: char| !c.is_ascii_digit()).unwrap_or(r.len());
            if end == 0 || !r[end..].starts_with(']') {
                return false;
            }
            rest = &r[end + 1..];
        } else {
            return false;
        }
    }
    true
}

/// Splits `V1,V2,...` on the commas outside `[...]`, `{...}` and `"..."`.
pub fn split_values(s: &str) -> Vec<String> {
    let mut values = Vec::new();
    let (mut cur, mut depth, mut quoted) = (String::new(), 0i64, false);
    for c in s.chars() {
        if quoted {
            quoted = c != '"';
        } else {
            match c {
                '"' => quoted = true,
                '[' | '{' => depth += 1,
                ']' | '}' => depth -= 1,
                ',' if depth == 0 => {
                    values.push(std::mem::take(&mut cur));
                    continue;
                }
                _ => {}
            }
        }
        cur.push(c);
    }
    values.push(cur);
    values
}

/// The axes of `KEY=V1,V2,...` words, each checked.
pub fn parse_axes(words: &[String]) -> Result<Vec<Axis>> {
    if words.is_empty() {
        crate::bail_input!(
            "give at least one grid axis, e.g. training.optimizer.lr=0.001,0.0005,0.01"
        );
    }
    let mut axes: Vec<Axis> = Vec::new();
    for word in words {
        if !is_axis(word) {
            crate::bail_input!(
                "{word}: expected KEY=V1,V2,... with KEY a config path such as training.optimizer.lr"
            );
        }
        let (key, values) = word.split_once('=').unwrap_or((word, ""));
        if axes.iter().any(|a| a.key == key) {
            crate::bail_input!(
                "{key} is given twice; list all its values in one axis: {key}=V1,V2,..."
            );
        }
        let values = split_values(values);
        let mut seen = HashSet::new();
        for v in &values {
            if v.is_empty() {
                crate::bail_input!(
                    "{word}: empty value; write {key}=V1,V2,... without empty entries"
                );
            }
            if !seen.insert(v) {
                crate::bail_input!("{word}: {v} is listed twice");
            }
        }
        axes.push(Axis {
            key: key.to_string(),
            values,
        });
    }
    Ok(axes)
}

/// One run of the sweep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Point {
    pub index: usize,
    /// Its run directory's name, from the varied values (`lr=0.001,batch_size=64`).
    pub name: String,
    /// One value per axis, in the axes' order.
    pub values: Vec<String>,
}

/// A random draw: `points` of the grid's `grid_points`, from `seed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Draw {
    pub points: u64,
    pub seed: u64,
    pub grid_points: u64,
}

/// The points of a sweep and how they were chosen.
#[derive(Debug, Clone)]
pub struct Plan {
    pub axes: Vec<Axis>,
    pub random: Option<Draw>,
    pub points: Vec<Point>,
    /// The axes that tell points apart (those with several values, or all).
    varied: Vec<usize>,
    /// A short label per axis (`lr`, `batch_size`, `1.out_features`).
    labels: Vec<String>,
}

impl Plan {
    /// Every combination of the axes' values (the first axis varying
    /// slowest), or `random` of them drawn with `seed`.
    pub fn new(axes: Vec<Axis>, random: Option<u64>, seed: u64) -> Result<Plan> {
        let mut grid: u64 = 1;
        for a in &axes {
            grid = grid.saturating_mul(a.values.len() as u64);
            if grid > MAX_GRID {
                crate::bail_input!(
                    "the grid has more than 100,000,000 points; use fewer values or fewer axes"
                );
            }
        }
        let (indices, random) = match random {
            Some(0) => {
                crate::bail_input!("--random 0: expected a whole number of points, at least 1")
            }
            Some(k) if k > grid => crate::bail_input!(
                "--random {k}: the grid has only {grid} points; ask for at most {grid}"
            ),
            Some(k) if k > MAX_POINTS => crate::bail_input!(
                "--random {k}: that is too many runs for one sweep; ask for at most {MAX_POINTS}"
            ),
            Some(k) => (
                sample(grid, k, seed),
                Some(Draw {
                    points: k,
                    seed,
                    grid_points: grid,
                }),
            ),
            None if grid > MAX_POINTS => crate::bail_input!(
                "the grid has {grid} points; that is too many runs: use --random K to draw K of them"
            ),
            None => ((0..grid).collect(), None),
        };
        let (varied, labels) = labels(&axes);
        let mut seen = HashSet::new();
        let points = indices
            .into_iter()
            .enumerate()
            .map(|(index, g)| {
                let values = grid_values(&axes, g);
                let name = unique_name(
                    point_name(&varied, &labels, &values, index),
                    index,
                    &mut seen,
                );
                Point {
                    index,
                    name,
                    values,
                }
            })
            .collect();
        Ok(Plan {
            axes,
            random,
            points,
            varied,
            labels,
        })
    }

    /// `lr (3) × batch_size (2)`: the varied axes and their sizes.
    pub fn describe(&self) -> String {
        let parts: Vec<String> = self
            .varied
            .iter()
            .map(|&i| format!("{} ({})", self.labels[i], self.axes[i].values.len()))
            .collect();
        parts.join(" × ")
    }
}

/// The values of grid point `g` (mixed radix, the last axis fastest).
fn grid_values(axes: &[Axis], mut g: u64) -> Vec<String> {
    let mut values = vec![String::new(); axes.len()];
    for (i, a) in axes.iter().enumerate().rev() {
        let n = a.values.len() as u64;
        values[i] = a.values[(g % n) as usize].clone();
        g /= n;
    }
    values
}

/// `k` distinct numbers of `0..grid`, ascending: the first `k` steps of a
/// Fisher-Yates shuffle (kept sparse) driven by a 32-bit linear
/// congruential generator (Numerical Recipes' constants), so that the same
/// seed draws the same points on any machine.
pub fn sample(grid: u64, k: u64, seed: u64) -> Vec<u64> {
    let mut state = (seed ^ (seed >> 32)) & 0xffff_ffff;
    let mut next = move || {
        state = (state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223)) & 0xffff_ffff;
        state >> 8
    };
    // 48 random bits from two steps, reduced to 0..n.
    let mut draw = move |n: u64| {
        let hi = next();
        ((hi << 24) | next()) % n
    };
    let mut moved: HashMap<u64, u64> = HashMap::new();
    let mut out: Vec<u64> = (0..k)
        .map(|i| {
            let j = i + draw(grid - i);
            let vi = moved.get(&i).copied().unwrap_or(i);
            let vj = moved.get(&j).copied().unwrap_or(j);
            moved.insert(i, vj);
            moved.insert(j, vi);
            vj
        })
        .collect();
    out.sort_unstable();
    out
}

/// The varied axes, and a label per axis: the fewest trailing path segments
/// that tell the varied axes apart (`lr`, `batch_size`; `1.out_features`).
fn labels(axes: &[Axis]) -> (Vec<usize>, Vec<String>) {
    let mut varied: Vec<usize> = (0..axes.len())
        .filter(|&i| axes[i].values.len() > 1)
        .collect();
    if varied.is_empty() {
        varied = (0..axes.len()).collect();
    }
    let segs: Vec<Vec<String>> = axes
        .iter()
        .map(|a| {
            a.key
                .replace('[', ".")
                .replace(']', "")
                .split('.')
                .map(String::from)
                .collect()
        })
        .collect();
    let longest = segs.iter().map(Vec::len).max().unwrap_or(1);
    let mut depth = 1;
    loop {
        let labels: Vec<String> = segs
            .iter()
            .map(|s| s[s.len().saturating_sub(depth)..].join("."))
            .collect();
        let distinct: HashSet<&String> = varied.iter().map(|&i| &labels[i]).collect();
        if distinct.len() == varied.len() || depth >= longest {
            return (varied, labels);
        }
        depth += 1;
    }
}

/// A value as part of a file name: anything but `A-Za-z0-9._+-` becomes `_`.
pub fn sanitize(value: &str) -> String {
    value
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._+-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// `label=value,...` over the varied axes; shortened past 200 characters.
fn point_name(varied: &[usize], labels: &[String], values: &[String], index: usize) -> String {
    let parts: Vec<String> = varied
        .iter()
        .map(|&i| format!("{}={}", labels[i], sanitize(&values[i])))
        .collect();
    let name = parts.join(",");
    if name.chars().count() > MAX_NAME {
        let head: String = name.chars().take(MAX_NAME - 20).collect();
        format!("p{index}-{head}")
    } else {
        name
    }
}

/// `name`, or `name-INDEX` when another point already has it (values that
/// sanitize alike: `a/b` and `a:b`).
fn unique_name(mut name: String, index: usize, seen: &mut HashSet<String>) -> String {
    while seen.contains(&name) {
        name = format!("{name}-{index}");
    }
    seen.insert(name.clone());
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    fn axes(words: &[&str]) -> Vec<Axis> {
        let words: Vec<String> = words.iter().map(|w| w.to_string()).collect();
        parse_axes(&words).unwrap()
    }

    fn names(words: &[&str], random: Option<u64>, seed: u64) -> Vec<String> {
        let plan = Plan::new(axes(words), random, seed).unwrap();
        plan.points.into_iter().map(|p| p.name).collect()
    }

    fn input_error(words: &[&str]) -> String {
        let words: Vec<String> = words.iter().map(|w| w.to_string()).collect();
        let err = parse_axes(&words).unwrap_err();
        assert_eq!(crate::error::exit_code(&err), 2);
        err.to_string()
    }

    #[test]
    fn an_axis_is_a_config_path_then_an_equals_sign() {
        for w in [
            "lr=1",
            "training.optimizer.lr=0.1,0.2",
            "layers.1.out_features=5",
            "layers[1].kernel_size=[3,3]",
            "_a.b_2=",
        ] {
            assert!(is_axis(w), "{w}");
        }
        for w in [
            "lr",
            "1a=2",
            ".a=1",
            "a..b=1",
            "a[x]=1",
            "a[1=2",
            "a.=1",
            "--x=1",
            "=1",
            "a-b=1",
            "ALL,FOO=1",
        ] {
            assert!(!is_axis(w), "{w}");
        }
    }

    #[test]
    fn values_split_on_commas_outside_brackets_braces_and_quotes() {
        assert_eq!(split_values("0.1,0.01"), ["0.1", "0.01"]);
        assert_eq!(split_values("[3,3],[5,5]"), ["[3,3]", "[5,5]"]);
        assert_eq!(
            split_values(r#"{"a":[1,2]},"x,y",z"#),
            [r#"{"a":[1,2]}"#, r#""x,y""#, "z"]
        );
        assert_eq!(split_values("1"), ["1"]);
        assert_eq!(split_values(""), [""]);
        assert_eq!(split_values("a,,b"), ["a", "", "b"]);
    }

    #[test]
    fn bad_axes_are_input_errors_that_say_what_to_write() {
        assert!(input_error(&[]).contains("at least one grid axis"));
        assert!(input_error(&["lr"]).contains("expected KEY=V1,V2"));
        assert!(input_error(&["a=1", "a=2"]).contains("a is given twice"));
        assert!(input_error(&["a=1,,2"]).contains("empty value"));
        assert!(input_error(&["a=1,2,1"]).contains("1 is listed twice"));
    }

    #[test]
    fn the_grid_varies_the_first_axis_slowest_and_names_points_by_short_labels() {
        let plan = Plan::new(
            axes(&[
                "training.optimizer.lr=0.001,0.01",
                "training.batch_size=64,128",
            ]),
            None,
            0,
        )
        .unwrap();
        let got: Vec<(&str, Vec<&str>)> = plan
            .points
            .iter()
            .map(|p| {
                (
                    p.name.as_str(),
                    p.values.iter().map(String::as_str).collect(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("lr=0.001,batch_size=64", vec!["0.001", "64"]),
                ("lr=0.001,batch_size=128", vec!["0.001", "128"]),
                ("lr=0.01,batch_size=64", vec!["0.01", "64"]),
                ("lr=0.01,batch_size=128", vec!["0.01", "128"]),
            ]
        );
        assert_eq!(plan.describe(), "lr (2) × batch_size (2)");
    }

    // The expected names below are what scripts/sweep.sh printed for the
    // same arguments before the sweep moved into Rust.

    #[test]
    fn labels_take_as_many_trailing_segments_as_the_varied_axes_need() {
        assert_eq!(
            names(
                &[
                    "layers.1.out_features=50,100",
                    "layers.3.out_features=10,20",
                    "training.x.lr=1"
                ],
                None,
                0
            ),
            [
                "1.out_features=50,3.out_features=10",
                "1.out_features=50,3.out_features=20",
                "1.out_features=100,3.out_features=10",
                "1.out_features=100,3.out_features=20",
            ]
        );
        assert_eq!(
            names(&["a.b[0].c=1,2", "x.b.0.c=3,4", "q=5"], None, 0),
            [
                "a.b.0.c=1,x.b.0.c=3",
                "a.b.0.c=1,x.b.0.c=4",
                "a.b.0.c=2,x.b.0.c=3",
                "a.b.0.c=2,x.b.0.c=4"
            ]
        );
        // Nothing varies: every axis names the point.
        assert_eq!(
            names(&["training.optimizer.lr=0.1", "training.seed=1"], None, 0),
            ["lr=0.1,seed=1"]
        );
    }

    #[test]
    fn values_that_sanitize_alike_get_the_point_index_appended() {
        assert_eq!(
            names(
                &[r#"layers.0.kernel_size=[3,3],[5,5],"a b",{"x":1}"#],
                None,
                0
            ),
            [
                "kernel_size=_3_3_",
                "kernel_size=_5_5_",
                "kernel_size=_a_b_",
                "kernel_size=__x__1_"
            ]
        );
        assert_eq!(
            names(&["k=a/b,a_b,a:b"], None, 0),
            ["k=a_b", "k=a_b-1", "k=a_b-2"]
        );
        // Even when the suffixed name was taken by an earlier point.
        assert_eq!(
            names(&["k=a_b-2,a_b,a:b"], None, 0),
            ["k=a_b-2", "k=a_b", "k=a_b-2-2"]
        );
    }

    #[test]
    fn long_names_are_cut_to_180_characters_after_the_point_index() {
        let long = "x".repeat(250);
        let n = names(&[&format!("k={long},{long}y")], None, 0);
        assert_eq!(n[0], format!("p0-k={}", "x".repeat(178)));
        assert_eq!(n[1], format!("p1-k={}", "x".repeat(178)));
    }

    #[test]
    fn random_draws_are_the_ones_the_bash_sweep_made_for_the_same_seed() {
        let lr_batch = [
            "training.optimizer.lr=0.1,0.01,0.001",
            "training.batch_size=16,32,64",
        ];
        assert_eq!(
            names(&lr_batch, Some(3), 7),
            [
                "lr=0.1,batch_size=32",
                "lr=0.01,batch_size=16",
                "lr=0.01,batch_size=32"
            ]
        );
        assert_eq!(
            names(&lr_batch, Some(3), 8),
            [
                "lr=0.1,batch_size=16",
                "lr=0.01,batch_size=16",
                "lr=0.001,batch_size=64"
            ]
        );
        assert_eq!(
            names(
                &["a=1,2,3,4,5,6,7", "b=x,y,z", "c=9", "d.e=1,2"],
                Some(5),
                0
            ),
            [
                "a=1,b=x,e=1",
                "a=2,b=z,e=2",
                "a=4,b=y,e=2",
                "a=5,b=x,e=1",
                "a=5,b=x,e=2"
            ]
        );
        let count = |n: usize| (1..=n).map(|i| i.to_string()).collect::<Vec<_>>().join(",");
        let big = [
            format!("a={}", count(1000)),
            format!("b={}", count(1000)),
            format!("c={}", count(100)),
        ];
        let big: Vec<&str> = big.iter().map(String::as_str).collect();
        assert_eq!(
            names(&big, Some(6), 999_999_999),
            [
                "a=217,b=56,c=71",
                "a=263,b=695,c=46",
                "a=733,b=99,c=95",
                "a=818,b=387,c=40",
                "a=864,b=372,c=56",
                "a=922,b=457,c=99"
            ]
        );
    }

    #[test]
    fn a_sample_is_distinct_sorted_and_covers_the_grid_when_k_is_all_of_it() {
        for seed in [0, 1, 42, u64::MAX] {
            let s = sample(1000, 50, seed);
            assert_eq!(s.len(), 50);
            assert!(s.windows(2).all(|w| w[0] < w[1]), "{s:?}");
            assert!(s.iter().all(|&g| g < 1000));
            assert_eq!(sample(1000, 50, seed), s, "same seed, same points");
            assert_eq!(sample(20, 20, seed), (0..20).collect::<Vec<_>>());
        }
        assert_ne!(sample(1000, 50, 1), sample(1000, 50, 2));
    }

    #[test]
    fn grids_too_large_and_samples_larger_than_the_grid_are_refused() {
        let err = |words: &[&str], random| {
            let e = Plan::new(axes(words), random, 0).unwrap_err();
            assert_eq!(crate::error::exit_code(&e), 2);
            e.to_string()
        };
        assert!(err(&["a=1,2"], Some(3)).contains("the grid has only 2 points"));
        assert!(err(&["a=1,2"], Some(0)).contains("at least 1"));
        let wide = (0..1000)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(",");
        let (a, b, c) = (
            format!("a={wide}"),
            format!("b={wide}"),
            format!("c={wide}"),
        );
        assert!(err(&[&a, &b], None).contains("use --random K"));
        assert!(err(&[&a, &b, &c], Some(1)).contains("more than 100,000,000"));
        assert!(err(&[&a, &b], Some(200_000)).contains("at most 100000"));
        assert_eq!(
            Plan::new(axes(&[&a, &b]), Some(10), 0)
                .unwrap()
                .points
                .len(),
            10
        );
    }
}
