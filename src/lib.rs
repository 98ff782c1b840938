//! cnn: train and evaluate convolutional neural networks described in JSON,
//! on candle.
//!
//! The pipeline, one module each: [`config`] (JSON, defaults, `--set`) →
//! [`arch`] (shape inference and validation) → [`model`] (candle modules,
//! [`ops`]) ← [`data`] (IDX files, split, batches) → [`train`] (loop,
//! evaluation, [`optim`]) → [`checkpoint`] and [`history`] files.
//! [`cli`] holds the clap types and [`commands`] the subcommands; [`sweep`]
//! plans and runs many trainings and [`report`] compares their runs.

pub(crate) mod arch;
pub mod checkpoint;
pub mod cli;
pub mod commands;
pub mod config;
#[cfg(test)]
mod config_fuzz;
pub mod data;
pub(crate) mod device;
pub mod distributed;
pub mod error;
pub(crate) mod export;
pub(crate) mod fsutil;
pub mod geometry;
pub(crate) mod history;
pub(crate) mod interop;
pub(crate) mod interrupt;
pub mod json;
pub mod layers;
pub(crate) mod memory;
pub(crate) mod model;
pub mod onnx;
pub mod ops;
pub(crate) mod optim;
pub(crate) mod output;
pub(crate) mod plot;
pub mod precision;
pub mod profile;
pub(crate) mod progress;
pub(crate) mod report;
pub(crate) mod rng;
pub(crate) mod run_dir;
pub(crate) mod run_state;
pub(crate) mod schedule;
pub(crate) mod settings;
pub mod status;
pub mod sweep;
pub(crate) mod tensorboard;
pub mod train;

use anyhow::Result;
use cli::{Cli, Command};

/// Runs one parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    if let Some(n) = cli.threads {
        set_threads(n)?;
    }
    match &cli.command {
        Command::Train(args) => commands::train::run(args),
        Command::Eval(args) => commands::eval::run(args),
        Command::Summary(args) => commands::summary::run(args),
        Command::Report(args) => commands::report::run(args),
        Command::Plot(args) => commands::plot::run(args),
        Command::Predict(args) => commands::predict::run(args),
        Command::Export(args) => commands::export::run(args),
        Command::Import(args) => commands::import::run(args),
        Command::Filters(args) => commands::filters::run(args),
        Command::FeatureMaps(args) => commands::feature_maps::run(args),
        Command::Samples(args) => commands::samples::run(args),
        Command::CheckDevice(args) => commands::check_device::run(args),
        Command::Sweep(args) => commands::sweep::run(args, cli.threads),
        Command::LrFind(args) => commands::lr_find::run(args),
        Command::Completions(args) => commands::docs::completions(args),
        Command::Man(args) => commands::docs::man(args),
        Command::Reference(args) => commands::docs::reference(args),
    }
}

/// Sets the number of CPU threads for candle's kernels and our own.
fn set_threads(n: usize) -> Result<()> {
    if n == 0 {
        bail_input!("--threads 0: use at least 1 thread");
    }
    // More threads than cores only adds switching; far more exhausts memory.
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    let most = (4 * cores).max(64);
    if n > most {
        bail_input!(
            "--threads {n}: at most {most} on this machine ({cores} cores); the default uses every core"
        );
    }
    // SAFETY: called before any other thread is started.
    unsafe { std::env::set_var("RAYON_NUM_THREADS", n.to_string()) };
    // Fails only if the pool was already built, which it is not at this point.
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global();
    Ok(())
}
