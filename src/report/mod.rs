//! The leaderboard behind `cnn report`: finds the runs of sweeps (through
//! their [`crate::sweep::Manifest`]) or of plain directories of run
//! directories, reads each run's state (as the sweep reads it,
//! [`crate::sweep::state::observe`]) and `history.json`, and builds one
//! [`Row`] per run with the parameters that vary between runs. It does not
//! format anything (that is `commands::report`).

mod find;
#[cfg(test)]
pub(crate) mod fixtures;
mod order;

pub use order::{labels, sort};

use crate::history::{self, EpochRecord};
use crate::run_dir;
use crate::status::{self, State};
use crate::sweep::state::{Lock, Observed, observe};
use anyhow::Result;
use find::{Found, find_runs};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// What a run is doing, as the report shows it.
#[derive(Debug, Clone, PartialEq)]
pub enum Status {
    /// From the run's `status.json`.
    Run(State),
    /// A sweep point whose run directory does not exist (yet).
    NotStarted,
    /// A run directory without `status.json` (written by an older cnn).
    Unknown,
    /// A file of the run could not be read; the row's `error` says why.
    Unreadable,
}

impl Status {
    pub fn name(&self) -> &'static str {
        match self {
            Status::Run(s) => s.name(),
            Status::NotStarted => "not started",
            Status::Unknown => "unknown",
            Status::Unreadable => "unreadable",
        }
    }
}

/// One run of the report.
#[derive(Debug, Clone)]
pub struct Row {
    /// The point's name (its run directory's name).
    pub run: String,
    /// Value of each parameter, by its `--set` path; `Null` when unknown.
    pub params: BTreeMap<String, Value>,
    pub status: Status,
    /// First line of the error of a failed run, or why a run is unreadable.
    pub error: Option<String>,
    /// Highest validation accuracy and the (first) epoch that reached it;
    /// `None` without a validation split.
    pub best_val_acc: Option<f64>,
    pub best_epoch: Option<usize>,
    /// Test accuracy at the best epoch (the last epoch without validation).
    pub test_acc: Option<f64>,
    pub epochs: usize,
    /// Wall-clock seconds of the run (see [`seconds`]).
    pub seconds: Option<f64>,
    pub history: Vec<EpochRecord>,
}

/// All rows, and the parameters that tell them apart (in column order).
#[derive(Debug, Clone)]
pub struct Report {
    pub params: Vec<String>,
    pub rows: Vec<Row>,
}

/// A value as `--set` reads it: JSON when it parses, a string otherwise.
pub fn set_value(raw: &str) -> Value {
    serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_string()))
}

/// Config fields that are resolved by `cnn train` rather than chosen, or are
/// free text; they never count as varied parameters.
const NOT_PARAMS: &[&str] = &["description", "data.dir", "data.normalize"];

/// Leaf values of a JSON document by dotted path (`training.optimizer.lr`,
/// `layers.1.out_features`).
pub fn flatten(value: &Value) -> BTreeMap<String, Value> {
    fn walk(v: &Value, path: &str, out: &mut BTreeMap<String, Value>) {
        if NOT_PARAMS
            .iter()
            .any(|p| path == *p || path.starts_with(&format!("{p}.")))
        {
            return;
        }
        let join = |k: &str| {
            if path.is_empty() {
                k.to_string()
            } else {
                format!("{path}.{k}")
            }
        };
        match v {
            Value::Object(map) => map.iter().for_each(|(k, v)| walk(v, &join(k), out)),
            Value::Array(items) if !items.is_empty() => items
                .iter()
                .enumerate()
                .for_each(|(i, v)| walk(v, &join(&i.to_string()), out)),
            _ => {
                out.insert(path.to_string(), v.clone());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(value, "", &mut out);
    out
}

/// The first line of a message.
fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").to_string()
}

/// The run's status, with the reason for failures and unreadable files.
/// `lock` is a sweep point's lock file (see [`observe`]).
fn read_status(
    dir: &Path,
    lock: Option<&Path>,
) -> (Status, Option<String>, Option<status::RunStatus>) {
    let lock = lock.map_or(Lock::None, Lock::File);
    match observe(dir, lock) {
        Observed::Absent => (Status::NotStarted, None, None),
        Observed::NoStatus if dir.join(run_dir::HISTORY_JSON).exists() => {
            (Status::Unknown, None, None)
        }
        Observed::NoStatus => (Status::NotStarted, None, None),
        Observed::Status(s) => {
            let error = (s.status == State::Failed)
                .then(|| first_line(s.message.as_deref().unwrap_or("failed")));
            (Status::Run(s.status), error, Some(s))
        }
        Observed::Unreadable(why) => (Status::Unreadable, Some(why), None),
    }
}

/// The highest validation accuracy, its first epoch, and the test accuracy
/// then; without validation, only the last evaluated epoch's test accuracy.
pub fn best(history: &[EpochRecord]) -> (Option<f64>, Option<usize>, Option<f64>) {
    let mut best: Option<&EpochRecord> = None;
    for r in history {
        if let Some(acc) = r.val_acc
            && best.is_none_or(|b| acc > b.val_acc.unwrap_or(f64::NEG_INFINITY))
        {
            best = Some(r);
        }
    }
    match best {
        Some(b) => (b.val_acc, Some(b.epoch), b.test_acc),
        None => (None, None, history.iter().rev().find_map(|r| r.test_acc)),
    }
}

/// Wall-clock seconds: from `status.json` (start to end, or to now while
/// running). That covers only the last session of a resumed run, so the
/// sum of the epochs' training time is the floor.
pub fn seconds(status: Option<&status::RunStatus>, history: &[EpochRecord]) -> Option<f64> {
    let trained: f64 = history.iter().map(|r| r.epoch_seconds).sum();
    let wall = status.and_then(|s| match s.status {
        State::Running => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()
            .map(|now| now.as_secs_f64() - s.started_at),
        State::Killed => None,
        _ => Some(s.updated_at - s.started_at),
    });
    match (wall, history.is_empty()) {
        (Some(w), _) => Some(w.max(trained)),
        (None, false) => Some(trained),
        (None, true) => None,
    }
}

fn read_row(found: Found) -> (Row, Option<BTreeMap<String, Value>>) {
    let (mut status, mut error, st) = read_status(&found.dir, found.lock.as_deref());
    let mut history = Vec::new();
    if found.dir.join(run_dir::HISTORY_JSON).exists() {
        match history::read(&found.dir) {
            Ok(h) => history = h,
            Err(e) => {
                status = Status::Unreadable;
                error = Some(format!("{e:#}"));
            }
        }
    }
    // A config.json that is not a config marks the run unreadable, as a
    // broken history does (it was shown as an ordinary run).
    let path = found.dir.join(run_dir::CONFIG);
    let config = match std::fs::read_to_string(&path) {
        Err(_) => None,
        Ok(text) => match serde_json::from_str::<Value>(&text) {
            Ok(v)
                if ["layers", "training", "data", "input_shape"]
                    .iter()
                    .any(|k| v.get(k).is_some()) =>
            {
                Some(flatten(&v))
            }
            Ok(_) => {
                status = Status::Unreadable;
                error.get_or_insert(format!(
                    "{} is not a cnn config (an object with layers, training and data)",
                    path.display()
                ));
                None
            }
            Err(e) => {
                status = Status::Unreadable;
                error.get_or_insert(format!("{} is not valid JSON: {e}", path.display()));
                None
            }
        },
    };
    let (best_val_acc, best_epoch, test_acc) = best(&history);
    let row = Row {
        run: found.run,
        seconds: seconds(st.as_ref(), &history),
        epochs: history.len(),
        params: found.sweep_params.unwrap_or_default(),
        status,
        error,
        best_val_acc,
        best_epoch,
        test_acc,
        history,
    };
    (row, config)
}

/// Reads every run under `dirs` (see [`find_runs`]) into a report.
pub fn collect(dirs: &[PathBuf]) -> Result<Report> {
    let mut axes = Vec::new();
    let mut found = Vec::new();
    for d in dirs {
        let runs = find_runs(d, &mut axes)?;
        let prefix = (dirs.len() > 1).then(|| d.display().to_string());
        found.extend(runs.into_iter().map(|mut f| {
            if let Some(p) = &prefix {
                f.run = format!("{}/{}", p.trim_end_matches('/'), f.run);
            }
            f
        }));
    }
    let any_plain = found.iter().any(|f| f.sweep_params.is_none());
    let (mut rows, configs): (Vec<Row>, Vec<_>) = found.into_iter().map(read_row).unzip();

    // Candidate parameters: the sweeps' axes, then (for plain run
    // directories) every config field.
    let mut keys: Vec<String> = axes.iter().map(|(k, _)| k.clone()).collect();
    if any_plain {
        let all: BTreeSet<&String> = configs.iter().flatten().flat_map(|c| c.keys()).collect();
        keys.extend(
            all.into_iter()
                .filter(|k| !keys.contains(k))
                .cloned()
                .collect::<Vec<_>>(),
        );
    }
    for (row, config) in rows.iter_mut().zip(&configs) {
        for k in &keys {
            if !row.params.contains_key(k) {
                let v = config.as_ref().and_then(|c| c.get(k)).cloned();
                row.params.insert(k.clone(), v.unwrap_or(Value::Null));
            }
        }
    }
    // Varied: an axis the user gave several values, or any field whose
    // value differs between the runs.
    let params: Vec<String> = keys
        .into_iter()
        .filter(|k| {
            let several = axes.iter().any(|(a, n)| a == k && *n > 1);
            let mut values = rows.iter().map(|r| &r.params[k]);
            let first = values.next();
            several || values.any(|v| Some(v) != first)
        })
        .collect();
    for row in &mut rows {
        row.params.retain(|k, _| params.contains(k));
    }
    Ok(Report { params, rows })
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;
    use crate::status::RunStatus;
    use serde_json::json;

    #[test]
    fn flatten_gives_dotted_paths_and_skips_resolved_fields() {
        let v = json!({"training": {"optimizer": {"lr": 0.1}}, "layers": [{"type": "relu"}],
                       "data": {"dir": "/x", "normalize": {"mean": [0.1]}, "val_size": 500},
                       "description": "text"});
        let f = flatten(&v);
        let keys: Vec<&str> = f.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            ["data.val_size", "layers.0.type", "training.optimizer.lr"]
        );
        assert_eq!(f["training.optimizer.lr"], json!(0.1));
    }

    #[test]
    fn best_is_the_first_epoch_with_the_highest_val_acc_and_its_test_acc() {
        let h = [
            record(1, Some(0.5), 0.4),
            record(2, Some(0.7), 0.6),
            record(3, Some(0.7), 0.9),
        ];
        assert_eq!(best(&h), (Some(0.7), Some(2), Some(0.6)));
        let no_val = [record(1, None, 0.4), record(2, None, 0.6)];
        assert_eq!(best(&no_val), (None, None, Some(0.6)));
        assert_eq!(best(&[]), (None, None, None));
    }

    #[test]
    fn seconds_is_wall_time_but_never_less_than_training_time() {
        let mut s = RunStatus {
            status: State::Done,
            message: None,
            exit_code: Some(0),
            pid: 1,
            host: "h".into(),
            started_at: 100.0,
            updated_at: 130.0,
            run_id: None,
        };
        let h = [record(1, None, 0.5), record(2, None, 0.5)];
        assert_eq!(seconds(Some(&s), &h), Some(30.0));
        // A resumed run's status covers only its last session.
        s.updated_at = 101.0;
        assert_eq!(seconds(Some(&s), &h), Some(4.0));
        s.status = State::Killed;
        assert_eq!(seconds(Some(&s), &h), Some(4.0));
        assert_eq!(seconds(None, &[]), None);
    }

    #[test]
    fn a_sweep_reports_every_point_with_its_state_and_best_epoch() {
        let dir = tempfile::tempdir().unwrap();
        sweep(dir.path());
        let r = collect(&[dir.path().to_path_buf()]).unwrap();
        // training.epochs has one value: not a varied parameter.
        assert_eq!(r.params, ["training.optimizer.lr", "training.batch_size"]);
        let by_name = |n: &str| r.rows.iter().find(|row| row.run == n).unwrap();
        let a = by_name("lr=0.1,batch_size=64");
        assert_eq!(a.status, Status::Run(State::Done));
        assert_eq!(
            (a.best_val_acc, a.best_epoch, a.test_acc, a.epochs),
            (Some(0.93), Some(2), Some(0.92), 2)
        );
        assert_eq!(a.params["training.optimizer.lr"], json!(0.1));
        assert_eq!(a.params["training.batch_size"], json!(64));
        assert_eq!(a.seconds, Some(10.0));
        let failed = by_name("lr=0.01,batch_size=64");
        assert_eq!(failed.status, Status::Run(State::Failed));
        assert_eq!(failed.error.as_deref(), Some("training diverged at step 3"));
        assert_eq!(by_name("lr=0.01,batch_size=128").status, Status::NotStarted);
        let bad = by_name("lr=1,batch_size=64");
        assert_eq!(bad.status, Status::Unreadable);
        assert!(
            bad.error.as_deref().unwrap().contains("history.json"),
            "{:?}",
            bad.error
        );
    }

    #[test]
    fn plain_run_directories_vary_by_the_config_fields_that_differ() {
        let dir = tempfile::tempdir().unwrap();
        for (name, lr) in [("a", 0.1), ("b", 0.01)] {
            let run = dir.path().join(name);
            write_run(&run, State::Done, None, &[record(1, Some(lr), 0.5)]);
            let config = json!({"training": {"optimizer": {"lr": lr}, "epochs": 1},
                                "data": {"dir": format!("/data/{name}")}});
            std::fs::write(run.join("config.json"), config.to_string()).unwrap();
        }
        let mut r = collect(&[dir.path().to_path_buf()]).unwrap();
        assert_eq!(r.params, ["training.optimizer.lr"]);
        sort(&mut r, "best_val_acc").unwrap();
        assert_eq!(r.rows[0].run, "a");
        sort(&mut r, "lr").unwrap();
        assert_eq!(r.rows[0].run, "b");
    }

    #[test]
    fn a_missing_or_empty_directory_is_an_input_error() {
        let dir = tempfile::tempdir().unwrap();
        for d in [dir.path().join("nope"), dir.path().to_path_buf()] {
            let err = collect(std::slice::from_ref(&d)).unwrap_err();
            assert_eq!(crate::error::exit_code(&err), 2, "{err}");
            assert!(format!("{err}").contains(&d.display().to_string()), "{err}");
        }
    }
}
