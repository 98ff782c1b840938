//! Times the training step of a config's network on random images: forward,
//! loss and backward of one batch, as `cnn train` runs it for networks that
//! take the batch whole (the optimizer and data loading left out), with
//! Winograd on and off in alternating rounds. Per-op times with `CNN_PROFILE=1`.
//!
//! `cargo run --release --example stepbench -- [CONFIG] [BATCH] [STEPS] [ROUNDS] [both|winograd|direct]`
//! (default configs/cifar10-cnn.json, 128, 5, 3, both; threads from RAYON_NUM_THREADS).
use candle_core::{DType, Device, Tensor, Var};
use cnn::geometry::Shape;
use cnn::layers::{self, Pass};
use rand::SeedableRng;
use std::time::Instant;

/// CPU time of the whole process (all threads), in seconds: on a shared
/// machine a steadier measure of the work than the wall clock.
fn cpu_seconds() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

fn main() -> anyhow::Result<()> {
    // As the cnn binary does at start (see its doc).
    cnn::ops::cpu::keep_freed_memory();
    let args: Vec<String> = std::env::args().collect();
    let config = args
        .get(1)
        .map_or("configs/cifar10-cnn.json", |s| s.as_str());
    let batch: usize = args.get(2).map_or(Ok(128), |s| s.parse())?;
    let steps: usize = args.get(3).map_or(Ok(5), |s| s.parse())?;
    let rounds: usize = args.get(4).map_or(Ok(3), |s| s.parse())?;
    let variants: &[bool] = match args.get(5).map_or("both", |s| s.as_str()) {
        "winograd" => &[true],
        "direct" => &[false],
        _ => &[true, false],
    };
    cnn::profile::enable_from_env();
    let cfg = cnn::config::Config::load(std::path::Path::new(config))?;
    let [c, h, w] = cfg.input_shape;
    let nodes = layers::plan_list(&cfg.layers, Shape::Image { c, h, w })?;
    let dev = Device::Cpu;
    // Fresh tensors as the specs say (the trainer's own initialisation).
    let mut init = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let mut tensors = Vec::new();
    for node in &nodes {
        for (_, spec) in node.tensors() {
            let t = spec.fresh(&mut init, &dev)?;
            tensors.push(Var::from_tensor(&t)?.as_tensor().clone());
        }
    }
    // The loss is taken before a trailing softmax.
    let end = nodes.len() - usize::from(nodes.last().is_some_and(|n| n.op.is_output_activation()));
    let x = Tensor::randn(0f32, 1.0, (batch, c, h, w), &dev)?;
    let labels: Vec<u32> = (0..batch as u32)
        .map(|i| i % cfg.num_classes as u32)
        .collect();
    let y = Tensor::from_vec(labels, batch, &dev)?;
    let step = |seed: u64| -> anyhow::Result<()> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let t = cnn::profile::scope(|| "step: forward".to_string());
        let logits = layers::run_list(&nodes, &tensors, &x, &mut Pass::train(&mut rng), end)?;
        let loss = cnn::ops::cross_entropy(&logits, &y, 0.0)?;
        drop(t);
        let t = cnn::profile::scope(|| "step: backward".to_string());
        let grads = loss.to_dtype(DType::F32)?.backward()?;
        drop(t);
        let t = cnn::profile::scope(|| "step: dropping the graph".to_string());
        drop((grads, loss, logits));
        drop(t);
        Ok(())
    };
    step(0)?;
    println!(
        "{config}, batch {batch}, {} threads: ms per step",
        rayon::current_num_threads()
    );
    for round in 0..rounds {
        for &on in variants {
            cnn::ops::winograd::set_enabled(on);
            let (t, cpu) = (Instant::now(), cpu_seconds());
            for s in 0..steps {
                step(s as u64)?;
            }
            let ms = t.elapsed().as_secs_f64() * 1e3 / steps as f64;
            let cpu_ms = (cpu_seconds() - cpu) * 1e3 / steps as f64;
            let name = if on { "winograd" } else { "direct" };
            println!(
                "round {round} {name:9} {ms:8.1} ms  ({:.0} images/s), CPU time {cpu_ms:.1} ms",
                batch as f64 * 1e3 / ms
            );
        }
    }
    cnn::ops::winograd::set_enabled(true);
    if let Some(r) = cnn::profile::report() {
        println!("{r}");
    }
    Ok(())
}
