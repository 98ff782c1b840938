//! `cnn plot`: loss, accuracy and learning rate per epoch of one or more
//! run directories, as PNG or SVG.

use crate::cli::PlotArgs;
use crate::history;
use crate::plot::{self, chart};
use anyhow::Result;
use std::path::Path;

/// The histories of `dirs`, named after their directories (the full path
/// when two share a name).
pub fn load_runs(dirs: &[std::path::PathBuf]) -> Result<Vec<chart::RunHistory>> {
    let short = |d: &Path| {
        d.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| d.display().to_string())
    };
    let mut runs = Vec::with_capacity(dirs.len());
    for dir in dirs {
        let records = history::read(dir)?;
        if records.is_empty() {
            crate::bail_input!(
                "{} has no finished epoch yet (its history.json is empty); plot it after the first epoch",
                dir.display()
            );
        }
        let clash = dirs.iter().filter(|d| short(d) == short(dir)).count() > 1;
        let name = if clash {
            dir.display().to_string()
        } else {
            short(dir)
        };
        runs.push(chart::RunHistory { name, records });
    }
    Ok(runs)
}

pub fn run(args: &PlotArgs) -> Result<()> {
    plot::check(&args.output, args.force, "-o")?;
    let runs = load_runs(&args.runs)?;
    let title = args.title.clone().unwrap_or_else(|| {
        let names: Vec<&str> = runs.iter().map(|r| r.name.as_str()).collect();
        format!("Training history: {}", names.join(", "))
    });
    plot::save(
        &chart::HistoryChart { title, runs },
        &args.output,
        args.force,
        "-o",
    )?;
    eprintln!("wrote {}", args.output.display());
    Ok(())
}
