//! `cnn report`: the leaderboard of a sweep (or of any run directories) as a
//! markdown table, JSON or CSV. Finding and reading the runs is
//! [`crate::report`]; this module only formats.

use crate::cli::ReportArgs;
use crate::plot::{self, chart};
use crate::report::{self, Report, Row, Status};
use anyhow::{Context, Result};
use serde_json::{Map, Value, json};

pub fn run(args: &ReportArgs) -> Result<()> {
    if let Some(path) = &args.plot {
        crate::output::check(path, args.force, "--plot")?;
        if plot::format_of(path).is_err() {
            crate::bail_input!(
                "--plot {}: the chart's file name must end in .png or .svg",
                path.display()
            );
        }
    }
    if let Some(path) = &args.csv {
        crate::output::check(path, args.force, "--csv")?;
    }
    let mut report = report::collect(&args.dirs)?;
    report::sort(&mut report, &args.sort)?;
    if let Some(path) = &args.csv {
        crate::output::write(path, to_csv(&report).as_bytes(), args.force, "--csv")
            .with_context(|| format!("writing --csv {}", path.display()))?;
    }
    if let Some(path) = &args.plot {
        plot::save(&val_chart(&report)?, path, args.force, "--plot")?;
        eprintln!("wrote {}", path.display());
    }
    if args.json {
        emit(&format!(
            "{}\n",
            serde_json::to_string_pretty(&to_json(&report))?
        ))
    } else {
        emit(&table(&report))
    }
}

/// Writes to stdout; a reader that went away (`cnn report ... | head`) is
/// not an error.
fn emit(text: &str) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r.context("writing the report to stdout"),
    }
}

/// The validation accuracy per epoch of every run with a history, in the
/// report's order.
pub fn val_chart(report: &Report) -> Result<chart::MetricChart> {
    let runs: Vec<chart::RunHistory> = report
        .rows
        .iter()
        .filter(|r| r.history.iter().any(|e| e.val_acc.is_some()))
        .map(|r| chart::RunHistory {
            name: r.run.clone(),
            records: r.history.clone(),
        })
        .collect();
    if runs.is_empty() {
        crate::bail_input!(
            "--plot draws validation accuracy, but no run has a validated epoch yet{}",
            if report.rows.iter().any(|r| r.epochs > 0) {
                " (their data.val_size is 0)"
            } else {
                ""
            }
        );
    }
    Ok(chart::MetricChart {
        title: format!("Validation accuracy of {} runs", runs.len()),
        y_label: "validation accuracy (%)",
        metric: chart::Metric::Accuracy(chart::Split::Val),
        runs,
    })
}

/// A parameter's value as the user typed it: strings bare, the rest as JSON.
fn show(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        v => v.to_string(),
    }
}

/// One JSON object per run, keyed by the parameters' `--set` paths and
/// `run`, `status`, `best_val_acc`, `best_epoch`, `test_acc`, `epochs`,
/// `seconds` (and `error` for failed or unreadable runs).
pub fn to_json(report: &Report) -> Value {
    let rows = report
        .rows
        .iter()
        .map(|r| {
            let mut o = Map::new();
            for (k, v) in &r.params {
                o.insert(k.clone(), v.clone());
            }
            o.insert("run".into(), json!(r.run));
            o.insert("status".into(), json!(r.status.name()));
            o.insert("best_val_acc".into(), json!(r.best_val_acc));
            o.insert("best_epoch".into(), json!(r.best_epoch));
            o.insert("test_acc".into(), json!(r.test_acc));
            o.insert("epochs".into(), json!(r.epochs));
            o.insert("seconds".into(), json!(r.seconds));
            if let Some(e) = &r.error {
                o.insert("error".into(), json!(e));
            }
            Value::Object(o)
        })
        .collect();
    Value::Array(rows)
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map(|x| x.to_string()).unwrap_or_default()
}

/// The JSON columns as CSV: `run`, the parameters, then the results.
pub fn to_csv(report: &Report) -> String {
    let mut header = vec!["run".to_string()];
    header.extend(report.params.iter().cloned());
    header.extend(
        [
            "status",
            "best_val_acc",
            "best_epoch",
            "test_acc",
            "epochs",
            "seconds",
            "error",
        ]
        .map(String::from),
    );
    let mut out = header
        .iter()
        .map(|h| csv_field(h))
        .collect::<Vec<_>>()
        .join(",");
    out.push('\n');
    for r in &report.rows {
        let mut cells = vec![r.run.clone()];
        cells.extend(report.params.iter().map(|p| show(&r.params[p])));
        cells.extend([
            r.status.name().to_string(),
            opt(r.best_val_acc),
            opt(r.best_epoch),
            opt(r.test_acc),
            r.epochs.to_string(),
            opt(r.seconds),
            r.error.clone().unwrap_or_default(),
        ]);
        out.push_str(
            &cells
                .iter()
                .map(|c| csv_field(c))
                .collect::<Vec<_>>()
                .join(","),
        );
        out.push('\n');
    }
    out
}

fn percent(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |a| format!("{:.2}%", 100.0 * a))
}

/// What the status column says: the state, and for failures the reason,
/// cut to a readable length (the whole of it is in `--json`).
fn status_cell(r: &Row) -> String {
    match &r.error {
        Some(e) if matches!(r.status, Status::Run(_) | Status::Unreadable) => {
            const MAX: usize = 70;
            let e = e.replace('|', "/");
            let e = if e.chars().count() > MAX {
                format!("{}…", e.chars().take(MAX).collect::<String>())
            } else {
                e
            };
            format!("{}: {e}", r.status.name())
        }
        _ => r.status.name().to_string(),
    }
}

/// A markdown table, columns padded to line up, numbers aligned right.
pub fn table(report: &Report) -> String {
    let labels = report::labels(&report.params);
    let mut header = vec!["run".to_string()];
    header.extend(labels);
    let first_result = header.len();
    header.extend(
        [
            "status",
            "best val acc",
            "best epoch",
            "test acc",
            "epochs",
            "seconds",
        ]
        .map(String::from),
    );
    let right = |c: usize| c > first_result;
    let rows: Vec<Vec<String>> = report
        .rows
        .iter()
        .map(|r| {
            let mut cells = vec![r.run.replace('|', "/")];
            cells.extend(report.params.iter().map(|p| show(&r.params[p])));
            let no_val = r.best_val_acc.is_none() && r.epochs > 0;
            cells.extend([
                status_cell(r),
                if no_val {
                    "no val split".into()
                } else {
                    percent(r.best_val_acc)
                },
                opt(r.best_epoch),
                percent(r.test_acc),
                r.epochs.to_string(),
                r.seconds.map_or_else(|| "-".into(), |s| format!("{s:.1}")),
            ]);
            cells
        })
        .collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|c| {
            rows.iter()
                .map(|r| r[c].chars().count())
                .chain([header[c].chars().count(), 3])
                .max()
                .unwrap_or(3)
        })
        .collect();
    let line = |cells: &[String]| {
        let padded: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(c, s)| {
                if right(c) {
                    format!("{s:>w$}", w = widths[c])
                } else {
                    format!("{s:<w$}", w = widths[c])
                }
            })
            .collect();
        format!("| {} |\n", padded.join(" | "))
    };
    let mut out = line(&header);
    let rule: Vec<String> = widths
        .iter()
        .enumerate()
        .map(|(c, w)| {
            if right(c) {
                format!("{}:", "-".repeat(w + 1))
            } else {
                "-".repeat(w + 2)
            }
        })
        .collect();
    out.push_str(&format!("|{}|\n", rule.join("|")));
    for r in &rows {
        out.push_str(&line(r));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixtures::sweep;

    fn report() -> (tempfile::TempDir, Report) {
        let dir = tempfile::tempdir().unwrap();
        sweep(dir.path());
        let mut r = report::collect(&[dir.path().to_path_buf()]).unwrap();
        report::sort(&mut r, "best_val_acc").unwrap();
        (dir, r)
    }

    #[test]
    fn json_has_exactly_the_documented_keys() {
        let (_dir, r) = report();
        let v = to_json(&r);
        let rows = v.as_array().unwrap();
        assert_eq!(rows.len(), 5);
        let keys: Vec<&str> = rows[0]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut expected = [
            "training.optimizer.lr",
            "training.batch_size",
            "run",
            "status",
            "best_val_acc",
            "best_epoch",
            "test_acc",
            "epochs",
            "seconds",
        ];
        expected.sort();
        assert_eq!(keys, expected);
        assert_eq!(rows[0]["run"], "lr=0.1,batch_size=128");
        assert_eq!(rows[0]["best_val_acc"], 0.95);
        assert_eq!(rows[0]["best_epoch"], 1);
        assert_eq!(rows[0]["test_acc"], 0.94);
        assert_eq!(rows[0]["training.optimizer.lr"], 0.1);
        let failed = rows.iter().find(|r| r["status"] == "failed").unwrap();
        assert_eq!(failed["error"], "training diverged at step 3");
        assert_eq!(failed["best_val_acc"], Value::Null);
    }

    #[test]
    fn the_table_lines_up_and_shows_percentages_and_reasons() {
        let (_dir, r) = report();
        let t = table(&r);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 7, "{t}");
        assert!(lines[0].starts_with("| run "), "{t}");
        assert!(lines[0].contains("| lr "), "{t}");
        assert!(lines[0].contains("| batch_size |"), "{t}");
        let width = lines[0].chars().count();
        assert!(lines.iter().all(|l| l.chars().count() == width), "{t}");
        assert!(
            lines[2].contains("| done ") && lines[2].contains("95.00%"),
            "{t}"
        );
        assert!(lines[2].contains("94.00%"), "{t}");
        assert!(t.contains("failed: training diverged at step 3"), "{t}");
        assert!(t.contains("not started"), "{t}");
        assert!(t.contains("unreadable: "), "{t}");
    }

    #[test]
    fn the_chart_has_a_validation_curve_per_run_that_has_one() {
        let (dir, r) = report();
        let c = val_chart(&r).unwrap();
        let names: Vec<&str> = c.runs.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["lr=0.1,batch_size=128", "lr=0.1,batch_size=64"]);
        let png = dir.path().join("val.png");
        plot::save(&c, &png, false, "--plot").unwrap();
        assert!(std::fs::read(&png).unwrap().starts_with(b"\x89PNG"));
        let empty = Report {
            params: vec![],
            rows: vec![],
        };
        let err = val_chart(&empty).err().unwrap();
        assert_eq!(crate::error::exit_code(&err), 2);
    }

    #[test]
    fn csv_has_a_header_and_quotes_fields_with_commas() {
        let (_dir, r) = report();
        let csv = to_csv(&r);
        let mut lines = csv.lines();
        assert_eq!(
            lines.next().unwrap(),
            "run,training.optimizer.lr,training.batch_size,status,best_val_acc,best_epoch,test_acc,epochs,seconds,error"
        );
        assert_eq!(
            lines.next().unwrap(),
            "\"lr=0.1,batch_size=128\",0.1,128,done,0.95,1,0.94,2,10,"
        );
    }
}
