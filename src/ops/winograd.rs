//! 3×3 stride-1 convolutions by Winograd's F(4×4, 3×3): each 4×4 block of
//! output pixels (a *tile*) costs 36 multiplications per pair of channels
//! instead of 144.
//!
//! With `d` a 6×6 input tile, `g` a 3×3 kernel and the matrices `Bᵀ`, `G`,
//! `Aᵀ` of Lavin & Gray (2016), one tile of the forward pass is
//! `Y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A`. Summed over the input channels, the
//! elementwise product becomes, for each of the 36 positions ξ of the
//! transformed tile, a matrix product `M[ξ] = V[ξ] · U[ξ]` of the tiles'
//! transformed inputs `V[ξ]: tiles × C` and the transformed weights
//! `U[ξ]: C × K`. Both gradients are the adjoints of that bilinear map:
//! * input: `dd = B [(G g Gᵀ) ⊙ (A dY Aᵀ)] Bᵀ`, a 6×6 patch per tile added
//!   into the input's gradient (neighbouring patches overlap by 2 pixels);
//!   per ξ, `dV[ξ] = Ŷ[ξ] · U[ξ]ᵀ` with `Ŷ = A dY Aᵀ`;
//! * weight: `dg = Gᵀ [Σ_tiles (A dY Aᵀ) ⊙ (Bᵀ d B)] G`; per ξ,
//!   `Mw[ξ] = V[ξ]ᵀ · Ŷ[ξ]`, summed over every tile of the batch before the
//!   one transform back.
//!
//! Channels are the vector lanes, as in [`super::direct`]: the transforms
//! work on vectors of channels, and the three products run through one
//! register-tile kernel that broadcasts one operand from memory. Work is cut
//! into tasks of whole images (how many depends only on the image size), so
//! the weight gradient adds up in the same order whatever the thread count.
//!
//! F(4×4, 3×3) rounds less exactly than the direct sum (about 10⁻⁵ of the
//! output's scale in `f32`, against 10⁻⁶), as in other Winograd
//! implementations; training does not notice. `CNN_WINOGRAD=0` turns it off.

use super::cpu::{self, Window};
use rayon::prelude::*;

/// `G` of F(4×4, 3×3), for the weight transforms (once per call); the tile
/// transforms spell `Bᵀ` and `Aᵀ` out in the kernels.
const G: [[f32; 3]; 6] = [
    [1.0 / 4.0, 0.0, 0.0],
    [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
    [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
    [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
    [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
    [0.0, 0.0, 1.0],
];

/// Positions of a transformed tile.
const XI: usize = 36;

/// Tiles a task aims at: enough rows for the products to run at speed,
/// few enough that its buffers stay in the core's L2 cache.
const TASK_TILES: usize = 128;

/// One instruction set's kernels.
pub struct Kernels {
    name: &'static str,
    lanes: usize,
    /// (vectors, rows, tile) of the product kernel, largest rows first for
    /// each vector count.
    gemm: &'static [(usize, usize, GemmTile)],
    input: TileFn,
    output: OutputFn,
    grad_out: TileFn,
    inverse: TileFn,
}

type GemmTile =
    unsafe fn(usize, *const f32, usize, usize, *const f32, usize, *mut f32, usize, bool);
/// (source, row stride, pixel stride, destination, ξ stride).
type TileFn = unsafe fn(*const f32, usize, usize, *mut f32, usize);
/// (M, ξ stride, destination, row stride, pixel stride, bias, relu).
type OutputFn = unsafe fn(*const f32, usize, *mut f32, usize, usize, *const f32, bool);

/// Turns Winograd off (`false`) or back on for the whole process, as
/// `CNN_WINOGRAD=0` does at start; for benchmarks that time both.
pub fn set_enabled(on: bool) {
    super::kernels::set_winograd(on);
}

/// The Winograd kernels for this machine, or `None` (as
/// [`super::kernels`] chose: no AVX2/AVX-512, `CNN_DIRECT_CONV=0` or
/// `CNN_WINOGRAD=0`, or turned off by [`set_enabled`]).
pub fn kernels() -> Option<&'static Kernels> {
    #[cfg(target_arch = "x86_64")]
    {
        use super::kernels::TileIsa;
        if !super::kernels::winograd() {
            return None;
        }
        match super::kernels::get().tiles? {
            TileIsa::Avx512 => Some(&avx512::KERNELS),
            TileIsa::Avx2 => Some(&avx2::KERNELS),
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    None
}

/// Whether Winograd takes a convolution: 3×3, stride and dilation 1, one
/// group, outputs of at least 4×4, and channel counts that fill at least
/// three quarters of their vector lanes on both sides (the padded lanes are
/// computed like the others).
pub fn takes(k: &Kernels, win: &Window, groups: usize, cin: usize, cout: usize) -> bool {
    let fills = |c: usize| c >= k.lanes && c * 4 >= c.div_ceil(k.lanes) * k.lanes * 3;
    win.kh == 3
        && win.kw == 3
        && win.sh == 1
        && win.sw == 1
        && win.dh == 1
        && win.dw == 1
        && groups == 1
        && win.oh >= 4
        && win.ow >= 4
        && fills(cin)
        && fills(cout)
}

/// The sizes of one convolution, in tiles.
#[derive(Clone, Copy)]
pub struct Plan {
    k: &'static Kernels,
    c: usize,
    o: usize,
    cp: usize,
    op: usize,
    win: Window,
    /// Tile rows and columns.
    th: usize,
    tw: usize,
}

/// Weights transformed for the products: `U[ξ][c][o]`, the output channels
/// padded to whole vectors, and for the input gradient `Uᵀ[ξ][o][c]`.
pub struct Weights {
    u: Vec<f32>,
    ut: Option<Vec<f32>>,
}

impl Plan {
    /// The instruction set of its kernels.
    pub fn isa_name(&self) -> &'static str {
        self.k.name
    }

    pub fn new(k: &'static Kernels, win: &Window, cin: usize, cout: usize) -> Plan {
        let pad = |c: usize| c.div_ceil(k.lanes) * k.lanes;
        Plan {
            k,
            c: cin,
            o: cout,
            cp: pad(cin),
            op: pad(cout),
            win: *win,
            th: win.oh.div_ceil(4),
            tw: win.ow.div_ceil(4),
        }
    }

    fn tiles_per_image(&self) -> usize {
        self.th * self.tw
    }
    fn in_image(&self) -> usize {
        self.c * self.win.in_len()
    }
    fn out_image(&self) -> usize {
        self.o * self.win.out_len()
    }
    /// Images per task (a function of the sizes only).
    pub fn images_per_task(&self) -> usize {
        (TASK_TILES / self.tiles_per_image()).max(1)
    }
    /// The zero-bordered input frame the tiles read: (rows, columns).
    fn frame(&self) -> (usize, usize) {
        (4 * self.th + 2, 4 * self.tw + 2)
    }
    /// Distance between two positions ξ of a `rows × width` transformed
    /// block: a cache line more than the block, so that the 36 values of a
    /// tile do not all fall in one set of the L1 cache.
    fn xi_stride(rows: usize, width: usize) -> usize {
        rows * width + 16
    }

    /// `U` (and `Uᵀ` when `transposed`) from `w: [o][c][3][3]`: `G g Gᵀ`
    /// for every pair of channels, vectorised over the output channels.
    pub fn weights(&self, w: &[f32], transposed: bool) -> Weights {
        let (c, o, cp, op) = (self.c, self.o, self.cp, self.op);
        // [c][3][3][o]: a tap's output channels side by side.
        let mut wt = vec![0f32; c * 9 * o];
        cpu::transpose(w, c * 9, o, c * 9, &mut wt, o);
        let mut u = vec![0f32; XI * c * op];
        let mut t = vec![0f32; 6 * 3 * o];
        for ic in 0..c {
            let g = |i: usize, j: usize| &wt[(ic * 9 + i * 3 + j) * o..][..o];
            // t[a][j] = Σ_i G[a][i] g[i][j]
            for a in 0..6 {
                for j in 0..3 {
                    let dst = &mut t[(a * 3 + j) * o..][..o];
                    dst.fill(0.0);
                    for (i, &k) in G[a].iter().enumerate() {
                        if k != 0.0 {
                            for (d, &v) in dst.iter_mut().zip(g(i, j)) {
                                *d += k * v;
                            }
                        }
                    }
                }
            }
            // U[a][b] = Σ_j t[a][j] G[b][j]
            for a in 0..6 {
                for b in 0..6 {
                    let dst = &mut u[((a * 6 + b) * c + ic) * op..][..o];
                    for j in 0..3 {
                        let k = G[b][j];
                        if k != 0.0 {
                            for (d, &v) in dst.iter_mut().zip(&t[(a * 3 + j) * o..][..o]) {
                                *d += k * v;
                            }
                        }
                    }
                }
            }
        }
        let ut = transposed.then(|| {
            let mut ut = vec![0f32; XI * o * cp];
            for xi in 0..XI {
                cpu::transpose(&u[xi * c * op..], op, c, o, &mut ut[xi * o * cp..], cp);
            }
            ut
        });
        Weights { u, ut }
    }

    /// Copies channels of image `x` (NCHW) into `frame` (`[rows][cols][cp]`)
    /// at the padding offset, zeros elsewhere.
    fn fill_frame(&self, x: &[f32], frame: &mut [f32]) {
        let (fh, fw) = self.frame();
        let (h, w, cp) = (self.win.h, self.win.w, self.cp);
        let (pt, pl) = (self.win.pt.min(fh), self.win.pl.min(fw));
        let rows = h.min(fh - pt);
        let cols = w.min(fw - pl);
        if self.c < cp {
            // The lanes past the channels are zeros too.
            frame[..fh * fw * cp].fill(0.0);
        } else {
            // Only what the copy leaves: the border.
            frame[..pt * fw * cp].fill(0.0);
            frame[(pt + rows) * fw * cp..fh * fw * cp].fill(0.0);
            for y in pt..pt + rows {
                let row = &mut frame[y * fw * cp..][..fw * cp];
                row[..pl * cp].fill(0.0);
                row[(pl + cols) * cp..].fill(0.0);
            }
        }
        for y in 0..rows {
            cpu::transpose(
                &x[y * w..],
                h * w,
                self.c,
                cols,
                &mut frame[((y + self.win.pt) * fw + self.win.pl) * cp..],
                cp,
            );
        }
    }

    /// The transformed inputs of `images` images from `x` into `v`
    /// (`[ξ][tile][cp]`), one frame at a time through `frame`.
    fn transform_inputs(&self, x: &[f32], images: usize, frame: &mut [f32], v: &mut [f32]) {
        let (_, fw) = self.frame();
        let (cp, l) = (self.cp, self.k.lanes);
        let t_all = images * self.tiles_per_image();
        let xs = Self::xi_stride(t_all, cp);
        for img in 0..images {
            self.fill_frame(&x[img * self.in_image()..][..self.in_image()], frame);
            for ty in 0..self.th {
                for tx in 0..self.tw {
                    let t = img * self.tiles_per_image() + ty * self.tw + tx;
                    for c0 in (0..cp).step_by(l) {
                        // SAFETY: the 6×6 pixels from (4ty, 4tx) lie in the
                        // frame; V holds 36 blocks of t_all·cp values.
                        unsafe {
                            (self.k.input)(
                                frame.as_ptr().add(((4 * ty) * fw + 4 * tx) * cp + c0),
                                fw * cp,
                                cp,
                                v.as_mut_ptr().add(t * cp + c0),
                                xs,
                            )
                        };
                    }
                }
            }
        }
    }

    /// `out[ξ] (= or +=) a[ξ] · b[ξ]` for every ξ: `rows × vectors` results
    /// from a reduction over `depth`, `a(row, r) = a[row·a_rs + r·a_ks]`,
    /// `b(r)` the `vectors` vectors at `b[r·b_ks]`; blocks `*_xs` apart.
    #[allow(clippy::too_many_arguments)]
    fn products(
        &self,
        rows: usize,
        vectors: usize,
        depth: usize,
        (a, a_rs, a_ks, a_xs): (&[f32], usize, usize, usize),
        (b, b_ks, b_xs): (&[f32], usize, usize),
        (out, o_rs, o_xs): (&mut [f32], usize, usize),
        accumulate: bool,
    ) {
        let l = self.k.lanes;
        let max_nv = self.k.gemm.iter().map(|t| t.0).max().unwrap_or(1);
        assert!(
            a.len() > (XI - 1) * a_xs + (rows - 1) * a_rs + (depth - 1) * a_ks
                && b.len() >= (XI - 1) * b_xs + (depth - 1) * b_ks + vectors * l
                && out.len() >= (XI - 1) * o_xs + (rows - 1) * o_rs + vectors * l
        );
        for xi in 0..XI {
            let mut v0 = 0;
            while v0 < vectors {
                let nv = (vectors - v0).min(max_nv);
                let mut r0 = 0;
                while r0 < rows {
                    let (r, tile) = self
                        .k
                        .gemm
                        .iter()
                        .filter(|t| t.0 == nv && t.1 <= rows - r0)
                        .map(|t| (t.1, t.2))
                        .next()
                        .expect("a one-row tile for every vector count");
                    // SAFETY: the assert above bounds every read and write.
                    unsafe {
                        tile(
                            depth,
                            a.as_ptr().add(xi * a_xs + r0 * a_rs),
                            a_rs,
                            a_ks,
                            b.as_ptr().add(xi * b_xs + v0 * l),
                            b_ks,
                            out.as_mut_ptr().add(xi * o_xs + r0 * o_rs + v0 * l),
                            o_rs,
                            accumulate,
                        )
                    };
                    r0 += r;
                }
                v0 += nv;
            }
        }
    }

    /// Forward pass of the images in `x` into `y` (NCHW both):
    /// `y = relu?(conv(x) + bias)`.
    pub fn forward(&self, x: &[f32], w: &Weights, bias: Option<&[f32]>, relu: bool, y: &mut [f32]) {
        let mut bias_p = vec![0f32; self.op];
        if let Some(b) = bias {
            bias_p[..self.o].copy_from_slice(&b[..self.o]);
        }
        let per_task = self.images_per_task();
        let (oi, ii) = (self.out_image(), self.in_image());
        y.par_chunks_mut(per_task * oi)
            .enumerate()
            .for_each(|(task, ys)| {
                let images = ys.len() / oi;
                let xs = &x[task * per_task * ii..][..images * ii];
                self.forward_task(xs, images, w, &bias_p, relu, ys);
            });
    }

    fn forward_task(
        &self,
        x: &[f32],
        images: usize,
        w: &Weights,
        bias: &[f32],
        relu: bool,
        y: &mut [f32],
    ) {
        let (fh, fw) = self.frame();
        let (cp, op, l) = (self.cp, self.op, self.k.lanes);
        let t_all = images * self.tiles_per_image();
        let (vx, mx) = (Self::xi_stride(t_all, cp), Self::xi_stride(t_all, op));
        let (oh4, ow4) = (4 * self.th, 4 * self.tw);
        cpu::with_scratch(
            [fh * fw * cp, XI * vx, XI * mx, oh4 * ow4 * op],
            |[frame, v, m, out]| {
                let t = crate::profile::scope(|| "winograd: input transform".to_string());
                self.transform_inputs(x, images, frame, v);
                drop(t);
                let t = crate::profile::scope(|| "winograd: products (forward)".to_string());
                self.products(
                    t_all,
                    op / l,
                    self.c,
                    (v, cp, 1, vx),
                    (&w.u, op, self.c * op),
                    (m, op, mx),
                    false,
                );
                drop(t);
                let _t = crate::profile::scope(|| "winograd: output transform".to_string());
                let plane = self.win.out_len();
                for img in 0..images {
                    for ty in 0..self.th {
                        for tx in 0..self.tw {
                            let t = img * self.tiles_per_image() + ty * self.tw + tx;
                            for o0 in (0..op).step_by(l) {
                                // SAFETY: M holds 36 blocks of t_all·op
                                // values; the 4×4 pixels from (4ty, 4tx) lie
                                // in `out` (4·th × 4·tw pixels of op).
                                unsafe {
                                    (self.k.output)(
                                        m.as_ptr().add(t * op + o0),
                                        mx,
                                        out.as_mut_ptr().add((4 * ty * ow4 + 4 * tx) * op + o0),
                                        ow4 * op,
                                        op,
                                        bias.as_ptr().add(o0),
                                        relu,
                                    )
                                };
                            }
                        }
                    }
                    // The pixel-major block to the image's output planes.
                    let yi = &mut y[img * self.out_image()..][..self.out_image()];
                    for r in 0..self.win.oh {
                        cpu::transpose(
                            &out[r * ow4 * op..],
                            op,
                            self.win.ow,
                            self.o,
                            &mut yi[r * self.win.ow..],
                            plane,
                        );
                    }
                }
            },
        );
    }

    /// Length of the weight gradient as the tasks add it up (`[ξ][c][op]`).
    fn grad_len(&self) -> usize {
        XI * self.c * self.op
    }

    /// Backward pass: returns the weight gradient (`[o][c][3][3]`) and the
    /// bias gradient, and writes the input gradient into `dx` when given.
    /// `y` is the forward output, whose zeros mask `dy` when the ReLU is fused.
    pub fn backward(
        &self,
        x: &[f32],
        w: &Weights,
        y: &[f32],
        dy: &[f32],
        relu: bool,
        dx: Option<&mut [f32]>,
    ) -> (Vec<f32>, Vec<f32>) {
        let per_task = self.images_per_task();
        let (oi, ii) = (self.out_image(), self.in_image());
        let n = dy.len() / oi;
        let tasks = n.div_ceil(per_task);
        let task = |t: usize, dx: Option<&mut [f32]>| {
            let a = t * per_task;
            let b = (a + per_task).min(n);
            self.backward_task(
                &x[a * ii..b * ii],
                w,
                &y[a * oi..b * oi],
                &dy[a * oi..b * oi],
                relu,
                dx,
            )
        };
        let partials: Vec<(Vec<f32>, Vec<f32>)> = match dx {
            Some(dx) => dx
                .par_chunks_mut(per_task * ii)
                .enumerate()
                .map(|(t, d)| task(t, Some(d)))
                .collect(),
            None => (0..tasks).into_par_iter().map(|t| task(t, None)).collect(),
        };
        let mut mw = vec![0f32; self.grad_len()];
        let mut db = vec![0f32; self.o];
        for (pw, pb) in &partials {
            cpu::add_assign(&mut mw, pw);
            cpu::add_assign(&mut db, pb);
        }
        (self.unpack_weight_grad(&mw), db)
    }

    /// `Gᵀ Mw G` for every pair of channels, vectorised over the output
    /// channels, into `[o][c][3][3]`.
    fn unpack_weight_grad(&self, mw: &[f32]) -> Vec<f32> {
        let (c, o, op) = (self.c, self.o, self.op);
        // [c][3][3][o], transposed at the end.
        let mut packed = vec![0f32; c * 9 * o];
        let mut t = vec![0f32; 3 * 6 * o];
        for ic in 0..c {
            let m = |a: usize, b: usize| &mw[((a * 6 + b) * c + ic) * op..][..o];
            // t[i][b] = Σ_a G[a][i] M[a][b]
            for i in 0..3 {
                for b in 0..6 {
                    let dst = &mut t[(i * 6 + b) * o..][..o];
                    dst.fill(0.0);
                    for (a, ga) in G.iter().enumerate() {
                        let k = ga[i];
                        if k != 0.0 {
                            for (d, &v) in dst.iter_mut().zip(m(a, b)) {
                                *d += k * v;
                            }
                        }
                    }
                }
            }
            // dg[i][j] = Σ_b t[i][b] G[b][j]
            for i in 0..3 {
                for j in 0..3 {
                    let dst = &mut packed[(ic * 9 + i * 3 + j) * o..][..o];
                    for b in 0..6 {
                        let k = G[b][j];
                        if k != 0.0 {
                            for (d, &v) in dst.iter_mut().zip(&t[(i * 6 + b) * o..][..o]) {
                                *d += k * v;
                            }
                        }
                    }
                }
            }
        }
        let mut dw = vec![0f32; o * c * 9];
        cpu::transpose(&packed, o, c * 9, o, &mut dw, c * 9);
        dw
    }

    fn backward_task(
        &self,
        x: &[f32],
        w: &Weights,
        y: &[f32],
        dy: &[f32],
        relu: bool,
        dx: Option<&mut [f32]>,
    ) -> (Vec<f32>, Vec<f32>) {
        let images = dy.len() / self.out_image();
        let (fh, fw) = self.frame();
        let (c, cp, op, l) = (self.c, self.cp, self.op, self.k.lanes);
        let t_all = images * self.tiles_per_image();
        let (vx, yx) = (Self::xi_stride(t_all, cp), Self::xi_stride(t_all, op));
        let (oh4, ow4) = (4 * self.th, 4 * self.tw);
        let plane = self.win.out_len();
        let mut mw = vec![0f32; self.grad_len()];
        let mut db = vec![0f32; self.o];
        cpu::with_scratch(
            [
                fh * fw * cp,
                XI * vx,
                XI * yx,
                oh4 * ow4 * op,
                plane * self.o,
            ],
            |[frame, v, yh, dyp, masked]| {
                let t = crate::profile::scope(|| "winograd: dY transform".to_string());
                // Ŷ = A dY Aᵀ per tile, from dY (masked by the ReLU) laid
                // out pixel-major with zeros past the output's edge.
                for img in 0..images {
                    let base = img * self.out_image();
                    let dyi = &dy[base..][..self.out_image()];
                    let src: &[f32] = if relu {
                        let out = &y[base..][..self.out_image()];
                        for ((m, &d), &v) in masked.iter_mut().zip(dyi).zip(out) {
                            *m = if v > 0.0 { d } else { 0.0 };
                        }
                        masked
                    } else {
                        dyi
                    };
                    for (oc, p) in src.chunks_exact(plane).enumerate() {
                        db[oc] += cpu::sum(p);
                    }
                    if self.o < op || self.win.oh < oh4 || self.win.ow < ow4 {
                        // Zeros past the output's edge (and its channels).
                        dyp.fill(0.0);
                    }
                    for r in 0..self.win.oh {
                        cpu::transpose(
                            &src[r * self.win.ow..],
                            plane,
                            self.o,
                            self.win.ow,
                            &mut dyp[r * ow4 * op..],
                            op,
                        );
                    }
                    for ty in 0..self.th {
                        for tx in 0..self.tw {
                            let t = img * self.tiles_per_image() + ty * self.tw + tx;
                            for o0 in (0..op).step_by(l) {
                                // SAFETY: the 4×4 pixels from (4ty, 4tx) lie
                                // in dyp; Ŷ holds 36 blocks of t_all·op.
                                unsafe {
                                    (self.k.grad_out)(
                                        dyp.as_ptr().add((4 * ty * ow4 + 4 * tx) * op + o0),
                                        ow4 * op,
                                        op,
                                        yh.as_mut_ptr().add(t * op + o0),
                                        yx,
                                    )
                                };
                            }
                        }
                    }
                }
                drop(t);
                let t = crate::profile::scope(|| "winograd: input transform".to_string());
                self.transform_inputs(x, images, frame, v);
                drop(t);
                let t = crate::profile::scope(|| "winograd: products (dW)".to_string());
                // Mw[ξ] (c × op) = V[ξ]ᵀ · Ŷ[ξ], over the task's tiles.
                self.products(
                    c,
                    op / l,
                    t_all,
                    (v, 1, cp, vx),
                    (yh, op, yx),
                    (&mut mw, op, c * op),
                    false,
                );
                drop(t);
                let (Some(dx), Some(ut)) = (dx, w.ut.as_ref()) else {
                    return;
                };
                let t = crate::profile::scope(|| "winograd: products (dX)".to_string());
                // dV[ξ] (tiles × cp) = Ŷ[ξ] · Uᵀ[ξ], into V's place.
                self.products(
                    t_all,
                    cp / l,
                    self.o,
                    (yh, op, 1, yx),
                    (ut, cp, self.o * cp),
                    (v, cp, vx),
                    false,
                );
                drop(t);
                let _t = crate::profile::scope(|| "winograd: inverse transform".to_string());
                // B dV Bᵀ per tile, added into the frame, then the part
                // that is the input, as planes.
                let (h, wd) = (self.win.h, self.win.w);
                for img in 0..images {
                    frame[..fh * fw * cp].fill(0.0);
                    for ty in 0..self.th {
                        for tx in 0..self.tw {
                            let t = img * self.tiles_per_image() + ty * self.tw + tx;
                            for c0 in (0..cp).step_by(l) {
                                // SAFETY: as for the input transform.
                                unsafe {
                                    (self.k.inverse)(
                                        v.as_ptr().add(t * cp + c0),
                                        fw * cp,
                                        cp,
                                        frame.as_mut_ptr().add(((4 * ty) * fw + 4 * tx) * cp + c0),
                                        vx,
                                    )
                                };
                            }
                        }
                    }
                    let dxi = &mut dx[img * self.in_image()..][..self.in_image()];
                    let rows = h.min(fh.saturating_sub(self.win.pt));
                    let cols = wd.min(fw.saturating_sub(self.win.pl));
                    if rows < h || cols < wd {
                        // Input pixels no output reaches.
                        dxi.fill(0.0);
                    }
                    for yy in 0..rows {
                        let at = ((yy + self.win.pt) * fw + self.win.pl) * cp;
                        cpu::transpose(&frame[at..], cp, cols, c, &mut dxi[yy * wd..], h * wd);
                    }
                }
            },
        );
        (mw, db)
    }
}

/// The kernels for one instruction set (`$v` the vector type, then the
/// intrinsics of that width).
#[cfg(target_arch = "x86_64")]
macro_rules! kernels {
    (
        $name:literal, $feature:literal, $isa:ident,
        gemm: [$(($nv:literal, $r:literal)),* $(,)?] $(,)?
    ) => {
        use super::{GemmTile, Kernels, OutputFn, TileFn};
        use crate::ops::simd::$isa::{self as v, LANES};

        /// `out[r][v] (= or +=) Σ_k a[r·a_rs + k·a_ks] · b[k·b_ks + v·LANES]`
        /// for `R` rows and `NV` vectors.
        ///
        /// # Safety
        /// The CPU must have the instruction set and the pointers be valid
        /// for what the formula reads and writes.
        #[target_feature(enable = $feature)]
        #[allow(clippy::too_many_arguments)]
        unsafe fn gemm<const NV: usize, const R: usize>(
            depth: usize,
            a: *const f32,
            a_rs: usize,
            a_ks: usize,
            b: *const f32,
            b_ks: usize,
            out: *mut f32,
            o_rs: usize,
            accumulate: bool,
        ) {
            // SAFETY: the caller keeps to this function's contract (# Safety).
            unsafe {
                let mut acc: [[v::V; NV]; R] = [[v::zero(); NV]; R];
                if accumulate {
                    for (r, row) in acc.iter_mut().enumerate() {
                        for (v, x) in row.iter_mut().enumerate() {
                            *x = v::load(out.add(r * o_rs + v * LANES));
                        }
                    }
                }
                let (mut ap, mut bp) = (a, b);
                for _ in 0..depth {
                    let mut bv: [v::V; NV] = [v::zero(); NV];
                    for (v, x) in bv.iter_mut().enumerate() {
                        *x = v::load(bp.add(v * LANES));
                    }
                    for (r, row) in acc.iter_mut().enumerate() {
                        let s = v::splat(*ap.add(r * a_rs));
                        for v in 0..NV {
                            row[v] = v::fma(bv[v], s, row[v]);
                        }
                    }
                    ap = ap.add(a_ks);
                    bp = bp.add(b_ks);
                }
                for (r, row) in acc.iter().enumerate() {
                    for (v, x) in row.iter().enumerate() {
                        v::store(out.add(r * o_rs + v * LANES), *x);
                    }
                }
            }
        }

        #[inline]
        #[target_feature(enable = $feature)]
        fn k(c: f32) -> v::V {
            v::splat(c)
        }

        /// `Bᵀ d` for six values.
        #[inline]
        #[target_feature(enable = $feature)]
        fn bt(d: [v::V; 6]) -> [v::V; 6] {
            [
                v::fma(k(4.0), d[0], v::fma(k(-5.0), d[2], d[4])),
                v::fma(k(-4.0), v::add(d[1], d[2]), v::add(d[3], d[4])),
                v::fma(k(4.0), v::sub(d[1], d[2]), v::sub(d[4], d[3])),
                v::fma(k(2.0), v::sub(d[3], d[1]), v::sub(d[4], d[2])),
                v::fma(k(2.0), v::sub(d[1], d[3]), v::sub(d[4], d[2])),
                v::fma(k(4.0), d[1], v::fma(k(-5.0), d[3], d[5])),
            ]
        }

        /// `B v` for six values (the adjoint of [`bt`]).
        #[inline]
        #[target_feature(enable = $feature)]
        fn b(v: [v::V; 6]) -> [v::V; 6] {
            let s12 = v::add(v[1], v[2]);
            let d12 = v::sub(v[1], v[2]);
            let s34 = v::add(v[3], v[4]);
            let d34 = v::sub(v[3], v[4]);
            [
                v::mul(k(4.0), v[0]),
                v::fma(k(-4.0), v::sub(d12, v[5]), v::mul(k(-2.0), d34)),
                v::sub(v::fma(k(-5.0), v[0], v::mul(k(-4.0), s12)), s34),
                v::fma(k(-5.0), v[5], v::fma(k(2.0), d34, d12)),
                v::add(v::add(v[0], s12), s34),
                v[5],
            ]
        }

        /// `Aᵀ m` for six values (four results).
        #[inline]
        #[target_feature(enable = $feature)]
        fn at(m: [v::V; 6]) -> [v::V; 4] {
            let s12 = v::add(m[1], m[2]);
            let d12 = v::sub(m[1], m[2]);
            let s34 = v::add(m[3], m[4]);
            let d34 = v::sub(m[3], m[4]);
            [
                v::add(v::add(m[0], s12), s34),
                v::fma(k(2.0), d34, d12),
                v::fma(k(4.0), s34, s12),
                v::add(v::fma(k(8.0), d34, d12), m[5]),
            ]
        }

        /// `A y` for four values (six results).
        #[inline]
        #[target_feature(enable = $feature)]
        fn a(y: [v::V; 4]) -> [v::V; 6] {
            let s02 = v::add(y[0], y[2]);
            let s13 = v::add(y[1], y[3]);
            let e02 = v::fma(k(4.0), y[2], y[0]);
            let e13 = v::mul(k(2.0), v::fma(k(4.0), y[3], y[1]));
            [
                y[0],
                v::add(s02, s13),
                v::sub(s02, s13),
                v::add(e02, e13),
                v::sub(e02, e13),
                y[3],
            ]
        }

        /// `V = Bᵀ d B` of the 6×6 pixels at `src` (rows `rs`, pixels `ps`
        /// apart) into the 36 vectors `xs` apart from `dst`.
        #[target_feature(enable = $feature)]
        unsafe fn input(src: *const f32, rs: usize, ps: usize, dst: *mut f32, xs: usize) {
            // SAFETY: the caller keeps to this function's contract (# Safety).
            unsafe {
                let mut t = [[v::zero(); 6]; 6];
                for (i, row) in t.iter_mut().enumerate() {
                    let d: [v::V; 6] = std::array::from_fn(|j| v::load(src.add(i * rs + j * ps)));
                    *row = bt(d);
                }
                for j in 0..6 {
                    let col = bt(std::array::from_fn(|i| t[i][j]));
                    for (i, v) in col.iter().enumerate() {
                        v::store(dst.add((i * 6 + j) * xs), *v);
                    }
                }
            }
        }

        /// `Y = Aᵀ M A` (+ bias, through the ReLU) from the 36 vectors `xs`
        /// apart at `m`, into the 4×4 pixels at `dst`.
        #[target_feature(enable = $feature)]
        unsafe fn output(
            m: *const f32,
            xs: usize,
            dst: *mut f32,
            rs: usize,
            ps: usize,
            bias: *const f32,
            relu: bool,
        ) {
            // SAFETY: the caller keeps to this function's contract (# Safety).
            unsafe {
                let mut t = [[v::zero(); 6]; 4];
                for j in 0..6 {
                    let col = at(std::array::from_fn(|i| v::load(m.add((i * 6 + j) * xs))));
                    for (i, v) in col.iter().enumerate() {
                        t[i][j] = *v;
                    }
                }
                let bias = v::load(bias);
                for (i, row) in t.iter().enumerate() {
                    let o = at(*row);
                    for (j, v) in o.iter().enumerate() {
                        let mut r = v::add(*v, bias);
                        if relu {
                            r = v::max(r, v::zero());
                        }
                        v::store(dst.add(i * rs + j * ps), r);
                    }
                }
            }
        }

        /// `Ŷ = A dY Aᵀ` of the 4×4 pixels at `src` into the 36 vectors
        /// `xs` apart from `dst`.
        #[target_feature(enable = $feature)]
        unsafe fn grad_out(src: *const f32, rs: usize, ps: usize, dst: *mut f32, xs: usize) {
            // SAFETY: the caller keeps to this function's contract (# Safety).
            unsafe {
                let mut t = [[v::zero(); 4]; 6];
                for j in 0..4 {
                    let col = a(std::array::from_fn(|i| v::load(src.add(i * rs + j * ps))));
                    for (i, v) in col.iter().enumerate() {
                        t[i][j] = *v;
                    }
                }
                for (i, row) in t.iter().enumerate() {
                    let r = a(*row);
                    for (j, v) in r.iter().enumerate() {
                        v::store(dst.add((i * 6 + j) * xs), *v);
                    }
                }
            }
        }

        /// `B dV Bᵀ` from the 36 vectors `xs` apart at `src`, added into
        /// the 6×6 pixels at `dst`.
        #[target_feature(enable = $feature)]
        unsafe fn inverse(src: *const f32, rs: usize, ps: usize, dst: *mut f32, xs: usize) {
            // SAFETY: the caller keeps to this function's contract (# Safety).
            unsafe {
                let mut t = [[v::zero(); 6]; 6];
                for j in 0..6 {
                    let col = b(std::array::from_fn(|i| v::load(src.add((i * 6 + j) * xs))));
                    for (i, v) in col.iter().enumerate() {
                        t[i][j] = *v;
                    }
                }
                for (i, row) in t.iter().enumerate() {
                    let r = b(*row);
                    for (j, v) in r.iter().enumerate() {
                        let at = dst.add(i * rs + j * ps);
                        v::store(at, v::add(v::load(at), *v));
                    }
                }
            }
        }

        pub static KERNELS: Kernels = Kernels {
            name: $name,
            lanes: LANES,
            gemm: &[$(($nv, $r, gemm::<$nv, $r> as GemmTile)),*],
            input: input as TileFn,
            output: output as OutputFn,
            grad_out: grad_out as TileFn,
            inverse: inverse as TileFn,
        };
    };
}

/// AVX-512: tiles of at most 24 accumulators of 32 registers.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    kernels!(
        "avx512", "avx512f", avx512,
        gemm: [
            (1, 24), (1, 16), (1, 12), (1, 8), (1, 6), (1, 4), (1, 3), (1, 2), (1, 1),
            (2, 12), (2, 8), (2, 6), (2, 4), (2, 3), (2, 2), (2, 1),
            (3, 8), (3, 6), (3, 4), (3, 3), (3, 2), (3, 1),
            (4, 6), (4, 4), (4, 3), (4, 2), (4, 1),
        ],
    );
}

/// AVX2 with FMA: tiles of at most 12 accumulators of 16 registers.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    kernels!(
        "avx2", "avx2,fma", avx2,
        gemm: [
            (1, 12), (1, 8), (1, 6), (1, 4), (1, 3), (1, 2), (1, 1),
            (2, 6), (2, 4), (2, 3), (2, 2), (2, 1),
            (3, 4), (3, 3), (3, 2), (3, 1),
            (4, 3), (4, 2), (4, 1),
        ],
    );
}
