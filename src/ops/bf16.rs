//! bf16 products accumulated in f32: what `training.precision: "bf16"`
//! runs convolutions and linear layers with.
//!
//! A bf16 is the top half of an f32 (8 exponent bits, 7 mantissa bits), so
//! the product of two bf16 values is exact in f32 and the only rounding is
//! in the sums. [`round`] is round-to-nearest-even, as PyTorch and the CPUs'
//! conversion instructions do.
//!
//! [`gemm`] is `C (+)= A · B` with A and B rounded to bf16 as they are
//! packed, in the layout the dot-product instructions read: pairs of
//! consecutive `k` in one 32-bit word. It runs on
//! * AVX512-BF16 (`VDPBF16PS`): each lane adds `a[2k+1]·b[2k+1]`, then
//!   `a[2k]·b[2k]`, rounding each sum once, with denormal inputs read as
//!   zero and denormal sums flushed to zero (as Intel's manual defines it,
//!   and as measured on AMD Zen 4);
//! * or an emulation of exactly that in scalar code ([`Bf16Isa::Emulated`]),
//!   bit for bit the same (tested against the instruction where the CPU has
//!   it), for testing the path anywhere.
//!
//! Both add the `k` pairs in order, one tile of `C` at a time on one
//! thread, so a result never depends on the thread count.

use super::cpu::Mat;
use std::cell::RefCell;

/// The nearest bf16 to `x` (ties to even), as its 16 bits; NaN stays NaN.
#[inline]
pub fn round(x: f32) -> u16 {
    let b = x.to_bits();
    if x.is_nan() {
        return ((b >> 16) | 0x40) as u16;
    }
    ((b + 0x7fff + ((b >> 16) & 1)) >> 16) as u16
}

/// The f32 a bf16 stands for.
#[inline]
pub fn widen(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// `x` rounded to the nearest bf16, kept as an f32.
#[inline]
pub fn rounded(x: f32) -> f32 {
    widen(round(x))
}

super::kernels::simd! {
    /// `dst[i] = rounded(src[i])`.
    pub fn round_into(src: &[f32], dst: &mut [f32]) {
        for (d, &s) in dst.iter_mut().zip(src) {
            let b = s.to_bits();
            let r = (b.wrapping_add(0x7fff + ((b >> 16) & 1))) & 0xffff_0000;
            // NaN: keep it a (quiet) NaN rather than round its payload.
            *d = if s.is_nan() { f32::from_bits(b | 0x0040_0000) } else { f32::from_bits(r) };
        }
    }
}

/// `src` rounded to bf16, as f32 values (on all threads: chunks of a
/// fixed size, each rounded alike).
pub fn round_vec(src: &[f32]) -> Vec<f32> {
    use rayon::prelude::*;
    const CHUNK: usize = 1 << 15;
    let mut out = super::cpu::uninit(src.len());
    out.par_chunks_mut(CHUNK)
        .zip(src.par_chunks(CHUNK))
        .for_each(|(o, s)| round_into(s, o));
    out
}

/// A tensor rounded to bf16 values, its gradient passed through as it is
/// (the gradient of a master weight is that of its rounded copy, as under
/// PyTorch's autocast).
pub struct Round;

impl candle_core::CustomOp1 for Round {
    fn name(&self) -> &'static str {
        "cnn-round-bf16"
    }

    fn cpu_fwd(
        &self,
        s: &candle_core::CpuStorage,
        l: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let _t = crate::profile::scope(|| "round to bf16".to_string());
        let x = super::cpu::slice(s, l)?;
        Ok((
            candle_core::CpuStorage::F32(round_vec(x)),
            l.shape().clone(),
        ))
    }

    fn bwd(
        &self,
        _x: &candle_core::Tensor,
        _res: &candle_core::Tensor,
        grad: &candle_core::Tensor,
    ) -> candle_core::Result<Option<candle_core::Tensor>> {
        Ok(Some(grad.clone()))
    }
}

/// How the bf16 products run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bf16Isa {
    /// `VDPBF16PS` on 512-bit vectors.
    Avx512Bf16,
    /// The same arithmetic in scalar code: slow, for tests.
    Emulated,
}

impl Bf16Isa {
    pub fn name(self) -> &'static str {
        match self {
            Bf16Isa::Avx512Bf16 => "avx512bf16",
            Bf16Isa::Emulated => "emulated",
        }
    }
}

/// Rows of A per tile.
const MR: usize = 8;
/// 32-bit lanes per vector: the columns of B in one vector.
const LANES: usize = 16;
/// Vectors of columns per tile.
const NV: usize = 3;
/// Columns of B per tile.
const NR: usize = LANES * NV;

thread_local! {
    /// Packed panels of A and B, kept between calls.
    static PACKS: RefCell<(Vec<u32>, Vec<u32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// Two bf16 in a word: `lo` the even `k`, `hi` the odd one.
#[cfg(test)]
fn pair(lo: f32, hi: f32) -> u32 {
    round(lo) as u32 | ((round(hi) as u32) << 16)
}

/// `dst (m×n) = [dst +] lhs (m×k) · rhs (k×n)` with `lhs` and `rhs`
/// rounded to bf16 and the products summed in f32, single-threaded, as
/// `isa` runs it.
///
/// # Safety
/// As [`super::cpu::gemm`]: the pointers and strides must describe valid
/// matrices of the given sizes, `dst` apart from both operands; with
/// `Bf16Isa::Avx512Bf16` the CPU must have AVX512-BF16.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm(
    isa: Bf16Isa,
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
    let kp = k.div_ceil(2);
    let (mp, np) = (m.div_ceil(MR), n.div_ceil(NR));
    PACKS.with(|packs| {
        let mut packs = packs.borrow_mut();
        let (a, b) = &mut *packs;
        a.clear();
        a.resize(mp * kp * MR, 0);
        b.clear();
        b.resize(np * kp * NR, 0);
        // SAFETY: the caller's strides describe an m×k and a k×n matrix.
        unsafe {
            pack_a(lhs, m, k, kp, a);
            pack_b(rhs, k, n, kp, b);
        }
        let mut tile = [0f32; MR * NR];
        for q in 0..mp {
            let rows = MR.min(m - q * MR);
            let ap = &a[q * kp * MR..(q + 1) * kp * MR];
            for p in 0..np {
                let cols = NR.min(n - p * NR);
                let bp = &b[p * kp * NR..(p + 1) * kp * NR];
                // SAFETY: (q·MR, p·NR) lies inside m×n.
                let corner = unsafe {
                    dst.ptr
                        .offset((q * MR) as isize * dst.rs + (p * NR) as isize * dst.cs)
                };
                if rows == MR && cols == NR && dst.cs == 1 {
                    // A whole tile of rows: computed in place.
                    // SAFETY: MR rows of NR values, dst.rs apart, inside dst.
                    unsafe { run_tile(isa, kp, ap, bp, corner, dst.rs, accumulate) };
                    continue;
                }
                // A partial tile, or one of a transposed C: through a buffer.
                for r in 0..MR {
                    for j in 0..NR {
                        tile[r * NR + j] = if accumulate && r < rows && j < cols {
                            // SAFETY: inside the valid rows×cols.
                            unsafe { *corner.offset(r as isize * dst.rs + j as isize * dst.cs) }
                        } else {
                            0.0
                        };
                    }
                }
                // SAFETY: the buffer holds MR rows of NR.
                unsafe { run_tile(isa, kp, ap, bp, tile.as_mut_ptr(), NR as isize, true) };
                for r in 0..rows {
                    for j in 0..cols {
                        // SAFETY: inside the valid rows×cols.
                        unsafe {
                            *corner.offset(r as isize * dst.rs + j as isize * dst.cs) =
                                tile[r * NR + j]
                        };
                    }
                }
            }
        }
    });
}

/// The words of two rounded values: `lo` in the low half.
#[inline(always)]
fn pair_bits(lo: f32, hi: f32) -> u32 {
    let r = |x: f32| {
        let b = x.to_bits();
        if x.is_nan() {
            b | 0x0040_0000
        } else {
            b.wrapping_add(0x7fff + ((b >> 16) & 1))
        }
    };
    (r(lo) >> 16) | (r(hi) & 0xffff_0000)
}

super::kernels::simd! {
    /// `out[j] = pair(lo[j], hi[j])`: two rows of B into one row of words.
    fn pair_rows(lo: &[f32], hi: &[f32], out: &mut [u32]) {
        for ((o, &l), &h) in out.iter_mut().zip(lo).zip(hi) {
            *o = pair_bits(l, h);
        }
    }
}

super::kernels::simd! {
    /// `out[j] = pair(row[2j], row[2j + 1])`: a row of A into words.
    fn pair_adjacent(row: &[f32], out: &mut [u32]) {
        for (o, p) in out.iter_mut().zip(row.chunks_exact(2)) {
            *o = pair_bits(p[0], p[1]);
        }
    }
}

/// Packs `lhs` (m×k) into panels of MR rows: `a[q][kk][r]` the pair
/// `k = 2kk, 2kk+1` of row `q·MR + r`, zero past the matrix.
///
/// # Safety
/// `lhs` must describe a valid m×k matrix.
unsafe fn pack_a(lhs: Mat<*const f32>, m: usize, k: usize, kp: usize, a: &mut [u32]) {
    let mut words = vec![0u32; kp];
    let mut row = vec![0f32; 2 * kp];
    for i in 0..m {
        // SAFETY: row i of m, k values cs apart.
        unsafe {
            let start = lhs.ptr.offset(i as isize * lhs.rs);
            if lhs.cs == 1 {
                row[..k].copy_from_slice(std::slice::from_raw_parts(start, k));
            } else {
                for (t, v) in row[..k].iter_mut().enumerate() {
                    *v = *start.offset(t as isize * lhs.cs);
                }
            }
        }
        row[k..].fill(0.0);
        pair_adjacent(&row, &mut words);
        let (q, r) = (i / MR, i % MR);
        let panel = &mut a[q * kp * MR..];
        for (kk, &w) in words.iter().enumerate() {
            panel[kk * MR + r] = w;
        }
    }
}

/// Packs `rhs` (k×n) into panels of NR columns: `b[p][kk][j]` the pair
/// `k = 2kk, 2kk+1` of column `p·NR + j`, zero past the matrix.
///
/// # Safety
/// `rhs` must describe a valid k×n matrix.
unsafe fn pack_b(rhs: Mat<*const f32>, k: usize, n: usize, kp: usize, b: &mut [u32]) {
    let np = n.div_ceil(NR);
    let zeros = vec![0f32; n];
    let (mut lo, mut hi) = (vec![0f32; n], vec![0f32; n]);
    let mut words = vec![0u32; n];
    // SAFETY: row t of k, n values cs apart.
    let read = |t: usize, out: &mut Vec<f32>| unsafe {
        let start = rhs.ptr.offset(t as isize * rhs.rs);
        if rhs.cs == 1 {
            out.copy_from_slice(std::slice::from_raw_parts(start, n));
        } else {
            for (j, v) in out.iter_mut().enumerate() {
                *v = *start.offset(j as isize * rhs.cs);
            }
        }
    };
    for kk in 0..kp {
        read(2 * kk, &mut lo);
        if 2 * kk + 1 < k {
            read(2 * kk + 1, &mut hi);
            pair_rows(&lo, &hi, &mut words);
        } else {
            pair_rows(&lo, &zeros, &mut words);
        }
        for p in 0..np {
            let cols = NR.min(n - p * NR);
            b[(p * kp + kk) * NR..][..cols].copy_from_slice(&words[p * NR..p * NR + cols]);
        }
    }
}

/// `C (+)= A panel · B panel` for one MR×NR tile at `c` (rows `rs` apart).
///
/// # Safety
/// `c` must be valid for MR rows of NR values `rs` apart; with
/// `Avx512Bf16` the CPU must have AVX512-BF16.
unsafe fn run_tile(
    isa: Bf16Isa,
    kp: usize,
    a: &[u32],
    b: &[u32],
    c: *mut f32,
    rs: isize,
    load: bool,
) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as this function's contract.
        Bf16Isa::Avx512Bf16 => unsafe { avx512::tile(kp, a, b, c, rs, load) },
        #[cfg(not(target_arch = "x86_64"))]
        // SAFETY: as this function's contract.
        Bf16Isa::Avx512Bf16 => unsafe { emulated_tile(kp, a, b, c, rs, load) },
        // SAFETY: as this function's contract.
        Bf16Isa::Emulated => unsafe { emulated_tile(kp, a, b, c, rs, load) },
    }
}

/// A denormal read as (signed) zero.
#[inline]
fn daz(x: f32) -> f32 {
    if x.is_subnormal() {
        0.0f32.copysign(x)
    } else {
        x
    }
}

/// One `VDPBF16PS` lane: `c + a.hi·b.hi`, then `+ a.lo·b.lo`, each sum
/// rounded once to f32 (the products of bf16 are exact in f64), denormal
/// inputs as zero, denormal sums flushed to zero.
#[inline]
pub fn dot_pair(c: f32, a: u32, b: u32) -> f32 {
    let h = |w: u32, hi: bool| daz(widen(if hi { (w >> 16) as u16 } else { w as u16 })) as f64;
    let s = daz(c);
    let s = daz(((s as f64) + h(a, true) * h(b, true)) as f32);
    daz(((s as f64) + h(a, false) * h(b, false)) as f32)
}

/// The tile kernel in scalar code: every lane as [`dot_pair`], over every
/// pair in order.
///
/// # Safety
/// `c` must be valid for MR rows of NR values `rs` apart.
unsafe fn emulated_tile(kp: usize, a: &[u32], b: &[u32], c: *mut f32, rs: isize, load: bool) {
    let mut tile = [0f32; MR * NR];
    for r in 0..MR {
        for j in 0..NR {
            tile[r * NR + j] = if load {
                // SAFETY: inside the tile (this function's contract).
                unsafe { *c.offset(r as isize * rs + j as isize) }
            } else {
                0.0
            };
        }
    }
    for kk in 0..kp {
        let (ar, br) = (&a[kk * MR..(kk + 1) * MR], &b[kk * NR..(kk + 1) * NR]);
        for (r, &aw) in ar.iter().enumerate() {
            for (j, &bw) in br.iter().enumerate() {
                let t = &mut tile[r * NR + j];
                *t = dot_pair(*t, aw, bw);
            }
        }
    }
    for r in 0..MR {
        for j in 0..NR {
            // SAFETY: as above.
            unsafe { *c.offset(r as isize * rs + j as isize) = tile[r * NR + j] };
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{LANES, MR, NR, NV};
    use std::arch::x86_64::*;

    /// `tile (MR×NR) += A panel · B panel` with `VDPBF16PS`: MR×NV
    /// accumulators, each pair of A broadcast to every lane.
    ///
    /// # Safety
    /// The CPU must have AVX512-BF16; `a` holds `kp·MR` words, `b` `kp·NR`.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn tile(kp: usize, a: &[u32], b: &[u32], t: *mut f32, rs: isize, load: bool) {
        assert!(a.len() >= kp * MR && b.len() >= kp * NR);
        // SAFETY: the assert bounds every load; `t` holds MR rows of NR
        // values `rs` apart (the caller's contract).
        unsafe {
            let row_at = |r: usize| t.offset(r as isize * rs);
            let mut acc: [[__m512; NV]; MR] = [[_mm512_setzero_ps(); NV]; MR];
            if load {
                for (r, row) in acc.iter_mut().enumerate() {
                    for (v, x) in row.iter_mut().enumerate() {
                        *x = _mm512_loadu_ps(row_at(r).add(v * LANES));
                    }
                }
            }
            let (mut ap, mut bp) = (a.as_ptr(), b.as_ptr());
            for _ in 0..kp {
                let bv: [__m512bh; NV] = std::array::from_fn(|v| {
                    std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(
                        bp.add(v * LANES) as *const _
                    ))
                });
                for (r, row) in acc.iter_mut().enumerate() {
                    let s: __m512bh = std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(
                        *ap.add(r) as i32,
                    ));
                    for v in 0..NV {
                        row[v] = _mm512_dpbf16_ps(row[v], s, bv[v]);
                    }
                }
                ap = ap.add(MR);
                bp = bp.add(NR);
            }
            for (r, row) in acc.iter().enumerate() {
                for (v, x) in row.iter().enumerate() {
                    _mm512_storeu_ps(row_at(r).add(v * LANES), *x);
                }
            }
        }
    }

    /// `VDPBF16PS` of one vector, for the test against [`super::dot_pair`].
    ///
    /// # Safety
    /// The CPU must have AVX512-BF16.
    #[cfg(test)]
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn dot16(c: &[f32; 16], a: &[u32; 16], b: &[u32; 16]) -> [f32; 16] {
        // SAFETY: 16 values each way.
        unsafe {
            let va = std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(
                a.as_ptr() as *const _
            ));
            let vb = std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(
                b.as_ptr() as *const _
            ));
            let r = _mm512_dpbf16_ps(_mm512_loadu_ps(c.as_ptr()), va, vb);
            let mut out = [0f32; 16];
            _mm512_storeu_ps(out.as_mut_ptr(), r);
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn rounding_is_to_nearest_even_and_keeps_nan_and_infinity() {
        assert_eq!(round(1.0), 0x3f80);
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: to even (1).
        assert_eq!(widen(round(1.0 + 2f32.powi(-8))), 1.0);
        // 1 + 3·2^-8 is halfway between 1 + 2^-7 and 1 + 2^-6: to even.
        assert_eq!(widen(round(1.0 + 3.0 * 2f32.powi(-8))), 1.0 + 2f32.powi(-6));
        assert_eq!(
            widen(round(1.0 + 2f32.powi(-8) + 2f32.powi(-20))),
            1.0 + 2f32.powi(-7)
        );
        assert!(widen(round(f32::NAN)).is_nan());
        assert_eq!(widen(round(f32::INFINITY)), f32::INFINITY);
        assert_eq!(widen(round(f32::MAX)), f32::INFINITY);
        let xs: Vec<f32> = (0..1000).map(|i| (i as f32 - 500.0) * 0.0137).collect();
        let v = round_vec(&xs);
        for (a, b) in xs.iter().zip(&v) {
            assert_eq!(rounded(*a).to_bits(), b.to_bits());
        }
    }

    fn value(r: &mut rand_chacha::ChaCha8Rng, exponents: std::ops::Range<i32>) -> f32 {
        let m = 1.0 + r.random::<f32>();
        let s = if r.random::<bool>() { -1.0 } else { 1.0 };
        s * m * 2f32.powi(r.random_range(exponents))
    }

    /// The emulation is the instruction, bit for bit, denormals included.
    #[test]
    fn the_emulated_dot_pair_is_vdpbf16ps_bit_for_bit() {
        if !super::super::kernels::get().features.avx512_bf16 {
            eprintln!("no AVX512-BF16 here: the emulation is checked on the CPUs that have it");
            return;
        }
        let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(16);
        for range in [-20..20, -150..128] {
            for _ in 0..20_000 {
                let mut c = [0f32; 16];
                let (mut a, mut b) = ([0u32; 16], [0u32; 16]);
                for i in 0..16 {
                    c[i] = value(&mut r, range.clone());
                    a[i] = pair(value(&mut r, range.clone()), value(&mut r, range.clone()));
                    b[i] = pair(value(&mut r, range.clone()), value(&mut r, range.clone()));
                }
                // SAFETY: the CPU has AVX512-BF16 (checked above).
                let hw = unsafe { avx512::dot16(&c, &a, &b) };
                for i in 0..16 {
                    let em = dot_pair(c[i], a[i], b[i]);
                    assert!(
                        em.to_bits() == hw[i].to_bits() || (em.is_nan() && hw[i].is_nan()),
                        "c {} a {:08x} b {:08x}: instruction {} emulation {}",
                        c[i],
                        a[i],
                        b[i],
                        hw[i],
                        em
                    );
                }
            }
        }
    }

    /// `gemm` against a plain triple loop over the rounded operands (f64
    /// sums: close, not equal), at sizes that leave partial tiles, odd `k`,
    /// transposed strides and accumulation; the two ISAs agree exactly.
    #[test]
    fn gemm_computes_bf16_products_with_f32_sums_on_every_isa() {
        let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let hw = super::super::kernels::get().features.avx512_bf16;
        for (m, n, k) in [
            (1, 1, 1),
            (6, 25, 150),
            (9, 49, 7),
            (16, 100, 64),
            (33, 17, 301),
        ] {
            let a: Vec<f32> = (0..m * k).map(|_| r.random_range(-1.0..1.0)).collect();
            let b: Vec<f32> = (0..k * n).map(|_| r.random_range(-1.0..1.0)).collect();
            let c0: Vec<f32> = (0..m * n).map(|_| r.random_range(-1.0..1.0)).collect();
            let want = |acc: bool| -> Vec<f64> {
                let mut out = vec![0f64; m * n];
                for i in 0..m {
                    for j in 0..n {
                        let mut s = if acc { c0[i * n + j] as f64 } else { 0.0 };
                        for t in 0..k {
                            // A read transposed: a[t][i] of a k×m matrix.
                            s += rounded(a[t * m + i]) as f64 * rounded(b[t * n + j]) as f64;
                        }
                        out[i * n + j] = s;
                    }
                }
                out
            };
            let run = |isa: Bf16Isa, acc: bool| -> Vec<f32> {
                let mut c = c0.clone();
                // SAFETY: the buffers have the sizes the strides describe.
                unsafe {
                    gemm(
                        isa,
                        m,
                        n,
                        k,
                        Mat {
                            ptr: c.as_mut_ptr(),
                            rs: n as isize,
                            cs: 1,
                        },
                        acc,
                        Mat {
                            ptr: a.as_ptr(),
                            rs: 1,
                            cs: m as isize,
                        },
                        Mat {
                            ptr: b.as_ptr(),
                            rs: n as isize,
                            cs: 1,
                        },
                    )
                };
                c
            };
            for acc in [false, true] {
                let w = want(acc);
                let e = run(Bf16Isa::Emulated, acc);
                for (x, y) in e.iter().zip(&w) {
                    assert!(
                        (*x as f64 - y).abs() <= 1e-5 * (1.0 + y.abs()) * (k as f64).sqrt(),
                        "{m}×{n}×{k}: {x} vs {y}"
                    );
                }
                if hw {
                    let h = run(Bf16Isa::Avx512Bf16, acc);
                    assert!(
                        h.iter().zip(&e).all(|(x, y)| x.to_bits() == y.to_bits()),
                        "{m}×{n}×{k}: AVX512-BF16 and the emulation differ"
                    );
                }
            }
        }
    }
}
