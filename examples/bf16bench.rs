//! The bf16 matrix product (`ops::bf16::gemm`) against the f32 one
//! (`ops::cpu::gemm`) on convolution- and linear-shaped products, one
//! thread, GFLOP/s: how close the bf16 kernels come to the machine's rate.
//!
//!   cargo run --release --example bf16bench

use cnn::ops::bf16::{self, Bf16Isa};
use cnn::ops::cpu::{self, Mat};
use std::time::Instant;

fn main() {
    cnn::ops::cpu::keep_freed_memory();
    let hw = cnn::ops::kernels::get().features.avx512_bf16;
    println!(
        "| m×n×k | f32 GFLOP/s | bf16 GFLOP/s ({}) |",
        if hw { "avx512bf16" } else { "emulated" }
    );
    println!("| --- | ---: | ---: |");
    let isa = if hw {
        Bf16Isa::Avx512Bf16
    } else {
        Bf16Isa::Emulated
    };
    for (m, n, k) in [
        (6, 3136, 25),
        (16, 400, 150),
        (32, 1600, 400),
        (64, 1024, 576),
        (256, 256, 2304),
        (16, 100, 784),
        (64, 576, 4096),
        (1024, 1024, 1024),
    ] {
        let a = vec![0.5f32; m * k];
        let b = vec![0.25f32; k * n];
        let mut c = vec![0f32; m * n];
        let flops = 2.0 * (m * n * k) as f64;
        let reps = ((2e9 / flops) as usize).clamp(3, 2000);
        let time = |f: &mut dyn FnMut()| {
            f();
            let t = Instant::now();
            for _ in 0..reps {
                f();
            }
            flops * reps as f64 / t.elapsed().as_secs_f64() / 1e9
        };
        let dst = Mat {
            ptr: c.as_mut_ptr(),
            rs: n as isize,
            cs: 1,
        };
        let lhs = Mat {
            ptr: a.as_ptr(),
            rs: k as isize,
            cs: 1,
        };
        let rhs = Mat {
            ptr: b.as_ptr(),
            rs: n as isize,
            cs: 1,
        };
        // SAFETY: the buffers have the sizes the strides describe.
        let f32_rate = time(&mut || unsafe { cpu::gemm(m, n, k, dst, false, lhs, rhs) });
        // SAFETY: as above; `isa` is what this CPU runs.
        let bf16_rate = time(&mut || unsafe { bf16::gemm(isa, m, n, k, dst, false, lhs, rhs) });
        println!("| {m}×{n}×{k} | {f32_rate:.0} | {bf16_rate:.0} |");
    }
}
