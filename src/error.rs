//! Error kinds that decide the process exit code.
//!
//! Library code returns `anyhow::Result` with context at each step; the errors
//! that are the *user's* to fix (a bad config, a missing file, a wrong flag) are
//! raised as [`InputError`] somewhere in the chain, which `main` maps to exit
//! code 2. Everything else is exit code 1. An interrupted run is [`Interrupted`]
//! (exit 130).

use std::fmt;

/// Exit codes, as documented in the README.
pub mod exit {
    pub const OK: i32 = 0;
    pub const FAILURE: i32 = 1;
    pub const USAGE: i32 = 2;
    pub const INTERRUPTED: i32 = 130;
}

/// Something the user can fix: a bad config, flag, file or dataset.
/// The message names the file, field or layer and says how to fix it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InputError(pub String);

/// Training was stopped by Ctrl-C or SIGTERM after saving its state.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Interrupted(pub String);

/// Shorthand: `return Err(input_error!("layer {i}: ..."))`.
#[macro_export]
macro_rules! input_error {
    ($($arg:tt)*) => {
        ::anyhow::Error::new($crate::error::InputError(format!($($arg)*)))
    };
}

/// Shorthand for an early return with an [`InputError`].
#[macro_export]
macro_rules! bail_input {
    ($($arg:tt)*) => {
        return Err($crate::input_error!($($arg)*))
    };
}

/// The exit code for an error: 2 when any cause is an [`InputError`],
/// 130 when interrupted, otherwise 1.
pub fn exit_code(err: &anyhow::Error) -> i32 {
    for cause in err.chain() {
        if cause.is::<InputError>() {
            return exit::USAGE;
        }
        if cause.is::<Interrupted>() {
            return exit::INTERRUPTED;
        }
    }
    exit::FAILURE
}

/// Extension to turn any error into an input error with a message in front,
/// e.g. `fs::read(path).input_context(|| format!("cannot read {path}"))`.
pub trait InputContext<T> {
    fn input_context<F, S>(self, f: F) -> anyhow::Result<T>
    where
        F: FnOnce() -> S,
        S: fmt::Display;
}

impl<T, E: fmt::Display> InputContext<T> for Result<T, E> {
    fn input_context<F, S>(self, f: F) -> anyhow::Result<T>
    where
        F: FnOnce() -> S,
        S: fmt::Display,
    {
        self.map_err(|e| anyhow::Error::new(InputError(format!("{}: {e}", f()))))
    }
}
