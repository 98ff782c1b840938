//! What a run directory says about its run, read in one place so that the
//! sweep and `cnn report` always agree: [`observe`].
//!
//! A run killed outright leaves `"running"` in its status.json. On the host
//! that ran it, [`status::read`] sees that the process is gone. On another
//! host only the sweep can tell: its point runner holds a lock on
//! `SWEEP_DIR/locks/INDEX.lock` for as long as the run goes on (its `cnn
//! train` inherits the lock), so a run whose lock nobody holds was killed.

use crate::run_dir;
use crate::status::{self, RunStatus, State};
use anyhow::{Context, Result};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How to tell whether a "running" run on another host is still alive.
#[derive(Debug, Clone, Copy)]
pub enum Lock<'a> {
    /// A run outside a sweep: it cannot be told, so it counts as running.
    None,
    /// A sweep point: alive while some process holds this lock file.
    File(&'a Path),
    /// A sweep point whose lock this process holds: nobody else runs it.
    Held,
}

/// What a run directory holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Observed {
    /// No run directory, or an empty one.
    Absent,
    /// A run directory without status.json: cnn stopped before it wrote
    /// one, or an older cnn made it.
    NoStatus,
    /// Its status, with "running" turned into "killed" when the process or
    /// the point's lock holder is gone.
    Status(RunStatus),
    /// status.json exists but cannot be read; why.
    Unreadable(String),
}

/// The state of the run in `run_dir`: the one reading of a run's state that
/// the sweep and `cnn report` share.
pub fn observe(run_dir: &Path, lock: Lock) -> Observed {
    let Ok(entries) = std::fs::read_dir(run_dir) else {
        return Observed::Absent;
    };
    let path = run_dir.join(status::FILE);
    if !path.exists() {
        // The lock file of a run that stopped before it wrote anything
        // does not make the directory another run's.
        let mut files = entries.flatten().filter(|e| e.file_name() != run_dir::LOCK);
        return if files.next().is_none() {
            Observed::Absent
        } else {
            Observed::NoStatus
        };
    }
    let Some(mut s) = status::read(run_dir) else {
        let why = match std::fs::read_to_string(&path) {
            Err(e) => e.to_string(),
            Ok(text) => serde_json::from_str::<RunStatus>(&text)
                .err()
                .map_or_else(|| "cannot be read".to_string(), |e| e.to_string()),
        };
        return Observed::Unreadable(format!("{}: {why}", path.display()));
    };
    if s.status == State::Running && s.host != status::hostname() {
        let holder_gone = match lock {
            Lock::None => false,
            Lock::Held => true,
            Lock::File(lock) => lock_free(lock),
        };
        if holder_gone {
            s.status = State::Killed;
            s.message = Some(format!(
                "was running on {}, which no longer holds the point's lock",
                s.host
            ));
        }
    }
    Observed::Status(s)
}

/// The lock file of point `index`.
pub fn lock_path(sweep_dir: &Path, index: usize) -> PathBuf {
    sweep_dir.join("locks").join(format!("{index}.lock"))
}

/// Whether no process holds the lock file (a missing file is free). The
/// probe takes a shared lock for an instant; a runner taking the lock then
/// tries again (see [`PointLock::acquire`]).
fn lock_free(path: &Path) -> bool {
    match File::open(path) {
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
        // SAFETY: flock on a descriptor we own; the lock goes with the file.
        Ok(f) => unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) == 0 },
    }
}

/// The lock a point runner holds on its point; released when dropped (or
/// when the last process that inherited it exits).
#[derive(Debug)]
pub struct PointLock {
    file: File,
}

impl PointLock {
    /// Takes the lock, or `None` when another process holds it. A probe
    /// ([`observe`] in another sweep or a report) holds it for an instant,
    /// so a busy lock is tried again for about a second first.
    pub fn acquire(path: &Path) -> Result<Option<PointLock>> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open the point's lock {}", path.display()))?;
        for attempt in 0..20 {
            // SAFETY: flock on a descriptor we own.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return Ok(Some(PointLock { file }));
            }
            if attempt < 19 {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(None)
    }

    /// Lets the processes this one starts inherit the lock, so that it stays
    /// held while a `cnn train` outlives its runner.
    pub fn inherit(&self) -> Result<()> {
        let fd = self.file.as_raw_fd();
        // SAFETY: fcntl on a descriptor we own.
        let ok = unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            flags >= 0 && libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) == 0
        };
        if !ok {
            anyhow::bail!(
                "cannot pass the point's lock on: {}",
                std::io::Error::last_os_error()
            );
        }
        Ok(())
    }
}

/// A point's state as the sweep acts on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PointState {
    /// Never started (or stopped before it recorded anything).
    New,
    Done,
    Running,
    Killed,
    Interrupted,
    Failed,
    Unreadable,
}

impl PointState {
    /// Every state, in the order the sweep counts them.
    pub const ALL: [PointState; 7] = [
        PointState::Done,
        PointState::Running,
        PointState::Failed,
        PointState::Killed,
        PointState::Interrupted,
        PointState::Unreadable,
        PointState::New,
    ];

    pub fn name(self) -> &'static str {
        match self {
            PointState::New => "new",
            PointState::Done => "done",
            PointState::Running => "running",
            PointState::Killed => "killed",
            PointState::Interrupted => "interrupted",
            PointState::Failed => "failed",
            PointState::Unreadable => "unreadable",
        }
    }
}

/// A point's state, the first line of its message, and how its run ended.
#[derive(Debug, Clone, PartialEq)]
pub struct PointStatus {
    pub state: PointState,
    pub message: String,
    pub exit_code: Option<i32>,
    /// A run directory with files but no status.json: a fresh start must
    /// replace them (`--force`).
    pub leftovers: bool,
}

impl PointStatus {
    pub fn read(run_dir: &Path, lock: Lock) -> PointStatus {
        PointStatus::from(observe(run_dir, lock))
    }
}

impl From<Observed> for PointStatus {
    fn from(o: Observed) -> PointStatus {
        let status = |state, message: String, exit_code| PointStatus {
            state,
            message,
            exit_code,
            leftovers: false,
        };
        match o {
            Observed::Absent => status(PointState::New, String::new(), None),
            Observed::NoStatus => PointStatus {
                leftovers: true,
                ..status(
                    PointState::New,
                    "run directory without status.json".into(),
                    None,
                )
            },
            Observed::Unreadable(why) => status(PointState::Unreadable, why, None),
            Observed::Status(s) => {
                let state = match s.status {
                    State::Running => PointState::Running,
                    State::Done => PointState::Done,
                    State::Failed => PointState::Failed,
                    State::Interrupted => PointState::Interrupted,
                    State::Killed => PointState::Killed,
                };
                let message = if state == PointState::Running {
                    format!("running as process {} on {}", s.pid, s.host)
                } else {
                    let m = s.message.as_deref().unwrap_or("");
                    m.lines().next().unwrap_or("").to_string()
                };
                status(state, message, s.exit_code)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_status(dir: &Path, state: State, host: &str, pid: u32) {
        std::fs::create_dir_all(dir).unwrap();
        let s = RunStatus {
            status: state,
            message: Some("first line\nsecond".into()),
            exit_code: None,
            pid,
            host: host.into(),
            started_at: 1.0,
            updated_at: 2.0,
            run_id: None,
        };
        std::fs::write(
            dir.join(status::FILE),
            serde_json::to_string_pretty(&s).unwrap(),
        )
        .unwrap();
    }

    fn state(run: &Path, lock: Lock) -> (PointState, String) {
        let s = PointStatus::read(run, lock);
        (s.state, s.message)
    }

    #[test]
    fn a_missing_or_empty_run_directory_is_new_and_one_without_status_has_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        assert_eq!(observe(&run, Lock::None), Observed::Absent);
        std::fs::create_dir(&run).unwrap();
        std::fs::write(run.join(run_dir::LOCK), "process 1 on h").unwrap();
        assert_eq!(observe(&run, Lock::None), Observed::Absent);
        std::fs::write(run.join("config.json"), "{}").unwrap();
        let s = PointStatus::read(&run, Lock::None);
        assert_eq!((s.state, s.leftovers), (PointState::New, true));
        std::fs::write(run.join(status::FILE), "{\"status\": \"sleeping\"}").unwrap();
        let (st, why) = state(&run, Lock::None);
        assert_eq!(st, PointState::Unreadable);
        assert!(why.contains("status.json: unknown variant"), "{why}");
    }

    #[test]
    fn a_run_of_another_host_is_killed_once_nobody_holds_the_points_lock() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        write_status(&run, State::Running, "elsewhere", 1);
        let lock = lock_path(dir.path(), 0);
        // Outside a sweep nothing tells: still running.
        assert_eq!(state(&run, Lock::None).0, PointState::Running);
        // No runner ever held the lock, or none holds it now: killed.
        let killed = (
            PointState::Killed,
            "was running on elsewhere, which no longer holds the point's lock".to_string(),
        );
        assert_eq!(state(&run, Lock::File(&lock)), killed);
        let held = PointLock::acquire(&lock).unwrap().unwrap();
        // Held by a runner (here: this process): running.
        assert_eq!(
            state(&run, Lock::File(&lock)),
            (
                PointState::Running,
                "running as process 1 on elsewhere".into()
            )
        );
        assert_eq!(state(&run, Lock::Held), killed);
        drop(held);
        assert_eq!(state(&run, Lock::File(&lock)), killed);
    }

    #[test]
    fn a_run_of_this_host_is_killed_when_its_process_is_gone_whatever_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        let lock = lock_path(dir.path(), 3);
        let _held = PointLock::acquire(&lock).unwrap().unwrap();
        write_status(&run, State::Running, &status::hostname(), u32::MAX - 1);
        assert_eq!(state(&run, Lock::File(&lock)).0, PointState::Killed);
        write_status(
            &run,
            State::Running,
            &status::hostname(),
            std::process::id(),
        );
        assert_eq!(state(&run, Lock::None).0, PointState::Running);
        write_status(&run, State::Failed, "elsewhere", 1);
        assert_eq!(
            state(&run, Lock::File(&lock)),
            (PointState::Failed, "first line".into())
        );
    }

    #[test]
    fn a_held_lock_is_not_taken_twice() {
        let dir = tempfile::tempdir().unwrap();
        let lock = lock_path(dir.path(), 0);
        let held = PointLock::acquire(&lock).unwrap();
        assert!(held.is_some());
        assert!(PointLock::acquire(&lock).unwrap().is_none());
        drop(held);
        assert!(PointLock::acquire(&lock).unwrap().is_some());
    }
}
