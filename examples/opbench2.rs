//! Times the memory-bound ops of a cifar10-cnn step on its largest tensor
//! ([128, 32, 32, 32]) beside a copy of the same tensor, whose time is the
//! machine's memory speed at the moment (a shared machine's varies):
//! `cargo run --release --example opbench2 [REPS]`.
use candle_core::{Device, Tensor, Var};
use cnn::geometry::{Pair, PoolGeometry};
use std::time::Instant;

fn time(name: &str, reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let t = Instant::now();
    for _ in 0..reps {
        f();
    }
    let ms = t.elapsed().as_secs_f64() * 1e3 / reps as f64;
    println!("{name:40} {ms:8.2} ms");
    ms
}

fn main() -> anyhow::Result<()> {
    // As the cnn binary does at start (see its doc).
    cnn::ops::cpu::keep_freed_memory();
    let reps: usize = std::env::args().nth(1).map_or(Ok(20), |s| s.parse())?;
    let dev = Device::Cpu;
    let shape = (128, 32, 32, 32);
    let x = Var::from_tensor(&Tensor::randn(0.5f32, 1.0, shape, &dev)?)?;
    let dy = Tensor::randn(0f32, 1.0, shape, &dev)?;
    let ones = Tensor::ones(32, candle_core::DType::F32, &dev)?;
    let zeros = Tensor::zeros(32, candle_core::DType::F32, &dev)?;
    let p = cnn::ops::BatchNormParams::new(
        32,
        Some((
            Var::from_tensor(&ones)?.as_tensor().clone(),
            Var::from_tensor(&zeros)?.as_tensor().clone(),
        )),
        &Var::from_tensor(&zeros)?.as_tensor().clone(),
        &Var::from_tensor(&ones)?.as_tensor().clone(),
        1e-5,
        0.1,
    )?;
    let g = PoolGeometry {
        kernel: Pair::square(2),
        stride: Pair::square(2),
        padding: Pair::square(0),
    };
    println!("{shape:?}, {} threads", rayon::current_num_threads());
    for _ in 0..2 {
        time("copy (memory speed)", reps, || {
            let _ = x.as_tensor().copy().unwrap();
        });
        time("batch norm+relu forward", reps, || {
            let _ = cnn::ops::batch_norm(x.as_tensor(), &p, true, true).unwrap();
        });
        time("batch norm+relu forward+backward", reps, || {
            let y = cnn::ops::batch_norm(x.as_tensor(), &p, true, true).unwrap();
            let _ = (y * &dy).unwrap().sum_all().unwrap().backward().unwrap();
        });
        time("y * dy, sum, backward (the harness)", reps, || {
            let y = (x.as_tensor() * 1.0).unwrap();
            let _ = (y * &dy).unwrap().sum_all().unwrap().backward().unwrap();
        });
        time("max pool 2x2 forward", reps, || {
            let _ = cnn::ops::max_pool2d(x.as_tensor(), &g).unwrap();
        });
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(1);
        time("dropout forward", reps, || {
            let _ = cnn::ops::dropout(x.as_tensor(), 0.1, &mut rng).unwrap();
        });
    }
    Ok(())
}
