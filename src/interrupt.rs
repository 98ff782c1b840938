//! Ctrl-C and SIGTERM for a command that must stop cleanly (`cnn train`).
//!
//! The first signal only raises a flag: the training loop finishes its step,
//! saves and exits 130, and a download in progress gives up at once (see
//! `data::hub`). A second signal means "stop now": the hook set with
//! [`on_forced_exit`] runs (it marks the run interrupted in `status.json`)
//! and the process exits 130 at once; every file is written atomically, so
//! nothing is left half-written. Should that hook itself hang, a third
//! signal ends the process without it.

use signal_hook::consts::{SIGINT, SIGTERM};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// The exit code of an interrupted command.
const EXIT: i32 = crate::error::exit::INTERRUPTED;

/// Raised by the first signal.
static REQUESTED: OnceLock<Arc<AtomicBool>> = OnceLock::new();
/// Run before exiting on the second signal.
static ON_FORCED_EXIT: Mutex<Option<Box<dyn Fn() + Send>>> = Mutex::new(None);

/// Installs the handlers (once; later calls return the same flag) and
/// returns the flag the first signal raises.
pub fn install() -> std::io::Result<&'static AtomicBool> {
    if let Some(flag) = REQUESTED.get() {
        return Ok(flag);
    }
    let requested = Arc::new(AtomicBool::new(false));
    let forced = Arc::new(AtomicBool::new(false));
    for sig in [SIGINT, SIGTERM] {
        // Registered first, so it acts before the others: only once the
        // second signal has been taken in hand does a further one exit here.
        signal_hook::flag::register_conditional_shutdown(sig, EXIT, Arc::clone(&forced))?;
        signal_hook::flag::register(sig, Arc::clone(&requested))?;
    }
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut seen = 0;
            for _ in signals.forever() {
                seen += 1;
                if seen >= 2 {
                    forced.store(true, Ordering::SeqCst);
                    if let Ok(hook) = ON_FORCED_EXIT.lock()
                        && let Some(hook) = hook.as_ref()
                    {
                        hook();
                    }
                    std::process::exit(EXIT);
                }
            }
        })?;
    Ok(REQUESTED.get_or_init(|| requested))
}

/// Whether an interruption was asked for (always false when [`install`]
/// was not called: then Ctrl-C ends the process as usual).
pub fn requested() -> bool {
    REQUESTED.get().is_some_and(|f| f.load(Ordering::SeqCst))
}

/// Sets (or with `None` clears) what a second signal does before exiting.
pub fn on_forced_exit(hook: Option<Box<dyn Fn() + Send>>) {
    if let Ok(mut slot) = ON_FORCED_EXIT.lock() {
        *slot = hook;
    }
}
