//! Which CPU kernels this process runs, decided once: what the CPU has
//! (read from CPUID through std's feature detection) and what the
//! environment asks for, folded into one [`Kernels`] value that every
//! kernel family reads. Adding an instruction set is adding a field here
//! and an arm where a family picks its implementation.
//!
//! The environment variables choose kernels for comparison and tests; a
//! value that is not one of those listed is ignored with a warning:
//! * `CNN_KERNELS=candle`: candle's operations instead of cnn's kernels,
//!   on every device (the path a GPU takes, testable on the CPU);
//! * `CNN_DIRECT_CONV=0`: no register-tile convolutions (direct or
//!   Winograd): im2col and gemm; `CNN_DIRECT_CONV=avx2`: their AVX2 form on
//!   an AVX-512 CPU;
//! * `CNN_WINOGRAD=0`: 3×3 layers through the direct kernels instead;
//! * `CNN_BF16=avx512bf16|emulated|fp32`: how `training.precision: "bf16"`
//!   multiplies: `VDPBF16PS` (the default where the CPU has it), the same
//!   arithmetic emulated in scalar code (any CPU, slow: for tests), or only
//!   the f32 kernels on bf16-rounded operands (the default elsewhere).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

/// What the CPU can do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Features {
    pub avx: bool,
    pub avx2: bool,
    pub fma: bool,
    pub avx512f: bool,
    /// `VDPBF16PS`: pairs of bf16 products summed into f32 lanes.
    pub avx512_bf16: bool,
    /// AMX tiles with bf16 products (`TDPBF16PS`); Linux must still grant
    /// the tile state to the process before they can be used.
    pub amx_bf16: bool,
}

impl Features {
    /// This CPU's.
    pub fn detect() -> Features {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            Features {
                avx: has!("avx"),
                avx2: has!("avx2"),
                fma: has!("fma"),
                avx512f: has!("avx512f"),
                avx512_bf16: has!("avx512bf16"),
                amx_bf16: amx_bf16(),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        Features::default()
    }
}

/// CPUID leaf 7's AMX-BF16 (EDX bit 22) and AMX-TILE (bit 24): std's
/// detection of them is not stable yet.
#[cfg(target_arch = "x86_64")]
fn amx_bf16() -> bool {
    use std::arch::x86_64::__cpuid_count;
    // Leaf 7 exists where leaf 0 says the highest leaf is at least 7.
    if __cpuid_count(0, 0).eax < 7 {
        return false;
    }
    let edx = __cpuid_count(7, 0).edx;
    edx & (1 << 22) != 0 && edx & (1 << 24) != 0
}

/// The instruction set of the register-tile convolution kernels (direct
/// and Winograd), whose vector width sets their tiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TileIsa {
    Avx512,
    Avx2,
}

impl TileIsa {
    pub fn name(self) -> &'static str {
        match self {
            TileIsa::Avx512 => "avx512",
            TileIsa::Avx2 => "avx2",
        }
    }
}

/// The kernels of this process.
#[derive(Debug, Clone, Copy)]
pub struct Kernels {
    pub features: Features,
    /// `CNN_KERNELS=candle`: candle's operations only.
    pub candle_only: bool,
    /// The register-tile convolutions' instruction set; `None` where the
    /// CPU has neither AVX-512 nor AVX2 with FMA, or `CNN_DIRECT_CONV=0`.
    pub tiles: Option<TileIsa>,
    /// Winograd for the 3×3 layers it takes (needs `tiles`).
    pub winograd: bool,
    /// The bf16 products of `training.precision: "bf16"`; `None`: the f32
    /// kernels on bf16-rounded operands.
    pub bf16: Option<super::bf16::Bf16Isa>,
}

impl Kernels {
    /// The choice for `features` under the given environment values.
    pub fn choose(
        features: Features,
        kernels: Option<&str>,
        direct: Option<&str>,
        winograd: Option<&str>,
        bf16: Option<&str>,
    ) -> Kernels {
        use super::bf16::Bf16Isa;
        let bf16 = match bf16 {
            Some("emulated") => Some(Bf16Isa::Emulated),
            Some("fp32") => None,
            // Asked for or not, only where the CPU has it.
            _ if features.avx512_bf16 => Some(Bf16Isa::Avx512Bf16),
            _ => None,
        };
        let tiles = match direct {
            Some("0") => None,
            _ if features.avx512f && direct != Some("avx2") => Some(TileIsa::Avx512),
            _ if features.avx2 && features.fma => Some(TileIsa::Avx2),
            _ => None,
        };
        Kernels {
            features,
            candle_only: kernels == Some("candle"),
            tiles,
            winograd: tiles.is_some() && winograd != Some("0"),
            bf16,
        }
    }

    /// What the kernels are, for people: `avx512 tiles, winograd`.
    pub fn describe(&self) -> String {
        if self.candle_only {
            return "candle's operations (CNN_KERNELS=candle)".to_string();
        }
        let mut parts = vec![match self.tiles {
            Some(isa) => format!("{} convolutions", isa.name()),
            None => "im2col convolutions".to_string(),
        }];
        if self.winograd {
            parts.push("winograd 3x3".into());
        }
        let f = self.features;
        let loops = if f.avx512f {
            "avx512"
        } else if f.avx2 {
            "avx2"
        } else {
            "baseline"
        };
        parts.push(format!("{loops} loops"));
        parts.push(match self.bf16 {
            Some(isa) => format!("bf16 products {}", isa.name()),
            None => "bf16 as f32 on rounded operands".to_string(),
        });
        parts.join(", ")
    }
}

/// One line for a user about to train or evaluate in bf16 on the CPU: what
/// the products run on.
pub fn bf16_note() -> String {
    use super::bf16::Bf16Isa;
    match get().bf16 {
        Some(Bf16Isa::Avx512Bf16) => "bf16: bf16 products on AVX512-BF16 (VDPBF16PS) where they pay; \
             the other layers, and 3×3 layers on Winograd's f32 kernels, take bf16-rounded operands \
             (cnn summary --precision bf16 lists each)"
            .to_string(),
        Some(Bf16Isa::Emulated) => {
            "bf16: bf16 products emulated in scalar code (CNN_BF16=emulated): slow, for tests".into()
        }
        None => "bf16: this CPU has no bf16 dot-product instructions (AVX512-BF16, AMX), so the f32 \
             kernels run on bf16-rounded operands: bf16's numbers, no faster than fp32"
            .to_string(),
    }
}

/// This process's kernels, read from the CPU and the environment on first use.
pub fn get() -> &'static Kernels {
    static KERNELS: OnceLock<Kernels> = OnceLock::new();
    KERNELS.get_or_init(|| {
        Kernels::choose(
            Features::detect(),
            env_choice("CNN_KERNELS", &["candle"]),
            env_choice("CNN_DIRECT_CONV", &["0", "avx2"]),
            env_choice("CNN_WINOGRAD", &["0"]),
            env_choice("CNN_BF16", &["avx512bf16", "emulated", "fp32"]),
        )
    })
}

/// Off for the rest of the process (benchmarks compare both ways in one run).
static WINOGRAD_OFF: AtomicBool = AtomicBool::new(false);

/// Turns Winograd off (`false`) or back on for the whole process, as
/// `CNN_WINOGRAD=0` does at start; for benchmarks that time both.
pub fn set_winograd(on: bool) {
    WINOGRAD_OFF.store(!on, Ordering::Relaxed);
}

/// Whether Winograd runs now: chosen at start and not turned off since.
pub fn winograd() -> bool {
    get().winograd && !WINOGRAD_OFF.load(Ordering::Relaxed)
}

/// The value of the environment variable `name` if it is one of `known`;
/// any other value is ignored with a warning that names the ones it takes
/// (a typo should not stop a run, nor go unnoticed).
pub(crate) fn env_choice(name: &str, known: &[&'static str]) -> Option<&'static str> {
    let value = std::env::var(name).ok()?;
    let found = known.iter().find(|k| **k == value).copied();
    if found.is_none() {
        eprintln!(
            "warning: {name}={value:?} is not one of {}; ignored",
            known.join(", ")
        );
    }
    found
}

/// `fn name(args) -> ret { body }` compiled for AVX-512 and AVX2 as well as
/// the baseline, the best the CPU has picked at run time (with optional
/// `<const K: usize>` parameters). Write the body without fused
/// multiply-adds (Rust never contracts `a * b + c` by itself) and every
/// instruction set gives the same bits.
macro_rules! simd {
    ($(#[$doc:meta])* $vis:vis fn $name:ident $(<const $k:ident: usize>)? ($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$doc])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name $(<const $k: usize>)? ($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn body $(<const $k: usize>)? ($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                fn avx512 $(<const $k: usize>)? ($($arg: $ty),*) $(-> $ret)? {
                    body $(::<$k>)? ($($arg),*)
                }
                #[target_feature(enable = "avx2")]
                fn avx2 $(<const $k: usize>)? ($($arg: $ty),*) $(-> $ret)? {
                    body $(::<$k>)? ($($arg),*)
                }
                let f = $crate::ops::kernels::get().features;
                if f.avx512f {
                    // SAFETY: the CPU has AVX-512F.
                    return unsafe { avx512 $(::<$k>)? ($($arg),*) };
                }
                if f.avx2 {
                    // SAFETY: the CPU has AVX2.
                    return unsafe { avx2 $(::<$k>)? ($($arg),*) };
                }
            }
            body $(::<$k>)? ($($arg),*)
        }
    };
}
pub(crate) use simd;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_narrows_what_the_cpu_offers() {
        let all = Features {
            avx: true,
            avx2: true,
            fma: true,
            avx512f: true,
            avx512_bf16: true,
            amx_bf16: false,
        };
        let k = Kernels::choose(all, None, None, None, None);
        assert_eq!(
            (k.tiles, k.winograd, k.candle_only),
            (Some(TileIsa::Avx512), true, false)
        );
        let k = Kernels::choose(all, None, Some("avx2"), None, None);
        assert_eq!(k.tiles, Some(TileIsa::Avx2));
        let k = Kernels::choose(all, None, Some("0"), None, None);
        assert_eq!((k.tiles, k.winograd), (None, false));
        let k = Kernels::choose(all, None, None, Some("0"), None);
        assert_eq!((k.tiles, k.winograd), (Some(TileIsa::Avx512), false));
        assert!(Kernels::choose(all, Some("candle"), None, None, None).candle_only);
        let avx2 = Features {
            avx512f: false,
            ..all
        };
        assert_eq!(
            Kernels::choose(avx2, None, None, None, None).tiles,
            Some(TileIsa::Avx2)
        );
        let none = Features::default();
        let k = Kernels::choose(none, None, None, None, None);
        assert_eq!((k.tiles, k.winograd), (None, false));
        assert!(k.describe().starts_with("im2col"), "{}", k.describe());
        // bf16: the instruction where the CPU has it, the emulation when
        // asked, else the f32 kernels on rounded operands.
        use crate::ops::bf16::Bf16Isa;
        assert_eq!(
            Kernels::choose(all, None, None, None, None).bf16,
            Some(Bf16Isa::Avx512Bf16)
        );
        assert_eq!(
            Kernels::choose(all, None, None, None, Some("fp32")).bf16,
            None
        );
        assert_eq!(
            Kernels::choose(none, None, None, None, Some("avx512bf16")).bf16,
            None
        );
        assert_eq!(
            Kernels::choose(none, None, None, None, Some("emulated")).bf16,
            Some(Bf16Isa::Emulated)
        );
    }
}
