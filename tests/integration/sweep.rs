//! Sweeps end to end: scripts/sweep.sh drives the real `cnn` binary (`cnn
//! sweep plan|point|state|summary`) under GNU parallel on the committed
//! MNIST subset. Every point finishes exactly once even when the sweep is
//! interrupted or killed and run again; a failing point is reported with its
//! error; a typo in a key is refused before anything runs; a resumed point
//! keeps its train flags; `cnn report` agrees with the runs' histories and
//! with the sweep about each run's state.

use crate::common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn script() -> PathBuf {
    repo().join("scripts/sweep.sh")
}

/// `bash scripts/sweep.sh --base configs/mlp.json --out OUT ARGS -- TRAIN`
/// with the freshly built binary; `train` goes to every `cnn train`.
fn sweep(out: &Path, args: &[&str], train: &[&str]) -> Command {
    assert!(
        Command::new("parallel").arg("--version").output().is_ok(),
        "GNU parallel is needed for the sweep tests: apt-get install parallel"
    );
    let mut cmd = Command::new("bash");
    cmd.arg(script())
        .arg("--base")
        .arg(config_path("mlp.json"))
        .arg("--out")
        .arg(out)
        .args(args)
        .arg("--")
        .arg("--data-dir")
        .arg(mnist_small())
        .args([
            "--limit-train",
            "300",
            "--limit-test",
            "200",
            "--set",
            "data.val_size=200",
        ])
        .args(train)
        .env("CNN", assert_cmd::cargo::cargo_bin("cnn"))
        .env_remove("CNN_DATA_DIR")
        .stdin(Stdio::null());
    cmd
}

fn output(cmd: &mut Command) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().expect("bash runs");
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// The run directories named in the sweep's manifest.
fn run_dirs(out: &Path) -> Vec<PathBuf> {
    read_json(&out.join("manifest.json"))["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| out.join(p["dir"].as_str().unwrap()))
        .collect()
}

fn state(run: &Path) -> String {
    std::fs::read_to_string(run.join("status.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .map_or_else(|| "none".into(), |v| v["status"].as_str().unwrap().into())
}

/// Events of sweep.log by point name: fresh, resume, retry-..., skip-...
fn events(out: &Path) -> BTreeMap<String, Vec<String>> {
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let log = std::fs::read_to_string(out.join("sweep.log")).unwrap_or_default();
    for line in log.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        map.entry(f[4].to_string())
            .or_default()
            .push(f[5].to_string());
    }
    map
}

/// Each run trained exactly `epochs` epochs, once: the history counts
/// 1..=epochs and steps.csv holds each step once, in order.
fn assert_trained_once(run: &Path, epochs: usize, steps_per_epoch: usize) {
    let h = read_json(&run.join("history.json"));
    let got: Vec<u64> = h
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["epoch"].as_u64().unwrap())
        .collect();
    let want: Vec<u64> = (1..=epochs as u64).collect();
    assert_eq!(got, want, "{}", run.display());
    let steps = std::fs::read_to_string(run.join("steps.csv")).unwrap();
    let got: Vec<u64> = steps
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap().parse().unwrap())
        .collect();
    let want: Vec<u64> = (1..=(epochs * steps_per_epoch) as u64).collect();
    assert_eq!(got, want, "steps.csv of {}", run.display());
}

fn report_json(out: &Path) -> Vec<Value> {
    let (code, stdout, stderr) = run(cnn(out).arg("report").arg(out).arg("--json"));
    assert_eq!(code, 0, "{stderr}");
    serde_json::from_str::<Value>(&stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

const GRID: &[&str] = &[
    "training.optimizer.lr=0.001,0.01",
    "training.batch_size=64,128",
];

#[test]
fn a_two_by_two_sweep_runs_every_point_and_the_report_matches_the_histories() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("sweep");
    let mut args = vec!["--jobs", "2", "--threads", "1"];
    args.extend(GRID);
    let (code, stdout, stderr) = output(&mut sweep(&out, &args, &["--epochs", "1"]));
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stderr.contains("4 points: 4 done"), "{stderr}");

    let runs = run_dirs(&out);
    let names: Vec<String> = runs
        .iter()
        .map(|r| r.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "lr=0.001,batch_size=64",
            "lr=0.001,batch_size=128",
            "lr=0.01,batch_size=64",
            "lr=0.01,batch_size=128"
        ]
    );
    for r in &runs {
        assert_eq!(state(r), "done", "{}", r.display());
        // The run's config.json is the point's resolved config.
        let c = read_json(&r.join("config.json"));
        let name = r.file_name().unwrap().to_string_lossy();
        let lr = c["training"]["optimizer"]["lr"].as_f64().unwrap();
        let batch = c["training"]["batch_size"].as_u64().unwrap();
        assert_eq!(name, format!("lr={lr},batch_size={batch}"));
    }
    // The table on stdout lists every point.
    for n in &names {
        assert!(stdout.contains(&format!("| {n} ")), "{n} not in:\n{stdout}");
    }

    let rows = report_json(&out);
    assert_eq!(rows.len(), 4);
    for row in &rows {
        let run = out.join("runs").join(row["run"].as_str().unwrap());
        let h = read_json(&run.join("history.json"));
        let h = h.as_array().unwrap();
        let best = h
            .iter()
            .max_by(|a, b| {
                let (a, b) = (
                    a["val_acc"].as_f64().unwrap(),
                    b["val_acc"].as_f64().unwrap(),
                );
                a.total_cmp(&b)
            })
            .unwrap();
        assert_eq!(row["status"], "done");
        assert_eq!(row["best_val_acc"], best["val_acc"]);
        assert_eq!(row["best_epoch"], best["epoch"]);
        assert_eq!(row["test_acc"], best["test_acc"]);
        assert_eq!(row["epochs"], 1);
        assert!(row["seconds"].as_f64().unwrap() > 0.0);
        let c = read_json(&run.join("config.json"));
        assert_eq!(
            row["training.optimizer.lr"],
            c["training"]["optimizer"]["lr"]
        );
        assert_eq!(row["training.batch_size"], c["training"]["batch_size"]);
    }
    // Best first.
    let accs: Vec<f64> = rows
        .iter()
        .map(|r| r["best_val_acc"].as_f64().unwrap())
        .collect();
    assert!(accs.windows(2).all(|w| w[0] >= w[1]), "{accs:?}");

    // The same rows as CSV, and the validation curves on one chart.
    let (csv, png) = (tmp.path().join("r.csv"), tmp.path().join("val.png"));
    let (code, _, stderr) = run(cnn(tmp.path())
        .args(["report", "--csv", "r.csv", "--plot", "val.png"])
        .arg(&out));
    assert_eq!(code, 0, "{stderr}");
    let csv = std::fs::read_to_string(csv).unwrap();
    assert_eq!(csv.lines().count(), 5, "{csv}");
    assert!(csv.starts_with("run,training.optimizer.lr,training.batch_size,status,"));
    assert!(std::fs::read(png).unwrap().starts_with(b"\x89PNG"));

    // Running it again trains nothing.
    let before = std::fs::read_to_string(out.join("sweep.log")).unwrap();
    let (code, _, stderr) = output(&mut sweep(&out, &args, &["--epochs", "1"]));
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("nothing to run"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(out.join("sweep.log")).unwrap(),
        before
    );
}

/// Starts the sweep in its own process group.
fn spawn(cmd: &mut Command) -> Child {
    // A shell cannot trap a signal that was ignored when it started, as
    // SIGINT is under a runner that started the tests in the background; the
    // sweep gets the default Ctrl-C back, as it has on a terminal.
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            Ok(())
        });
    }
    cmd.process_group(0)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn wait_until(child: &mut Child, what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the sweep ended before {what}"
        );
        assert!(start.elapsed() < Duration::from_secs(120), "never {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn finish(child: Child) -> (i32, String) {
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Long enough per point to be caught midway: 2 epochs, 300 images in
/// batches of 16 or 32 (19 or 10 steps an epoch) through a wide MLP.
const SLOW: &[&str] = &["--epochs", "2", "--set", "layers.1.out_features=1500"];
const SLOW_GRID: &[&str] = &[
    "training.optimizer.lr=0.001,0.0005",
    "training.batch_size=16,32",
];

fn steps_per_epoch(run: &Path) -> usize {
    let c = read_json(&run.join("config.json"));
    300_usize.div_ceil(c["training"]["batch_size"].as_u64().unwrap() as usize)
}

#[test]
fn a_sweep_interrupted_midway_finishes_every_point_exactly_once_when_run_again() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("sweep");
    let mut args = vec!["--jobs", "2", "--threads", "1"];
    args.extend(SLOW_GRID);
    let mut child = spawn(&mut sweep(&out, &args, SLOW));
    // Two points run at a time: the third starts when one of the first two
    // is done. Interrupt it just after it has started.
    wait_until(&mut child, "the third point started", || {
        out.join("manifest.json").exists() && state(&run_dirs(&out)[2]) == "running"
    });
    // Ctrl-C: the terminal signals the sweep's whole process group.
    // SAFETY: kill(2) on a process this test started; no memory is involved.
    unsafe { libc_kill(-(child.id() as i32), 2) };
    let (code, stderr) = finish(child);
    assert_eq!(code, 130, "{stderr}");
    let runs = run_dirs(&out);
    let states: Vec<String> = runs.iter().map(|r| state(r)).collect();
    assert!(
        states.iter().any(|s| s == "interrupted"),
        "{states:?}\n{stderr}"
    );
    assert!(
        !states.iter().any(|s| s == "running" || s == "killed"),
        "{states:?}"
    );

    let (code, stdout, stderr) = output(&mut sweep(&out, &args, SLOW));
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    for r in &runs {
        assert_eq!(state(r), "done");
        assert_trained_once(r, 2, steps_per_epoch(r));
    }
    let ev = events(&out);
    for (name, e) in &ev {
        let fresh = e.iter().filter(|e| *e == "fresh").count();
        // A point stopped before its run directory existed has nothing to
        // resume: it starts afresh (the runner starts fresh only a point
        // with no status at all).
        let unstarted = e
            .windows(3)
            .filter(|w| *w == ["fresh", "exit 130", "fresh"])
            .count();
        assert_eq!(fresh, 1 + unstarted, "{name}: {e:?}");
    }
    assert!(
        ev.values().flatten().any(|e| e == "resume"),
        "nothing was resumed: {ev:?}"
    );
    assert_eq!(report_json(&out).len(), 4);
}

#[test]
fn a_sweep_killed_outright_resumes_the_killed_points_when_run_again() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("sweep");
    let mut args = vec!["--jobs", "2", "--threads", "1"];
    args.extend(SLOW_GRID);
    let mut train = SLOW.to_vec();
    train.extend(["--checkpoint-every", "3"]);
    let mut child = spawn(&mut sweep(&out, &args, &train));
    let runs_dir = out.join("runs");
    wait_until(&mut child, "a point checkpointed", || {
        std::fs::read_dir(&runs_dir).is_ok_and(|d| {
            d.flatten()
                .any(|e| e.path().join("last.safetensors").exists())
        })
    });
    // The machine dies: the sweep, parallel, every point and every cnn
    // go at once (they live in several process groups and sessions).
    // Freeze the tree first, so that nothing new starts while we kill it.
    let mut tree = Vec::new();
    loop {
        let now = descendants(child.id() as i32);
        for &pid in &now {
            // SAFETY: kill(2) on a process this test started; no memory is involved.
            unsafe { libc_kill(pid, 19) }; // SIGSTOP
        }
        if now == tree {
            break;
        }
        tree = now;
    }
    assert!(tree.len() > 2, "{tree:?}");
    for pid in tree {
        // SAFETY: kill(2) on a process this test started; no memory is involved.
        unsafe { libc_kill(pid, 9) };
    }
    let (code, _) = finish(child);
    assert_eq!(code, -1, "killed by a signal");
    let running = run_dirs(&out)
        .iter()
        .filter(|r| state(r) == "running")
        .count();
    assert!(running > 0, "no point was caught running");

    let (code, stdout, stderr) = output(&mut sweep(&out, &args, &train));
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    let runs = run_dirs(&out);
    for r in &runs {
        assert_eq!(state(r), "done");
        assert_trained_once(r, 2, steps_per_epoch(r));
    }
    let ev = events(&out);
    assert!(
        ev.values().flatten().any(|e| e == "resume"),
        "nothing was resumed: {ev:?}"
    );
}

#[test]
fn a_failing_point_is_reported_with_its_error_and_the_sweep_exits_1() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("sweep");
    let args = [
        "--jobs",
        "2",
        "--threads",
        "1",
        "training.max_loss=1000,0.0001",
    ];
    let (code, stdout, stderr) = output(&mut sweep(&out, &args, &["--epochs", "1"]));
    assert_eq!(code, 1, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stderr.contains("2 points: 1 done, 1 failed"), "{stderr}");
    assert!(stderr.contains("max_loss=0.0001"), "{stderr}");
    assert!(stderr.contains("training diverged"), "{stderr}");
    assert!(stdout.contains("failed: training diverged"), "{stdout}");

    let rows = report_json(&out);
    let failed = rows.iter().find(|r| r["status"] == "failed").unwrap();
    assert_eq!(failed["run"], "max_loss=0.0001");
    assert_eq!(failed["training.max_loss"], 0.0001);
    assert!(
        failed["error"].as_str().unwrap().contains("max_loss"),
        "{failed}"
    );
    let done = rows.iter().find(|r| r["status"] == "done").unwrap();
    assert_eq!(done["run"], "max_loss=1000");
    // Tried once more (--retries 1), then reported.
    let ev = events(&out);
    let e = &ev["max_loss=0.0001"];
    assert_eq!(e.first().map(String::as_str), Some("fresh"), "{e:?}");
    assert!(e.iter().any(|e| e.starts_with("retry")), "{e:?}");
    assert_eq!(e.last().map(String::as_str), Some("gave-up"), "{e:?}");
}

#[test]
fn a_typo_in_a_key_is_refused_before_anything_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("sweep");
    let (code, _, stderr) = output(&mut sweep(
        &out,
        &["training.optimiser.lr=0.1,0.01"],
        &["--epochs", "1"],
    ));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("optimiser"), "{stderr}");
    assert!(stderr.contains("Nothing was run"), "{stderr}");
    assert!(!out.exists(), "the sweep directory was created");
    // A bad flag for cnn train is refused too.
    let (code, _, stderr) = output(&mut sweep(&out, GRID, &["--epoch", "1"]));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--epoch"), "{stderr}");
    assert!(!out.exists());
}

#[test]
fn another_grid_in_the_same_directory_is_refused_and_random_draws_are_reproducible() {
    let tmp = tempfile::tempdir().unwrap();
    let names = |out: &Path, args: &[&str]| {
        let (code, stdout, stderr) = output(&mut sweep(out, args, &[]));
        assert_eq!(code, 0, "{stderr}");
        stdout
            .lines()
            .map(|l| l.split('\t').nth(1).unwrap().to_string())
            .collect::<Vec<_>>()
    };
    let grid = [
        "--dry-run",
        "--random",
        "3",
        "--seed",
        "7",
        "training.optimizer.lr=0.1,0.01,0.001",
        "training.batch_size=16,32,64",
    ];
    let a = names(&tmp.path().join("a"), &grid);
    let b = names(&tmp.path().join("b"), &grid);
    assert_eq!(a.len(), 3);
    assert_eq!(a, b, "same seed, same points");
    let mut other = grid;
    other[4] = "8";
    assert_ne!(names(&tmp.path().join("c"), &other), a);
    // A dry run wrote nothing; planned for real, the same grid again is
    // fine, another grid (even in a dry run) refused.
    assert!(!tmp.path().join("a").exists());
    let (code, _, stderr) = run(cnn(tmp.path())
        .args(["sweep", "plan", "--base"])
        .arg(config_path("mlp.json"))
        .arg("--out")
        .arg(tmp.path().join("a"))
        .args(&grid[1..])
        .args(["--", "--data-dir"])
        .arg(mnist_small())
        .args([
            "--limit-train",
            "300",
            "--limit-test",
            "200",
            "--set",
            "data.val_size=200",
        ]));
    assert_eq!(code, 0, "{stderr}");
    names(&tmp.path().join("a"), &grid);
    let (code, _, stderr) = output(&mut sweep(&tmp.path().join("a"), &other, &[]));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("holds a different sweep"), "{stderr}");
    assert!(stderr.contains("\"seed\": 8"), "{stderr}");
}

/// Rewrites a run's status.json as a run killed outright leaves it:
/// "running", by process `pid` on `host`.
fn mark_running(run: &Path, host: &str, pid: u32) {
    let path = run.join("status.json");
    let mut status = read_json(&path);
    status["status"] = "running".into();
    status["host"] = host.into();
    status["pid"] = pid.into();
    std::fs::write(&path, serde_json::to_string_pretty(&status).unwrap()).unwrap();
}

/// No process has this pid (pids stay below 2^22 on Linux).
const DEAD_PID: u32 = u32::MAX - 1;

#[test]
fn a_killed_point_resumes_with_every_train_flag_that_keeps_the_run_no_download_included() {
    // Issue #18: the bash sweep kept only --device --data-dir --epochs
    // --checkpoint-every --quiet on resume and silently dropped --no-download.
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("sweep");
    let args = ["--threads", "1", "training.optimizer.lr=0.001"];
    let train = ["--epochs", "1", "--no-download", "--quiet"];
    let (code, _, stderr) = output(&mut sweep(&out, &args, &train));
    assert_eq!(code, 0, "{stderr}");
    let run = &run_dirs(&out)[0];
    mark_running(run, &cnn::status::hostname(), DEAD_PID);
    let (code, _, stderr) = output(&mut sweep(&out, &args, &train));
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("resuming (process"), "{stderr}");
    assert_eq!(state(run), "done");
    let log = std::fs::read_to_string(out.join("logs/lr=0.001.log")).unwrap();
    let resumed = log
        .lines()
        .find(|l| l.starts_with("==> ") && l.contains(" train --resume "))
        .unwrap_or_else(|| panic!("no resume in the log:\n{log}"));
    for flag in ["--data-dir", "--no-download", "--epochs 1", "--quiet"] {
        assert!(resumed.contains(flag), "{flag} not in {resumed}");
    }
    for refused in ["--limit-train", "--set", "--config", "--out"] {
        assert!(!resumed.contains(refused), "{refused} in {resumed}");
    }
    // The same line is in commands.tsv, for people.
    let tsv = std::fs::read_to_string(out.join("commands.tsv")).unwrap();
    let resume_column = tsv.lines().nth(1).unwrap().split('\t').nth(3).unwrap();
    assert!(resume_column.contains("--no-download"), "{resume_column}");
    assert_eq!(
        events(&out)["lr=0.001"],
        ["fresh", "exit 0", "resume", "exit 0"]
    );
}

#[test]
fn report_and_sweep_agree_that_a_run_of_another_host_without_its_lock_holder_was_killed() {
    // Issue #18: only the bash sweep tested the point's lock, so `cnn report`
    // showed such a run as running while the sweep resumed it as killed.
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("sweep");
    // Planned (manifest.json written), nothing run.
    let (code, _, stderr) = run(cnn(tmp.path())
        .args(["sweep", "plan", "--base"])
        .arg(config_path("mlp.json"))
        .arg("--out")
        .arg(&out)
        .arg(GRID[0]));
    assert_eq!(code, 0, "{stderr}");
    let point = &run_dirs(&out)[0];
    let name = point.file_name().unwrap().to_str().unwrap().to_string();
    std::fs::create_dir_all(point).unwrap();
    std::fs::write(
        point.join("status.json"),
        r#"{"status": "done", "message": null, "exit_code": 0, "pid": 1, "host": "h",
            "started_at": 1.0, "updated_at": 2.0}"#,
    )
    .unwrap();
    mark_running(point, "another-host", 1);
    let both = || {
        let (code, stdout, stderr) = run(cnn(&out).args(["sweep", "state"]).arg(&out));
        assert_eq!(code, 0, "{stderr}");
        let line = stdout.lines().next().unwrap().to_string();
        let f: Vec<&str> = line.split('\t').collect();
        assert_eq!(f[..2], ["0", name.as_str()], "{line}");
        let reported = report_json(&out)
            .into_iter()
            .find(|r| r["run"] == name.as_str())
            .unwrap();
        (
            f[2].to_string(),
            reported["status"].as_str().unwrap().to_string(),
        )
    };
    assert_eq!(both(), ("killed".into(), "killed".into()));

    // While a runner holds the point's lock, the run is alive.
    let lock_file = cnn::sweep::state::lock_path(&out, 0);
    let lock = cnn::sweep::state::PointLock::acquire(&lock_file)
        .unwrap()
        .unwrap();
    assert_eq!(both(), ("running".into(), "running".into()));
    // ... and another runner leaves the point to it.
    let (code, _, stderr) = run(cnn(&out).args(["sweep", "point"]).arg(&out).arg("0"));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("skipped: another sweep process"),
        "{stderr}"
    );
    drop(lock);
    assert_eq!(both(), ("killed".into(), "killed".into()));
}

/// `pid` and all its descendants, parents first.
fn descendants(pid: i32) -> Vec<i32> {
    let parent_of = |p: i32| -> Option<i32> {
        let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
        let rest = stat.rsplit_once(')')?.1;
        rest.split_whitespace().nth(1)?.parse().ok()
    };
    let all: Vec<i32> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() {
        let p = tree[i];
        tree.extend(all.iter().filter(|&&c| parent_of(c) == Some(p)));
        i += 1;
    }
    tree
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

#[test]
fn a_train_flag_that_overrides_an_axis_of_the_sweep_is_refused_before_anything_runs() {
    // Found by the hardening probe: `--set training.batch_size=16` after --
    // trained every point of a batch-size axis at 16 while report listed
    // 32 and 64. --batch-size, the flag for the same field, likewise.
    let tmp = tempfile::tempdir().unwrap();
    for train in [
        &["--set", "training.batch_size=16"][..],
        &["--batch-size", "16"],
    ] {
        let out = tmp.path().join("sweep");
        let (code, _, stderr) = output(&mut sweep(&out, GRID, train));
        assert_eq!(code, 2, "{stderr}");
        assert!(
            stderr.contains("training.batch_size is an axis of the sweep"),
            "{stderr}"
        );
        assert!(!out.join("manifest.json").exists());
    }
}

#[test]
fn a_dry_run_checks_and_prints_every_point_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("sweep");
    let (code, stdout, stderr) = output(&mut sweep(&out, &["--dry-run", GRID[0], GRID[1]], &[]));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.lines().count(), 4, "{stdout}");
    assert!(
        stdout.lines().all(|l| l.contains(" train --config ")),
        "{stdout}"
    );
    assert!(!out.exists(), "--dry-run wrote {}", out.display());
    // A point that is not a valid config fails the dry run too.
    let (code, _, stderr) = output(&mut sweep(
        &out,
        &["--dry-run", "training.batch_size=0,8"],
        &[],
    ));
    assert_eq!(code, 2, "{stderr}");
    assert!(!out.exists());
}
