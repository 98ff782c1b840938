//! Max and average pooling on the CPU as candle custom ops, with padding,
//! any stride, and a backward that touches each input once. Max pooling
//! ignores padded positions and routes the gradient to the first maximum of
//! each window (as PyTorch does); average pooling counts padded positions as
//! zeros (PyTorch's `count_include_pad=True`).

use super::cpu;
use crate::arch::PoolGeometry;
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Max,
    Avg,
}

/// A pooling layer's fixed settings.
#[derive(Debug, Clone, Copy)]
pub struct Pool {
    pub kind: Kind,
    pub geom: PoolGeometry,
}

/// Sizes of one call.
#[derive(Debug, Clone, Copy)]
struct Dims {
    planes: usize,
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
}

impl Pool {
    fn dims(&self, l: &Layout) -> Result<Dims> {
        let (n, c, h, w) = l.shape().dims4()?;
        let g = &self.geom;
        let (ph, pw) = (h + 2 * g.padding.h, w + 2 * g.padding.w);
        if g.kernel.h > ph || g.kernel.w > pw {
            candle_core::bail!("pool: window {} does not fit input {h}×{w}", g.kernel);
        }
        Ok(Dims {
            planes: n * c,
            h,
            w,
            oh: (ph - g.kernel.h) / g.stride.h + 1,
            ow: (pw - g.kernel.w) / g.stride.w + 1,
        })
    }

    /// Input rows and columns covered by output position (`oy`, `ox`),
    /// clipped to the image.
    #[inline]
    fn window(
        &self,
        d: &Dims,
        oy: usize,
        ox: usize,
    ) -> (std::ops::Range<usize>, std::ops::Range<usize>) {
        let g = &self.geom;
        let y0 = (oy * g.stride.h) as isize - g.padding.h as isize;
        let x0 = (ox * g.stride.w) as isize - g.padding.w as isize;
        let rows =
            y0.max(0) as usize..((y0 + g.kernel.h as isize).min(d.h as isize)).max(0) as usize;
        let cols =
            x0.max(0) as usize..((x0 + g.kernel.w as isize).min(d.w as isize)).max(0) as usize;
        (rows, cols)
    }

    /// Index (within the plane) of the first maximum of a window.
    #[inline]
    fn argmax(
        plane: &[f32],
        w: usize,
        rows: std::ops::Range<usize>,
        cols: std::ops::Range<usize>,
    ) -> usize {
        let mut best = rows.start * w + cols.start;
        let mut best_v = f32::NEG_INFINITY;
        for y in rows {
            for x in cols.clone() {
                let v = plane[y * w + x];
                // `!(v <= best)` also picks a NaN, so NaNs propagate as in PyTorch.
                if v > best_v || v.is_nan() && !best_v.is_nan() {
                    best_v = v;
                    best = y * w + x;
                }
            }
        }
        best
    }

    fn area(&self) -> f32 {
        (self.geom.kernel.h * self.geom.kernel.w) as f32
    }
}

impl CustomOp1 for Pool {
    fn name(&self) -> &'static str {
        match self.kind {
            Kind::Max => "cnn-max-pool2d",
            Kind::Avg => "cnn-avg-pool2d",
        }
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let _t = crate::profile::scope(|| format!("{} forward", self.name()));
        let d = self.dims(l)?;
        let x = cpu::slice(s, l)?;
        let (in_plane, out_plane) = (d.h * d.w, d.oh * d.ow);
        let mut y = vec![0f32; d.planes * out_plane];
        let area = self.area();
        cpu::par_planes(&mut y, out_plane, |plane_idx, out| {
            let plane = &x[plane_idx * in_plane..(plane_idx + 1) * in_plane];
            for oy in 0..d.oh {
                for ox in 0..d.ow {
                    let (rows, cols) = self.window(&d, oy, ox);
                    out[oy * d.ow + ox] = match self.kind {
                        Kind::Max => plane[Self::argmax(plane, d.w, rows, cols)],
                        Kind::Avg => {
                            let mut s = 0f32;
                            for y in rows {
                                s += plane[y * d.w + cols.start..y * d.w + cols.end]
                                    .iter()
                                    .sum::<f32>();
                            }
                            s / area
                        }
                    };
                }
            }
        });
        let (n, c, _, _) = l.shape().dims4()?;
        Ok((CpuStorage::F32(y), Shape::from((n, c, d.oh, d.ow))))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let _t = crate::profile::scope(|| format!("{} backward", self.name()));
        let arg = arg.contiguous()?;
        let grad = grad.contiguous()?;
        let d = self.dims(arg.layout())?;
        let (in_plane, out_plane) = (d.h * d.w, d.oh * d.ow);
        let area = self.area();
        let mut dx = vec![0f32; d.planes * in_plane];
        cpu::with_slice(&arg, |x| {
            cpu::with_slice(&grad, |dy| {
                cpu::par_planes(&mut dx, in_plane, |plane_idx, dxp| {
                    let plane = &x[plane_idx * in_plane..(plane_idx + 1) * in_plane];
                    let dyp = &dy[plane_idx * out_plane..(plane_idx + 1) * out_plane];
                    for oy in 0..d.oh {
                        for ox in 0..d.ow {
                            let g = dyp[oy * d.ow + ox];
                            let (rows, cols) = self.window(&d, oy, ox);
                            match self.kind {
                                Kind::Max => dxp[Self::argmax(plane, d.w, rows, cols)] += g,
                                Kind::Avg => {
                                    let share = g / area;
                                    for y in rows {
                                        for v in &mut dxp[y * d.w + cols.start..y * d.w + cols.end]
                                        {
                                            *v += share;
                                        }
                                    }
                                }
                            }
                        }
                    }
                });
                Ok(())
            })
        })?;
        Ok(Some(Tensor::from_vec(dx, arg.shape(), arg.device())?))
    }
}
