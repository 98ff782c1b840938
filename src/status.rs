//! `status.json` in a run directory: whether the run is running, done,
//! failed (with the error) or was interrupted, and which process on which
//! host runs it, so that sweeps and `cnn report` can tell finished runs from
//! ones to resume or retry. A run killed outright leaves "running" behind;
//! [`read`] turns that into "killed" when the process is gone.

use crate::error::{exit, exit_code};
use crate::fsutil::write_atomic;
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Running,
    Done,
    Failed,
    Interrupted,
    /// Was running, but its process is gone (killed, or the machine died).
    Killed,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Running => "running",
            State::Done => "done",
            State::Failed => "failed",
            State::Interrupted => "interrupted",
            State::Killed => "killed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunStatus {
    pub status: State,
    /// The error of a failed run, or a note (early stopping, interruption).
    pub message: Option<String>,
    pub exit_code: Option<i32>,
    pub pid: u32,
    pub host: String,
    /// Seconds since the Unix epoch.
    pub started_at: f64,
    pub updated_at: f64,
    /// The run's id (`RunState::run_id`), which its checkpoints carry too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
}

pub const FILE: &str = crate::run_dir::STATUS;

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

pub use crate::run_dir::hostname;

/// Marks the run in `dir` as running in this process.
pub fn start(dir: &Path, run_id: &str) -> Result<RunStatus> {
    let s = RunStatus {
        run_id: (!run_id.is_empty()).then(|| run_id.to_string()),
        status: State::Running,
        message: None,
        exit_code: None,
        pid: std::process::id(),
        host: hostname(),
        started_at: now(),
        updated_at: now(),
    };
    write(dir, &s)?;
    Ok(s)
}

/// Records how the run ended. Errors writing the status are ignored: the
/// run's own result matters more.
pub fn finish(dir: &Path, started: &RunStatus, result: &Result<Option<String>>) {
    let (status, message, code) = match result {
        Ok(note) => (State::Done, note.clone(), exit::OK),
        Err(e) => {
            let code = exit_code(e);
            let state = if code == exit::INTERRUPTED {
                State::Interrupted
            } else {
                State::Failed
            };
            (state, Some(format!("{e:#}")), code)
        }
    };
    let s = RunStatus {
        status,
        message,
        exit_code: Some(code),
        updated_at: now(),
        ..started.clone()
    };
    let _ = write(dir, &s);
}

/// Records a run stopped by a second Ctrl-C or SIGTERM, before it could
/// save its current step (its last checkpoint still stands).
pub fn forced_stop(dir: &Path, started: &RunStatus) {
    let s = RunStatus {
        status: State::Interrupted,
        message: Some(
            "stopped at once by a second Ctrl-C or SIGTERM; the steps since the last checkpoint \
             were not saved (resume continues from it)"
                .into(),
        ),
        exit_code: Some(exit::INTERRUPTED),
        updated_at: now(),
        ..started.clone()
    };
    let _ = write(dir, &s);
}

fn write(dir: &Path, s: &RunStatus) -> Result<()> {
    let text = serde_json::to_string_pretty(s)?;
    write_atomic(&dir.join(FILE), text.as_bytes())
}

/// The status of the run in `dir`, if it has one; a "running" run whose
/// process no longer exists on this host reads as [`State::Killed`].
pub fn read(dir: &Path) -> Option<RunStatus> {
    let text = std::fs::read_to_string(dir.join(FILE)).ok()?;
    let mut s: RunStatus = serde_json::from_str(&text).ok()?;
    if s.status == State::Running && s.host == hostname() && !process_alive(s.pid) {
        s.status = State::Killed;
        s.message = Some(format!("process {} on {} is gone", s.pid, s.host));
    }
    Some(s)
}

fn process_alive(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"));
    // A zombie (state Z) has exited.
    stat.is_ok_and(|s| {
        s.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_running_status_of_a_dead_process_reads_as_killed() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = start(dir.path(), "").unwrap();
        assert_eq!(read(dir.path()).unwrap().status, State::Running);
        s.pid = u32::MAX - 1;
        write(dir.path(), &s).unwrap();
        assert_eq!(read(dir.path()).unwrap().status, State::Killed);
        finish(dir.path(), &s, &Err(crate::input_error!("bad config")));
        let r = read(dir.path()).unwrap();
        assert_eq!((r.status, r.exit_code), (State::Failed, Some(2)));
        assert_eq!(r.message.as_deref(), Some("bad config"));
    }
}
