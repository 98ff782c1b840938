//! One point's commands and what to do with it next: start it, skip it,
//! resume it, retry it or give up ([`decide`]). The runner that carries this
//! out (a lock, a log, the `cnn train` process) is [`super::runner`].

use super::manifest::{Manifest, Point};
use super::state::{PointState, PointStatus};
use anyhow::Result;
use std::path::Path;

/// The `cnn` arguments that start `point` from scratch:
/// `train --config BASE --set KEY=VALUE... --out RUN_DIR FLAGS...`.
pub fn fresh_args(m: &Manifest, sweep_dir: &Path, point: &Point) -> Result<Vec<String>> {
    let mut args = vec!["train".to_string(), "--config".into(), m.base.clone()];
    for a in m.assignments(point)? {
        args.extend(["--set".to_string(), a]);
    }
    args.extend([
        "--out".to_string(),
        path_arg(&Manifest::run_dir(sweep_dir, point))?,
    ]);
    args.extend(m.train.to_args());
    Ok(args)
}

/// The `cnn` arguments that continue `point` from its last checkpoint:
/// `train --resume RUN_DIR` and `kept`, the flags a resume keeps
/// (`TrainFlags::resume_args`).
pub fn resume_args(sweep_dir: &Path, point: &Point, kept: &[String]) -> Result<Vec<String>> {
    let mut args = vec![
        "train".to_string(),
        "--resume".into(),
        path_arg(&Manifest::run_dir(sweep_dir, point))?,
    ];
    args.extend(kept.iter().cloned());
    Ok(args)
}

fn path_arg(p: &Path) -> Result<String> {
    match p.to_str() {
        Some(s) => Ok(s.to_string()),
        None => crate::bail_input!(
            "{}: the sweep needs paths that are valid UTF-8 (they are stored in manifest.json)",
            p.display()
        ),
    }
}

/// Arguments quoted for people and for a POSIX shell: `'a b'` rather than `a\ b`.
pub fn shown(args: &[String]) -> String {
    let plain = |a: &str| {
        !a.is_empty()
            && a.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_./=:,+@%-".contains(c))
    };
    args.iter()
        .map(|a| {
            if plain(a) {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// How a point's `cnn train` starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// From scratch (`--force` when the run directory holds leftovers).
    Fresh { force: bool },
    /// From its last checkpoint.
    Resume,
    /// From scratch over a run that stopped before its first checkpoint.
    Restart,
}

/// What the runner does next with its point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The point is done.
    Done,
    /// Another process runs it; the message says which.
    Skip(String),
    /// Its status.json cannot be read; the message says why.
    Unreadable(String),
    /// Interrupted while this runner ran it: it resumes in a later sweep.
    Interrupted,
    /// It failed and is not tried again; why.
    GiveUp(String),
    /// Run `cnn train` (again, when `retry`).
    Run { start: Start, retry: bool },
}

impl Decision {
    /// The sweep.log event of a run: fresh, resume, restart, retry,
    /// retry-resume or retry-restart.
    pub fn event(start: Start, retry: bool) -> &'static str {
        match (start, retry) {
            (Start::Fresh { .. }, false) => "fresh",
            (Start::Fresh { .. }, true) => "retry",
            (Start::Resume, false) => "resume",
            (Start::Resume, true) => "retry-resume",
            (Start::Restart, false) => "restart",
            (Start::Restart, true) => "retry-restart",
        }
    }
}

/// What this runner has done with its point so far.
#[derive(Debug, Clone, Copy)]
pub struct Tries {
    /// Runs of a failed point still allowed in this call (`--retries`).
    pub retries_left: u32,
    /// The exit status of the `cnn train` this runner ran last, if any.
    pub last_exit: Option<i32>,
}

/// The next step for a point in state `status`: done and running points are
/// left alone; new ones start; killed and interrupted ones resume from
/// their last checkpoint (or start again when they never saved one);
/// failed ones are tried again while `tries` allows, never after a
/// bad-input failure (exit 2) of this runner's own run; a run this runner
/// saw interrupted (exit 130, or a signal to the runner) stops the point.
pub fn decide(
    status: &PointStatus,
    has_checkpoint: bool,
    tries: &mut Tries,
    interrupted: bool,
) -> Decision {
    let message = || status.message.clone();
    match status.state {
        PointState::Done => return Decision::Done,
        PointState::Running => return Decision::Skip(message()),
        PointState::Unreadable => return Decision::Unreadable(message()),
        _ => {}
    }
    let retry = match tries.last_exit {
        Some(code) => {
            if code == crate::error::exit::INTERRUPTED || interrupted {
                return Decision::Interrupted;
            }
            let usage = crate::error::exit::USAGE;
            if code == usage
                || (status.state == PointState::Failed && status.exit_code == Some(usage))
            {
                return Decision::GiveUp(format!("failed (bad input, not retried): {}", message()));
            }
            if tries.retries_left == 0 {
                let why = if status.message.is_empty() {
                    format!("cnn exited with status {code}")
                } else {
                    message()
                };
                return Decision::GiveUp(format!("failed: {why}"));
            }
            true
        }
        None if status.state == PointState::Failed => {
            if tries.retries_left == 0 {
                return Decision::GiveUp(format!(
                    "failed earlier, not retried (--retries 0): {}",
                    message()
                ));
            }
            true
        }
        None => false,
    };
    if interrupted {
        return Decision::Interrupted;
    }
    if retry {
        tries.retries_left -= 1;
    }
    let start = match status.state {
        PointState::New => Start::Fresh {
            force: status.leftovers,
        },
        _ if has_checkpoint => Start::Resume,
        _ => Start::Restart,
    };
    Decision::Run { start, retry }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }
    #[test]
    fn shown_quotes_only_what_a_shell_would_split_or_expand() {
        assert_eq!(
            shown(&strings(&[
                "train", "--set", "a=[3,3]", "it's", "", "x=1,2"
            ])),
            r"train --set 'a=[3,3]' 'it'\''s' '' x=1,2"
        );
    }

    fn status(state: PointState, exit_code: Option<i32>) -> PointStatus {
        PointStatus {
            state,
            message: if state == PointState::Failed {
                "training diverged".into()
            } else {
                String::new()
            },
            exit_code,
            leftovers: false,
        }
    }

    fn fresh_tries(retries: u32) -> Tries {
        Tries {
            retries_left: retries,
            last_exit: None,
        }
    }

    #[test]
    fn new_killed_and_interrupted_points_start_or_resume() {
        let mut t = fresh_tries(1);
        let run = |start| Decision::Run {
            start,
            retry: false,
        };
        assert_eq!(
            decide(&status(PointState::New, None), false, &mut t, false),
            run(Start::Fresh { force: false })
        );
        let leftovers = PointStatus {
            leftovers: true,
            ..status(PointState::New, None)
        };
        assert_eq!(
            decide(&leftovers, false, &mut t, false),
            run(Start::Fresh { force: true })
        );
        for s in [PointState::Killed, PointState::Interrupted] {
            assert_eq!(
                decide(&status(s, None), true, &mut t, false),
                run(Start::Resume)
            );
            assert_eq!(
                decide(&status(s, None), false, &mut t, false),
                run(Start::Restart)
            );
        }
        assert_eq!(t.retries_left, 1, "no retry was used");
        assert_eq!(
            decide(&status(PointState::Done, Some(0)), true, &mut t, false),
            Decision::Done
        );
        assert!(matches!(
            decide(&status(PointState::Running, None), true, &mut t, false),
            Decision::Skip(_)
        ));
        // A signal before anything ran: nothing starts.
        assert_eq!(
            decide(&status(PointState::New, None), false, &mut t, true),
            Decision::Interrupted
        );
    }

    #[test]
    fn a_failed_point_is_retried_while_retries_last_but_never_after_bad_input() {
        let failed = status(PointState::Failed, Some(1));
        let mut t = fresh_tries(2);
        assert_eq!(
            decide(&failed, true, &mut t, false),
            Decision::Run {
                start: Start::Resume,
                retry: true
            }
        );
        t.last_exit = Some(1);
        assert_eq!(
            decide(&failed, false, &mut t, false),
            Decision::Run {
                start: Start::Restart,
                retry: true
            }
        );
        assert_eq!(
            decide(&failed, false, &mut t, false),
            Decision::GiveUp("failed: training diverged".into())
        );
        // Bad input fails the same way every time.
        let mut t = Tries {
            retries_left: 5,
            last_exit: Some(2),
        };
        let bad = status(PointState::Failed, Some(2));
        assert!(matches!(
            decide(&bad, false, &mut t, false),
            Decision::GiveUp(m) if m.starts_with("failed (bad input")
        ));
        // --retries 0: a point that failed in an earlier sweep is reported.
        let mut t = fresh_tries(0);
        assert!(matches!(
            decide(&failed, true, &mut t, false),
            Decision::GiveUp(m) if m.contains("not retried (--retries 0)")
        ));
        // A run that ended without a status (it never started) says its exit code.
        let mut t = Tries {
            retries_left: 0,
            last_exit: Some(1),
        };
        assert_eq!(
            decide(&status(PointState::New, None), false, &mut t, false),
            Decision::GiveUp("failed: cnn exited with status 1".into())
        );
    }

    #[test]
    fn a_run_interrupted_under_this_runner_stops_the_point() {
        let mut t = Tries {
            retries_left: 3,
            last_exit: Some(130),
        };
        let interrupted = status(PointState::Interrupted, Some(130));
        assert_eq!(
            decide(&interrupted, true, &mut t, false),
            Decision::Interrupted
        );
        t.last_exit = Some(1);
        assert_eq!(
            decide(&status(PointState::Failed, Some(1)), true, &mut t, true),
            Decision::Interrupted
        );
    }
}
