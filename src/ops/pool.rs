//! Max and average pooling on the CPU as candle custom ops, with padding,
//! any stride, and a backward that touches each input once. Max pooling
//! ignores padded positions and routes the gradient to the first maximum of
//! each window (as PyTorch does); average pooling counts padded positions as
//! zeros (PyTorch's `count_include_pad=True`).
//!
//! The windows' row and column ranges depend only on the output position, so
//! they are worked out once per call; the loops over planes then only index.

use super::cpu;
use super::kernels::simd;
use crate::geometry::PoolGeometry;
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use std::ops::Range;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Max,
    Avg,
}

/// One pooling call: the layer's settings, and for max pooling with
/// non-overlapping 2×2 or 3×3 windows whose gradient is wanted, the position
/// of each window's maximum, noted by the forward pass for the backward (so
/// that it need not read the input again).
#[derive(Debug)]
pub struct Pool {
    pub kind: Kind,
    pub geom: PoolGeometry,
    picks: Option<std::sync::OnceLock<Vec<u8>>>,
}

impl Pool {
    /// `record`: note the maxima's positions (the input needs a gradient).
    pub fn new(kind: Kind, geom: PoolGeometry, record: bool) -> Self {
        Pool {
            kind,
            geom,
            picks: record.then(std::sync::OnceLock::new),
        }
    }

    /// The window size `K` of the `K×K`, stride-`K` pooling that has fast
    /// paths, if this is one.
    fn tiled_k(&self, win: &Windows) -> Option<usize> {
        let k = self.geom.kernel.w;
        (win.tiled && self.geom.kernel.h == k && (k == 2 || k == 3)).then_some(k)
    }

    fn tiled_max(&self, win: &Windows) -> Option<usize> {
        self.tiled_k(win).filter(|_| self.kind == Kind::Max)
    }

    fn tiled_avg(&self, win: &Windows) -> Option<usize> {
        self.tiled_k(win).filter(|_| self.kind == Kind::Avg)
    }
}

/// Sizes of one call and the input range of every window row and column.
struct Windows {
    planes: usize,
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    rows: Vec<Range<usize>>,
    cols: Vec<Range<usize>>,
    /// Windows tile the input exactly: stride = kernel, no padding.
    tiled: bool,
}

/// Input indices covered by each of `n_out` windows of `k` at stride `s`
/// over `n` values padded by `p`, clipped to the input.
fn ranges(n: usize, n_out: usize, k: usize, s: usize, p: usize) -> Vec<Range<usize>> {
    (0..n_out)
        .map(|o| {
            let start = (o * s) as isize - p as isize;
            let end = (start + k as isize).min(n as isize);
            start.max(0) as usize..end.max(0) as usize
        })
        .collect()
}

impl Pool {
    fn windows(&self, l: &Layout) -> Result<Windows> {
        let (n, c, h, w) = l.shape().dims4()?;
        let g = &self.geom;
        let (ph, pw) = (h + 2 * g.padding.h, w + 2 * g.padding.w);
        if g.kernel.h > ph || g.kernel.w > pw {
            candle_core::bail!("pool: window {} does not fit input {h}×{w}", g.kernel);
        }
        let oh = (ph - g.kernel.h) / g.stride.h + 1;
        let ow = (pw - g.kernel.w) / g.stride.w + 1;
        Ok(Windows {
            planes: n * c,
            h,
            w,
            oh,
            ow,
            rows: ranges(h, oh, g.kernel.h, g.stride.h, g.padding.h),
            cols: ranges(w, ow, g.kernel.w, g.stride.w, g.padding.w),
            tiled: g.stride == g.kernel && g.padding.h == 0 && g.padding.w == 0,
        })
    }

    fn area(&self) -> f32 {
        (self.geom.kernel.h * self.geom.kernel.w) as f32
    }
}

/// The larger of two values; a NaN in either wins, as in [`argmax`].
#[inline(always)]
fn nan_max(a: f32, b: f32) -> f32 {
    if b > a || b.is_nan() { b } else { a }
}

/// Index (within the plane) of the first maximum of a window; a NaN wins,
/// so NaNs propagate as in PyTorch.
#[inline]
fn argmax(plane: &[f32], w: usize, rows: &Range<usize>, cols: &Range<usize>) -> usize {
    let mut best = rows.start * w + cols.start;
    let mut best_v = f32::NEG_INFINITY;
    for y in rows.clone() {
        let line = &plane[y * w..(y + 1) * w];
        for x in cols.clone() {
            let v = line[x];
            if v > best_v || (v.is_nan() && !best_v.is_nan()) {
                best_v = v;
                best = y * w + x;
            }
        }
    }
    best
}

/// Max pooling of one plane with a `K×K` window at stride `K`, no padding:
/// each output reads its own block. Written without branches, which the
/// data would mispredict.
fn tiled_max_forward<const K: usize>(plane: &[f32], win: &Windows, out: &mut [f32]) {
    let (w, ow) = (win.w, win.ow);
    if K == 2 {
        for (oy, out_row) in out.chunks_exact_mut(ow).take(win.oh).enumerate() {
            let top = &plane[2 * oy * w..][..2 * ow];
            let bottom = &plane[(2 * oy + 1) * w..][..2 * ow];
            for ((t, b), o) in top
                .chunks_exact(2)
                .zip(bottom.chunks_exact(2))
                .zip(out_row.iter_mut())
            {
                *o = nan_max(nan_max(t[0], t[1]), nan_max(b[0], b[1]));
            }
        }
        return;
    }
    for (oy, out_row) in out.chunks_exact_mut(ow).take(win.oh).enumerate() {
        let rows: [&[f32]; K] = std::array::from_fn(|r| &plane[(oy * K + r) * w..][..ow * K]);
        for (ox, o) in out_row.iter_mut().enumerate() {
            let mut m = rows[0][ox * K];
            for row in &rows {
                for &v in &row[ox * K..ox * K + K] {
                    m = nan_max(m, v);
                }
            }
            *o = m;
        }
    }
}

/// Whether `b` wins over `a` when `a` comes first: larger, or the first NaN.
#[inline(always)]
fn later_wins(a: f32, b: f32) -> bool {
    (b > a) | (b.is_nan() & !a.is_nan())
}

/// One row of 2×2 blocks of [`tiled_max_forward_picks`], as a tournament
/// (the top pair, the bottom pair, then the two winners) that gives the
/// same winner as a scan in reading order and vectorises: each block's
/// maximum into `out` and its position (`r·2 + c`) into `picks`.
#[inline(always)]
fn max2x2_picks(top: &[f32], bottom: &[f32], out: &mut [f32], picks: &mut [u8]) {
    for (((t, b), o), p) in top
        .chunks_exact(2)
        .zip(bottom.chunks_exact(2))
        .zip(out.iter_mut())
        .zip(picks.iter_mut())
    {
        let right = later_wins(t[0], t[1]);
        let (m01, i01) = if right { (t[1], 1u8) } else { (t[0], 0u8) };
        let right = later_wins(b[0], b[1]);
        let (m23, i23) = if right { (b[1], 3u8) } else { (b[0], 2u8) };
        let lower = later_wins(m01, m23);
        *o = if lower { m23 } else { m01 };
        *p = if lower { i23 } else { i01 };
    }
}

simd! {
    /// [`tiled_max_forward`] that also notes where in its block (`r·K + c`)
    /// each maximum is: the first, or the first NaN.
    fn tiled_max_forward_picks<const K: usize>(
        plane: &[f32],
        win: &Windows,
        out: &mut [f32],
        picks: &mut [u8],
    ) {
        let (w, ow) = (win.w, win.ow);
        if K == 2 {
            for (oy, (out_row, pick_row)) in out
                .chunks_exact_mut(ow)
                .zip(picks.chunks_exact_mut(ow))
                .take(win.oh)
                .enumerate()
            {
                let top = &plane[2 * oy * w..][..2 * ow];
                let bottom = &plane[(2 * oy + 1) * w..][..2 * ow];
                max2x2_picks(top, bottom, out_row, pick_row);
            }
            return;
        }
        for (oy, (out_row, pick_row)) in out
            .chunks_exact_mut(ow)
            .zip(picks.chunks_exact_mut(ow))
            .take(win.oh)
            .enumerate()
        {
            let rows: [&[f32]; K] =
                std::array::from_fn(|r| &plane[(oy * K + r) * w..][..ow * K]);
            for ox in 0..ow {
                let (mut m, mut at) = (rows[0][ox * K], 0u8);
                for (r, row) in rows.iter().enumerate() {
                    for c in 0..K {
                        let v = row[ox * K + c];
                        let take = (v > m) | (v.is_nan() & !m.is_nan());
                        m = if take { v } else { m };
                        at = if take { (r * K + c) as u8 } else { at };
                    }
                }
                out_row[ox] = m;
                pick_row[ox] = at;
            }
        }
    }
}

simd! {
    /// Gradient of [`tiled_max_forward_picks`]: each block's gradient to the
    /// input the forward picked, zero to the others.
    fn tiled_max_backward_picks<const K: usize>(
        dy: &[f32],
        picks: &[u8],
        win: &Windows,
        dx: &mut [f32],
    ) {
        let (w, ow) = (win.w, win.ow);
        if win.oh * K != win.h || ow * K != w {
            // Inputs past the last whole block get no gradient.
            dx.fill(0.0);
        }
        for oy in 0..win.oh {
            let (g, at) = (&dy[oy * ow..][..ow], &picks[oy * ow..][..ow]);
            let block = &mut dx[oy * K * w..][..K * w];
            for (r, row) in block.chunks_exact_mut(w).enumerate() {
                for (d, (&gv, &a)) in row[..ow * K].chunks_exact_mut(K).zip(g.iter().zip(at)) {
                    // Bit masks rather than a branch the data would mispredict.
                    let bits = gv.to_bits();
                    for (c, dv) in d.iter_mut().enumerate() {
                        let hit = u32::from(usize::from(a) == r * K + c).wrapping_neg();
                        *dv = f32::from_bits(bits & hit);
                    }
                }
            }
        }
    }
}

simd! {
    /// Average pooling of one plane with a `K×K` window at stride `K`, no
    /// padding: the block's rows summed in order, then scaled.
    fn tiled_avg_forward<const K: usize>(
        plane: &[f32],
        win: &Windows,
        out: &mut [f32],
        inv_area: f32,
    ) {
        let (w, ow) = (win.w, win.ow);
        for (oy, out_row) in out.chunks_exact_mut(ow).take(win.oh).enumerate() {
            let rows: [&[f32]; K] =
                std::array::from_fn(|r| &plane[(oy * K + r) * w..][..ow * K]);
            for (ox, o) in out_row.iter_mut().enumerate() {
                let mut s = 0f32;
                for row in &rows {
                    s += row[ox * K..ox * K + K].iter().sum::<f32>();
                }
                *o = s * inv_area;
            }
        }
    }
}

simd! {
    /// Gradient of [`tiled_avg_forward`]: every input of a block gets its
    /// share of the block's gradient.
    fn tiled_avg_backward<const K: usize>(
        dy: &[f32],
        win: &Windows,
        dx: &mut [f32],
        inv_area: f32,
    ) {
        let (w, ow) = (win.w, win.ow);
        if win.oh * K != win.h || ow * K != w {
            // Inputs past the last whole block get no gradient.
            dx.fill(0.0);
        }
        for oy in 0..win.oh {
            let g = &dy[oy * ow..][..ow];
            for r in 0..K {
                let row = &mut dx[(oy * K + r) * w..][..ow * K];
                for (chunk, &gv) in row.chunks_exact_mut(K).zip(g) {
                    chunk.fill(gv * inv_area);
                }
            }
        }
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
        let win = self.windows(l)?;
        let x = cpu::slice(s, l)?;
        let (in_plane, out_plane) = (win.h * win.w, win.oh * win.ow);
        let inv_area = 1.0 / self.area();
        let (k, kind) = (self.geom.kernel.w, self.kind);
        let mut y = cpu::uninit(win.planes * out_plane);
        let (tiled_max, tiled_avg) = (self.tiled_max(&win), self.tiled_avg(&win));
        if let (Some(k), Some(picks)) = (tiled_max, &self.picks) {
            let mut at = vec![0u8; win.planes * out_plane];
            cpu::par_planes_with(&mut y, &mut at, out_plane, |p, out, at| {
                let plane = &x[p * in_plane..(p + 1) * in_plane];
                match k {
                    2 => tiled_max_forward_picks::<2>(plane, &win, out, at),
                    _ => tiled_max_forward_picks::<3>(plane, &win, out, at),
                }
            });
            // A second forward through the same op (none in practice) keeps
            // the first one's picks, which the backward then refuses.
            let _ = picks.set(at);
            let (n, c, _, _) = l.shape().dims4()?;
            return Ok((CpuStorage::F32(y), Shape::from((n, c, win.oh, win.ow))));
        }
        cpu::par_planes(&mut y, out_plane, |p, out| {
            let plane = &x[p * in_plane..(p + 1) * in_plane];
            if let Some(k) = tiled_max {
                match k {
                    2 => tiled_max_forward::<2>(plane, &win, out),
                    _ => tiled_max_forward::<3>(plane, &win, out),
                }
                return;
            }
            if let Some(k) = tiled_avg {
                match k {
                    2 => tiled_avg_forward::<2>(plane, &win, out, inv_area),
                    _ => tiled_avg_forward::<3>(plane, &win, out, inv_area),
                }
                return;
            }
            for (oy, rows) in win.rows.iter().enumerate() {
                let out_row = &mut out[oy * win.ow..(oy + 1) * win.ow];
                if win.tiled && kind == Kind::Max {
                    // The max of the window's input rows, k columns at a time.
                    for (r, yy) in rows.clone().enumerate() {
                        let line = &plane[yy * win.w..yy * win.w + win.ow * k];
                        for (o, chunk) in out_row.iter_mut().zip(line.chunks_exact(k)) {
                            let m = chunk[1..].iter().fold(chunk[0], |a, &b| nan_max(a, b));
                            *o = if r == 0 { m } else { nan_max(*o, m) };
                        }
                    }
                    continue;
                }
                if win.tiled && kind == Kind::Avg {
                    // Sum the window's input rows, k columns at a time.
                    out_row.fill(0.0);
                    for yy in rows.clone() {
                        let line = &plane[yy * win.w..yy * win.w + win.ow * k];
                        for (o, chunk) in out_row.iter_mut().zip(line.chunks_exact(k)) {
                            *o += chunk.iter().sum::<f32>();
                        }
                    }
                    for o in out_row.iter_mut() {
                        *o *= inv_area;
                    }
                    continue;
                }
                for (o, cols) in out_row.iter_mut().zip(&win.cols) {
                    *o = match kind {
                        Kind::Max => plane[argmax(plane, win.w, rows, cols)],
                        Kind::Avg => {
                            let mut s = 0f32;
                            for yy in rows.clone() {
                                s += plane[yy * win.w + cols.start..yy * win.w + cols.end]
                                    .iter()
                                    .sum::<f32>();
                            }
                            s * inv_area
                        }
                    };
                }
            }
        });
        let (n, c, _, _) = l.shape().dims4()?;
        Ok((CpuStorage::F32(y), Shape::from((n, c, win.oh, win.ow))))
    }

    fn bwd(&self, arg: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let _t = crate::profile::scope(|| format!("{} backward", self.name()));
        let arg = arg.contiguous()?;
        let grad = grad.contiguous()?;
        let win = self.windows(arg.layout())?;
        let (in_plane, out_plane) = (win.h * win.w, win.oh * win.ow);
        let inv_area = 1.0 / self.area();
        let (k, kind) = (self.geom.kernel.w, self.kind);
        let tiled_max = self.tiled_max(&win);
        let mut dx = cpu::uninit(win.planes * in_plane);
        if let Some(k) = self.tiled_avg(&win) {
            cpu::with_slice(&grad, |dy| {
                cpu::par_planes(&mut dx, in_plane, |p, dxp| {
                    let dyp = &dy[p * out_plane..(p + 1) * out_plane];
                    match k {
                        2 => tiled_avg_backward::<2>(dyp, &win, dxp, inv_area),
                        _ => tiled_avg_backward::<3>(dyp, &win, dxp, inv_area),
                    }
                });
                Ok(())
            })?;
            return Ok(Some(Tensor::from_vec(dx, arg.shape(), arg.device())?));
        }
        let picks = self.picks.as_ref().and_then(|p| p.get());
        if let (Some(k), Some(picks)) = (tiled_max, picks)
            && picks.len() == win.planes * out_plane
        {
            cpu::with_slice(&grad, |dy| {
                cpu::par_planes(&mut dx, in_plane, |p, dxp| {
                    let dyp = &dy[p * out_plane..(p + 1) * out_plane];
                    let at = &picks[p * out_plane..(p + 1) * out_plane];
                    match k {
                        2 => tiled_max_backward_picks::<2>(dyp, at, &win, dxp),
                        _ => tiled_max_backward_picks::<3>(dyp, at, &win, dxp),
                    }
                });
                Ok(())
            })?;
            return Ok(Some(Tensor::from_vec(dx, arg.shape(), arg.device())?));
        }
        let res = res.contiguous()?;
        cpu::with_slice(&arg, |x| {
            cpu::with_slice(&grad, |dy| {
                cpu::with_slice(&res, |ys| {
                    cpu::par_planes(&mut dx, in_plane, |p, dxp| {
                        let plane = &x[p * in_plane..(p + 1) * in_plane];
                        let dyp = &dy[p * out_plane..(p + 1) * out_plane];
                        if win.tiled && kind == Kind::Max {
                            // Each input is in at most one window: the first
                            // input equal to the window's max (the forward's
                            // output) takes the gradient.
                            let yp = &ys[p * out_plane..(p + 1) * out_plane];
                            dxp.fill(0.0);
                            for (oy, rows) in win.rows.iter().enumerate() {
                                let (g, m) = (
                                    &dyp[oy * win.ow..(oy + 1) * win.ow],
                                    &yp[oy * win.ow..(oy + 1) * win.ow],
                                );
                                for (ox, (&gv, &mv)) in g.iter().zip(m).enumerate() {
                                    let x0 = ox * k;
                                    'window: for yy in rows.clone() {
                                        let at = yy * win.w + x0;
                                        for (i, &v) in plane[at..at + k].iter().enumerate() {
                                            if v == mv || (v.is_nan() && mv.is_nan()) {
                                                dxp[at + i] = gv;
                                                break 'window;
                                            }
                                        }
                                    }
                                }
                            }
                            return;
                        }
                        if win.tiled && kind == Kind::Avg {
                            // Every input inside the tiling gets its window's share.
                            dxp.fill(0.0);
                            for (oy, rows) in win.rows.iter().enumerate() {
                                let g = &dyp[oy * win.ow..(oy + 1) * win.ow];
                                for yy in rows.clone() {
                                    let line = &mut dxp[yy * win.w..yy * win.w + win.ow * k];
                                    for (chunk, &gv) in line.chunks_exact_mut(k).zip(g) {
                                        chunk.fill(gv * inv_area);
                                    }
                                }
                            }
                            return;
                        }
                        dxp.fill(0.0);
                        for (oy, rows) in win.rows.iter().enumerate() {
                            for (ox, cols) in win.cols.iter().enumerate() {
                                let g = dyp[oy * win.ow + ox];
                                match kind {
                                    Kind::Max => dxp[argmax(plane, win.w, rows, cols)] += g,
                                    Kind::Avg => {
                                        let share = g * inv_area;
                                        for yy in rows.clone() {
                                            for v in &mut dxp
                                                [yy * win.w + cols.start..yy * win.w + cols.end]
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
            })
        })?;
        Ok(Some(Tensor::from_vec(dx, arg.shape(), arg.device())?))
    }
}
