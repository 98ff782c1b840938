//! 2-D convolution on the CPU as one candle custom op: forward by im2col and
//! gemm, image by image in parallel; backward computes the weight, bias and
//! (when the input needs it) input gradients in a single pass over the batch,
//! re-running im2col instead of keeping the unfolded input. A trailing ReLU
//! can be fused in: the forward clamps in place and the backward masks the
//! incoming gradient with the op's own output.
//!
//! Zero padding only (other padding modes pad first, see `ops::pad2d`);
//! padding may differ per side.

use super::cpu::{self, Mat, Window};
use crate::arch::ConvGeometry;
use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};

/// The fixed part of a convolution: sizes, and whether ReLU follows.
#[derive(Debug, Clone, Copy)]
pub struct Conv {
    pub geom: ConvGeometry,
    pub relu: bool,
}

/// Sizes of one call, derived from the input's shape.
#[derive(Debug, Clone, Copy)]
struct Dims {
    n: usize,
    /// Input channels per group.
    cg: usize,
    /// Output channels per group.
    og: usize,
    groups: usize,
    win: Window,
}

impl Dims {
    fn in_image(&self) -> usize {
        self.groups * self.cg * self.win.in_len()
    }
    fn out_image(&self) -> usize {
        self.groups * self.og * self.win.out_len()
    }
    /// Rows of the unfolded input of one group: `cg·kh·kw`.
    fn k(&self) -> usize {
        self.cg * self.win.kh * self.win.kw
    }
    fn out_shape(&self) -> Shape {
        Shape::from((self.n, self.groups * self.og, self.win.oh, self.win.ow))
    }
}

impl Conv {
    fn dims(&self, x: &Layout, w: &Layout) -> Result<Dims> {
        let g = &self.geom;
        let (n, c, h, wd) = x.shape().dims4()?;
        let (o, cg, kh, kw) = w.shape().dims4()?;
        if c != g.in_channels || o != g.out_channels || cg * g.groups != c {
            candle_core::bail!(
                "conv2d: input has {c} channels and weight {:?}, expected {} → {} channels in {} groups",
                w.shape().dims(),
                g.in_channels,
                g.out_channels,
                g.groups
            );
        }
        let p = g.padding;
        let span_h = g.dilation.h * (kh - 1) + 1;
        let span_w = g.dilation.w * (kw - 1) + 1;
        let (ph, pw) = (h + p.top + p.bottom, wd + p.left + p.right);
        if span_h > ph || span_w > pw {
            candle_core::bail!("conv2d: kernel {kh}×{kw} does not fit input {h}×{wd}");
        }
        Ok(Dims {
            n,
            cg,
            og: o / g.groups,
            groups: g.groups,
            win: Window {
                h,
                w: wd,
                kh,
                kw,
                sh: g.stride.h,
                sw: g.stride.w,
                dh: g.dilation.h,
                dw: g.dilation.w,
                pt: p.top,
                pl: p.left,
                oh: (ph - span_h) / g.stride.h + 1,
                ow: (pw - span_w) / g.stride.w + 1,
            },
        })
    }

    fn label(&self) -> String {
        let g = &self.geom;
        format!("conv2d {}→{} k{}", g.in_channels, g.out_channels, g.kernel)
    }

    fn forward(
        &self,
        x: &[f32],
        xl: &Layout,
        w: &[f32],
        wl: &Layout,
        b: Option<&[f32]>,
    ) -> Result<(CpuStorage, Shape)> {
        let _t = crate::profile::scope(|| format!("{} forward", self.label()));
        let d = self.dims(xl, wl)?;
        let (k, p) = (d.k(), d.win.out_len());
        let mut y = vec![0f32; d.n * d.out_image()];
        cpu::par_images(&mut y, d.out_image(), |first, ys| {
            let mut col = vec![0f32; k * p];
            for (j, yi) in ys.chunks_mut(d.out_image()).enumerate() {
                let xi = &x[(first + j) * d.in_image()..(first + j + 1) * d.in_image()];
                for g in 0..d.groups {
                    let xg = &xi[g * d.cg * d.win.in_len()..];
                    cpu::im2col(xg, d.cg, &d.win, &mut col);
                    let yg = &mut yi[g * d.og * p..(g + 1) * d.og * p];
                    if let Some(b) = b {
                        for (row, &bias) in yg.chunks_mut(p).zip(&b[g * d.og..(g + 1) * d.og]) {
                            row.fill(bias);
                        }
                    }
                    // y_g (og×p) [+]= W_g (og×k) · col (k×p)
                    unsafe {
                        cpu::gemm(
                            d.og,
                            p,
                            k,
                            Mat {
                                ptr: yg.as_mut_ptr(),
                                rs: p as isize,
                                cs: 1,
                            },
                            b.is_some(),
                            Mat {
                                ptr: w[g * d.og * k..].as_ptr(),
                                rs: k as isize,
                                cs: 1,
                            },
                            Mat {
                                ptr: col.as_ptr(),
                                rs: p as isize,
                                cs: 1,
                            },
                        );
                    }
                }
                if self.relu {
                    for v in yi.iter_mut() {
                        *v = v.max(0.0);
                    }
                }
            }
        });
        Ok((CpuStorage::F32(y), d.out_shape()))
    }

    /// Gradients with respect to the input (if `need_dx`), the weight and the bias.
    fn backward(
        &self,
        x: &Tensor,
        w: &Tensor,
        y: &Tensor,
        dy: &Tensor,
        need_dx: bool,
    ) -> Result<(Option<Tensor>, Tensor, Tensor)> {
        let _t = crate::profile::scope(|| {
            let dx = if need_dx { "" } else { " (no dx)" };
            format!("{} backward{dx}", self.label())
        });
        let d = self.dims(x.layout(), w.layout())?;
        let (k, p) = (d.k(), d.win.out_len());
        let x = x.contiguous()?;
        let w = w.contiguous()?;
        let dy = dy.contiguous()?;
        let y = y.contiguous()?;
        let weights = d.groups * d.og * k;
        let o = d.groups * d.og;
        cpu::with_slice(&x, |xs| {
            cpu::with_slice(&w, |ws| {
                cpu::with_slice(&dy, |dys| {
                    cpu::with_slice(&y, |ys| {
                        // One image's part: accumulate dW and db, write dx.
                        let image = |i: usize,
                                     dz: &mut [f32],
                                     col: &mut [f32],
                                     dw: &mut [f32],
                                     db: &mut [f32],
                                     dx: Option<&mut [f32]>| {
                            let out = i * d.out_image()..(i + 1) * d.out_image();
                            dz.copy_from_slice(&dys[out.clone()]);
                            if self.relu {
                                for (g, &v) in dz.iter_mut().zip(&ys[out]) {
                                    if v <= 0.0 {
                                        *g = 0.0;
                                    }
                                }
                            }
                            for (row, acc) in dz.chunks(p).zip(db.iter_mut()) {
                                *acc += row.iter().sum::<f32>();
                            }
                            let xi = &xs[i * d.in_image()..(i + 1) * d.in_image()];
                            let mut dx = dx;
                            for g in 0..d.groups {
                                let dzg = &dz[g * d.og * p..(g + 1) * d.og * p];
                                cpu::im2col(&xi[g * d.cg * d.win.in_len()..], d.cg, &d.win, col);
                                // dW_g (og×k) += dZ_g (og×p) · colᵀ (p×k)
                                unsafe {
                                    cpu::gemm(
                                        d.og,
                                        k,
                                        p,
                                        Mat {
                                            ptr: dw[g * d.og * k..].as_mut_ptr(),
                                            rs: k as isize,
                                            cs: 1,
                                        },
                                        true,
                                        Mat {
                                            ptr: dzg.as_ptr(),
                                            rs: p as isize,
                                            cs: 1,
                                        },
                                        Mat {
                                            ptr: col.as_ptr(),
                                            rs: 1,
                                            cs: p as isize,
                                        },
                                    );
                                }
                                if let Some(dx) = dx.as_deref_mut() {
                                    // dcol (k×p) = W_gᵀ (k×og) · dZ_g (og×p), then fold back.
                                    unsafe {
                                        cpu::gemm(
                                            k,
                                            p,
                                            d.og,
                                            Mat {
                                                ptr: col.as_mut_ptr(),
                                                rs: p as isize,
                                                cs: 1,
                                            },
                                            false,
                                            Mat {
                                                ptr: ws[g * d.og * k..].as_ptr(),
                                                rs: 1,
                                                cs: k as isize,
                                            },
                                            Mat {
                                                ptr: dzg.as_ptr(),
                                                rs: p as isize,
                                                cs: 1,
                                            },
                                        );
                                    }
                                    cpu::col2im(
                                        col,
                                        d.cg,
                                        &d.win,
                                        &mut dx[g * d.cg * d.win.in_len()..],
                                    );
                                }
                            }
                        };
                        let new_partial = || (vec![0f32; weights], vec![0f32; o]);
                        let scratch = || (vec![0f32; d.out_image()], vec![0f32; k * p]);
                        let (partials, dx) = if need_dx {
                            let mut dx = vec![0f32; d.n * d.in_image()];
                            let partials =
                                cpu::par_chunks_map(&mut dx, d.in_image(), |first, chunk| {
                                    let (mut dw, mut db) = new_partial();
                                    let (mut dz, mut col) = scratch();
                                    for (j, dxi) in chunk.chunks_mut(d.in_image()).enumerate() {
                                        image(
                                            first + j,
                                            &mut dz,
                                            &mut col,
                                            &mut dw,
                                            &mut db,
                                            Some(dxi),
                                        );
                                    }
                                    (dw, db)
                                });
                            (partials, Some(dx))
                        } else {
                            let partials = cpu::par_map_chunks(d.n, |range| {
                                let (mut dw, mut db) = new_partial();
                                let (mut dz, mut col) = scratch();
                                for i in range {
                                    image(i, &mut dz, &mut col, &mut dw, &mut db, None);
                                }
                                (dw, db)
                            });
                            (partials, None)
                        };
                        let (mut dw, mut db) = new_partial();
                        for (pw, pb) in &partials {
                            cpu::add_assign(&mut dw, pw);
                            cpu::add_assign(&mut db, pb);
                        }
                        let dx = match dx {
                            Some(v) => Some(Tensor::from_vec(v, x.shape(), x.device())?),
                            None => None,
                        };
                        Ok((
                            dx,
                            Tensor::from_vec(dw, w.shape(), w.device())?,
                            Tensor::from_vec(db, o, w.device())?,
                        ))
                    })
                })
            })
        })
    }
}

/// Whether a gradient must flow into `t` (it is a variable or computed from one).
fn wants_grad(t: &Tensor) -> bool {
    t.track_op()
}

/// Convolution without bias: `(x, weight)`.
pub struct ConvNoBias(pub Conv);

impl CustomOp2 for ConvNoBias {
    fn name(&self) -> &'static str {
        "cnn-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.0
            .forward(cpu::slice(s1, l1)?, l1, cpu::slice(s2, l2)?, l2, None)
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, _) = self.0.backward(x, w, res, grad, wants_grad(x))?;
        Ok((dx, Some(dw)))
    }
}

/// Convolution with bias: `(x, weight, bias)`.
pub struct ConvBias(pub Conv);

impl CustomOp3 for ConvBias {
    fn name(&self) -> &'static str {
        "cnn-conv2d-bias"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.0.forward(
            cpu::slice(s1, l1)?,
            l1,
            cpu::slice(s2, l2)?,
            l2,
            Some(cpu::slice(s3, l3)?),
        )
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, db) = self.0.backward(x, w, res, grad, wants_grad(x))?;
        Ok((dx, Some(dw), Some(db)))
    }
}
