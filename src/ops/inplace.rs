//! Elementwise in-place updates on the CPU (`dst[i] = f(dst[i], a[i], b[i])`)
//! through candle's in-place custom ops: what the optimizers use to update
//! parameters and their state without allocating new tensors every step.

use super::cpu;
use candle_core::{CpuStorage, InplaceOp3, Layout, Result, Tensor};

struct Elementwise<F>(F);

impl<F: Fn(&mut f32, f32, f32)> InplaceOp3 for Elementwise<F> {
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
        let Some((start, end)) = l1.contiguous_offsets() else {
            candle_core::bail!("in-place update of a non-contiguous tensor");
        };
        let CpuStorage::F32(data) = s1 else {
            candle_core::bail!("in-place update of a non-f32 tensor");
        };
        let dst = &mut data[start..end];
        if dst.len() != a.len() || dst.len() != b.len() {
            candle_core::bail!(
                "in-place update: {} values but operands of {} and {}",
                dst.len(),
                a.len(),
                b.len()
            );
        }
        for ((d, &x), &y) in dst.iter_mut().zip(a).zip(b) {
            (self.0)(d, x, y);
        }
        Ok(())
    }
}

/// `dst[i] = f(dst[i], a[i], b[i])` for CPU `f32` tensors of one shape.
pub fn update(dst: &Tensor, a: &Tensor, b: &Tensor, f: impl Fn(&mut f32, f32, f32)) -> Result<()> {
    dst.inplace_op3(&a.contiguous()?, &b.contiguous()?, &Elementwise(f))
}
