//! Direct convolution for stride 1 or 2 and dilation 1 on CPUs with AVX-512
//! or AVX2, without the unfolded (im2col) matrix. (`conv` sends only
//! stride-1 layers' backward passes here: at stride 2 im2col's was as fast.)
//!
//! Channels are the vector lanes, 16 to a register, and each kernel keeps a
//! block of results in registers while it walks a reduction, broadcasting
//! the other operand's values straight from memory:
//! * forward: a row of output pixels × output channels, over the input
//!   channels and the kernel window (weights laid out so that the output
//!   channels of one tap sit side by side);
//! * weight gradient: one kernel row × output channels, over every output
//!   pixel of the task's images;
//! * input gradient: a few output pixels' gradients spread over one kernel
//!   row × input channels, over the output channels; added into the input's
//!   pixels, so only the true products are computed (a correlation over a
//!   zero-bordered gradient would multiply mostly zeros on small images).
//!
//! Where fewer than three quarters of the lanes would hold real channels
//! (6 or 9 channels, say), or the stride, dilation or kernel width is one the
//! kernels do not take, `conv` uses im2col and gemm instead. 3×3 stride-1
//! layers with enough channels go to Winograd (`super::winograd`) first.

use super::cpu::{self, Window};

/// Most `f32` lanes of the vectors the kernels use (AVX-512).
const MAX_LANES: usize = 16;

/// One instruction set's kernels and their register tiles.
pub struct Isa {
    pub name: &'static str,
    /// `f32` values in one vector register.
    lanes: usize,
    /// (vectors, pixels, horizontal stride, tile).
    forward: &'static [(usize, usize, usize, ForwardTile)],
    /// (vectors, kernel width, tile).
    weight: &'static [(usize, usize, WeightTile)],
    /// (vectors, kernel width, pixels, tile).
    scatter: &'static [(usize, usize, usize, ScatterTile)],
}

/// The direct kernels for this machine, as [`super::kernels`] chose them
/// (AVX-512, else AVX2 with FMA, else none; `CNN_DIRECT_CONV`).
pub fn isa() -> Option<&'static Isa> {
    #[cfg(target_arch = "x86_64")]
    {
        use super::kernels::TileIsa;
        match super::kernels::get().tiles? {
            TileIsa::Avx512 => Some(&avx512::ISA),
            TileIsa::Avx2 => Some(&avx2::ISA),
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    None
}

impl Isa {
    fn padded(&self, channels: usize) -> usize {
        channels.div_ceil(self.lanes) * self.lanes
    }

    /// Whether `channels` output channels fill enough of their vector lanes
    /// for the forward pass and the weight gradient to beat im2col: three
    /// quarters (LeNet's 6 and OneConv's 9 of 16 lanes ran slower).
    pub fn fills_lanes(&self, channels: usize) -> bool {
        channels > 0 && channels * 4 >= self.padded(channels) * 3
    }

    /// Whether `channels` input channels fill enough lanes for the input
    /// gradient to beat im2col: three eighths (LeNet's 6 of 16 took 700 µs
    /// a micro-batch against 880 for im2col).
    pub fn fills_lanes_for_input_grad(&self, channels: usize) -> bool {
        channels > 0 && channels * 8 >= self.padded(channels) * 3
    }

    /// Whether the kernels take this window (any channel counts): stride 1
    /// or 2 each way, no dilation.
    pub fn handles(&self, win: &Window) -> bool {
        (1..=2).contains(&win.sh)
            && (1..=2).contains(&win.sw)
            && win.dh == 1
            && win.dw == 1
            && self.max_weight_vectors(win.kw).is_some()
            && self.max_scatter_vectors(win.kw).is_some()
    }

    /// Pixels per block for `nv` vectors of channels over rows of `cols`
    /// pixels at horizontal stride `sw`, and the tile: the fewest
    /// register-tile steps per row, the larger block on a tie.
    fn forward_tile(&self, nv: usize, cols: usize, sw: usize) -> (usize, ForwardTile) {
        let mut best: Option<(usize, usize, ForwardTile)> = None;
        for &(v, np, stride, f) in self.forward {
            if v != nv || np > cols || stride != sw {
                continue;
            }
            // A step costs its FMAs plus about two for the weight loads and loop.
            let cost = cols.div_ceil(np) * (nv * np + 2);
            if best.is_none_or(|(c, _, _)| cost < c) {
                best = Some((cost, np, f));
            }
        }
        let (_, np, f) = best.expect("a one-pixel tile exists for every vector count and stride");
        (np, f)
    }

    fn max_forward_vectors(&self) -> usize {
        self.forward.iter().map(|t| t.0).max().unwrap_or(1)
    }

    /// Most vectors of channels the weight-gradient tiles take for a kernel
    /// width (`None`: a width they do not take).
    fn max_weight_vectors(&self, kw: usize) -> Option<usize> {
        self.weight.iter().filter(|t| t.1 == kw).map(|t| t.0).max()
    }

    fn weight_tile(&self, nv: usize, kw: usize) -> WeightTile {
        self.weight
            .iter()
            .find(|&&(v, k, _)| v == nv && k == kw)
            .map(|&(_, _, f)| f)
            .expect("every count up to the most is instantiated")
    }

    fn max_scatter_vectors(&self, kw: usize) -> Option<usize> {
        self.scatter.iter().filter(|t| t.1 == kw).map(|t| t.0).max()
    }

    /// Pixels per block and the tile that spreads `nv` vectors of input
    /// channels over a kernel row of width `kw`.
    fn scatter_tile(&self, nv: usize, kw: usize) -> (usize, ScatterTile) {
        self.scatter
            .iter()
            .find(|&&(v, k, _, _)| v == nv && k == kw)
            .map(|&(_, _, np, f)| (np, f))
            .expect("every count up to the most is instantiated")
    }
}

/// Weights laid out for the kernels: for each group, `[cin][kh][kw][opad]`,
/// the `out` channels of one tap side by side and zeros in the lanes past them.
pub struct Packed {
    data: Vec<f32>,
    cin: usize,
    kh: usize,
    kw: usize,
    out: usize,
    opad: usize,
}

impl Packed {
    /// For the forward pass, from `w: [groups·og][cg][kh][kw]`.
    pub fn forward(
        isa: &Isa,
        w: &[f32],
        groups: usize,
        og: usize,
        cg: usize,
        kh: usize,
        kw: usize,
    ) -> Self {
        let opad = isa.padded(og);
        let taps = kh * kw;
        let mut data = vec![0f32; groups * cg * taps * opad];
        for g in 0..groups {
            let dst = &mut data[g * cg * taps * opad..];
            for o in 0..og {
                let src = &w[(g * og + o) * cg * taps..][..cg * taps];
                for (t, &v) in src.iter().enumerate() {
                    dst[t * opad + o] = v;
                }
            }
        }
        Packed {
            data,
            cin: cg,
            kh,
            kw,
            out: og,
            opad,
        }
    }

    /// For the input gradient: `[og][kh][kw][cpad]`, the input channels of
    /// one output channel's tap side by side.
    pub fn transposed(
        isa: &Isa,
        w: &[f32],
        groups: usize,
        og: usize,
        cg: usize,
        kh: usize,
        kw: usize,
    ) -> Self {
        let cpad = isa.padded(cg);
        let taps = kh * kw;
        let mut data = vec![0f32; groups * og * taps * cpad];
        for g in 0..groups {
            let dst = &mut data[g * og * taps * cpad..];
            for o in 0..og {
                for c in 0..cg {
                    let src = &w[((g * og + o) * cg + c) * taps..][..taps];
                    for (t, &v) in src.iter().enumerate() {
                        dst[(o * taps + t) * cpad + c] = v;
                    }
                }
            }
        }
        Packed {
            data,
            cin: og,
            kh,
            kw,
            out: cg,
            opad: cpad,
        }
    }

    fn group(&self, g: usize) -> &[f32] {
        let len = self.cin * self.kh * self.kw * self.opad;
        &self.data[g * len..(g + 1) * len]
    }
}

/// Valid cross-correlation of one image's group at stride `(sh, sw)`:
/// `out[o][r][s] = bias[o] + Σ w[c][i][j][o] · x[c][r·sh+i][s·sw+j]` for
/// `r < rows`, `s < cols`, through a ReLU if `relu`. `x` holds `p.cin`
/// planes of `ih × iw`; `out` holds `p.out` planes of `rows × cols`.
#[allow(clippy::too_many_arguments)]
fn correlate(
    isa: &Isa,
    x: &[f32],
    (ih, iw): (usize, usize),
    p: &Packed,
    g: usize,
    bias: Option<&[f32]>,
    relu: bool,
    (rows, cols): (usize, usize),
    (sh, sw): (usize, usize),
    out: &mut [f32],
) {
    if rows == 0 || cols == 0 || p.out == 0 {
        return;
    }
    let plane = ih * iw;
    assert!(
        x.len() >= p.cin * plane
            && (rows - 1) * sh + p.kh <= ih
            && (cols - 1) * sw + p.kw <= iw
            && out.len() >= p.out * rows * cols
            && bias.is_none_or(|b| b.len() >= p.out)
    );
    let w = p.group(g);
    let lanes = isa.lanes;
    let vectors = p.opad / lanes;
    let mut v0 = 0;
    while v0 < vectors {
        let nv = (vectors - v0).min(isa.max_forward_vectors());
        let (np, tile) = isa.forward_tile(nv, cols, sw);
        let mut init = [0f32; 4 * MAX_LANES];
        if let Some(b) = bias {
            for (l, v) in init[..nv * lanes].iter_mut().enumerate() {
                *v = b.get(v0 * lanes + l).copied().unwrap_or(0.0);
            }
        }
        let mut acc = [0f32; TILE_MAX * MAX_LANES];
        let channels = v0 * lanes..p.out.min((v0 + nv) * lanes);
        for r in 0..rows {
            let mut s = 0;
            while s < cols {
                // The last block of a row may overlap the one before it.
                let at = s.min(cols - np);
                // SAFETY: the assert above keeps every tap of the block's
                // pixels inside `x`; `w` has `cin·kh·kw` taps of `opad`
                // values, of which the tile reads `nv` vectors from `v0`;
                // `init` and `acc` hold `nv` and `np·nv` vectors.
                unsafe {
                    tile(
                        x.as_ptr().add(r * sh * iw + at * sw),
                        plane,
                        iw,
                        p.cin,
                        p.kh,
                        p.kw,
                        w.as_ptr().add(v0 * lanes),
                        p.opad,
                        init.as_ptr(),
                        acc.as_mut_ptr(),
                    )
                };
                // The tile is pixel-major; the output has a plane per channel.
                let tile_len = np * nv * lanes;
                if relu {
                    for v in &mut acc[..tile_len] {
                        *v = v.max(0.0);
                    }
                }
                let plane = rows * cols;
                cpu::transpose(
                    &acc[..tile_len],
                    nv * lanes,
                    np,
                    channels.len(),
                    &mut out[channels.start * plane + r * cols + at..],
                    plane,
                );
                s += np;
            }
        }
        v0 += nv;
    }
}

/// One image's share of a task: sizes of a group's convolution.
#[derive(Clone, Copy)]
pub struct Shape {
    pub isa: &'static Isa,
    pub groups: usize,
    pub cg: usize,
    pub og: usize,
    pub win: Window,
}

impl Shape {
    fn in_image(&self) -> usize {
        self.groups * self.cg * self.win.in_len()
    }
    fn out_image(&self) -> usize {
        self.groups * self.og * self.win.out_len()
    }
    /// Size of the zero-padded input the output is a valid correlation of.
    fn padded_in(&self) -> (usize, usize) {
        let w = &self.win;
        ((w.oh - 1) * w.sh + w.kh, (w.ow - 1) * w.sw + w.kw)
    }
    fn needs_padding(&self) -> bool {
        self.padded_in() != (self.win.h, self.win.w) || self.win.pt > 0 || self.win.pl > 0
    }

    /// Copies channels `c0..c0+channels` of `x` (one image) into `dst` with the
    /// convolution's zero border.
    fn pad_input(&self, x: &[f32], c0: usize, channels: usize, dst: &mut [f32]) {
        let (ih, iw) = self.padded_in();
        let (h, w) = (self.win.h, self.win.w);
        dst[..channels * ih * iw].fill(0.0);
        for c in 0..channels {
            let src = &x[(c0 + c) * h * w..][..h * w];
            let plane = &mut dst[c * ih * iw..][..ih * iw];
            // Rows and columns that land inside the padded frame (padding
            // past the output's reach is cut off by the output size).
            for y in 0..h.min(ih.saturating_sub(self.win.pt)) {
                let row = &mut plane[(y + self.win.pt) * iw..][..iw];
                let n = w.min(iw.saturating_sub(self.win.pl));
                row[self.win.pl..self.win.pl + n].copy_from_slice(&src[y * w..y * w + n]);
            }
        }
    }

    /// Length of the weight gradient as [`Shape::backward`] adds it up:
    /// `[groups][cg][kh][kw][og rounded up to whole vectors]`.
    pub fn weight_grad_len(&self) -> usize {
        self.groups * self.cg * self.win.kh * self.win.kw * self.isa.padded(self.og)
    }

    /// The weight gradient in candle's layout, `[groups·og][cg][kh][kw]`.
    pub fn unpack_weight_grad(&self, packed: &[f32]) -> Vec<f32> {
        let (og, cg, taps) = (self.og, self.cg, self.win.kh * self.win.kw);
        let opad = self.isa.padded(og);
        let mut out = vec![0f32; self.groups * og * cg * taps];
        for g in 0..self.groups {
            let src = &packed[g * cg * taps * opad..][..cg * taps * opad];
            let dst = &mut out[g * og * cg * taps..][..og * cg * taps];
            cpu::transpose(src, opad, cg * taps, og, dst, cg * taps);
        }
        out
    }

    /// Forward pass of `images` images: `y = relu?(conv(x) + bias)`.
    pub fn forward(
        &self,
        x: &[f32],
        packed: &Packed,
        bias: Option<&[f32]>,
        relu: bool,
        y: &mut [f32],
    ) {
        let images = y.len() / self.out_image();
        let (ih, iw) = self.padded_in();
        let pad = self.needs_padding();
        let plane_out = self.win.out_len();
        cpu::with_scratch([if pad { self.cg * ih * iw } else { 0 }], |[xp]| {
            for img in 0..images {
                let xi = &x[img * self.in_image()..][..self.in_image()];
                let yi = &mut y[img * self.out_image()..][..self.out_image()];
                for g in 0..self.groups {
                    let src: &[f32] = if pad {
                        self.pad_input(xi, g * self.cg, self.cg, xp);
                        xp
                    } else {
                        &xi[g * self.cg * ih * iw..][..self.cg * ih * iw]
                    };
                    correlate(
                        self.isa,
                        src,
                        (ih, iw),
                        packed,
                        g,
                        bias.map(|b| &b[g * self.og..][..self.og]),
                        relu,
                        (self.win.oh, self.win.ow),
                        (self.win.sh, self.win.sw),
                        &mut yi[g * self.og * plane_out..][..self.og * plane_out],
                    );
                }
            }
        });
    }

    /// Backward pass of `images` images: adds their weight and bias
    /// gradients to `dw` (laid out as [`Shape::weight_grad_len`] says) and `db`, and writes their input gradient to `dx`
    /// when given (`transposed` holds the weights for it). `y` is the forward
    /// output, whose zeros mask `dy` when the ReLU is fused.
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &self,
        x: &[f32],
        y: &[f32],
        dy: &[f32],
        relu: bool,
        transposed: Option<&Packed>,
        dw: &mut [f32],
        db: &mut [f32],
        mut dx: Option<&mut [f32]>,
    ) {
        let images = dy.len() / self.out_image();
        let win = &self.win;
        let (og, cg, p) = (self.og, self.cg, win.out_len());
        let (ih, iw) = self.padded_in();
        let (kh, kw) = (win.kh, win.kw);
        let taps = kh * kw;
        let isa = self.isa;
        let lanes = isa.lanes;
        let opad = isa.padded(og);
        let pad = self.needs_padding();
        let xp_len = if pad { images * cg * ih * iw } else { 0 };
        let max_nv = isa
            .max_weight_vectors(kw)
            .expect("handles() checked the kernel width");
        let dw_tile = isa.weight_tile(max_nv, kw);
        let max_scatter = isa
            .max_scatter_vectors(kw)
            .expect("handles() checked the kernel width");
        let cpad = isa.padded(cg);
        // The input gradient of one image, pixel-major with channels in
        // lanes, over the padded input.
        let dxp_len = if dx.is_some() { ih * iw * cpad } else { 0 };
        // dZ has a tail of zero pixels that the last block of the input
        // gradient may read past the end.
        let dzt_len = (images * p + SCATTER_PIXELS) * opad;
        cpu::with_scratch(
            [dzt_len, xp_len, dxp_len, og * p],
            |[dzt, xp, dxp, masked]| {
                dzt[images * p * opad..].fill(0.0);
                for g in 0..self.groups {
                    // dZ, masked by the ReLU: pixel-major with channels in lanes.
                    if opad > og {
                        dzt.fill(0.0);
                    }
                    for img in 0..images {
                        let base = img * self.out_image() + g * og * p;
                        let dzi = &mut dzt[img * p * opad..][..p * opad];
                        let dyi = &dy[base..][..og * p];
                        let src: &[f32] = if relu {
                            let out = &y[base..][..og * p];
                            for ((m, &d), &v) in masked.iter_mut().zip(dyi).zip(out) {
                                *m = if v > 0.0 { d } else { 0.0 };
                            }
                            masked
                        } else {
                            dyi
                        };
                        cpu::transpose(src, p, og, p, dzi, opad);
                        // db: the pixels' sum, a vector of channels at a time.
                        let dbg = &mut db[g * og..][..og];
                        for px in dzi.chunks_exact(opad) {
                            cpu::add_assign(dbg, &px[..og]);
                        }
                    }
                    // This group's input, with its zero border.
                    if pad {
                        for img in 0..images {
                            let xi = &x[img * self.in_image()..][..self.in_image()];
                            self.pad_input(xi, g * cg, cg, &mut xp[img * cg * ih * iw..]);
                        }
                    }
                    let xp = &*xp;
                    let input = |img: usize| -> &[f32] {
                        if pad {
                            &xp[img * cg * ih * iw..][..cg * ih * iw]
                        } else {
                            &x[img * self.in_image() + g * cg * ih * iw..][..cg * ih * iw]
                        }
                    };
                    // dW: one kernel row of `nv` vectors of channels at a time.
                    let _t = crate::profile::scope(|| {
                        let (i, o) = (cg * self.groups, og * self.groups);
                        format!("conv2d {i}→{o} k{kh} backward: dW")
                    });
                    let vectors = opad / lanes;
                    let mut v0 = 0;
                    while v0 < vectors {
                        let nv = (vectors - v0).min(max_nv);
                        let tile = if nv == max_nv {
                            dw_tile
                        } else {
                            isa.weight_tile(nv, kw)
                        };
                        for c in 0..cg {
                            for i in 0..kh {
                                // This tap row's gradient, [kw][opad] in the
                                // group's packed gradient, from vector v0 on.
                                let at = ((g * cg + c) * kh + i) * kw * opad + v0 * lanes;
                                let acc = &mut dw[at..at + (kw - 1) * opad + nv * lanes];
                                for img in 0..images {
                                    let xi = input(img);
                                    // SAFETY: rows i + r·sh (r < oh) and
                                    // columns s·sw + j (s < ow, j < kw) of
                                    // plane c lie in `xi` (ih = (oh-1)·sh +
                                    // kh, iw likewise); `dzt` holds p pixels
                                    // of `opad` values for each image; `acc`
                                    // holds kw rows of nv vectors, opad apart.
                                    unsafe {
                                        tile(
                                            dzt.as_ptr().add(img * p * opad + v0 * lanes),
                                            opad,
                                            xi.as_ptr().add(c * ih * iw + i * iw),
                                            win.sh * iw,
                                            win.sw,
                                            win.oh,
                                            win.ow,
                                            acc.as_mut_ptr(),
                                        )
                                    };
                                }
                            }
                        }
                        v0 += nv;
                    }
                    // dX: the bordered dZ correlated with the flipped kernel,
                    // over the part of the padded input that is the input.
                    drop(_t);
                    let _t = crate::profile::scope(|| {
                        let (i, o) = (cg * self.groups, og * self.groups);
                        format!("conv2d {i}→{o} k{kh} backward: dX")
                    });
                    // dX: each output pixel's gradient spread over its window,
                    // one kernel row at a time, into the padded input's
                    // pixels; then the part that is the input, as planes.
                    if let (Some(dx), Some(wt)) = (dx.as_deref_mut(), transposed) {
                        let w = wt.group(g);
                        let vectors = cpad / lanes;
                        for img in 0..images {
                            dxp.fill(0.0);
                            let mut v0 = 0;
                            while v0 < vectors {
                                let nv = (vectors - v0).min(max_scatter);
                                let (np, tile) = isa.scatter_tile(nv, kw);
                                for r in 0..win.oh {
                                    for s in (0..win.ow).step_by(np) {
                                        let valid = np.min(win.ow - s);
                                        for i in 0..kh {
                                            // SAFETY: dzt holds this image's
                                            // pixels from r·ow+s on, and at
                                            // least `np` more (the zero
                                            // tail); `w` has og·kh·kw taps of
                                            // cpad values; the `valid` pixels'
                                            // windows lie in the padded input
                                            // (ih = (oh-1)·sh + kh, iw likewise).
                                            unsafe {
                                                tile(
                                                    dzt.as_ptr()
                                                        .add((img * p + r * win.ow + s) * opad),
                                                    opad,
                                                    og,
                                                    w.as_ptr().add(i * kw * cpad + v0 * lanes),
                                                    taps * cpad,
                                                    cpad,
                                                    dxp.as_mut_ptr().add(
                                                        ((r * win.sh + i) * iw + s * win.sw) * cpad
                                                            + v0 * lanes,
                                                    ),
                                                    win.sw,
                                                    valid,
                                                )
                                            };
                                        }
                                    }
                                }
                                v0 += nv;
                            }
                            let plane_in = win.in_len();
                            let dst = &mut dx[img * self.in_image() + g * cg * plane_in..]
                                [..cg * plane_in];
                            // With stride 2 the last input rows and
                            // columns may be in no window: no gradient.
                            let rows = win.h.min(ih.saturating_sub(win.pt));
                            let cols = win.w.min(iw.saturating_sub(win.pl));
                            if rows < win.h || cols < win.w {
                                dst.fill(0.0);
                            }
                            for yy in 0..rows {
                                let at = (yy + win.pt) * iw + win.pl;
                                cpu::transpose(
                                    &dxp[at * cpad..],
                                    cpad,
                                    cols,
                                    cg,
                                    &mut dst[yy * win.w..],
                                    plane_in,
                                );
                            }
                        }
                    }
                }
            },
        );
    }
}

/// Most pixels × vectors a forward tile holds in registers (of 32).
const TILE_MAX: usize = 24;

type ForwardTile = unsafe fn(
    *const f32,
    usize,
    usize,
    usize,
    usize,
    usize,
    *const f32,
    usize,
    *const f32,
    *mut f32,
);

type WeightTile = unsafe fn(*const f32, usize, *const f32, usize, usize, usize, usize, *mut f32);

type ScatterTile =
    unsafe fn(*const f32, usize, usize, *const f32, usize, usize, *mut f32, usize, usize);

/// Most output pixels a scatter tile takes: the zero tail of dZ is this long.
const SCATTER_PIXELS: usize = 8;

/// The three kernels for one instruction set, and its [`Isa`] with the
/// register tiles it instantiates. `$v` is the vector type and the
/// functions after it the intrinsics of that width.
#[cfg(target_arch = "x86_64")]
macro_rules! kernels {
    (
        $name:literal, $feature:literal, $isa:ident,
        forward: [$(($fnv:literal, $fnp:literal, $fsw:literal)),* $(,)?],
        weight: [$(($wnv:literal, $wkw:literal)),* $(,)?],
        scatter: [$(($snv:literal, $skw:literal, $snp:literal)),* $(,)?] $(,)?
    ) => {
        use super::{ForwardTile, Isa, ScatterTile, WeightTile};
        use crate::ops::simd::$isa::{self as v, LANES};

        /// `NP` output pixels of one row × `NV` vectors of output channels,
        /// at stride `SW` along the row:
        /// `out[p][v] = init[v] + Σ_{c,i,j} w[c][i][j][v] · x[c·plane + i·iw + j + p·SW]`.
        ///
        /// # Safety
        /// The CPU must have the instruction set and every pointer be valid
        /// for what it reads or writes (`out`: `NP·NV` vectors).
        #[target_feature(enable = $feature)]
        #[allow(clippy::too_many_arguments)]
        unsafe fn forward<const NV: usize, const NP: usize, const SW: usize>(
            x: *const f32,
            plane: usize,
            iw: usize,
            cin: usize,
            kh: usize,
            kw: usize,
            w: *const f32,
            opad: usize,
            init: *const f32,
            out: *mut f32,
        ) {
            // SAFETY: the caller keeps to this function's contract (# Safety).
            unsafe {
                let mut acc: [[v::V; NV]; NP] = [[v::zero(); NV]; NP];
                for v in 0..NV {
                    let b = v::load(init.add(v * LANES));
                    for a in acc.iter_mut() {
                        a[v] = b;
                    }
                }
                let mut wp = w;
                for c in 0..cin {
                    let xc = x.add(c * plane);
                    for i in 0..kh {
                        let xr = xc.add(i * iw);
                        for j in 0..kw {
                            let xj = xr.add(j);
                            let mut wv: [v::V; NV] = [v::zero(); NV];
                            for (v, r) in wv.iter_mut().enumerate() {
                                *r = v::load(wp.add(v * LANES));
                            }
                            for (p, a) in acc.iter_mut().enumerate() {
                                let b = v::splat(*xj.add(p * SW));
                                for v in 0..NV {
                                    a[v] = v::fma(wv[v], b, a[v]);
                                }
                            }
                            wp = wp.add(opad);
                        }
                    }
                }
                for (p, a) in acc.iter().enumerate() {
                    for (v, r) in a.iter().enumerate() {
                        v::store(out.add((p * NV + v) * LANES), *r);
                    }
                }
            }
        }

        /// One kernel row of the weight gradient for `NV` vectors of channels,
        /// `rs` apart between output rows and `sw` between pixels:
        /// `acc[j·opad + v] += Σ_{r,s} dz[(r·ow + s)·opad + v] · x[r·rs + s·sw + j]`.
        ///
        /// # Safety
        /// The CPU must have the instruction set and every pointer be valid
        /// for what it reads or writes (`acc`: `KW` rows of `NV` vectors,
        /// `opad` apart).
        #[target_feature(enable = $feature)]
        #[allow(clippy::too_many_arguments)]
        unsafe fn weight<const NV: usize, const KW: usize>(
            dz: *const f32,
            opad: usize,
            x: *const f32,
            rs: usize,
            sw: usize,
            oh: usize,
            ow: usize,
            acc: *mut f32,
        ) {
            // SAFETY: the caller keeps to this function's contract (# Safety).
            unsafe {
                let mut a: [[v::V; NV]; KW] = [[v::zero(); NV]; KW];
                for (j, row) in a.iter_mut().enumerate() {
                    for (v, r) in row.iter_mut().enumerate() {
                        *r = v::load(acc.add(j * opad + v * LANES));
                    }
                }
                let mut dp = dz;
                for r in 0..oh {
                    let mut xs = x.add(r * rs);
                    for _ in 0..ow {
                        let mut d: [v::V; NV] = [v::zero(); NV];
                        for (v, dv) in d.iter_mut().enumerate() {
                            *dv = v::load(dp.add(v * LANES));
                        }
                        for (j, row) in a.iter_mut().enumerate() {
                            let b = v::splat(*xs.add(j));
                            for v in 0..NV {
                                row[v] = v::fma(d[v], b, row[v]);
                            }
                        }
                        dp = dp.add(opad);
                        xs = xs.add(sw);
                    }
                }
                for (j, row) in a.iter().enumerate() {
                    for (v, r) in row.iter().enumerate() {
                        v::store(acc.add(j * opad + v * LANES), *r);
                    }
                }
            }
        }

        /// The input gradient of `NP` output pixels of one row (at stride
        /// `sw`) over one kernel row, for `NV` vectors of input channels:
        /// `dx[(p·sw + j)·cpad + v] += Σ_o w[o·wstride + j·cpad + v] · dz[p·opad + o]`
        /// for the first `valid` pixels (the others are computed and dropped).
        ///
        /// # Safety
        /// The CPU must have the instruction set, `dz` be readable for `NP`
        /// pixels and `dx` writable for `(valid - 1)·sw + KW` pixels.
        #[target_feature(enable = $feature)]
        #[allow(clippy::too_many_arguments)]
        unsafe fn scatter<const NV: usize, const KW: usize, const NP: usize>(
            dz: *const f32,
            opad: usize,
            og: usize,
            w: *const f32,
            wstride: usize,
            cpad: usize,
            dx: *mut f32,
            sw: usize,
            valid: usize,
        ) {
            // SAFETY: the caller keeps to this function's contract (# Safety).
            unsafe {
                let mut acc: [[[v::V; NV]; NP]; KW] = [[[v::zero(); NV]; NP]; KW];
                let mut wp = w;
                for o in 0..og {
                    let mut b: [v::V; NP] = [v::zero(); NP];
                    for (p, bp) in b.iter_mut().enumerate() {
                        *bp = v::splat(*dz.add(p * opad + o));
                    }
                    for (j, row) in acc.iter_mut().enumerate() {
                        for v in 0..NV {
                            let wv = v::load(wp.add(j * cpad + v * LANES));
                            for (p, a) in row.iter_mut().enumerate() {
                                a[v] = v::fma(wv, b[p], a[v]);
                            }
                        }
                    }
                    wp = wp.add(wstride);
                }
                for (j, row) in acc.iter().enumerate() {
                    for (p, a) in row.iter().enumerate().take(valid) {
                        for (v, r) in a.iter().enumerate() {
                            let at = dx.add((p * sw + j) * cpad + v * LANES);
                            v::store(at, v::add(v::load(at), *r));
                        }
                    }
                }
            }
        }

        pub static ISA: Isa = Isa {
            name: $name,
            lanes: LANES,
            forward: &[$(($fnv, $fnp, $fsw, forward::<$fnv, $fnp, $fsw> as ForwardTile)),*],
            weight: &[$(($wnv, $wkw, weight::<$wnv, $wkw> as WeightTile)),*],
            scatter: &[$(($snv, $skw, $snp, scatter::<$snv, $skw, $snp> as ScatterTile)),*],
        };
    };
}

/// AVX-512: 32 registers of 16 lanes. Tiles of at most 24 accumulators (the
/// rest hold weights and broadcasts), but 25 for the one-vector 5-wide
/// scatter (5 pixels: measured 1-6% faster than 4); a one-pixel forward tile
/// for every vector count; scatter blocks of at most `SCATTER_PIXELS` pixels.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    kernels!(
        "avx512", "avx512f", avx512,
        forward: [
            (1, 24, 1), (1, 16, 1), (1, 12, 1), (1, 8, 1), (1, 6, 1), (1, 4, 1), (1, 3, 1),
            (1, 2, 1), (1, 1, 1),
            (2, 12, 1), (2, 10, 1), (2, 8, 1), (2, 6, 1), (2, 4, 1), (2, 3, 1), (2, 2, 1),
            (2, 1, 1),
            (3, 8, 1), (3, 6, 1), (3, 4, 1), (3, 3, 1), (3, 2, 1), (3, 1, 1),
            (4, 6, 1), (4, 5, 1), (4, 4, 1), (4, 3, 1), (4, 2, 1), (4, 1, 1),
            (1, 24, 2), (1, 16, 2), (1, 12, 2), (1, 8, 2), (1, 6, 2), (1, 4, 2), (1, 3, 2),
            (1, 2, 2), (1, 1, 2),
            (2, 12, 2), (2, 8, 2), (2, 6, 2), (2, 4, 2), (2, 3, 2), (2, 2, 2), (2, 1, 2),
            (3, 8, 2), (3, 6, 2), (3, 4, 2), (3, 3, 2), (3, 2, 2), (3, 1, 2),
            (4, 6, 2), (4, 4, 2), (4, 3, 2), (4, 2, 2), (4, 1, 2),
        ],
        weight: [
            (1, 1), (2, 1), (3, 1), (4, 1),
            (1, 3), (2, 3), (3, 3), (4, 3),
            (1, 5), (2, 5), (3, 5), (4, 5),
            (1, 7), (2, 7), (3, 7),
        ],
        scatter: [
            (1, 1, 8), (2, 1, 8), (3, 1, 6), (4, 1, 6),
            (1, 3, 8), (2, 3, 4), (3, 3, 2), (4, 3, 2),
            (1, 5, 5), (2, 5, 2), (3, 5, 1), (4, 5, 1),
            (1, 7, 3), (2, 7, 1), (3, 7, 1),
        ],
    );
}

/// AVX2 with FMA: 16 registers of 8 lanes, so tiles of at most 12
/// accumulators with room left for the weights and broadcasts (a forward
/// tile takes at most two vectors of channels: wider ones would spill).
#[cfg(target_arch = "x86_64")]
mod avx2 {
    kernels!(
        "avx2", "avx2,fma", avx2,
        forward: [
            (1, 12, 1), (1, 8, 1), (1, 6, 1), (1, 4, 1), (1, 3, 1), (1, 2, 1), (1, 1, 1),
            (2, 6, 1), (2, 5, 1), (2, 4, 1), (2, 3, 1), (2, 2, 1), (2, 1, 1),
            (1, 12, 2), (1, 8, 2), (1, 6, 2), (1, 4, 2), (1, 3, 2), (1, 2, 2), (1, 1, 2),
            (2, 6, 2), (2, 4, 2), (2, 3, 2), (2, 2, 2), (2, 1, 2),
        ],
        weight: [
            (1, 1), (2, 1), (3, 1), (4, 1),
            (1, 3), (2, 3), (3, 3),
            (1, 5), (2, 5),
            (1, 7),
        ],
        scatter: [
            (1, 1, 6), (2, 1, 4), (3, 1, 3), (4, 1, 2),
            (1, 3, 3), (2, 3, 2), (3, 3, 1), (4, 3, 1),
            (1, 5, 2),
            (1, 7, 1),
        ],
    );
}
