//! The vector instructions the register-tile kernels are written in, one
//! module per instruction set with the same names (`V`, `LANES`, `load`,
//! `fma`, …), so that a kernel family is written once as a macro over an
//! instruction-set module (`direct.rs`, `winograd.rs`) and instantiated for
//! each. Each function is one intrinsic; compiled with its set's features,
//! so that it inlines into the kernels (which have the same features).
//! Which set runs is decided once, in [`super::kernels`].

/// AVX-512F: 16 `f32` lanes, 32 registers.
#[cfg(target_arch = "x86_64")]
pub mod avx512 {
    use std::arch::x86_64::*;

    pub type V = __m512;
    pub const LANES: usize = 16;

    #[inline]
    #[target_feature(enable = "avx512f")]
    pub fn zero() -> V {
        _mm512_setzero_ps()
    }

    /// # Safety
    /// `p` must be readable for `LANES` values.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub unsafe fn load(p: *const f32) -> V {
        // SAFETY: the caller makes `p` readable for LANES values.
        unsafe { _mm512_loadu_ps(p) }
    }

    /// # Safety
    /// `p` must be writable for `LANES` values.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub unsafe fn store(p: *mut f32, v: V) {
        // SAFETY: the caller makes `p` writable for LANES values.
        unsafe { _mm512_storeu_ps(p, v) }
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    pub fn splat(x: f32) -> V {
        _mm512_set1_ps(x)
    }

    /// `a · b + c`, rounded once.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub fn fma(a: V, b: V, c: V) -> V {
        _mm512_fmadd_ps(a, b, c)
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    pub fn add(a: V, b: V) -> V {
        _mm512_add_ps(a, b)
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    pub fn sub(a: V, b: V) -> V {
        _mm512_sub_ps(a, b)
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    pub fn mul(a: V, b: V) -> V {
        _mm512_mul_ps(a, b)
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    pub fn max(a: V, b: V) -> V {
        _mm512_max_ps(a, b)
    }
}

/// AVX2 with FMA: 8 `f32` lanes, 16 registers.
#[cfg(target_arch = "x86_64")]
pub mod avx2 {
    use std::arch::x86_64::*;

    pub type V = __m256;
    pub const LANES: usize = 8;

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub fn zero() -> V {
        _mm256_setzero_ps()
    }

    /// # Safety
    /// `p` must be readable for `LANES` values.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn load(p: *const f32) -> V {
        // SAFETY: the caller makes `p` readable for LANES values.
        unsafe { _mm256_loadu_ps(p) }
    }

    /// # Safety
    /// `p` must be writable for `LANES` values.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn store(p: *mut f32, v: V) {
        // SAFETY: the caller makes `p` writable for LANES values.
        unsafe { _mm256_storeu_ps(p, v) }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub fn splat(x: f32) -> V {
        _mm256_set1_ps(x)
    }

    /// `a · b + c`, rounded once.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub fn fma(a: V, b: V, c: V) -> V {
        _mm256_fmadd_ps(a, b, c)
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub fn add(a: V, b: V) -> V {
        _mm256_add_ps(a, b)
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub fn sub(a: V, b: V) -> V {
        _mm256_sub_ps(a, b)
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub fn mul(a: V, b: V) -> V {
        _mm256_mul_ps(a, b)
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub fn max(a: V, b: V) -> V {
        _mm256_max_ps(a, b)
    }
}
