//! What a run tells the person watching it: an indicatif bar per epoch on a
//! terminal, one plain line per epoch when stderr is piped, nothing with
//! `--quiet`. Everything goes to stderr; stdout is left for results.

use crate::history::EpochRecord;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Bar,
    Lines,
    Quiet,
}

impl Mode {
    /// Bars on a terminal, lines otherwise, nothing when quiet.
    pub fn detect(quiet: bool) -> Mode {
        if quiet {
            Mode::Quiet
        } else if std::io::stderr().is_terminal() {
            Mode::Bar
        } else {
            Mode::Lines
        }
    }
}

pub struct Progress {
    mode: Mode,
    bar: Option<ProgressBar>,
}

fn pct(x: f64) -> String {
    format!("{:.2}%", 100.0 * x)
}

impl Progress {
    pub fn new(mode: Mode) -> Self {
        Progress { mode, bar: None }
    }

    /// A line for the person watching (not shown when quiet).
    pub fn note(&self, msg: &str) {
        match (&self.bar, self.mode) {
            (_, Mode::Quiet) => {}
            (Some(bar), _) => bar.println(msg),
            (None, _) => eprintln!("{msg}"),
        }
    }

    fn new_bar(&mut self, len: usize, template: &str) {
        if self.mode != Mode::Bar {
            return;
        }
        if let Some(old) = self.bar.take() {
            old.finish_and_clear();
        }
        let bar = ProgressBar::with_draw_target(Some(len as u64), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(template)
                .expect("valid template")
                .progress_chars("=> "),
        );
        self.bar = Some(bar);
    }

    /// A bar for an epoch of `images`, of which `done` were trained before
    /// (a resumed epoch).
    pub fn start_epoch(&mut self, epoch: usize, epochs: usize, images: usize, done: usize) {
        self.new_bar(images, "{prefix} [{bar:30}] {pos}/{len} {msg} ETA {eta}");
        if let Some(bar) = &self.bar {
            bar.set_prefix(format!("epoch {epoch}/{epochs}"));
            bar.set_position(done as u64);
            bar.reset_eta();
        }
    }

    pub fn step(&self, seen: usize, loss: f64, acc: f64, images_per_second: f64) {
        if let Some(bar) = &self.bar {
            bar.set_position(seen as u64);
            bar.set_message(format!(
                "loss {loss:.4} acc {} {images_per_second:.0} img/s",
                pct(acc)
            ));
        }
    }

    pub fn start_eval(&mut self, what: &str, images: usize) {
        self.new_bar(images, "{prefix} [{bar:30}] {pos}/{len}");
        if let Some(bar) = &self.bar {
            bar.set_prefix(what.to_string());
        }
    }

    pub fn eval_step(&self, done: usize) {
        if let Some(bar) = &self.bar {
            bar.set_position(done as u64);
        }
    }

    pub fn finish_epoch(&mut self, r: &EpochRecord, epochs: usize) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        if self.mode == Mode::Quiet {
            return;
        }
        let val = match (r.val_loss, r.val_acc) {
            (Some(l), Some(a)) => format!(" | val loss {l:.4} acc {}", pct(a)),
            _ => String::new(),
        };
        let test = match (r.test_loss, r.test_acc) {
            (Some(l), Some(a)) => format!(" | test loss {l:.4} acc {}", pct(a)),
            _ => String::new(),
        };
        eprintln!(
            "epoch {}/{epochs}: train loss {:.4} acc {}{val}{test} | lr {:.3e} | {:.1}s, {:.0} img/s",
            r.epoch,
            r.train_loss,
            pct(r.train_acc),
            r.lr,
            r.epoch_seconds,
            r.images_per_second
        );
    }

    pub fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}
