//! `cnn sweep plan|point|state|summary`: the sweep's IO over the model in
//! [`crate::sweep`]. scripts/sweep.sh calls these and hands the points to
//! GNU parallel or a Slurm job array; every engine runs `cnn sweep point`.

use crate::cli::{
    ReportArgs, SweepArgs, SweepCommand, SweepPlanArgs, SweepPointArgs, SweepStateArgs,
    SweepSummaryArgs, TrainFlags,
};
use crate::fsutil::write_atomic;
use crate::settings;
use crate::sweep::manifest::{FILE as MANIFEST, Manifest, Point};
use crate::sweep::plan::{Plan, parse_axes};
use crate::sweep::point::{fresh_args, resume_args, shown};
use crate::sweep::state::{Lock, PointState, PointStatus, lock_path};
use anyhow::{Context, Result};
use std::io::Write;
use std::path::Path;

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
    let mut manifest = Manifest::new(&plan, base_abs, sha256_hex(&bytes), train.clone());
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
        check_point(base, &manifest, p, &train)?;
    }

    let drawn = plan.random.map_or_else(String::new, |d| {
        format!(", drawn from {} with seed {}", d.grid_points, d.seed)
    });
    if a.dry_run {
        // Checked, shown, and nothing written.
        note(&format!(
            "{} points over {}{drawn}; --dry-run: nothing written",
            manifest.points.len(),
            plan.describe(),
        ));
        let cnn = utf8(&std::env::current_exe()?, "the cnn binary")?;
        let mut stdout = std::io::stdout().lock();
        for p in &manifest.points {
            let mut args = vec![cnn.clone()];
            args.extend(fresh_args(&manifest, &out_abs, p)?);
            writeln!(stdout, "{}\t{}\t{}", p.index, p.name, shown(&args))?;
        }
        return Ok(());
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
    note(&format!(
        "{} points over {}{drawn}; manifest: {}",
        manifest.points.len(),
        plan.describe(),
        out.join(MANIFEST).display()
    ));
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

/// The arguments after `--`, parsed once as `cnn train` parses them, into
/// the flags every point's run gets; refuses the flags the sweep sets
/// itself and anything `cnn train` would refuse.
fn check_train_args(extra: &[String]) -> Result<TrainFlags> {
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
    }
    let (flags, own) = crate::cli::parse_train_flags(extra).map_err(|e| {
        crate::input_error!(
            "the arguments after -- are not valid for cnn train:\n  {}\nNothing was run.",
            e.render().to_string().trim_end().replace('\n', "\n  ")
        )
    })?;
    if !own.is_empty() {
        crate::bail_input!(
            "{} after --: the sweep sets --config, --out, --resume and --force of each run itself",
            extra.join(" ")
        );
    }
    Ok(flags)
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

/// A point must be a config `cnn train` accepts, resolved and checked as
/// `cnn train` would with the sweep's flags (without touching data), and
/// the flags must not override one of the sweep's own axes.
fn check_point(base: &Path, m: &Manifest, p: &Point, train: &TrainFlags) -> Result<()> {
    let mut sets = m.assignments(p)?;
    sets.extend(train.choices.sets.iter().cloned());
    let invalid = |e: anyhow::Error| {
        crate::input_error!(
            "point {} ({}) is not a valid config:\n  {}\nNothing was run.",
            p.index,
            p.name,
            format!("{e:#}").replace('\n', "\n  ")
        )
    };
    let resolved = settings::new_run(base, &sets, train).map_err(invalid)?;
    // What the point's own value would give, against what the run gets.
    let wanted = settings::load(base, &m.assignments(p)?).map_err(invalid)?;
    let (got, wanted) = (resolved.config.to_value(), wanted.to_value());
    for axis in &m.axes {
        let at = |v: &serde_json::Value| crate::config::value_at(v, &axis.key);
        if at(&got) != at(&wanted) {
            crate::bail_input!(
                "{} is an axis of the sweep, but the arguments after -- ({}) set it too, so every point \
                 would train with the same value; remove it from the arguments after --, or from the axes",
                axis.key,
                shown(&train.to_args())
            );
        }
    }
    Ok(())
}

/// `index name fresh resume`, tab-separated: every point's two commands,
/// quoted for a shell, to run a point by hand.
fn commands_tsv(m: &Manifest, sweep_dir: &Path) -> Result<String> {
    let kept = m.train.resume_args();
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

/// `cnn sweep point`: the runner in [`crate::sweep::runner`].
fn point(a: &SweepPointArgs, threads: Option<usize>) -> Result<()> {
    crate::sweep::runner::run(&a.dir, a.index, a.retries, threads, a.ranks)
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
        force: false,
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

    fn resume_flags(extra: &[String]) -> Result<Vec<String>> {
        Ok(check_train_args(extra)?.resume_args())
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
        let train = crate::cli::train_command();
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
                let value = match flag.as_str() {
                    "--device" => "cpu",
                    "--distributed" => "mpi",
                    _ => "7",
                };
                extra.push(value.to_string());
            }
            assert_eq!(resume_flags(&extra).unwrap(), extra, "{flag}");
            if extra.len() == 2 {
                let joined = [format!("{}={}", extra[0], extra[1])];
                assert_eq!(resume_flags(&joined).unwrap(), extra, "{flag}=");
            }
        }
    }

    #[test]
    fn the_flags_stored_as_values_give_back_the_same_flags() {
        let extra = strings(&[
            "--set",
            "a=1",
            "--set",
            "b=[1,2]",
            "--epochs",
            "2",
            "--lr",
            "0.05",
            "--limit-train",
            "300",
            "--limit-test",
            "50",
            "--seed",
            "4",
            "--batch-size",
            "16",
            "--dataset",
            "fashion-mnist",
            "--init-from",
            "w.safetensors",
            "--data-dir",
            "d",
            "--no-download",
            "--device",
            "cpu",
            "--checkpoint-every",
            "9",
            "--no-memory-check",
            "--fresh-optimizer",
            "--quiet",
        ]);
        let flags = check_train_args(&extra).unwrap();
        let again = check_train_args(&flags.to_args()).unwrap();
        assert_eq!(again, flags);
        let json = serde_json::to_string(&flags).unwrap();
        assert_eq!(serde_json::from_str::<TrainFlags>(&json).unwrap(), flags);
        // Defaults are left out.
        assert_eq!(TrainFlags::default().to_args(), Vec::<String>::new());
    }

    #[test]
    fn train_arguments_the_sweep_sets_itself_are_refused() {
        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let ok = check_train_args(&args(&["--epochs", "2", "--set", "a=1", "-q"])).unwrap();
        assert_eq!(ok.choices.sets, ["a=1"]);
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
