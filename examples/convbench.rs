//! Times the convolutions of three-conv on one 32-image micro-batch, forward
//! and backward, on one thread:
//! `CNN_PROFILE=1 RAYON_NUM_THREADS=1 cargo run --release --example convbench`.
use candle_core::{Device, Tensor, Var};
use cnn::geometry::{ConvGeometry, Pad4, PaddingMode, Pair};

fn main() -> anyhow::Result<()> {
    // As the cnn binary does at start (see its doc).
    cnn::ops::cpu::keep_freed_memory();
    cnn::profile::enable_from_env();
    let dev = Device::Cpu;
    for &(c, o, hw) in &[
        (1usize, 16usize, 28usize),
        (16, 32, 24),
        (32, 64, 10),
        (64, 32, 14),
        (32, 16, 28),
    ] {
        let g = ConvGeometry {
            in_channels: c,
            out_channels: o,
            kernel: Pair::square(5),
            stride: Pair::square(1),
            dilation: Pair::square(1),
            padding: Pad4::default(),
            padding_mode: PaddingMode::Zeros,
            groups: 1,
            bias: true,
        };
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (32, c, hw, hw), &dev)?)?;
        let w = Var::from_tensor(&(Tensor::randn(0f32, 1.0, (o, c, 5, 5), &dev)? * 0.1)?)?;
        let b = Var::from_tensor(&Tensor::zeros(o, candle_core::DType::F32, &dev)?)?;
        for _ in 0..100 {
            let y = cnn::ops::conv2d(x.as_tensor(), w.as_tensor(), Some(b.as_tensor()), &g, true)?;
            let _ = y.sum_all()?.backward()?;
        }
    }
    if let Some(r) = cnn::profile::report() {
        println!("{r}");
    }
    Ok(())
}
