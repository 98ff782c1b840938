//! The order and the column names of a report's rows.

use super::{Report, Row};
use anyhow::Result;
use serde_json::Value;
use std::collections::BTreeSet;

/// Short column labels: the fewest trailing path segments that tell the
/// parameters apart (`lr`, `batch_size`; `1.out_features`).
pub fn labels(params: &[String]) -> Vec<String> {
    let segs: Vec<Vec<&str>> = params.iter().map(|p| p.split('.').collect()).collect();
    let longest = segs.iter().map(Vec::len).max().unwrap_or(1);
    for depth in 1..=longest {
        let labels: Vec<String> = segs
            .iter()
            .map(|s| s[s.len().saturating_sub(depth)..].join("."))
            .collect();
        let unique: BTreeSet<&String> = labels.iter().collect();
        if unique.len() == labels.len() {
            return labels;
        }
    }
    params.to_vec()
}

/// Orders rows by `key` (see [`SORT_KEYS`] or a parameter): metrics
/// best first, parameters and names ascending; missing values last. Ties
/// keep their order.
pub fn sort(report: &mut Report, key: &str) -> Result<()> {
    use std::cmp::Ordering;
    let labels = labels(&report.params);
    let param = report
        .params
        .iter()
        .zip(&labels)
        .find(|(p, l)| *p == key || *l == key)
        .map(|(p, _)| p.clone());
    type Key = Box<dyn Fn(&Row) -> Option<SortValue>>;
    let (get, descending): (Key, bool) = match key {
        "best_val_acc" => (Box::new(|r| r.best_val_acc.map(SortValue::Num)), true),
        "test_acc" => (Box::new(|r| r.test_acc.map(SortValue::Num)), true),
        "epochs" => (Box::new(|r| Some(SortValue::Num(r.epochs as f64))), true),
        "seconds" => (Box::new(|r| r.seconds.map(SortValue::Num)), false),
        "run" | "name" => (Box::new(|r| Some(SortValue::Text(r.run.clone()))), false),
        "status" => (
            Box::new(|r| Some(SortValue::Text(r.status.name().to_string()))),
            false,
        ),
        _ => match param {
            Some(p) => (
                Box::new(move |r| match r.params.get(&p) {
                    None | Some(Value::Null) => None,
                    Some(Value::Number(n)) => n.as_f64().map(SortValue::Num),
                    Some(Value::String(s)) => Some(SortValue::Text(s.clone())),
                    Some(v) => Some(SortValue::Text(v.to_string())),
                }),
                false,
            ),
            None => {
                let mut options: Vec<&str> = SORT_KEYS.to_vec();
                options.extend(report.params.iter().map(String::as_str));
                crate::bail_input!(
                    "--sort {key}: no such column; sort by one of: {}",
                    options.join(", ")
                )
            }
        },
    };
    report.rows.sort_by(|a, b| match (get(a), get(b)) {
        (Some(x), Some(y)) => {
            let o = x.cmp(&y);
            if descending { o.reverse() } else { o }
        }
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    });
    Ok(())
}

/// The columns `--sort` takes besides the varied parameters.
pub const SORT_KEYS: &[&str] = &[
    "best_val_acc",
    "test_acc",
    "seconds",
    "epochs",
    "run",
    "status",
];

/// Numbers before text; numbers by value, text by bytes.
#[derive(Debug, PartialEq)]
enum SortValue {
    Num(f64),
    Text(String),
}

impl Eq for SortValue {}

impl PartialOrd for SortValue {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for SortValue {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        use std::cmp::Ordering;
        match (self, other) {
            (SortValue::Num(a), SortValue::Num(b)) => a.total_cmp(b),
            (SortValue::Text(a), SortValue::Text(b)) => a.cmp(b),
            (SortValue::Num(_), SortValue::Text(_)) => Ordering::Less,
            (SortValue::Text(_), SortValue::Num(_)) => Ordering::Greater,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::collect;
    use super::super::fixtures::sweep;
    use super::*;
    use serde_json::json;

    #[test]
    fn labels_use_the_fewest_trailing_segments_that_are_unique() {
        let p = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            labels(&p(&["training.optimizer.lr", "training.batch_size"])),
            p(&["lr", "batch_size"])
        );
        assert_eq!(
            labels(&p(&["layers.1.out_features", "layers.3.out_features"])),
            p(&["1.out_features", "3.out_features"])
        );
    }

    #[test]
    fn sorting_puts_the_best_first_and_missing_values_last() {
        let dir = tempfile::tempdir().unwrap();
        sweep(dir.path());
        let mut r = collect(&[dir.path().to_path_buf()]).unwrap();
        sort(&mut r, "best_val_acc").unwrap();
        let names: Vec<&str> = r.rows.iter().map(|r| r.run.as_str()).collect();
        assert_eq!(
            names[..2],
            ["lr=0.1,batch_size=128", "lr=0.1,batch_size=64"]
        );
        sort(&mut r, "training.batch_size").unwrap();
        assert_eq!(
            r.rows.last().unwrap().params["training.batch_size"],
            json!(128)
        );
        let err = sort(&mut r, "accuracy").unwrap_err();
        assert_eq!(crate::error::exit_code(&err), 2);
        assert!(format!("{err}").contains("best_val_acc, test_acc"), "{err}");
    }
}
