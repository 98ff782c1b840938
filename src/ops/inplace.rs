//! Elementwise in-place updates (`dst[i] = f(dst[i], a[i], b[i])`) through
//! candle's in-place custom ops: what the optimizers use to update
//! parameters and their state without allocating new tensors every step.
//! On the CPU each [`Kernel`] is a loop; on a GPU (CUDA builds) it is one
//! launch of a kernel from `src/ops/cuda/update.cu`, instead of the dozen
//! tensor operations, each with its own allocation and launch, that the
//! same update takes in candle's ops.

use super::cpu;
use candle_core::{CpuStorage, DType, InplaceOp3, Layout, Result, Tensor};

/// One update rule, with its scalars. The CPU and CUDA forms do the same
/// arithmetic in the same order.
#[derive(Clone, Copy, Debug)]
pub enum Kernel {
    /// SGD without momentum, `θ -= lr (g + wd θ)`; `a = g`.
    SgdPlain { lr: f32, wd: f32 },
    /// The momentum buffer, `b = μ b + keep (g + wd θ)`; `a = g`, `b = θ`.
    SgdBuffer { mu: f32, keep: f32, wd: f32 },
    /// `θ -= lr · step` with `step = buf`, or `g + wd θ + μ buf` with
    /// Nesterov; `a = buf`, `b = g`.
    SgdTheta {
        lr: f32,
        mu: f32,
        wd: f32,
        nesterov: bool,
    },
    /// Adam's first moment, `m = β1 m + (1 - β1)(g + l2 θ)`; `a = g`, `b = θ`.
    AdamM { beta1: f32, l2: f32 },
    /// The second moment, `v = β2 v + (1 - β2) g'²` with `g' = g + l2 θ`.
    AdamV { beta2: f32, l2: f32 },
    /// `θ = θ · shrink - step_size · m / (√v / bc2_sqrt + eps)`; `a = m`, `b = v`.
    AdamTheta {
        shrink: f32,
        step_size: f32,
        bc2_sqrt: f32,
        eps: f32,
    },
    /// An average of the weights, `e = decay e + rest θ`, left exactly as it
    /// is where it equals θ (a value that never changes); `a = θ` (b unused).
    Ema { decay: f32, rest: f32 },
}

impl Kernel {
    /// The CUDA kernel's name and its four scalars.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    fn cuda(self) -> (&'static str, [f32; 4]) {
        match self {
            Kernel::SgdPlain { lr, wd } => ("cnn_sgd_plain", [lr, wd, 0.0, 0.0]),
            Kernel::SgdBuffer { mu, keep, wd } => ("cnn_sgd_buffer", [mu, keep, wd, 0.0]),
            Kernel::SgdTheta {
                lr,
                mu,
                wd,
                nesterov,
            } => ("cnn_sgd_theta", [lr, mu, wd, f32::from(u8::from(nesterov))]),
            Kernel::AdamM { beta1, l2 } => ("cnn_adam_m", [beta1, l2, 0.0, 0.0]),
            Kernel::AdamV { beta2, l2 } => ("cnn_adam_v", [beta2, l2, 0.0, 0.0]),
            Kernel::AdamTheta {
                shrink,
                step_size,
                bc2_sqrt,
                eps,
            } => ("cnn_adam_theta", [shrink, step_size, bc2_sqrt, eps]),
            Kernel::Ema { decay, rest } => ("cnn_ema", [decay, rest, 0.0, 0.0]),
        }
    }

    /// Runs the rule over CPU slices of one length.
    fn cpu(self, dst: &mut [f32], a: &[f32], b: &[f32]) {
        fn each(dst: &mut [f32], a: &[f32], b: &[f32], f: impl Fn(&mut f32, f32, f32)) {
            for ((d, &x), &y) in dst.iter_mut().zip(a).zip(b) {
                f(d, x, y);
            }
        }
        match self {
            Kernel::SgdPlain { lr, wd } => each(dst, a, b, |th, g, _| *th -= lr * (g + wd * *th)),
            Kernel::SgdBuffer { mu, keep, wd } => {
                each(dst, a, b, |b, g, th| *b = mu * *b + keep * (g + wd * th))
            }
            Kernel::SgdTheta {
                lr,
                mu,
                wd,
                nesterov,
            } => each(dst, a, b, |th, b, g| {
                let step = if nesterov { g + wd * *th + mu * b } else { b };
                *th -= lr * step;
            }),
            Kernel::AdamM { beta1, l2 } => each(dst, a, b, |m, g, th| {
                *m = beta1 * *m + (1.0 - beta1) * (g + l2 * th)
            }),
            Kernel::AdamV { beta2, l2 } => each(dst, a, b, |v, g, th| {
                let g = g + l2 * th;
                *v = beta2 * *v + (1.0 - beta2) * g * g
            }),
            Kernel::AdamTheta {
                shrink,
                step_size,
                bc2_sqrt,
                eps,
            } => each(dst, a, b, |th, m, v| {
                *th = *th * shrink - step_size * m / (v.sqrt() / bc2_sqrt + eps)
            }),
            Kernel::Ema { decay, rest } => each(dst, a, b, |e, th, _| {
                if *e != th {
                    *e = decay * *e + rest * th
                }
            }),
        }
    }
}

struct Elementwise(Kernel);

/// The three operands' value ranges, or an error when one is not contiguous
/// or their lengths differ.
fn ranges(l1: &Layout, l2: &Layout, l3: &Layout) -> Result<[(usize, usize); 3]> {
    let mut out = [(0, 0); 3];
    for (o, l) in out.iter_mut().zip([l1, l2, l3]) {
        let Some(r) = l.contiguous_offsets() else {
            candle_core::bail!("in-place update of a non-contiguous tensor");
        };
        *o = r;
    }
    let len = |(s, e): (usize, usize)| e - s;
    if len(out[0]) != len(out[1]) || len(out[0]) != len(out[2]) {
        candle_core::bail!(
            "in-place update: {} values but operands of {} and {}",
            len(out[0]),
            len(out[1]),
            len(out[2])
        );
    }
    Ok(out)
}

impl InplaceOp3 for Elementwise {
    fn name(&self) -> &'static str {
        "cnn-elementwise-update"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<()> {
        let (a, b) = (cpu::slice(s2, l2)?, cpu::slice(s3, l3)?);
        let [(start, end), ..] = ranges(l1, l2, l3)?;
        let CpuStorage::F32(data) = s1 else {
            candle_core::bail!("in-place update of a non-f32 tensor");
        };
        self.0.cpu(&mut data[start..end], a, b);
        Ok(())
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &mut candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> Result<()> {
        use candle_core::backend::BackendStorage;
        use candle_core::cuda_backend::WrapErr;
        use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
        const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/update.ptx"));
        let [(d0, d1), (a0, a1), (b0, b1)] = ranges(l1, l2, l3)?;
        let n = d1 - d0;
        if n == 0 {
            return Ok(());
        }
        let (name, p) = self.0.cuda();
        let dev = s1.device().clone();
        let func = dev.get_or_load_custom_func(name, "cnn_update", PTX)?;
        let a = s2.as_cuda_slice::<f32>()?.slice(a0..a1);
        let b = s3.as_cuda_slice::<f32>()?.slice(b0..b1);
        let mut dst = s1.as_cuda_slice_mut::<f32>()?.slice_mut(d0..d1);
        let blocks = n.div_ceil(256).min(65_535) as u32;
        let cfg = LaunchConfig {
            grid_dim: (blocks, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut builder = func.builder();
        builder.arg(&mut dst);
        builder.arg(&a);
        builder.arg(&b);
        builder.arg(&n);
        builder.arg(&p[0]);
        builder.arg(&p[1]);
        builder.arg(&p[2]);
        builder.arg(&p[3]);
        // SAFETY: the kernel reads `n` values of `a` and `b` and writes `n`
        // of `dst`, all f32 and checked to hold that many.
        unsafe { builder.launch(cfg) }.w()?;
        Ok(())
    }
}

/// Whether [`update`] runs on `t`'s device: the CPU with the project's
/// kernels, or (CUDA builds) a GPU, unless `CNN_KERNELS=candle` asks for
/// candle's operations only.
pub fn available(t: &Tensor) -> bool {
    if t.dtype() != DType::F32 {
        return false;
    }
    super::native(t) || (cfg!(feature = "cuda") && t.device().is_cuda() && !super::candle_only())
}

/// `dst[i] = kernel(dst[i], a[i], b[i])` for `f32` tensors of one shape on
/// a device where [`available`].
pub fn update(dst: &Tensor, a: &Tensor, b: &Tensor, kernel: Kernel) -> Result<()> {
    dst.inplace_op3(&a.contiguous()?, &b.contiguous()?, &Elementwise(kernel))
}
