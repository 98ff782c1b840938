//! Where the time goes: with `CNN_PROFILE=1`, the training loop and the CPU
//! kernels add up the wall time of each phase and op, and `cnn train` prints
//! the table at the end. Off, a scope costs one atomic load.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

static ENABLED: AtomicBool = AtomicBool::new(false);
static TOTALS: Mutex<Option<HashMap<String, (Duration, u64)>>> = Mutex::new(None);

/// Turns profiling on when `CNN_PROFILE` is set to anything but `0` or empty.
pub fn enable_from_env() -> bool {
    let on = std::env::var("CNN_PROFILE").is_ok_and(|v| !v.is_empty() && v != "0");
    ENABLED.store(on, Ordering::Relaxed);
    on
}

pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Adds the time until the guard drops to `name()` (only called when on).
pub fn scope(name: impl FnOnce() -> String) -> Option<Scope> {
    enabled().then(|| Scope {
        name: name(),
        start: Instant::now(),
    })
}

pub struct Scope {
    name: String,
    start: Instant,
}

impl Drop for Scope {
    fn drop(&mut self) {
        let elapsed = self.start.elapsed();
        let mut totals = TOTALS.lock().unwrap_or_else(|e| e.into_inner());
        let entry = totals
            .get_or_insert_with(HashMap::new)
            .entry(std::mem::take(&mut self.name))
            .or_default();
        entry.0 += elapsed;
        entry.1 += 1;
    }
}

/// The totals as a table, largest first; `None` when nothing was recorded.
pub fn report() -> Option<String> {
    let totals = TOTALS.lock().unwrap_or_else(|e| e.into_inner());
    let totals = totals.as_ref().filter(|t| !t.is_empty())?;
    let mut rows: Vec<_> = totals.iter().collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.1.0));
    let width = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
    let mut out = format!(
        "{:width$}  {:>10}  {:>8}  {:>10}\n",
        "phase / op", "total ms", "calls", "µs/call"
    );
    for (name, (d, n)) in rows {
        out.push_str(&format!(
            "{name:width$}  {:>10.1}  {n:>8}  {:>10.1}\n",
            d.as_secs_f64() * 1e3,
            d.as_secs_f64() * 1e6 / (*n).max(1) as f64
        ));
    }
    Some(out)
}
