//! One point's runner (`cnn sweep point`, which every engine runs): under
//! the point's lock, it reads the point's state, lets [`decide`] pick what
//! to do (start, skip, resume, retry, give up), runs `cnn train` with the
//! point's arguments ([`super::point`]) and its output appended to
//! `logs/NAME.log`, and writes every step to `sweep.log`, until the point
//! is done or given up.

use super::manifest::{Manifest, Point};
use super::point::{Decision, Start, Tries, decide, fresh_args, resume_args, shown};
use super::state::{Lock, PointLock, PointStatus, lock_path};
use crate::error::Interrupted;
use anyhow::{Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Brings one point to done (see [`decide`]) under its lock, logging every
/// step to sweep.log and cnn's output to logs/NAME.log.
/// `retries`: times a failed point is tried again; `threads`: the global
/// `--threads`, given to its `cnn train` (each rank's, with `ranks` > 1).
pub fn run(
    sweep: &Path,
    index: usize,
    retries: u32,
    threads: Option<usize>,
    ranks: usize,
) -> Result<()> {
    if ranks == 0 {
        crate::bail_input!("--ranks 0: a run needs at least 1 rank");
    }
    let m = Manifest::read(sweep)?;
    let p = m.point(index)?;
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
    let Some(lock) = PointLock::acquire(&lock_path(sweep, index))? else {
        say("skipped: another sweep process is running this point");
        events.log("skip-locked");
        return Ok(());
    };
    lock.inherit()?;
    let logs = sweep.join("logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("cannot create {}", logs.display()))?;
    let log = logs.join(format!("{}.log", p.name));
    let cnn = std::env::current_exe().context("cannot find the cnn binary")?;
    let launch = Launch::new(&cnn, ranks)?;

    let mut tries = Tries {
        retries_left: retries,
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
            Start::Resume => resume_args(sweep, p, &m.train.resume_args())?,
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
        let code = run_logged(&launch, &args, &log)?;
        tries.last_exit = Some(code);
        events.log(&format!("exit {code}"));
    }
}

/// How a point's `cnn train` starts: the binary itself, or a launcher
/// that starts it as the ranks of one distributed run.
struct Launch {
    program: PathBuf,
    before: Vec<String>,
}

impl Launch {
    fn new(cnn: &Path, ranks: usize) -> Result<Launch> {
        if ranks == 1 {
            return Ok(Launch {
                program: cnn.to_path_buf(),
                before: Vec::new(),
            });
        }
        let words: Vec<String> = match std::env::var("CNN_LAUNCHER") {
            Ok(l) if !l.trim().is_empty() => l.split_whitespace().map(String::from).collect(),
            _ if std::env::var_os("SLURM_JOB_ID").is_some() => {
                vec!["srun".into(), "--kill-on-bad-exit=1".into()]
            }
            _ => vec!["mpirun".into()],
        };
        let mut before: Vec<String> = words[1..].to_vec();
        before.extend(["-n".into(), ranks.to_string(), cnn.display().to_string()]);
        Ok(Launch {
            program: PathBuf::from(&words[0]),
            before,
        })
    }
}

/// Runs `cnn ARGS` (through its launcher) with its output appended to
/// `log`; its exit status (128 + N when signal N ended it, as a shell says).
fn run_logged(launch: &Launch, args: &[String], log: &Path) -> Result<i32> {
    let (cnn, args) = (
        &launch.program,
        &launch
            .before
            .iter()
            .chain(args)
            .cloned()
            .collect::<Vec<_>>(),
    );
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
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_are_utc_to_the_second() {
        let t = super::utc_now();
        assert_eq!(t.len(), "2024-05-01T12:00:00Z".len(), "{t}");
        assert!(t.ends_with('Z') && t.as_bytes()[10] == b'T', "{t}");
    }
}
