//! `cnn predict`: classify image files with a checkpoint, fast enough to
//! serve. Each image is made to look like the training data (see
//! `data::convert`), normalised as recorded in the checkpoint, and the
//! top-K classes are printed.
//!
//! Three stages overlap: a thread gathers file names (from the command
//! line, folders searched recursively in name order, or standard input for
//! `-`) into batches of up to `--batch-size`, sending a partial batch when
//! no more names are waiting so that a slow producer still gets answers;
//! a second thread decodes each batch on all cores; this thread runs the
//! model and prints each batch's results, in input order, as soon as they
//! are known. Memory stays bounded by a few batches whatever the number of
//! images. An image that cannot be read is reported in its place (on
//! standard error, or as an `error` row in JSON) and the others are still
//! classified; the exit code (2) says that some failed.

use crate::cli::PredictArgs;
use crate::data::convert::{self, Fit};
use crate::data::{Batcher, Normalization, folder};
use crate::device;
use crate::error::InputContext;
use anyhow::Result;
use candle_core::{Device, Tensor};
use rayon::prelude::*;
use serde_json::{Value, json};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

pub fn run(args: &PredictArgs) -> Result<()> {
    if args.top == 0 {
        crate::bail_input!("--top 0: show at least 1 class");
    }
    if args.batch_size == 0 {
        crate::bail_input!("--batch-size 0: classify at least 1 image at a time");
    }
    let sources = sources(&args.images)?;
    let device = device::open(args.device.device)?;
    let loaded = super::load_model_in(&args.checkpoint, None, &device, args.precision)?;
    // A batch never holds more images than there are (when they are known),
    // and must fit in memory.
    let known = sources.iter().try_fold(0usize, |n, s| match s {
        Source::Files(f) => Some(n + f.len()),
        Source::Stdin => None,
    });
    let batch_size = args.batch_size.min(known.unwrap_or(usize::MAX).max(1));
    crate::memory::check_eval(
        loaded.model.plan(),
        batch_size,
        crate::memory::Shape::of(&device),
        false,
    )?;
    let config = &loaded.config;
    let shape = config.input_shape;
    let fit = args.preprocess.unwrap_or_else(|| Fit::for_config(config));
    let shorter = config.data.resize.shorter_side();
    let normalization = loaded
        .normalization
        .clone()
        .expect("checkpoints record their normalization");
    let label = |i: usize| {
        loaded
            .classes
            .get(i)
            .cloned()
            .unwrap_or_else(|| i.to_string())
    };
    let k = args.top.min(config.num_classes);

    // The stages run on their own threads and stop when the next one goes
    // away (an error here, or the end of the output).
    let names = start_names(sources, batch_size);
    let batches = start_decoding(names, shape, (fit, shorter), normalization);
    let mut out = std::io::stdout().lock();
    let mut collected = Vec::new();
    let (mut seen, mut failed) = (0usize, 0usize);
    for batch in batches {
        let Batch {
            files,
            pixels,
            fatal,
        } = batch;
        let probs = match pixels {
            Some(x) => loaded
                .model
                .probabilities(&x.to_device(&device)?)?
                .to_vec2::<f32>()?,
            None => Vec::new(),
        };
        let mut probs = probs.iter();
        for (path, decoded) in &files {
            seen += 1;
            let row = match decoded {
                Err(e) => {
                    failed += 1;
                    if !(args.json || args.jsonl) {
                        eprintln!("error: {e:#}");
                        continue;
                    }
                    let mut row = json!({"path": shown(path), "error": format!("{e:#}")});
                    mark_lossy(&mut row, path);
                    row
                }
                Ok(()) => {
                    let ranked = rank(probs.next().expect("one row per decoded image"), k);
                    if !(args.json || args.jsonl) {
                        writeln!(out, "{}", text_line(path, &ranked, label))?;
                        continue;
                    }
                    let top: Vec<Value> = ranked
                        .iter()
                        .map(|&(i, p)| json!({"class": i, "label": label(i), "probability": p}))
                        .collect();
                    let (best, _) = ranked[0];
                    let mut row = json!({"path": shown(path), "class": best, "label": label(best), "top": top});
                    mark_lossy(&mut row, path);
                    row
                }
            };
            if args.jsonl {
                writeln!(out, "{row}")?;
            } else {
                collected.push(row);
            }
        }
        out.flush()?;
        if let Some(e) = fatal {
            // The results so far are printed before the error, in every
            // output form: nothing that was computed is lost.
            if args.json {
                writeln!(out, "{}", serde_json::to_string_pretty(&collected)?)?;
            }
            return Err(e);
        }
    }
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&collected)?)?;
    }
    if failed > 0 {
        crate::bail_input!(
            "{failed} of {seen} images could not be read (named above); the others were classified"
        );
    }
    Ok(())
}

/// A path as JSON text: its name, with U+FFFD for bytes that are not
/// UTF-8 (JSON holds only text); such rows also carry `"path_bytes"`.
fn shown(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// Adds `"path_bytes"` (the name's bytes) to a row whose path is not UTF-8,
/// so that the file can still be found.
fn mark_lossy(row: &mut Value, path: &Path) {
    if path.to_str().is_none() {
        row["path_bytes"] = Value::from(path.as_os_str().as_encoded_bytes().to_vec());
    }
}

/// Where names come from, in order.
enum Source {
    /// A file, or a folder's image files.
    Files(Vec<PathBuf>),
    /// Standard input, one name per line.
    Stdin,
}

/// The command line's names: folders become their image files (an empty
/// folder is an error), `-` standard input (once at most); anything else is
/// a file, read when its turn comes.
fn sources(args: &[PathBuf]) -> Result<Vec<Source>> {
    let mut out = Vec::with_capacity(args.len());
    let mut stdin = false;
    for a in args {
        if a.as_os_str() == "-" {
            if stdin {
                crate::bail_input!("`-` (read names from standard input) is given twice");
            }
            stdin = true;
            out.push(Source::Stdin);
        } else if a.is_dir() {
            let (files, _) = folder::image_files(a)?;
            if files.is_empty() {
                crate::bail_input!(
                    "folder {} holds no images ({}); give image files or a folder of them",
                    a.display(),
                    folder::EXTENSIONS.join(", ")
                );
            }
            out.push(Source::Files(files));
        } else {
            out.push(Source::Files(vec![a.clone()]));
        }
    }
    Ok(out)
}

/// Starts the thread that sends the names of `sources` in batches of up to
/// `size`: full ones while names are waiting, a partial one when the next
/// name is not there yet. A failure to read standard input ends the
/// batches with the error.
fn start_names(sources: Vec<Source>, size: usize) -> Receiver<Result<Vec<PathBuf>>> {
    // Channels and batches grow as names come, not by the requested size.
    let (names_tx, names_rx) = sync_channel::<Result<PathBuf>>(2 * size.min(1 << 12));
    std::thread::spawn(move || {
        for source in sources {
            match source {
                Source::Files(files) => {
                    for f in files {
                        if names_tx.send(Ok(f)).is_err() {
                            return;
                        }
                    }
                }
                Source::Stdin => {
                    // Names are bytes (any file name but one holding a
                    // newline), not necessarily UTF-8.
                    for line in std::io::stdin().lock().split(b'\n') {
                        let name =
                            line.input_context(|| "cannot read file names from standard input");
                        let name = name.map(|mut l| {
                            if l.last() == Some(&b'\r') {
                                l.pop();
                            }
                            l
                        });
                        if matches!(&name, Ok(n) if n.is_empty()) {
                            continue;
                        }
                        let failed = name.is_err();
                        let path = name.map(|b| {
                            use std::os::unix::ffi::OsStringExt;
                            PathBuf::from(std::ffi::OsString::from_vec(b))
                        });
                        if names_tx.send(path).is_err() || failed {
                            return;
                        }
                    }
                }
            }
        }
    });
    let (batch_tx, batch_rx) = sync_channel(1);
    std::thread::spawn(move || gather(names_rx, batch_tx, size));
    batch_rx
}

/// Groups names into batches: waits for one, then takes those already
/// waiting, up to `size`.
fn gather(
    names: Receiver<Result<PathBuf>>,
    batches: SyncSender<Result<Vec<PathBuf>>>,
    size: usize,
) {
    while let Ok(first) = names.recv() {
        let mut batch = Vec::with_capacity(size.min(1 << 12));
        let mut next = Some(first);
        while let Some(name) = next.take() {
            match name {
                Ok(p) => batch.push(p),
                Err(e) => {
                    if !batch.is_empty() {
                        let _ = batches.send(Ok(batch));
                    }
                    let _ = batches.send(Err(e));
                    return;
                }
            }
            if batch.len() < size {
                next = names.try_recv().ok();
            }
        }
        if batches.send(Ok(batch)).is_err() {
            return;
        }
    }
}

/// A batch ready for the model: its files in order, each decoded or with
/// why not; the pixels of those decoded (`n × c × h × w` on the CPU;
/// `None` when there are none); and a failure that ends the input.
struct Batch {
    files: Vec<(PathBuf, Result<()>)>,
    pixels: Option<Tensor>,
    /// A failure to read names: nothing comes after it.
    fatal: Option<anyhow::Error>,
}

/// Starts the thread that decodes each batch of names on all cores.
fn start_decoding(
    names: Receiver<Result<Vec<PathBuf>>>,
    [c, h, w]: [usize; 3],
    (fit, shorter): (Fit, Option<u32>),
    normalization: Normalization,
) -> Receiver<Batch> {
    let (tx, rx) = sync_channel(1);
    std::thread::spawn(move || {
        let batcher = Batcher::new(&normalization, &Device::Cpu);
        for names in names {
            let paths = match names {
                Ok(p) => p,
                Err(e) => {
                    let _ = tx.send(Batch {
                        files: Vec::new(),
                        pixels: None,
                        fatal: Some(e),
                    });
                    return;
                }
            };
            let decoded: Vec<Result<Tensor>> = paths
                .par_iter()
                .map(|p| {
                    let pixels = convert::load_image(p, c, h, w, fit, shorter)?;
                    batcher.tensor_from_pixels(&pixels, [c, h, w])
                })
                .collect();
            let mut good = Vec::with_capacity(decoded.len());
            let mut files: Vec<(PathBuf, Result<()>)> = paths
                .into_iter()
                .zip(decoded)
                .map(|(p, d)| {
                    let d = d.map(|t| good.push(t));
                    (p, d)
                })
                .collect();
            let (pixels, fatal) = match Tensor::cat(&good, 0) {
                _ if good.is_empty() => (None, None),
                Ok(t) => (Some(t), None),
                Err(e) => (None, Some(e.into())),
            };
            if fatal.is_some() {
                files.clear();
            }
            if tx
                .send(Batch {
                    files,
                    pixels,
                    fatal,
                })
                .is_err()
            {
                return;
            }
        }
    });
    rx
}

/// The `k` most likely classes with their probabilities, most likely first
/// (the lower class first on ties).
fn rank(probs: &[f32], k: usize) -> Vec<(usize, f32)> {
    let mut order: Vec<usize> = (0..probs.len()).collect();
    order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
    order[..k].iter().map(|&i| (i, probs[i])).collect()
}

/// `path: label 97.3%  (other 1.2%, ...)`.
fn text_line(path: &Path, ranked: &[(usize, f32)], label: impl Fn(usize) -> String) -> String {
    let (best, p) = ranked[0];
    let rest: Vec<String> = ranked[1..]
        .iter()
        .map(|&(i, p)| format!("{} {:.1}%", label(i), 100.0 * p))
        .collect();
    let rest = if rest.is_empty() {
        String::new()
    } else {
        format!("  ({})", rest.join(", "))
    };
    format!(
        "{}: {} {:.1}%{rest}",
        path.display(),
        label(best),
        100.0 * p
    )
}
