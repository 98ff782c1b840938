//! Hyperparameter sweeps: the model behind `scripts/sweep.sh`, which is only
//! the glue to GNU parallel, ssh and Slurm.
//!
//! [`plan`] turns `KEY=V1,V2,...` axes into points (the full grid or a
//! seeded sample) with run names; [`manifest`] is `SWEEP_DIR/manifest.json`,
//! written before anything runs and read by the point runner and by `cnn
//! report`; [`state`] reads a run's state the one way both use (a run whose
//! process or lock holder is gone is killed); [`point`] builds a point's
//! `cnn train` command lines and decides what to do with it next, and
//! [`runner`] carries that out for one point (`cnn sweep point`). The flags
//! every run gets are stored as values (`cli::TrainFlags`), so a resumed
//! point keeps exactly those outside a new run's groups. The other `cnn
//! sweep` subcommands (`commands::sweep`) check and write a plan and report
//! its state.
//!
//! A sweep directory holds `manifest.json`, `commands.tsv` (every point's
//! fresh and resume command, for people), `runs/NAME/` (one run directory
//! per point), `logs/NAME.log` (each run's output), `locks/INDEX.lock` and
//! `sweep.log` (every start, resume, retry and skip).

pub(crate) mod manifest;
pub(crate) mod plan;
pub(crate) mod point;
pub(crate) mod runner;
pub mod state;

pub(crate) use manifest::Manifest;
