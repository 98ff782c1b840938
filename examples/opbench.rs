//! Times the CPU kernels of one LeNet training step in isolation:
//! `cargo run --release --example opbench`.
use cnn::ops::cpu::{self, Mat, Window};
use std::time::Instant;

fn time(name: &str, reps: usize, mut f: impl FnMut()) {
    f();
    let t = Instant::now();
    for _ in 0..reps {
        f();
    }
    println!(
        "{name:40} {:8.1} µs",
        t.elapsed().as_secs_f64() * 1e6 / reps as f64
    );
}

fn main() {
    // As the cnn binary does at start (see its doc).
    cnn::ops::cpu::keep_freed_memory();
    let x: Vec<f32> = (0..28 * 28).map(|i| (i % 7) as f32).collect();
    let win = Window {
        h: 28,
        w: 28,
        kh: 5,
        kw: 5,
        sh: 1,
        sw: 1,
        dh: 1,
        dw: 1,
        pt: 2,
        pl: 2,
        oh: 28,
        ow: 28,
    };
    let mut col = vec![0f32; 25 * 784];
    time("im2col 1x28x28 k5 p2 (1 image)", 2000, || {
        cpu::im2col(&x, 1, &win, &mut col, 784)
    });
    let w = vec![0.1f32; 6 * 25];
    let mut y = vec![0f32; 6 * 784];
    // SAFETY: the buffers above have exactly the sizes and strides given.
    time("gemm 6x784x25 (1 image)", 2000, || unsafe {
        cpu::gemm(
            6,
            784,
            25,
            Mat {
                ptr: y.as_mut_ptr(),
                rs: 784,
                cs: 1,
            },
            false,
            Mat {
                ptr: w.as_ptr(),
                rs: 25,
                cs: 1,
            },
            Mat {
                ptr: col.as_ptr(),
                rs: 784,
                cs: 1,
            },
        )
    });
    let mut dw = vec![0f32; 6 * 25];
    // SAFETY: the buffers above have exactly the sizes and strides given.
    time("gemm dW 6x25x784 (1 image)", 2000, || unsafe {
        cpu::gemm(
            6,
            25,
            784,
            Mat {
                ptr: dw.as_mut_ptr(),
                rs: 25,
                cs: 1,
            },
            true,
            Mat {
                ptr: y.as_ptr(),
                rs: 784,
                cs: 1,
            },
            Mat {
                ptr: col.as_ptr(),
                rs: 1,
                cs: 784,
            },
        )
    });
    // conv2: 6->16 k5 on 14x14
    let x2: Vec<f32> = (0..6 * 14 * 14).map(|i| (i % 7) as f32).collect();
    let win2 = Window {
        h: 14,
        w: 14,
        kh: 5,
        kw: 5,
        sh: 1,
        sw: 1,
        dh: 1,
        dw: 1,
        pt: 0,
        pl: 0,
        oh: 10,
        ow: 10,
    };
    let mut col2 = vec![0f32; 150 * 100];
    time("im2col 6x14x14 k5 (1 image)", 2000, || {
        cpu::im2col(&x2, 6, &win2, &mut col2, 100)
    });
    let w2 = vec![0.1f32; 16 * 150];
    let mut y2 = vec![0f32; 16 * 100];
    // SAFETY: the buffers above have exactly the sizes and strides given.
    time("gemm 16x100x150 (1 image)", 2000, || unsafe {
        cpu::gemm(
            16,
            100,
            150,
            Mat {
                ptr: y2.as_mut_ptr(),
                rs: 100,
                cs: 1,
            },
            false,
            Mat {
                ptr: w2.as_ptr(),
                rs: 150,
                cs: 1,
            },
            Mat {
                ptr: col2.as_ptr(),
                rs: 100,
                cs: 1,
            },
        )
    });
    let mut dw2 = vec![0f32; 16 * 150];
    // SAFETY: the buffers above have exactly the sizes and strides given.
    time("gemm dW 16x150x100 (1 image)", 2000, || unsafe {
        cpu::gemm(
            16,
            150,
            100,
            Mat {
                ptr: dw2.as_mut_ptr(),
                rs: 150,
                cs: 1,
            },
            true,
            Mat {
                ptr: y2.as_ptr(),
                rs: 100,
                cs: 1,
            },
            Mat {
                ptr: col2.as_ptr(),
                rs: 1,
                cs: 100,
            },
        )
    });
    // SAFETY: the buffers above have exactly the sizes and strides given.
    time("gemm dcol 150x100x16 (1 image)", 2000, || unsafe {
        cpu::gemm(
            150,
            100,
            16,
            Mat {
                ptr: col2.as_mut_ptr(),
                rs: 100,
                cs: 1,
            },
            false,
            Mat {
                ptr: w2.as_ptr(),
                rs: 1,
                cs: 150,
            },
            Mat {
                ptr: y2.as_ptr(),
                rs: 100,
                cs: 1,
            },
        )
    });
    let mut dx2 = vec![0f32; 6 * 14 * 14];
    time("col2im 6x14x14 k5 (1 image)", 2000, || {
        cpu::col2im(&col2, 6, &win2, &mut dx2, 100)
    });
    // batched: 64 images of conv1 as one gemm
    let colb = vec![0.5f32; 25 * 784 * 64];
    let mut yb = vec![0f32; 6 * 784 * 64];
    // SAFETY: the buffers above have exactly the sizes and strides given.
    time("gemm 6x50176x25 (64 images)", 200, || unsafe {
        cpu::gemm(
            6,
            784 * 64,
            25,
            Mat {
                ptr: yb.as_mut_ptr(),
                rs: 784 * 64,
                cs: 1,
            },
            false,
            Mat {
                ptr: w.as_ptr(),
                rs: 25,
                cs: 1,
            },
            Mat {
                ptr: colb.as_ptr(),
                rs: 784 * 64,
                cs: 1,
            },
        )
    });
}
