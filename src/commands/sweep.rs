//! `cnn sweep plan|point|state|summary`: the sweep's IO over the model in
//! [`crate::sweep`]. scripts/sweep.sh calls these and hands the points to
//! GNU parallel or a Slurm job array; every engine runs `cnn sweep point`.

use crate::cli::{
    Cli, ReportArgs, SweepArgs, SweepCommand, SweepPlanArgs, SweepPointArgs, SweepStateArgs,
    SweepSummaryArgs, TrainArgs,
};
use crate::error::Interrupted;
use crate::fsutil::write_atomic;
use crate::sweep::manifest::{FILE as MANIFEST, Manifest, Point};
use crate::sweep::plan::{Plan, parse_axes};
use crate::sweep::point::{Decision, Start, Tries, decide, fresh_args, resume_args, shown};
use crate::sweep::state::{Lock, PointLock, PointState, PointStatus, lock_path};
use anyhow::{Context, Result};
use clap::{ArgAction, CommandFactory, FromArgMatches};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// `threads` is the global `--threads`, which `point` passes to `cnn train`.
pub fn run(args: &SweepArgs, threads: Option<usize>) -> Result<()> {
    match &args.command {
        SweepCommand::Plan(a) => plan(a),
        SweepCommand::Point(a) => point(a, threads),
        SweepCommand::State(a) => state(a),
        SweepCommand::Summary(a) => summary(a),
    }
}

fn note(msg: &str) {
    eprintln!("sweep: {msg}");
}

// ---------------------------------------------------------------- plan

/// Checks the sweep, then writes manifest.json and commands.tsv (and the
/// directories the runs need). Nothing is written unless every point is a
/// valid config and the directory holds no other sweep.
fn plan(a: &SweepPlanArgs) -> Result<()> {
    let Some(base) = &a.base else {
        crate::bail_input!("--base CONFIG is required: the config every point starts from");
    };
    let Some(out) = &a.out else {
        crate::bail_input!("--out SWEEP_DIR is required: the directory that receives the runs");
    };
    if !base.is_file() {
        crate::bail_input!("--base {}: no such file", base.display());
    }
    let plan = Plan::new(parse_axes(&a.axes)?, a.random, a.seed)?;
    let train = check_train_args(&a.train)?;

    let base_abs = utf8(
        &base
            .canonicalize()
            .with_context(|| format!("--base {}", base.display()))?,
        "--base",
    )?;
    let bytes = std::fs::read(base).with_context(|| format!("cannot read {}", base.display()))?;
    let out_abs = std::path::absolute(out).with_context(|| format!("--out {}", out.display()))?;
    utf8(&out_abs, "--out")?;
    let mut manifest = Manifest::new(&plan, base_abs, sha256_hex(&bytes), a.train.clone());
    let commands = manifest
        .points
        .iter()
        .map(|p| {
            Ok(format!(
                "cnn {}",
                shown(&fresh_args(&manifest, &out_abs, p)?)
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    for (p, command) in manifest.points.iter_mut().zip(commands) {
        p.command = command;
    }

    check_out_dir(out, &manifest)?;
    for p in &manifest.points {
        check_point(base, &manifest, p, &train.sets)?;
    }

    for d in ["runs", "logs", "locks"] {
        std::fs::create_dir_all(out.join(d))
            .with_context(|| format!("cannot create {}", out.join(d).display()))?;
    }
    write_atomic(&out.join(MANIFEST), manifest.to_json().as_bytes())?;
    write_atomic(
        &out.join("commands.tsv"),
        commands_tsv(&manifest, &out_abs)?.as_bytes(),
    )?;

    let drawn = plan.random.map_or_else(String::new, |d| {
        format!(", drawn from {} with seed {}", d.grid_points, d.seed)
    });
    note(&format!(
        "{} points over {}{drawn}; manifest: {}",
        manifest.points.len(),
        plan.describe(),
        out.join(MANIFEST).display()
    ));
    if a.dry_run {
        let cnn = utf8(&std::env::current_exe()?, "the cnn binary")?;
        let mut stdout = std::io::stdout().lock();
        for p in &manifest.points {
            let mut args = vec![cnn.clone()];
            args.extend(fresh_args(&manifest, &out_abs, p)?);
            writeln!(stdout, "{}\t{}\t{}", p.index, p.name, shown(&args))?;
        }
    }
    Ok(())
}

fn utf8(p: &Path, what: &str) -> Result<String> {
    match p.to_str() {
        Some(s) => Ok(s.to_string()),
        None => crate::bail_input!(
            "{what} {}: the sweep needs paths that are valid UTF-8 (they are stored in manifest.json)",
            p.display()
        ),
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The arguments after `--` as `cnn train` parses them; refuses the flags
/// the sweep sets itself and anything `cnn train` would refuse.
fn check_train_args(extra: &[String]) -> Result<TrainArgs> {
    for a in extra {
        if a.chars().any(char::is_control) {
            crate::bail_input!(
                "arguments may not contain control characters (tabs, newlines): {a:?}"
            );
        }
        let flag = a.split_once('=').map_or(a.as_str(), |(f, _)| f);
        if flag == "--threads" {
            crate::bail_input!(
                "{a} after --: give sweep.sh --threads T instead (it also picks the number of jobs)"
            );
        }
        if flag == "--resume" {
            crate::bail_input!(
                "{a} after --: the sweep sets --config, --out, --resume and --force of each run itself"
            );
        }
    }
    // Placeholders no argument can equal (arguments hold no control
    // characters): a --config or --out after `--` replaces them.
    const PLACEHOLDER: &str = "\u{1}sweep";
    let argv = [
        "cnn",
        "train",
        "--config",
        PLACEHOLDER,
        "--out",
        PLACEHOLDER,
    ]
    .into_iter()
    .map(String::from)
    .chain(extra.iter().cloned());
    let matches = Cli::command()
        .mut_subcommand("train", |t| t.args_override_self(true))
        .try_get_matches_from(argv)
        .map_err(|e| {
            crate::input_error!(
                "the arguments after -- are not valid for cnn train:\n  {}\nNothing was run.",
                e.render().to_string().trim_end().replace('\n', "\n  ")
            )
        })?;
    let train = matches
        .subcommand_matches("train")
        .context("the train subcommand")?;
    let args = TrainArgs::from_arg_matches(train)?;
    let replaced = |p: &Option<PathBuf>| p.as_deref() != Some(Path::new(PLACEHOLDER));
    if replaced(&args.config) || replaced(&args.out) || args.force {
        crate::bail_input!(
            "{} after --: the sweep sets --config, --out, --resume and --force of each run itself",
            extra.join(" ")
        );
    }
    Ok(args)
}

/// The arguments of `extra` (as `cnn train` parses them) that a resumed
/// run keeps: the flags `cli::resumable_train_flags` derives from the clap
/// declaration (every train flag outside the `new_run` group: `--epochs`,
/// `--device`, `--data-dir`, `--no-download`, `--quiet`...), in the order
/// `cnn train --help` lists them. A flag added to `cnn train` follows.
fn resume_flags(extra: &[String]) -> Result<Vec<String>> {
    let resumable = crate::cli::resumable_train_flags();
    let train = train_command();
    // `--config` stands in for the base config, which is not in `extra`.
    let argv = ["train", "--config", "base.json"]
        .into_iter()
        .map(String::from)
        .chain(extra.iter().cloned());
    let matches = train.clone().try_get_matches_from(argv).map_err(|e| {
        crate::input_error!(
            "the sweep's arguments for cnn train do not parse ({}); re-run the sweep command",
            e.kind()
        )
    })?;
    let mut kept = Vec::new();
    for arg in train.get_arguments() {
        let Some(flag) = arg.get_long().map(|l| format!("--{l}")) else {
            continue;
        };
        let id = arg.get_id().as_str();
        let given = matches.value_source(id) == Some(clap::parser::ValueSource::CommandLine);
        if !given || !resumable.contains(&flag) {
            continue;
        }
        match arg.get_action() {
            ArgAction::SetTrue => kept.push(flag),
            ArgAction::Set | ArgAction::Append => {
                for v in matches.get_raw(id).into_iter().flatten() {
                    kept.push(flag.clone());
                    kept.push(v.to_string_lossy().into_owned());
                }
            }
            _ => {}
        }
    }
    Ok(kept)
}

/// `cnn train` as clap builds it for a command line (with the global flags).
fn train_command() -> clap::Command {
    let mut cli = Cli::command();
    cli.build();
    cli.find_subcommand("train")
        .expect("cnn has a train subcommand")
        .clone()
}

/// Refuses a directory that holds another sweep (or anything else).
fn check_out_dir(out: &Path, manifest: &Manifest) -> Result<()> {
    if out.exists() && !out.is_dir() {
        crate::bail_input!("--out {} exists and is not a directory", out.display());
    }
    if out.join(MANIFEST).is_file() {
        let old = Manifest::read(out)?;
        let differences = old.differences(manifest);
        if !differences.is_empty() {
            crate::bail_input!(
                "{out} holds a different sweep; refusing to mix their runs.\n\
                 Its {MANIFEST} and this command differ:\n{}\n\
                 Re-run with the arguments in {out}/{MANIFEST} to continue that sweep, or choose a new --out.",
                differences.join("\n"),
                out = out.display()
            );
        }
    } else if std::fs::read_dir(out).is_ok_and(|mut d| d.next().is_some()) {
        crate::bail_input!(
            "--out {} is not empty and has no {MANIFEST}, so it is not a sweep directory; choose a new --out",
            out.display()
        );
    }
    Ok(())
}

/// A point must be a config `cnn train` accepts, checked as `cnn summary`
/// checks it (the config and `--set` values, without touching data).
fn check_point(base: &Path, m: &Manifest, p: &Point, extra_sets: &[String]) -> Result<()> {
    let mut sets = m.assignments(p)?;
    sets.extend(extra_sets.iter().cloned());
    let checked = super::load_config(base, &sets, &[]).and_then(|config| {
        config.check_settings()?;
        let plan = crate::arch::plan(&config)?;
        super::train::check_against_plan(&config, &plan)
    });
    checked.map_err(|e| {
        crate::input_error!(
            "point {} ({}) is not a valid config:\n  {}\nNothing was run.",
            p.index,
            p.name,
            format!("{e:#}").replace('\n', "\n  ")
        )
    })
}

/// `index name fresh resume`, tab-separated: every point's two commands,
/// quoted for a shell, to run a point by hand.
fn commands_tsv(m: &Manifest, sweep_dir: &Path) -> Result<String> {
    let kept = resume_flags(&m.extra)?;
    let mut text = String::from("index\tname\tfresh\tresume\n");
    for p in &m.points {
        text.push_str(&format!(
            "{}\t{}\t{}\t{}\n",
            p.index,
            p.name,
            shown(&fresh_args(m, sweep_dir, p)?),
            shown(&resume_args(sweep_dir, p, &kept)?)
        ));
    }
    Ok(text)
}

// ---------------------------------------------------------------- point

/// Brings one point to done (see [`decide`]) under its lock, logging every
/// step to sweep.log and cnn's output to logs/NAME.log.
fn point(a: &SweepPointArgs, threads: Option<usize>) -> Result<()> {
    let sweep = &a.dir;
    let m = Manifest::read(sweep)?;
    let p = m.point(a.index)?;
    let run_dir = Manifest::run_dir(sweep, p);
    let events = Events::new(sweep, p);
    let say = |msg: &str| eprintln!("[{}] {msg}", p.name);

    // Ctrl-C and SIGTERM reach the running cnn too, which saves and exits
    // 130; this runner only remembers not to start anything else.
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))?;
    }
    // Held until this runner and the cnn it starts have exited.
    let Some(lock) = PointLock::acquire(&lock_path(sweep, a.index))? else {
        say("skipped: another sweep process is running this point");
        events.log("skip-locked");
        return Ok(());
    };
    lock.inherit()?;
    let logs = sweep.join("logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("cannot create {}", logs.display()))?;
    let log = logs.join(format!("{}.log", p.name));
    let cnn = std::env::current_exe().context("cannot find the cnn binary")?;

    let mut tries = Tries {
        retries_left: a.retries,
        last_exit: None,
    };
    loop {
        let status = PointStatus::read(&run_dir, Lock::Held);
        let has_checkpoint = run_dir.join(crate::run_dir::LAST).is_file();
        let (start, retry) = match decide(
            &status,
            has_checkpoint,
            &mut tries,
            stop.load(Ordering::SeqCst),
        ) {
            Decision::Done => {
                if tries.last_exit.is_none() {
                    events.log("skip-done");
                } else {
                    say(&format!("done: {}", best_line(&log)));
                }
                return Ok(());
            }
            Decision::Skip(why) => {
                say(&format!("skipped: {why}"));
                events.log("skip-running");
                return Ok(());
            }
            Decision::Unreadable(why) => {
                events.log("unreadable");
                anyhow::bail!(
                    "[{}] cannot tell its state: {why}; delete {} to run it again",
                    p.name,
                    run_dir.join(crate::status::FILE).display()
                );
            }
            Decision::Interrupted => {
                let what = if tries.last_exit.is_some() {
                    "interrupted; it saved its state and resumes when the sweep runs again"
                } else {
                    "interrupted before it started"
                };
                return Err(Interrupted(format!("[{}] {what}", p.name)).into());
            }
            Decision::GiveUp(why) => {
                events.log("gave-up");
                anyhow::bail!("[{}] {why} (log: {})", p.name, log.display());
            }
            Decision::Run { start, retry } => (start, retry),
        };

        let mut args = match start {
            Start::Fresh { force } => {
                let mut args = fresh_args(&m, sweep, p)?;
                if force {
                    args.push("--force".into());
                }
                args
            }
            Start::Resume => resume_args(sweep, p, &resume_flags(&m.extra)?)?,
            Start::Restart => {
                let mut args = fresh_args(&m, sweep, p)?;
                args.push("--force".into());
                args
            }
        };
        if let Some(n) = threads {
            args.splice(0..0, ["--threads".to_string(), n.to_string()]);
        }
        let why = if status.message.is_empty() {
            match tries.last_exit {
                Some(code) => format!("cnn exited with status {code}"),
                None => status.state.name().to_string(),
            }
        } else {
            status.message.clone()
        };
        let event = Decision::event(start, retry);
        say(&match (start, retry) {
            (_, true) => format!("{event} after failure: {why}"),
            (Start::Fresh { .. }, false) => "starting".to_string(),
            (Start::Resume, false) => {
                format!("resuming ({})", why.split(';').next().unwrap_or(&why))
            }
            (Start::Restart, false) => {
                format!("starting again ({why}, before its first checkpoint)")
            }
        });
        events.log(event);
        let code = run_logged(&cnn, &args, &log)?;
        tries.last_exit = Some(code);
        events.log(&format!("exit {code}"));
    }
}

/// Runs `cnn ARGS` with its output appended to `log`; its exit status
/// (128 + N when signal N ended it, as a shell says).
fn run_logged(cnn: &Path, args: &[String], log: &Path) -> Result<i32> {
    use std::os::unix::process::ExitStatusExt;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("cannot open {}", log.display()))?;
    writeln!(
        file,
        "\n==> {} {}: {} {}",
        utc_now(),
        crate::status::hostname(),
        cnn.display(),
        shown(args)
    )?;
    let status = std::process::Command::new(cnn)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .status()
        .with_context(|| format!("cannot run {}", cnn.display()))?;
    Ok(status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1))
}

/// The last "best epoch ..." line cnn printed into the log.
fn best_line(log: &Path) -> String {
    std::fs::read_to_string(log)
        .ok()
        .and_then(|t| {
            t.lines()
                .rev()
                .find(|l| l.starts_with("best epoch"))
                .map(String::from)
        })
        .unwrap_or_default()
}

/// SWEEP_DIR/sweep.log: one line per step of every runner (time, host,
/// pid, index, name, event), appended in one write each.
struct Events {
    path: PathBuf,
    who: String,
}

impl Events {
    fn new(sweep: &Path, p: &Point) -> Events {
        Events {
            path: sweep.join("sweep.log"),
            who: format!(
                "{}\t{}\t{}\t{}",
                crate::status::hostname(),
                std::process::id(),
                p.index,
                p.name
            ),
        }
    }

    /// Appends an event; a log that cannot be written does not stop the run.
    fn log(&self, event: &str) {
        let line = format!("{}\t{}\t{event}\n", utc_now(), self.who);
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .and_then(|mut f| f.write_all(line.as_bytes()));
        if let Err(e) = written {
            eprintln!("warning: cannot write {}: {e}", self.path.display());
        }
    }
}

/// Now as `2024-05-01T12:00:00Z`.
fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    utc(secs)
}

fn utc(secs: u64) -> String {
    // Days to a civil date (H. Hinnant, "chrono-Compatible Low-Level Date
    // Algorithms", days_from_civil inverted).
    let z = (secs / 86_400) as i64 + 719_468;
    let (era, doe) = (z.div_euclid(146_097), z.rem_euclid(146_097));
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let s = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        s % 3600 / 60,
        s % 60
    )
}

// ---------------------------------------------------------------- state

fn statuses(sweep: &Path, m: &Manifest, indices: &[usize]) -> Result<Vec<(Point, PointStatus)>> {
    let points: Vec<&Point> = if indices.is_empty() {
        m.points.iter().collect()
    } else {
        indices.iter().map(|&i| m.point(i)).collect::<Result<_>>()?
    };
    Ok(points
        .into_iter()
        .map(|p| {
            let lock = lock_path(sweep, p.index);
            let status = PointStatus::read(&Manifest::run_dir(sweep, p), Lock::File(&lock));
            (p.clone(), status)
        })
        .collect())
}

/// `INDEX NAME STATE MESSAGE` per point, tab-separated.
fn state(a: &SweepStateArgs) -> Result<()> {
    let m = Manifest::read(&a.dir)?;
    let mut out = std::io::stdout().lock();
    for (p, s) in statuses(&a.dir, &m, &a.indices)? {
        let message = s.message.replace('\t', " ");
        writeln!(
            out,
            "{}\t{}\t{}\t{message}",
            p.index,
            p.name,
            s.state.name()
        )?;
    }
    Ok(())
}

// ---------------------------------------------------------------- summary

/// The report's table, then the count of points by state and the points
/// that need attention; an error unless every point is done.
fn summary(a: &SweepSummaryArgs) -> Result<()> {
    let m = Manifest::read(&a.dir)?;
    let report = ReportArgs {
        dirs: vec![a.dir.clone()],
        sort: "best_val_acc".into(),
        json: false,
        csv: None,
        plot: None,
    };
    if let Err(e) = super::report::run(&report) {
        note(&format!("no report: {e:#}"));
    }
    let all = statuses(&a.dir, &m, &[])?;
    let counts: Vec<String> = PointState::ALL
        .iter()
        .filter_map(|&state| {
            let n = all.iter().filter(|(_, s)| s.state == state).count();
            let name = match state {
                PointState::New => "not started",
                s => s.name(),
            };
            (n > 0).then(|| format!("{n} {name}"))
        })
        .collect();
    note(&format!("{} points: {}", all.len(), counts.join(", ")));
    for (p, s) in &all {
        let log = a.dir.join("logs").join(format!("{}.log", p.name));
        match s.state {
            PointState::Failed | PointState::Unreadable => eprintln!(
                "  {:<7} {}: {} (log: {})",
                s.state.name(),
                p.name,
                s.message,
                log.display()
            ),
            PointState::Running => eprintln!("  running {}: {}", p.name, s.message),
            _ => {}
        }
    }
    let done = all
        .iter()
        .filter(|(_, s)| s.state == PointState::Done)
        .count();
    if done < all.len() {
        anyhow::bail!(
            "{} of {} points are not done; re-run the same command to resume the unfinished points and \
             retry the failed ones",
            all.len() - done,
            all.len()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_resumed_point_keeps_every_flag_that_does_not_change_the_run() {
        let extra = strings(&[
            "--set",
            "data.val_size=200",
            "--epochs",
            "2",
            "--limit-train=300",
            "--no-download",
            "--lr",
            "0.1",
            "--device=cpu",
            "-q",
            "--data-dir",
            "data dir",
            "--checkpoint-every",
            "5",
            "--seed",
            "3",
            "--dataset",
            "mnist",
        ]);
        assert_eq!(
            resume_flags(&extra).unwrap(),
            strings(&[
                "--checkpoint-every",
                "5",
                "--data-dir",
                "data dir",
                "--no-download",
                "--device",
                "cpu",
                "--epochs",
                "2",
                "--quiet",
            ])
        );
        assert_eq!(resume_flags(&[]).unwrap(), Vec::<String>::new());
    }

    #[test]
    fn every_flag_a_resume_accepts_is_kept_whatever_its_form() {
        // The sweep sets --threads itself; every other flag a resume takes,
        // including one added later, must survive it.
        let train = train_command();
        for flag in crate::cli::resumable_train_flags() {
            if flag == "--threads" {
                continue;
            }
            let arg = train
                .get_arguments()
                .find(|a| a.get_long().map(|l| format!("--{l}")).as_ref() == Some(&flag))
                .unwrap();
            let mut extra = vec![flag.clone()];
            if arg.get_action().takes_values() {
                extra.push(if flag == "--device" { "cpu" } else { "7" }.to_string());
            }
            assert_eq!(resume_flags(&extra).unwrap(), extra, "{flag}");
            if extra.len() == 2 {
                let joined = [format!("{}={}", extra[0], extra[1])];
                assert_eq!(resume_flags(&joined).unwrap(), extra, "{flag}=");
            }
        }
    }

    #[test]
    fn utc_times_are_civil_dates() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc(1_709_251_199), "2024-02-29T23:59:59Z");
        assert_eq!(utc(4_102_444_800), "2100-01-01T00:00:00Z");
    }

    #[test]
    fn train_arguments_the_sweep_sets_itself_are_refused() {
        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let ok = check_train_args(&args(&["--epochs", "2", "--set", "a=1", "-q"])).unwrap();
        assert_eq!(ok.sets, ["a=1"]);
        for bad in [
            &["--out", "x"][..],
            &["-ox"],
            &["-qo", "x"],
            &["--config=c.json"],
            &["-c", "c.json"],
            &["--force"],
            &["--resume", "r"],
        ] {
            let err = check_train_args(&args(bad)).unwrap_err();
            assert_eq!(crate::error::exit_code(&err), 2);
            assert!(err.to_string().contains("the sweep sets"), "{bad:?}: {err}");
        }
        let err = check_train_args(&args(&["--threads", "2"])).unwrap_err();
        assert!(err.to_string().contains("sweep.sh --threads T"), "{err}");
        let err = check_train_args(&args(&["--epoch", "2"])).unwrap_err();
        assert!(err.to_string().contains("--epoch"), "{err}");
        assert!(err.to_string().ends_with("Nothing was run."), "{err}");
        let err = check_train_args(&args(&["--set", "a=1\tb"])).unwrap_err();
        assert!(err.to_string().contains("control characters"), "{err}");
    }
}
