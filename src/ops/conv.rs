//! 2-D convolution on the CPU as one candle custom op. 3×3 stride-1 layers
//! with enough channels go to Winograd F(4×4, 3×3) ([`super::winograd`]),
//! other stride-1 layers whose channels fill the vector lanes to the direct
//! AVX-512/AVX2 kernels of [`super::direct`] where the CPU has them; the
//! rest run here: forward by
//! im2col and gemm; backward computes the weight, bias and (when the input needs it)
//! input gradients in one pass over the batch, re-running im2col instead of
//! keeping the unfolded input. Work is split into tasks of a few images, in
//! parallel; within a task the images' unfolded inputs sit side by side, so
//! each gemm covers several small images at once. A trailing ReLU can be
//! fused in: the forward clamps as it stores the output and the backward
//! masks the incoming gradient with the op's own output.
//!
//! Zero padding only (other padding modes pad first, see `ops::pad2d`);
//! padding may differ per side.

use super::bf16::{self, Bf16Isa};
use super::cpu::{self, Mat, Window};
use super::{direct, winograd};
use crate::geometry::ConvGeometry;
use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};

/// The fixed part of a convolution: sizes, and whether ReLU follows.
#[derive(Debug, Clone, Copy)]
pub struct Conv {
    pub geom: ConvGeometry,
    pub relu: bool,
    /// `training.precision: "bf16"`: the input and weights come rounded to
    /// bf16 (`ops::conv2d_in`), the output gradient is rounded here, the
    /// products summed in f32 (see [`Dims::algorithm`]).
    pub bf16: bool,
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
    fn direct(&self, isa: &'static direct::Isa) -> direct::Shape {
        direct::Shape {
            isa,
            groups: self.groups,
            cg: self.cg,
            og: self.og,
            win: self.win,
        }
    }
    /// The Winograd plan, where it takes this convolution.
    fn winograd(&self) -> Option<winograd::Plan> {
        let k = winograd::kernels()?;
        winograd::takes(k, &self.win, self.groups, self.cg, self.og)
            .then(|| winograd::Plan::new(k, &self.win, self.cg, self.og))
    }
    fn out_shape(&self) -> Shape {
        Shape::from((self.n, self.groups * self.og, self.win.oh, self.win.ow))
    }
    /// Images unfolded side by side for one gemm: as many of a task's as fit
    /// in about 256 KiB (a core's L2 cache holds it with room to spare).
    fn batch(&self) -> usize {
        let per_image = self.k() * self.win.out_len() * 4;
        (256 * 1024 / per_image.max(1)).clamp(1, cpu::IMAGES_PER_TASK)
    }
}

/// How the CPU runs a convolution.
enum Algorithm {
    /// F(4×4, 3×3): 3×3 stride-1 layers with enough channels.
    Winograd(winograd::Plan),
    /// Register tiles over vectors of channels, without the unfolded input.
    Direct(&'static direct::Isa),
    /// The unfolded input (im2col) times the weights (gemm): in f32, or
    /// with bf16 products (`ops::bf16::gemm`).
    Im2col(Option<Bf16Isa>),
}

impl Algorithm {
    fn name(&self) -> String {
        match self {
            Algorithm::Winograd(p) => format!("winograd {}", p.isa_name()),
            Algorithm::Direct(isa) => format!("direct {}", isa.name),
            Algorithm::Im2col(None) => "im2col+gemm".to_string(),
            Algorithm::Im2col(Some(isa)) => format!("im2col+bf16 gemm {}", isa.name()),
        }
    }

    /// The name with how the operands are taken (`rounded`: to bf16,
    /// before f32 kernels).
    fn describe(&self, rounded: bool) -> String {
        match rounded {
            true => format!("{} on bf16-rounded operands", self.name()),
            false => self.name(),
        }
    }

    /// The bf16 products of an im2col convolution, if it has them.
    fn bf16_isa(&self) -> Option<Bf16Isa> {
        match self {
            Algorithm::Im2col(isa) => *isa,
            _ => None,
        }
    }
}

/// `dst (m×n) = [dst +] lhs (m×k) · rhs (k×n)` in f32, or with bf16
/// products on `isa`.
///
/// # Safety
/// As [`cpu::gemm`]; `isa` must be one this CPU runs.
#[allow(clippy::too_many_arguments)]
unsafe fn matmul(
    isa: Option<Bf16Isa>,
    m: usize,
    n: usize,
    k: usize,
    dst: Mat<*mut f32>,
    accumulate: bool,
    lhs: Mat<*const f32>,
    rhs: Mat<*const f32>,
) {
    // SAFETY: this function's contract.
    unsafe {
        match isa {
            Some(isa) => bf16::gemm(isa, m, n, k, dst, accumulate, lhs, rhs),
            None => cpu::gemm(m, n, k, dst, accumulate, lhs, rhs),
        }
    }
}

/// Which pass an algorithm is picked for.
#[derive(Debug, Clone, Copy)]
enum Pass {
    Forward,
    /// The weight and bias gradients, and the input's when `need_dx`.
    Backward {
        need_dx: bool,
    },
}

impl Dims {
    /// The one place the algorithm of a convolution is picked, for either
    /// pass: Winograd where it takes the layer, else the direct kernels
    /// where they take its window and its channels fill their vector lanes
    /// (backward: stride 1 only, where they beat im2col; with the input's
    /// gradient, its channels must fill the lanes too), else im2col. What
    /// the CPU offers and the environment allows is `super::kernels`'s.
    ///
    /// In bf16 (`bf16`), the layers the f32 choice runs through im2col use
    /// bf16 products where those pay (products large enough to repay
    /// packing the operands); Winograd and the direct kernels keep their
    /// f32 kernels, on operands rounded to bf16 (returned `true`): on a
    /// CPU whose bf16 products run at twice the f32 rate (AVX512-BF16),
    /// Winograd's four times fewer multiplications and the direct kernels'
    /// register tiles were faster (`scripts/bench.sh --precision bf16`).
    fn algorithm(&self, pass: Pass, bf16: bool) -> (Algorithm, bool) {
        let f32_choice = self.f32_algorithm(pass);
        if !bf16 {
            return (f32_choice, false);
        }
        if !matches!(f32_choice, Algorithm::Im2col(None)) {
            return (f32_choice, true);
        }
        match super::kernels::get()
            .bf16
            .filter(|_| self.bf16_gemm_pays(pass))
        {
            Some(isa) => (Algorithm::Im2col(Some(isa)), false),
            None => (f32_choice, true),
        }
    }

    /// Whether each product of an im2col pass is large enough for bf16's
    /// packing to pay (measured by `examples/bf16bench.rs`: below 32 rows
    /// or a depth of 64 the f32 kernels were faster).
    fn bf16_gemm_pays(&self, pass: Pass) -> bool {
        let (og, k) = (self.og, self.k());
        let big = |m: usize, depth: usize| m >= 32 && depth >= 64;
        match pass {
            Pass::Forward => big(og, k),
            // dW: og × k over the pixels; dX: k × pixels over og.
            Pass::Backward { need_dx } => big(og, k) && (!need_dx || big(k, og)),
        }
    }

    /// The f32 algorithm.
    fn f32_algorithm(&self, pass: Pass) -> Algorithm {
        if let Some(plan) = self.winograd() {
            return Algorithm::Winograd(plan);
        }
        let direct = direct::isa().filter(|i| i.handles(&self.win) && i.fills_lanes(self.og));
        let direct = match pass {
            Pass::Forward => direct,
            // At stride 2 im2col's backward was as fast or faster (64→128
            // 3×3 on 16×16: 81 against 59 GFLOP/s).
            Pass::Backward { need_dx } => direct.filter(|i| {
                self.win.sh == 1
                    && self.win.sw == 1
                    && (!need_dx || i.fills_lanes_for_input_grad(self.cg))
            }),
        };
        direct.map_or(Algorithm::Im2col(None), Algorithm::Direct)
    }
}

impl Conv {
    fn dims(&self, x: &Layout, w: &Layout) -> Result<Dims> {
        self.dims_of(x.shape().dims4()?, w.shape().dims4()?)
    }

    /// The sizes of a call on an input `(n, c, h, w)` with weights `(o, c/groups, kh, kw)`.
    fn dims_of(
        &self,
        (n, c, h, wd): (usize, usize, usize, usize),
        (o, cg, kh, kw): (usize, usize, usize, usize),
    ) -> Result<Dims> {
        let g = &self.geom;
        if c != g.in_channels || o != g.out_channels || cg * g.groups != c {
            candle_core::bail!(
                "conv2d: input has {c} channels and weight {:?}, expected {} → {} channels in {} groups",
                [o, cg, kh, kw],
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

    /// The algorithms the CPU runs this convolution with on an input of
    /// `[c, h, w]`: forward, and backward (with the input's gradient when
    /// `need_dx`), as `summary` shows them.
    pub fn algorithms(&self, [c, h, w]: [usize; 3], need_dx: bool) -> Result<[String; 2]> {
        let g = &self.geom;
        let weight = (g.out_channels, c / g.groups.max(1), g.kernel.h, g.kernel.w);
        let d = self.dims_of((1, c, h, w), weight)?;
        let name = |pass| {
            let (a, rounded) = d.algorithm(pass, self.bf16);
            a.describe(rounded)
        };
        Ok([name(Pass::Forward), name(Pass::Backward { need_dx })])
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
        let d = self.dims(xl, wl)?;
        let (algorithm, rounded) = d.algorithm(Pass::Forward, self.bf16);
        let _t = crate::profile::scope(|| {
            format!("{} forward [{}]", self.label(), algorithm.describe(rounded))
        });
        // (In bf16 the input and weights come rounded: `ops::conv2d_in`.)
        let mm = algorithm.bf16_isa();
        let (k, p, nb) = (d.k(), d.win.out_len(), d.batch());
        let mut y = cpu::uninit(d.n * d.out_image());
        if let Algorithm::Winograd(plan) = &algorithm {
            let weights = plan.weights(w, false);
            plan.forward(x, &weights, b, self.relu, &mut y);
            return Ok((CpuStorage::F32(y), d.out_shape()));
        }
        if let Algorithm::Direct(isa) = algorithm {
            let packed = direct::Packed::forward(isa, w, d.groups, d.og, d.cg, d.win.kh, d.win.kw);
            let shape = d.direct(isa);
            cpu::par_images(&mut y, d.out_image(), |first, ys| {
                let images = ys.len() / d.out_image();
                let xs = &x[first * d.in_image()..(first + images) * d.in_image()];
                shape.forward(xs, &packed, b, self.relu, ys);
            });
            return Ok((CpuStorage::F32(y), d.out_shape()));
        }
        cpu::par_images(&mut y, d.out_image(), |first, ys| {
            let images = ys.len() / d.out_image();
            cpu::with_scratch([k * nb * p, d.og * nb * p], |[col, out]| {
                for b0 in (0..images).step_by(nb) {
                    let bsz = nb.min(images - b0);
                    let ld = bsz * p;
                    for g in 0..d.groups {
                        for j in 0..bsz {
                            let xi = &x[(first + b0 + j) * d.in_image()..];
                            let xg = &xi[g * d.cg * d.win.in_len()..];
                            cpu::im2col(xg, d.cg, &d.win, &mut col[j * p..], ld);
                        }
                        // out (og × bsz·p) = W_g (og×k) · col (k × bsz·p) [+ bias]
                        if let Some(b) = b {
                            for (row, &bias) in out.chunks_mut(ld).zip(&b[g * d.og..(g + 1) * d.og])
                            {
                                row[..ld].fill(bias);
                            }
                        }
                        let dst = Mat {
                            ptr: out.as_mut_ptr(),
                            rs: ld as isize,
                            cs: 1,
                        };
                        let lhs = Mat {
                            ptr: w[g * d.og * k..].as_ptr(),
                            rs: k as isize,
                            cs: 1,
                        };
                        let rhs = Mat {
                            ptr: col.as_ptr(),
                            rs: ld as isize,
                            cs: 1,
                        };
                        // SAFETY: `out` holds og rows of `ld` (its scratch length is
                        // og·nb·p ≥ og·ld); group g's weights are og rows of k from
                        // g·og·k, inside w's groups·og·k; `col` holds k rows of
                        // `ld` (k·nb·p). The three buffers are distinct.
                        unsafe { matmul(mm, d.og, ld, k, dst, b.is_some(), lhs, rhs) };
                        // Each image's rows to its place in y, through the ReLU.
                        for j in 0..bsz {
                            let yi =
                                &mut ys[(b0 + j) * d.out_image()..(b0 + j + 1) * d.out_image()];
                            for oc in 0..d.og {
                                let src = &out[oc * ld + j * p..oc * ld + (j + 1) * p];
                                let dst = &mut yi[(g * d.og + oc) * p..(g * d.og + oc + 1) * p];
                                if self.relu {
                                    for (d, &s) in dst.iter_mut().zip(src) {
                                        *d = s.max(0.0);
                                    }
                                } else {
                                    dst.copy_from_slice(src);
                                }
                            }
                        }
                    }
                }
            })
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
        let d = self.dims(x.layout(), w.layout())?;
        let (algorithm, rounded) = d.algorithm(Pass::Backward { need_dx }, self.bf16);
        let _t = crate::profile::scope(|| {
            let dx = if need_dx { "" } else { " (no dx)" };
            format!(
                "{} backward{dx} [{}]",
                self.label(),
                algorithm.describe(rounded)
            )
        });
        let mm = algorithm.bf16_isa();
        let (k, p, nb) = (d.k(), d.win.out_len(), d.batch());
        let x = x.contiguous()?;
        let w = w.contiguous()?;
        let dy = dy.contiguous()?;
        let y = y.contiguous()?;
        let o = d.groups * d.og;
        cpu::with_slice(&x, |xs| {
            cpu::with_slice(&w, |ws| {
                cpu::with_slice(&dy, |dys| {
                    cpu::with_slice(&y, |ys| {
                        // In bf16 the output gradient is rounded (every
                        // path, the bias gradient too); the input and
                        // weights came rounded (`ops::conv2d_in`).
                        let dyr;
                        let dys = if self.bf16 {
                            dyr = bf16::round_vec(dys);
                            &dyr[..]
                        } else {
                            dys
                        };
                        if let Algorithm::Winograd(plan) = &algorithm {
                            let weights = plan.weights(ws, need_dx);
                            let mut dx = need_dx.then(|| cpu::uninit(d.n * d.in_image()));
                            let (dw, db) =
                                plan.backward(xs, &weights, ys, dys, self.relu, dx.as_deref_mut());
                            return Ok((
                                dx.map(|v| Tensor::from_vec(v, x.shape(), x.device()))
                                    .transpose()?,
                                Tensor::from_vec(dw, w.shape(), w.device())?,
                                Tensor::from_vec(db, o, w.device())?,
                            ));
                        }
                        let isa = match algorithm {
                            Algorithm::Direct(isa) => Some(isa),
                            _ => None,
                        };
                        let transposed = isa.filter(|_| need_dx).map(|isa| {
                            let (g, o, c) = (d.groups, d.og, d.cg);
                            direct::Packed::transposed(isa, ws, g, o, c, d.win.kh, d.win.kw)
                        });
                        // One task's images: its share of dW and db, and its dx.
                        let dw_len = match isa {
                            Some(isa) => d.direct(isa).weight_grad_len(),
                            None => o * k,
                        };
                        let task = |first: usize, images: usize, mut dx: Option<&mut [f32]>| {
                            let mut dw = vec![0f32; dw_len];
                            let mut db = vec![0f32; o];
                            if let Some(isa) = isa {
                                let (a, b) = (first, first + images);
                                let (ii, oi) = (d.in_image(), d.out_image());
                                d.direct(isa).backward(
                                    &xs[a * ii..b * ii],
                                    &ys[a * oi..b * oi],
                                    &dys[a * oi..b * oi],
                                    self.relu,
                                    transposed.as_ref(),
                                    &mut dw,
                                    &mut db,
                                    dx,
                                );
                                return (dw, db);
                            }
                            if let Some(dx) = dx.as_deref_mut() {
                                // col2im adds into dx.
                                dx.fill(0.0);
                            }
                            cpu::with_scratch([k * nb * p, d.og * nb * p], |[col, dz]| {
                                for b0 in (0..images).step_by(nb) {
                                    let bsz = nb.min(images - b0);
                                    let ld = bsz * p;
                                    for g in 0..d.groups {
                                        // dZ (og × bsz·p): the incoming gradient, masked by the ReLU.
                                        for j in 0..bsz {
                                            let img = first + b0 + j;
                                            for oc in 0..d.og {
                                                let at = img * d.out_image() + (g * d.og + oc) * p;
                                                let dst =
                                                    &mut dz[oc * ld + j * p..oc * ld + (j + 1) * p];
                                                let src = &dys[at..at + p];
                                                if self.relu {
                                                    for ((z, &gv), &v) in
                                                        dst.iter_mut().zip(src).zip(&ys[at..at + p])
                                                    {
                                                        *z = if v > 0.0 { gv } else { 0.0 };
                                                    }
                                                } else {
                                                    dst.copy_from_slice(src);
                                                }
                                            }
                                        }
                                        for (oc, row) in dz.chunks(ld).take(d.og).enumerate() {
                                            db[g * d.og + oc] += row[..ld].iter().sum::<f32>();
                                        }
                                        for j in 0..bsz {
                                            let xi = &xs[(first + b0 + j) * d.in_image()..];
                                            cpu::im2col(
                                                &xi[g * d.cg * d.win.in_len()..],
                                                d.cg,
                                                &d.win,
                                                &mut col[j * p..],
                                                ld,
                                            );
                                        }
                                        // dW_g (og×k) += dZ (og × bsz·p) · colᵀ (bsz·p × k)
                                        let dst = Mat {
                                            ptr: dw[g * d.og * k..].as_mut_ptr(),
                                            rs: k as isize,
                                            cs: 1,
                                        };
                                        let lhs = Mat {
                                            ptr: dz.as_ptr(),
                                            rs: ld as isize,
                                            cs: 1,
                                        };
                                        let rhs = Mat {
                                            ptr: col.as_ptr(),
                                            rs: 1,
                                            cs: ld as isize,
                                        };
                                        // SAFETY: group g's og×k block of `dw` (o·k
                                        // long, or the direct layout's, never both); `dz`
                                        // holds og rows of `ld`, `col` k rows of `ld`
                                        // read transposed; distinct buffers.
                                        unsafe { matmul(mm, d.og, k, ld, dst, true, lhs, rhs) };
                                        if let Some(dx) = dx.as_deref_mut() {
                                            // dcol (k × bsz·p) = W_gᵀ (k×og) · dZ, then fold back per image.
                                            let dst = Mat {
                                                ptr: col.as_mut_ptr(),
                                                rs: ld as isize,
                                                cs: 1,
                                            };
                                            let lhs = Mat {
                                                ptr: ws[g * d.og * k..].as_ptr(),
                                                rs: 1,
                                                cs: k as isize,
                                            };
                                            let rhs = Mat {
                                                ptr: dz.as_ptr(),
                                                rs: ld as isize,
                                                cs: 1,
                                            };
                                            // SAFETY: `col` takes k rows of `ld`; group g's
                                            // weights are read as a k×og transpose of its
                                            // og×k block of `ws`; `dz` holds og rows of
                                            // `ld`; `col` is not read by this product.
                                            unsafe {
                                                matmul(mm, k, ld, d.og, dst, false, lhs, rhs)
                                            };
                                            for j in 0..bsz {
                                                let dxi = &mut dx[(b0 + j) * d.in_image()
                                                    ..(b0 + j + 1) * d.in_image()];
                                                cpu::col2im(
                                                    &col[j * p..],
                                                    d.cg,
                                                    &d.win,
                                                    &mut dxi[g * d.cg * d.win.in_len()..],
                                                    ld,
                                                );
                                            }
                                        }
                                    }
                                }
                            });
                            (dw, db)
                        };
                        let (partials, dx) = if need_dx {
                            let mut dx = cpu::uninit(d.n * d.in_image());
                            let partials =
                                cpu::par_chunks_map(&mut dx, d.in_image(), |first, chunk| {
                                    task(first, chunk.len() / d.in_image(), Some(chunk))
                                });
                            (partials, Some(dx))
                        } else {
                            let partials = cpu::par_map_chunks(d.n, |range| {
                                task(range.start, range.len(), None)
                            });
                            (partials, None)
                        };
                        let mut dw = vec![0f32; dw_len];
                        let mut db = vec![0f32; o];
                        for (pw, pb) in &partials {
                            cpu::add_assign(&mut dw, pw);
                            cpu::add_assign(&mut db, pb);
                        }
                        if let Some(isa) = isa {
                            dw = d.direct(isa).unpack_weight_grad(&dw);
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
