//! Will the run fit in this machine's memory? An estimate of the bytes a
//! run needs (weights, gradients, optimizer state, the activations of a
//! training batch and of an evaluation batch), checked before anything is
//! allocated against the memory actually available to this process: the
//! kernel's `MemAvailable`, a cgroup's limit (containers, Slurm) and an
//! address-space limit (`ulimit -v`), whichever is least. A run that would
//! not fit is refused with the batch size that would, instead of being
//! killed by the kernel or aborting on a failed allocation halfway through.
//!
//! The estimate follows how `train::step` runs a batch: on the CPU, a
//! network without batch norm runs micro-batches of about 32 images on each
//! thread, whose gradients are all held until they are added; otherwise the
//! batch runs in one piece. candle keeps every layer's output of a batch
//! for the backward pass, and the backward pass holds a few gradients and a
//! kernel's scratch besides, hence two floats per activation of every layer
//! in training. Evaluation keeps nothing: a layer's input, its output and
//! scratch are alive at once, hence five floats per value of the largest
//! layer output. Measured on this machine (2026-12-07, peak RSS of the whole
//! run with its data, against the estimate of the batches alone):
//! cifar10-cnn at batch 1024 1.42 GB (estimate 2.9 GB), ResNet-18 at 224 px
//! and batch 64 2.7 GB (3.6 GB), ResNet-50 at batch 64 8.7 GB (15.4 GB);
//! evaluating ResNet-50 64 images at a time 1.1 GB (1.0 GB + the weights).
//! GPU memory is not checked (only the host's, for a run on the CPU).

use crate::arch::Plan;
use crate::config::{Config, Rule};
use crate::layers::Op;
use crate::model::walk;
use crate::train::step::MICRO_BATCH;
use anyhow::Result;

/// Bytes held besides the estimate (the binary, allocator slack, buffers).
const SLACK: u64 = 256 << 20;

/// What a run needs, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Estimate {
    /// Weights, gradients and optimizer state.
    pub state: u64,
    /// The activations of one training step.
    pub train: u64,
    /// The activations of one evaluation batch.
    pub eval: u64,
}

impl Estimate {
    /// The peak: the state and the larger of a training step and an
    /// evaluation batch (they never run at once).
    pub fn total(&self) -> u64 {
        self.state + self.train.max(self.eval)
    }
}

/// How a run uses the hardware, as far as memory goes.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Training on the CPU, where batches without batch norm are cut into
    /// micro-batches.
    pub cpu: bool,
    pub threads: usize,
    /// On a GPU: its free memory, which the run must fit in.
    pub device_free: Option<u64>,
}

impl Shape {
    /// This process on `device`.
    pub fn of(device: &candle_core::Device) -> Shape {
        Shape {
            cpu: device.is_cpu(),
            threads: rayon::current_num_threads().max(1),
            device_free: crate::device::free_memory(device),
        }
    }
}

/// The memory `plan` needs to train with `batch` images per step and
/// evaluate `eval_batch` at a time, with an optimizer keeping `slots`
/// tensors per parameter.
pub fn estimate(plan: &Plan, batch: usize, eval_batch: usize, slots: u64, on: Shape) -> Estimate {
    let f = 4u128; // bytes per f32
    let params = plan.params();
    let weights = params + plan.buffers();
    let mut activations = plan.input.elements();
    let mut largest = plan.input.elements();
    let mut whole_batch = false;
    walk(&plan.layers, &mut |n| {
        activations += n.output.elements();
        largest = largest.max(n.output.elements());
        whole_batch |= matches!(n.op, Op::BatchNorm1d(_) | Op::BatchNorm2d(_));
    });
    let batch = batch.max(1) as u128;
    let (copies, images) = if on.cpu && !whole_batch {
        // Every micro-batch's gradients are held until they are summed;
        // as many micro-batches run at once as there are threads.
        let parts = batch.div_ceil(MICRO_BATCH as u128).max(1);
        let running = parts.min(on.threads as u128);
        (parts, running * batch.div_ceil(parts))
    } else {
        (1, batch)
    };
    let state = f * (weights + params * (1 + slots as u128) + params * copies);
    let train = f * 2 * activations * images;
    let eval = f * 5 * largest * eval_batch.max(1) as u128;
    let clamp = |v: u128| v.min(u64::MAX as u128) as u64;
    Estimate {
        state: clamp(state),
        train: clamp(train),
        eval: clamp(eval),
    }
}

/// Tensors the optimizer keeps per parameter.
pub fn optimizer_slots(rule: Rule) -> u64 {
    match rule {
        Rule::Adam { .. } => 2,
        Rule::Sgd { momentum, .. } if momentum > 0.0 => 1,
        Rule::Sgd { .. } => 0,
    }
}

/// The memory available to this process, and what limits it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Available {
    pub bytes: u64,
    /// `MemAvailable in /proc/meminfo`, `the cgroup limit (...)`, ...
    pub source: String,
}

/// Refuses a run of `config` on `plan` that would not fit in the memory
/// available. `images` caps the batches: the training images and the
/// largest evaluated split. Skipped with `skip` (`--no-memory-check`) or
/// when the memory cannot be read.
pub fn check(
    plan: &Plan,
    config: &Config,
    images: (usize, usize),
    on: Shape,
    skip: bool,
) -> Result<()> {
    if skip {
        return Ok(());
    }
    let Some(available) = room(on) else {
        return Ok(());
    };
    let rule = config.training.optimizer.rule()?;
    let slots = optimizer_slots(rule);
    let batch = config.training.batch_size.min(images.0.max(1));
    let eval_batch = config.data.eval_batch_size.min(images.1.max(1));
    let need = estimate(plan, batch, eval_batch, slots, on);
    refuse_if_short(
        plan,
        need,
        &available,
        |b, e| estimate(plan, b, e, slots, on),
        batch,
        eval_batch,
    )
}

/// Refuses `cnn eval` of `plan` with `eval_batch` images at a time when it
/// would not fit (no gradients, no optimizer state).
pub fn check_eval(plan: &Plan, eval_batch: usize, on: Shape, skip: bool) -> Result<()> {
    if skip {
        return Ok(());
    }
    let Some(available) = room(on) else {
        return Ok(());
    };
    let e = estimate(plan, 1, eval_batch, 0, on);
    let need = Estimate {
        state: 4 * (plan.params() + plan.buffers()).min(u64::MAX as u128 / 4) as u64,
        train: 0,
        eval: e.eval,
    };
    if need.total().saturating_add(SLACK) <= available.bytes {
        return Ok(());
    }
    let fits = largest(eval_batch, |b| {
        need.state + estimate(plan, 1, b, 0, on).eval + SLACK <= available.bytes
    });
    let fix = match fits {
        Some(b) => format!("evaluate fewer images at a time: --batch-size {b} fits"),
        None => "the weights alone do not fit; use a machine with more memory".to_string(),
    };
    crate::bail_input!(
        "evaluating {eval_batch} images at a time would need about {} but {} is available ({}); {fix} \
         (or pass --no-memory-check to try anyway)",
        gib(need.total()),
        gib(available.bytes),
        available.source
    )
}

/// The memory a run on `on` must fit in: the process's on the CPU, the
/// GPU's free memory on a GPU (`None` when it cannot be read).
fn room(on: Shape) -> Option<Available> {
    if on.cpu {
        return available();
    }
    on.device_free.map(|bytes| Available {
        bytes,
        source: "free memory of the GPU (cuMemGetInfo)".into(),
    })
}

fn refuse_if_short(
    plan: &Plan,
    need: Estimate,
    available: &Available,
    at: impl Fn(usize, usize) -> Estimate,
    batch: usize,
    eval_batch: usize,
) -> Result<()> {
    let room = available.bytes;
    if need.total().saturating_add(SLACK) <= room {
        return Ok(());
    }
    let fits = |e: Estimate| e.total().saturating_add(SLACK) <= room;
    let head = format!(
        "this run would need about {} of memory but {} is available ({}): {} for the weights, gradients \
         and optimizer state of {} parameters, {} for the activations of a training batch of {batch}, {} \
         for an evaluation batch of {eval_batch}",
        gib(need.total()),
        gib(room),
        available.source,
        gib(need.state),
        plan.params(),
        gib(need.train),
        gib(need.eval),
    );
    let override_note = "(or pass --no-memory-check to try anyway)";
    if !fits(at(1, 1)) {
        crate::bail_input!(
            "{head}. Even one image at a time would not fit: the network itself is too large for this \
             machine; make its layers smaller {override_note}"
        );
    }
    let mut fixes = Vec::new();
    let eval_fits = fits(at(1, eval_batch));
    let train_fits = fits(at(batch, 1));
    let new_eval = if eval_fits {
        eval_batch
    } else {
        let e = largest(eval_batch, |e| fits(at(1, e))).unwrap_or(1);
        fixes.push(format!(
            "data.eval_batch_size {e} (--set data.eval_batch_size={e})"
        ));
        e
    };
    if !train_fits || !fits(at(batch, new_eval)) {
        let b = largest(batch, |b| fits(at(b, new_eval))).unwrap_or(1);
        fixes.push(format!("a batch size of {b} (--batch-size {b})"));
    }
    crate::bail_input!("{head}. What fits: {} {override_note}", fixes.join(" and "))
}

/// The largest value below `limit` for which `fits` holds, by bisection
/// (`fits` holds for small values and not for large ones).
fn largest(limit: usize, fits: impl Fn(usize) -> bool) -> Option<usize> {
    if !fits(1) {
        return None;
    }
    let (mut lo, mut hi) = (1, limit.max(2));
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if fits(mid) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Some(lo)
}

/// `1.5 GiB`, `300 MiB`.
pub fn gib(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= (1u64 << 30) as f64 {
        format!("{:.1} GiB", b / (1u64 << 30) as f64)
    } else {
        format!("{:.0} MiB", (b / (1u64 << 20) as f64).ceil())
    }
}

/// The memory this process can still use, or `None` when the system says
/// nothing (not Linux).
pub fn available() -> Option<Available> {
    let read = |p: &str| std::fs::read_to_string(p).ok();
    let mut limits = Vec::new();
    if let Some(kb) = read("/proc/meminfo").and_then(|m| meminfo_available(&m)) {
        limits.push(Available {
            bytes: kb,
            source: "MemAvailable in /proc/meminfo".into(),
        });
    }
    if let Some(a) = read("/proc/self/cgroup").and_then(|c| cgroup_room(&c, &read)) {
        limits.push(a);
    }
    if let Some(a) = address_space_room(&read) {
        limits.push(a);
    }
    limits.into_iter().min_by_key(|a| a.bytes)
}

/// `MemAvailable` of `/proc/meminfo`, in bytes.
fn meminfo_available(meminfo: &str) -> Option<u64> {
    meminfo.lines().find_map(|l| {
        let rest = l.strip_prefix("MemAvailable:")?;
        let kb: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kb * 1024)
    })
}

/// The room left under the tightest memory limit of this process's cgroup
/// and its parents (cgroup v2 `memory.max`/`memory.current`, or v1
/// `memory.limit_in_bytes`/`memory.usage_in_bytes`).
fn cgroup_room(proc_cgroup: &str, read: &impl Fn(&str) -> Option<String>) -> Option<Available> {
    let number = |p: &str| read(p).and_then(|t| t.trim().parse::<u64>().ok());
    let mut best: Option<Available> = None;
    for line in proc_cgroup.lines() {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        let (root, max, current) = if controllers.is_empty() {
            ("/sys/fs/cgroup", "memory.max", "memory.current")
        } else if controllers.split(',').any(|c| c == "memory") {
            (
                "/sys/fs/cgroup/memory",
                "memory.limit_in_bytes",
                "memory.usage_in_bytes",
            )
        } else {
            continue;
        };
        // This cgroup and each parent up to the root of the mount.
        let mut dir = path.trim_end_matches('/').to_string();
        loop {
            let at = format!("{root}{dir}");
            if let (Some(limit), Some(used)) = (
                number(&format!("{at}/{max}")),
                number(&format!("{at}/{current}")),
            ) {
                // v1 writes "no limit" as a huge number.
                if limit < (1u64 << 60) {
                    let room = limit.saturating_sub(used);
                    if best.as_ref().is_none_or(|b| room < b.bytes) {
                        best = Some(Available {
                            bytes: room,
                            source: format!(
                                "the memory limit of cgroup {} is {}, of which {} is in use",
                                if dir.is_empty() { "/" } else { &dir },
                                gib(limit),
                                gib(used)
                            ),
                        });
                    }
                }
            }
            if dir.is_empty() {
                break;
            }
            match dir.rfind('/') {
                Some(i) => dir.truncate(i),
                None => dir.clear(),
            }
        }
    }
    best
}

/// Room left under `ulimit -v` (RLIMIT_AS), given this process's size.
fn address_space_room(read: &impl Fn(&str) -> Option<String>) -> Option<Available> {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes the struct it is given.
        if unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut lim) } != 0
            || lim.rlim_cur == libc::RLIM_INFINITY
        {
            return None;
        }
        let limit = lim.rlim_cur;
        let size = read("/proc/self/status").and_then(|s| {
            s.lines().find_map(|l| {
                let kb = l
                    .strip_prefix("VmSize:")?
                    .trim()
                    .trim_end_matches("kB")
                    .trim();
                kb.parse::<u64>().ok().map(|k| k * 1024)
            })
        })?;
        Some(Available {
            bytes: limit.saturating_sub(size),
            source: format!(
                "ulimit -v allows {} of address space and this process already uses {}",
                gib(limit),
                gib(size)
            ),
        })
    }
    #[cfg(not(unix))]
    {
        let _ = read;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn plan(text: &str) -> Plan {
        let config = Config::from_value(serde_json::from_str(text).unwrap()).unwrap();
        crate::arch::plan(&config).unwrap()
    }

    #[test]
    fn reads_meminfo() {
        let m = "MemTotal:       24683848 kB\nMemFree:         9507520 kB\nMemAvailable:   22279884 kB\n";
        assert_eq!(meminfo_available(m), Some(22279884 * 1024));
        assert_eq!(meminfo_available("MemTotal: 1 kB\n"), None);
    }

    #[test]
    fn takes_the_tightest_cgroup_limit_of_v1_or_v2() {
        let files: HashMap<&str, &str> = [
            ("/sys/fs/cgroup/a/b/memory.max", "max\n"),
            ("/sys/fs/cgroup/a/b/memory.current", "100\n"),
            ("/sys/fs/cgroup/a/memory.max", "4294967296\n"),
            ("/sys/fs/cgroup/a/memory.current", "1073741824\n"),
            (
                "/sys/fs/cgroup/memory/job/memory.limit_in_bytes",
                "9223372036854771712\n",
            ),
            ("/sys/fs/cgroup/memory/job/memory.usage_in_bytes", "5\n"),
        ]
        .into();
        let read = |p: &str| files.get(p).map(|s| s.to_string());
        let a = cgroup_room("0::/a/b\n", &read).unwrap();
        assert_eq!(a.bytes, 3 << 30);
        assert!(a.source.contains("cgroup /a is 4.0 GiB"), "{}", a.source);
        // v1 without a limit (the huge number) says nothing.
        assert_eq!(cgroup_room("4:memory:/job\n", &read), None);
        assert_eq!(cgroup_room("1:cpu:/x\n", &read), None);
    }

    #[test]
    fn the_estimate_follows_how_a_batch_runs() {
        let mlp = plan(include_str!("../configs/mlp.json"));
        let cpu = Shape {
            cpu: true,
            threads: 2,
            device_free: None,
        };
        // 79,510 parameters: weights, gradient sum, Adam's two moments,
        // and the gradients of the 2 micro-batches of a batch of 64.
        let e = estimate(&mlp, 64, 1, 2, cpu);
        assert_eq!(e.state, 4 * 79_510 * (1 + 3 + 2));
        // 784 + 784 + 100 + 100 + 10 values per image, 2 micro-batches of 32.
        assert_eq!(e.train, 4 * 2 * 1778 * 64);
        // Larger batches run 2 micro-batches at once, not the whole batch.
        assert_eq!(estimate(&mlp, 6400, 1, 2, cpu).train, 4 * 2 * 1778 * 64);
        let gpu = Shape {
            cpu: false,
            threads: 2,
            device_free: None,
        };
        assert_eq!(
            estimate(&mlp, 6400, 1000, 2, gpu).train,
            4 * 2 * 1778 * 6400
        );
        // Evaluation: the largest of those, 784, five times over.
        assert_eq!(estimate(&mlp, 6400, 1000, 2, gpu).eval, 4 * 5 * 784 * 1000);
        // On a GPU the run must fit in its free memory; unknown, unchecked.
        assert_eq!(room(gpu), None);
        let small = Shape {
            device_free: Some(1 << 20),
            ..gpu
        };
        assert_eq!(room(small).unwrap().bytes, 1 << 20);
        let config = crate::config::Config::from_value(
            serde_json::from_str(include_str!("../configs/mlp.json")).unwrap(),
        )
        .unwrap();
        let err = check(&mlp, &config, (50_000, 10_000), small, false).unwrap_err();
        assert!(format!("{err}").contains("free memory of the GPU"), "{err}");
        assert!(check(&mlp, &config, (50_000, 10_000), small, true).is_ok());
    }

    #[test]
    fn a_run_that_does_not_fit_is_refused_with_the_batch_size_that_does() {
        let cifar = plan(include_str!("../configs/cifar10-cnn.json"));
        let on = Shape {
            cpu: true,
            threads: 2,
            device_free: None,
        };
        let at = |b, e| estimate(&cifar, b, e, 2, on);
        let available = Available {
            bytes: 4 << 30,
            source: "test".into(),
        };
        let err =
            refuse_if_short(&cifar, at(60_000, 1000), &available, at, 60_000, 1000).unwrap_err();
        assert_eq!(crate::error::exit_code(&err), 2);
        let msg = format!("{err:#}");
        assert!(msg.contains("4.0 GiB is available (test)"), "{msg}");
        let b: usize = msg
            .split("--batch-size ")
            .nth(1)
            .and_then(|s| s.split(')').next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{msg}"));
        assert!(at(b, 1000).total() + SLACK <= 4 << 30, "{msg}");
        assert!(at(b + 1, 1000).total() + SLACK > 4 << 30, "{msg}");
        assert!(refuse_if_short(&cifar, at(b, 1000), &available, at, b, 1000).is_ok());
        // Evaluation alone too large: its batch is named.
        let err = refuse_if_short(&cifar, at(64, 20_000), &available, at, 64, 20_000).unwrap_err();
        assert!(
            format!("{err}").contains("--set data.eval_batch_size="),
            "{err}"
        );
    }

    #[test]
    fn bisection_finds_the_largest_fit() {
        assert_eq!(largest(1000, |b| b <= 137), Some(137));
        assert_eq!(largest(1000, |_| false), None);
        assert_eq!(largest(1, |_| true), Some(1));
    }
}
