//! Building blocks of the CPU kernels: slices out of candle tensors,
//! im2col/col2im, a gemm wrapper and a deterministic parallel loop over
//! images. Nothing here knows about layers.

use candle_core::{CpuStorage, Layout, Result, Storage, Tensor};
use rayon::prelude::*;

/// The contiguous `f32` data of a CPU storage and layout.
pub fn slice<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    let data = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("cnn CPU kernels need contiguous tensors"),
    }
}

/// Calls `f` with the contiguous `f32` data of a CPU tensor.
pub fn with_slice<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> Result<R>) -> Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(s) => f(slice(s, layout)?),
        _ => candle_core::bail!("cnn CPU kernel called on a non-CPU tensor"),
    }
}

/// A contiguous copy of a tensor's data as a `Vec<f32>`.
pub fn to_vec(t: &Tensor) -> Result<Vec<f32>> {
    with_slice(t, |s| Ok(s.to_vec()))
}

/// Images per parallel task. Fixed (not derived from the thread count) so
/// that reductions over a batch add up in the same order on any machine.
pub const IMAGES_PER_TASK: usize = 4;

/// Runs `f(first_image, chunk)` over `out` split into chunks of
/// `IMAGES_PER_TASK` images of `per_image` values each, in parallel.
pub fn par_images<F>(out: &mut [f32], per_image: usize, f: F)
where
    F: Fn(usize, &mut [f32]) + Sync + Send,
{
    if per_image == 0 {
        return;
    }
    out.par_chunks_mut(per_image * IMAGES_PER_TASK)
        .enumerate()
        .for_each(|(i, chunk)| f(i * IMAGES_PER_TASK, chunk));
}

/// Runs `f(plane_index, plane)` over `out` cut into planes of `per_plane`
/// values, in parallel (several planes per task: they are small).
pub fn par_planes<F>(out: &mut [f32], per_plane: usize, f: F)
where
    F: Fn(usize, &mut [f32]) + Sync + Send,
{
    if per_plane == 0 {
        return;
    }
    let per_task = (4096 / per_plane).max(1);
    out.par_chunks_mut(per_plane * per_task)
        .enumerate()
        .for_each(|(t, chunk)| {
            for (j, plane) in chunk.chunks_mut(per_plane).enumerate() {
                f(t * per_task + j, plane);
            }
        });
}

/// [`par_planes`] over two outputs cut alike: `f(plane_index, a_plane, b_plane)`.
pub fn par_planes_with<T, F>(a: &mut [f32], b: &mut [T], per_plane: usize, f: F)
where
    T: Send,
    F: Fn(usize, &mut [f32], &mut [T]) + Sync + Send,
{
    if per_plane == 0 {
        return;
    }
    let per_task = (4096 / per_plane).max(1);
    a.par_chunks_mut(per_plane * per_task)
        .zip(b.par_chunks_mut(per_plane * per_task))
        .enumerate()
        .for_each(|(t, (ca, cb))| {
            for (j, (pa, pb)) in ca
                .chunks_mut(per_plane)
                .zip(cb.chunks_mut(per_plane))
                .enumerate()
            {
                f(t * per_task + j, pa, pb);
            }
        });
}

/// Like [`par_images`], but each chunk also returns a value; the values come
/// back in chunk order (so that summing them is deterministic).
pub fn par_chunks_map<R, F>(out: &mut [f32], per_image: usize, f: F) -> Vec<R>
where
    R: Send,
    F: Fn(usize, &mut [f32]) -> R + Sync + Send,
{
    if per_image == 0 {
        return Vec::new();
    }
    out.par_chunks_mut(per_image * IMAGES_PER_TASK)
        .enumerate()
        .map(|(i, chunk)| f(i * IMAGES_PER_TASK, chunk))
        .collect()
}

/// `Σ x` in 16 interleaved partial sums (which vectorise), added pairwise
/// at the end: the same order on every machine.
pub fn sum(x: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let chunks = x.chunks_exact(16);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for i in 0..16 {
            acc[i] += c[i];
        }
    }
    let mut w = 8;
    while w > 0 {
        for i in 0..w {
            acc[i] += acc[i + w];
        }
        w /= 2;
    }
    acc[0] + tail
}

/// `Σ x²` in f64, in 8 interleaved partial sums (which vectorise) added
/// pairwise at the end: the same order on every machine.
pub fn sum_squares(x: &[f32]) -> f64 {
    let mut acc = [0f64; 8];
    let chunks = x.chunks_exact(8);
    let tail: f64 = chunks
        .remainder()
        .iter()
        .map(|&v| (v as f64) * (v as f64))
        .sum();
    for c in chunks {
        for i in 0..8 {
            acc[i] += (c[i] as f64) * (c[i] as f64);
        }
    }
    let mut w = 4;
    while w > 0 {
        for i in 0..w {
            acc[i] += acc[i + w];
        }
        w /= 2;
    }
    acc[0] + tail
}

/// `acc += x`, element by element.
pub fn add_assign(acc: &mut [f32], x: &[f32]) {
    for (a, b) in acc.iter_mut().zip(x) {
        *a += *b;
    }
}

/// `dst[c·dst_ld + r] = src[r·src_ld + c]` for `r < rows`, `c < cols`: a
/// transpose in 8×8 blocks (in registers where the CPU has AVX), so that
/// both sides of a block stay in L1.
pub fn transpose(
    src: &[f32],
    src_ld: usize,
    rows: usize,
    cols: usize,
    dst: &mut [f32],
    dst_ld: usize,
) {
    const B: usize = 8;
    if rows == 0 || cols == 0 {
        return;
    }
    assert!(
        src.len() >= (rows - 1) * src_ld + cols && dst.len() >= (cols - 1) * dst_ld + rows,
        "transpose: buffers too small"
    );
    #[cfg(target_arch = "x86_64")]
    let avx = super::kernels::get().features.avx;
    for c0 in (0..cols).step_by(B) {
        let cn = B.min(cols - c0);
        for r0 in (0..rows).step_by(B) {
            let rn = B.min(rows - r0);
            #[cfg(target_arch = "x86_64")]
            if avx && rn == B && cn == B {
                // SAFETY: the CPU has AVX, and the assert above keeps the 8
                // rows of 8 read and written inside the buffers.
                unsafe {
                    transpose8x8(
                        src.as_ptr().add(r0 * src_ld + c0),
                        src_ld,
                        dst.as_mut_ptr().add(c0 * dst_ld + r0),
                        dst_ld,
                    )
                };
                continue;
            }
            for r in r0..r0 + rn {
                let row = &src[r * src_ld + c0..][..cn];
                for (k, &v) in row.iter().enumerate() {
                    dst[(c0 + k) * dst_ld + r] = v;
                }
            }
        }
    }
}

/// One 8×8 block of [`transpose`] in AVX registers.
///
/// # Safety
/// The CPU must have AVX; `src` must be readable and `dst` writable for 8
/// rows of 8 values, `src_ld` and `dst_ld` apart.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn transpose8x8(src: *const f32, src_ld: usize, dst: *mut f32, dst_ld: usize) {
    use std::arch::x86_64::*;
    // SAFETY: the caller keeps the 8 rows read and written in bounds; the
    // CPU has AVX (this function's contract).
    unsafe {
        let r: [__m256; 8] = std::array::from_fn(|i| _mm256_loadu_ps(src.add(i * src_ld)));
        // Pairs of rows interleaved, then quadruples, then the 128-bit halves.
        let t = [
            _mm256_unpacklo_ps(r[0], r[1]),
            _mm256_unpackhi_ps(r[0], r[1]),
            _mm256_unpacklo_ps(r[2], r[3]),
            _mm256_unpackhi_ps(r[2], r[3]),
            _mm256_unpacklo_ps(r[4], r[5]),
            _mm256_unpackhi_ps(r[4], r[5]),
            _mm256_unpacklo_ps(r[6], r[7]),
            _mm256_unpackhi_ps(r[6], r[7]),
        ];
        let u = [
            _mm256_shuffle_ps::<0x44>(t[0], t[2]),
            _mm256_shuffle_ps::<0xEE>(t[0], t[2]),
            _mm256_shuffle_ps::<0x44>(t[1], t[3]),
            _mm256_shuffle_ps::<0xEE>(t[1], t[3]),
            _mm256_shuffle_ps::<0x44>(t[4], t[6]),
            _mm256_shuffle_ps::<0xEE>(t[4], t[6]),
            _mm256_shuffle_ps::<0x44>(t[5], t[7]),
            _mm256_shuffle_ps::<0xEE>(t[5], t[7]),
        ];
        for k in 0..4 {
            _mm256_storeu_ps(
                dst.add(k * dst_ld),
                _mm256_permute2f128_ps::<0x20>(u[k], u[k + 4]),
            );
            _mm256_storeu_ps(
                dst.add((k + 4) * dst_ld),
                _mm256_permute2f128_ps::<0x31>(u[k], u[k + 4]),
            );
        }
    }
}

/// Maps chunks of `n` images to partial results in parallel and returns them
/// in chunk order (so that summing them is deterministic).
pub fn par_map_chunks<R, F>(n: usize, f: F) -> Vec<R>
where
    R: Send,
    F: Fn(std::ops::Range<usize>) -> R + Sync + Send,
{
    let chunks = n.div_ceil(IMAGES_PER_TASK);
    (0..chunks)
        .into_par_iter()
        .map(|c| f(c * IMAGES_PER_TASK..((c + 1) * IMAGES_PER_TASK).min(n)))
        .collect()
}

/// Geometry of one 2-D sliding window over a padded input.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub h: usize,
    pub w: usize,
    pub kh: usize,
    pub kw: usize,
    pub sh: usize,
    pub sw: usize,
    pub dh: usize,
    pub dw: usize,
    /// Padding on the top and left (bottom/right padding only shows in the output size).
    pub pt: usize,
    pub pl: usize,
    pub oh: usize,
    pub ow: usize,
}

impl Window {
    pub fn out_len(&self) -> usize {
        self.oh * self.ow
    }
    pub fn in_len(&self) -> usize {
        self.h * self.w
    }
    /// Output rows `y` whose input row `y*sh + ki*dh - pt` lies in `0..h`.
    #[inline]
    fn valid_rows(&self, ki: usize) -> (usize, usize) {
        let off = (ki * self.dh) as isize - self.pt as isize;
        let h = self.h as isize;
        let sh = self.sh as isize;
        let lo = if off >= 0 { 0 } else { ((-off) + sh - 1) / sh };
        let hi = if h - 1 - off < 0 {
            0
        } else {
            (h - 1 - off) / sh + 1
        };
        let lo = (lo as usize).min(self.oh);
        let hi = (hi as usize).min(self.oh).max(lo);
        (lo, hi)
    }

    /// Range of output columns `x` whose input column `x*sw + off` lies in `0..w`.
    #[inline]
    fn valid_cols(&self, off: isize) -> (usize, usize) {
        let w = self.w as isize;
        let sw = self.sw as isize;
        // x*sw + off >= 0  → x >= ceil(-off / sw)
        let lo = if off >= 0 { 0 } else { ((-off) + sw - 1) / sw };
        // x*sw + off <= w-1 → x <= floor((w-1-off)/sw)
        let hi = if w - 1 - off < 0 {
            0
        } else {
            (w - 1 - off) / sw + 1
        };
        let lo = (lo as usize).min(self.ow);
        let hi = (hi as usize).min(self.ow).max(lo);
        (lo, hi)
    }
}

/// Unfolds `channels` planes of one image into `col`, a `(channels·kh·kw) × (oh·ow)`
/// matrix whose rows start `ld` values apart (`ld ≥ oh·ow` leaves room for
/// other images' columns beside it). Every element of the image's columns is
/// written (positions in the padding as zeros), so `col` may hold anything before.
pub fn im2col(x: &[f32], channels: usize, g: &Window, col: &mut [f32], ld: usize) {
    let (p, ow, w) = (g.out_len(), g.ow, g.w);
    let rows = channels * g.kh * g.kw;
    if rows == 0 || p == 0 {
        return;
    }
    assert!(x.len() >= channels * g.in_len() && ld >= p && col.len() >= (rows - 1) * ld + p);
    let (xp, cp) = (x.as_ptr(), col.as_mut_ptr());
    for c in 0..channels {
        for ki in 0..g.kh {
            let (y_lo, y_hi) = g.valid_rows(ki);
            for kj in 0..g.kw {
                let off_x = (kj * g.dw) as isize - g.pl as isize;
                let (lo, hi) = g.valid_cols(off_x);
                let row = ((c * g.kh + ki) * g.kw + kj) * ld;
                // SAFETY: the assert above bounds every row of `col`; rows
                // y_lo..y_hi and columns lo..hi read inside the plane (see
                // valid_rows/valid_cols), so every pointer stays in bounds.
                unsafe {
                    let dst = cp.add(row);
                    // (Zero-length fills are skipped: even they cost a call.)
                    if y_lo > 0 {
                        std::ptr::write_bytes(dst, 0, y_lo * ow);
                    }
                    if y_hi < g.oh {
                        std::ptr::write_bytes(dst.add(y_hi * ow), 0, (g.oh - y_hi) * ow);
                    }
                    for y in y_lo..y_hi {
                        let iy = y * g.sh + ki * g.dh - g.pt;
                        let src = xp.add(c * g.in_len() + iy * w);
                        let d = dst.add(y * ow);
                        if lo > 0 {
                            std::ptr::write_bytes(d, 0, lo);
                        }
                        if hi < ow {
                            std::ptr::write_bytes(d.add(hi), 0, ow - hi);
                        }
                        if g.sw == 1 {
                            let s = src.offset(lo as isize + off_x);
                            std::ptr::copy_nonoverlapping(s, d.add(lo), hi - lo);
                        } else {
                            for xo in lo..hi {
                                *d.add(xo) = *src.offset(xo as isize * g.sw as isize + off_x);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Adds the columns of `col` (rows `ld` apart) back into `channels` planes
/// of `dx` (the adjoint of [`im2col`]).
pub fn col2im(col: &[f32], channels: usize, g: &Window, dx: &mut [f32], ld: usize) {
    let (p, ow, w) = (g.out_len(), g.ow, g.w);
    let rows = channels * g.kh * g.kw;
    if rows == 0 || p == 0 {
        return;
    }
    assert!(dx.len() >= channels * g.in_len() && ld >= p && col.len() >= (rows - 1) * ld + p);
    for c in 0..channels {
        let plane = &mut dx[c * g.in_len()..(c + 1) * g.in_len()];
        for ki in 0..g.kh {
            let (y_lo, y_hi) = g.valid_rows(ki);
            for kj in 0..g.kw {
                let off_x = (kj * g.dw) as isize - g.pl as isize;
                let (lo, hi) = g.valid_cols(off_x);
                let row = ((c * g.kh + ki) * g.kw + kj) * ld;
                for y in y_lo..y_hi {
                    let iy = y * g.sh + ki * g.dh - g.pt;
                    let src = &col[row + y * ow..row + (y + 1) * ow];
                    let dst = &mut plane[iy * w..(iy + 1) * w];
                    if g.sw == 1 {
                        let d0 = (lo as isize + off_x) as usize;
                        add_short(&mut dst[d0..d0 + (hi - lo)], &src[lo..hi]);
                    } else {
                        for xo in lo..hi {
                            dst[(xo as isize * g.sw as isize + off_x) as usize] += src[xo];
                        }
                    }
                }
            }
        }
    }
}

/// `dst += src` for the short rows of small images, eight lanes at a time.
#[inline]
fn add_short(dst: &mut [f32], src: &[f32]) {
    let mut d = dst.chunks_exact_mut(8);
    let mut s = src.chunks_exact(8);
    for (dc, sc) in (&mut d).zip(&mut s) {
        for i in 0..8 {
            dc[i] += sc[i];
        }
    }
    for (dv, sv) in d.into_remainder().iter_mut().zip(s.remainder()) {
        *dv += *sv;
    }
}

/// Makes glibc's malloc keep freed memory for reuse instead of handing it
/// back to the kernel. A training step allocates and frees the same large
/// tensors every time; glibc gave every block over its mmap threshold a
/// mapping of its own and unmapped it on free, so each step's activations
/// and gradients came back as fresh pages for the kernel to fault in and
/// zero (a quarter of a cifar10-cnn step; a third of the CPU time was
/// system time at batch 1024). With no mappings, a heap trimmed only past
/// 1 GiB of free space at its top and grown 64 MiB at a time, the step's
/// memory is reused; peak memory stays what the step needs (+11% RSS on the
/// airbench-shaped net, -13% step time) and goes back at exit. `main`
/// calls it before anything allocates; elsewhere than glibc, a no-op.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes the allocator's settings (a setting it
    // refuses is left as it was); called at start-up.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TOP_PAD, 64 << 20);
    }
}

/// A vector of `n` values that the caller overwrites completely before
/// reading any (gemm outputs, pooled maps): skips zeroing, which costs as
/// much as the work for small layers. candle's own CPU kernels do the same.
#[allow(clippy::uninit_vec)]
pub fn uninit(n: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(n);
    // SAFETY: f32 has no invalid bit patterns and every caller writes each
    // element before the vector is read or handed to candle.
    unsafe { v.set_len(n) };
    v
}

thread_local! {
    /// Per-thread scratch buffers, kept between calls (im2col matrices,
    /// masked gradients): allocating and zeroing them per image cost more
    /// than filling them.
    static SCRATCH: std::cell::RefCell<Vec<Vec<f32>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Calls `f` with `N` scratch buffers of the given lengths. Their contents
/// are unspecified: `f` must write before it reads.
pub fn with_scratch<const N: usize, R>(
    lens: [usize; N],
    f: impl FnOnce([&mut [f32]; N]) -> R,
) -> R {
    let mut bufs: [Vec<f32>; N] = SCRATCH.with(|s| {
        let mut pool = s.borrow_mut();
        std::array::from_fn(|_| pool.pop().unwrap_or_default())
    });
    for (b, &len) in bufs.iter_mut().zip(&lens) {
        if b.len() < len {
            b.resize(len, 0.0);
        }
    }
    let result = {
        let mut it = bufs.iter_mut().zip(lens);
        let slices: [&mut [f32]; N] = std::array::from_fn(|_| {
            let (b, len) = it.next().expect("N buffers");
            &mut b[..len]
        });
        f(slices)
    };
    SCRATCH.with(|s| s.borrow_mut().extend(bufs));
    result
}

/// A matrix operand: pointer, row stride and column stride (in elements).
#[derive(Clone, Copy)]
pub struct Mat<T> {
    pub ptr: T,
    pub rs: isize,
    pub cs: isize,
}

/// `dst (m×n) = [dst +] lhs (m×k) · rhs (k×n)`, single-threaded (callers
/// parallelise over images).
///
/// # Safety
/// The pointers and strides must describe valid, non-overlapping matrices of
/// the given sizes.
pub unsafe fn gemm(
    m: usize,
    n: usize,
    k: usize,
    dst: Mat<*mut f32>,
    accumulate: bool,
    lhs: Mat<*const f32>,
    rhs: Mat<*const f32>,
) {
    if m == 0 || n == 0 {
        return;
    }
    // SAFETY: the caller passes valid, non-overlapping matrices of these
    // sizes (this function's contract); gemm reads and writes only them.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.ptr,
            dst.cs,
            dst.rs,
            accumulate,
            lhs.ptr,
            lhs.cs,
            lhs.rs,
            rhs.ptr,
            rhs.cs,
            rhs.rs,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sum_squares_agrees_with_the_plain_sum_at_every_length() {
        for n in [0, 1, 7, 8, 9, 15, 16, 17, 100, 1003] {
            let x: Vec<f32> = (0..n)
                .map(|i| ((i * 37 % 11) as f32 - 5.0) * 0.25)
                .collect();
            let plain: f64 = x.iter().map(|&v| (v as f64) * (v as f64)).sum();
            // Quarters squared are exact in f64: the order cannot matter.
            assert_eq!(sum_squares(&x), plain, "length {n}");
        }
    }

    #[test]
    fn transpose_matches_the_definition_on_every_edge_case() {
        for (rows, cols, src_ld, dst_ld) in [
            (8, 8, 8, 8),
            (16, 24, 30, 17),
            (13, 7, 7, 13),
            (1, 9, 9, 1),
            (9, 1, 3, 9),
            (32, 400, 400, 40),
        ] {
            let src: Vec<f32> = (0..rows * src_ld).map(|i| i as f32).collect();
            let mut dst = vec![-1f32; cols * dst_ld];
            transpose(&src, src_ld, rows, cols, &mut dst, dst_ld);
            for r in 0..rows {
                for c in 0..cols {
                    assert_eq!(
                        dst[c * dst_ld + r],
                        src[r * src_ld + c],
                        "{rows}x{cols} at {r},{c}"
                    );
                }
            }
            // Nothing past the rows of each destination line is touched.
            for c in 0..cols {
                assert!(
                    dst[c * dst_ld + rows..(c * dst_ld + dst_ld).min(dst.len())]
                        .iter()
                        .all(|&v| v == -1.0)
                );
            }
        }
    }
}
