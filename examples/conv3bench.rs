//! Times the 3×3 convolutions of cifar10-cnn on a batch of 128 images,
//! forward and backward, Winograd against the direct kernels in alternating
//! rounds, with the rate in GFLOP/s of the direct computation's
//! multiply-adds (so that the two compare):
//! `RAYON_NUM_THREADS=1 cargo run --release --example conv3bench [ROUNDS] [both|winograd|direct]`.
//! The backward time leaves out what the same harness (`sum(y · dy)` and
//! its gradient) takes on a variable of the output's shape.
//! `CNN_PROFILE=1` adds the time of each part.
use candle_core::{Device, Tensor, Var};
use cnn::geometry::{ConvGeometry, Pad4, PaddingMode, Pair};
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let rounds: usize = std::env::args().nth(1).map_or(Ok(2), |s| s.parse())?;
    let variants: &[bool] = match std::env::args().nth(2).as_deref() {
        Some("winograd") => &[true],
        Some("direct") => &[false],
        _ => &[true, false],
    };
    cnn::profile::enable_from_env();
    cnn::ops::cpu::keep_freed_memory();
    let dev = Device::Cpu;
    let n = 128;
    println!("batch {n}, {} threads", rayon::current_num_threads());
    // (in, out, size, stride): cifar10-cnn's layers, then a residual net's
    // stride-2 3×3 and 1×1 layers (`LAYER=64-128s2`, say, picks one).
    for &(c, o, hw, stride) in [
        (32usize, 32usize, 32usize, 1usize),
        (32, 64, 16, 1),
        (64, 64, 16, 1),
        (64, 128, 8, 1),
        (128, 128, 8, 1),
        (64, 128, 16, 2),
        (128, 256, 8, 2),
    ]
    .iter()
    .filter(|s| {
        let name = format!("{}-{}{}", s.0, s.1, if s.3 == 2 { "s2" } else { "" });
        std::env::var("LAYER").map_or(s.3 == 1, |l| l == name)
    }) {
        let out = hw / stride;
        let g = ConvGeometry {
            in_channels: c,
            out_channels: o,
            kernel: Pair::square(3),
            stride: Pair::square(stride),
            dilation: Pair::square(1),
            padding: Pad4::symmetric(Pair::square(1)),
            padding_mode: PaddingMode::Zeros,
            groups: 1,
            bias: false,
        };
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (n, c, hw, hw), &dev)?)?;
        let w = Var::from_tensor(&(Tensor::randn(0f32, 1.0, (o, c, 3, 3), &dev)? * 0.1)?)?;
        let dy = Tensor::randn(0f32, 1.0, (n, o, out, out), &dev)?;
        let flops = (2 * n * o * c * 9 * out * out) as f64;
        let v = Var::from_tensor(&dy)?;
        let harness_loss = (v.as_tensor() * &dy)?.sum_all()?;
        let _ = harness_loss.backward()?;
        for round in 0..rounds {
            for &on in variants {
                cnn::ops::winograd::set_enabled(on);
                let reps = 3;
                let t = Instant::now();
                for _ in 0..reps {
                    let _ = cnn::ops::conv2d(x.as_tensor(), w.as_tensor(), None, &g, false)?;
                }
                let fwd = t.elapsed().as_secs_f64() / reps as f64;
                let y = cnn::ops::conv2d(x.as_tensor(), w.as_tensor(), None, &g, false)?;
                let loss = (&y * &dy)?.sum_all()?;
                let t = Instant::now();
                for _ in 0..reps {
                    let _ = harness_loss.backward()?;
                }
                let harness = t.elapsed().as_secs_f64() / reps as f64;
                let t = Instant::now();
                for _ in 0..reps {
                    let _ = loss.backward()?;
                }
                let bwd = t.elapsed().as_secs_f64() / reps as f64 - harness;
                println!(
                    "{c:3}->{o:3} {hw:2}x{hw:2} round {round} {:9}: forward {:6.1} ms ({:5.0} GFLOP/s), backward {:6.1} ms ({:5.0} GFLOP/s)",
                    if on { "winograd" } else { "direct" },
                    fwd * 1e3,
                    flops / fwd / 1e9,
                    bwd * 1e3,
                    2.0 * flops / bwd / 1e9
                );
            }
        }
    }
    if let Some(r) = cnn::profile::report() {
        println!("{r}");
    }
    Ok(())
}
