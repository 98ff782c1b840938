//! `--device cpu|cuda|cuda:N|auto` → a candle [`Device`], with a clear error
//! when CUDA was not built in or the GPU is not there.

use anyhow::Result;
use candle_core::Device;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceSpec {
    /// CUDA when built in and a GPU answers, else the CPU.
    #[default]
    Auto,
    Cpu,
    Cuda(usize),
}

impl FromStr for DeviceSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(DeviceSpec::Auto),
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" | "gpu" => Ok(DeviceSpec::Cuda(0)),
            _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(n)) => Ok(DeviceSpec::Cuda(n)),
                _ => Err(format!(
                    "`{s}` is not a device; use cpu, cuda, cuda:N (N = GPU index) or auto"
                )),
            },
        }
    }
}

impl std::fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceSpec::Auto => write!(f, "auto"),
            DeviceSpec::Cpu => write!(f, "cpu"),
            DeviceSpec::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// As its command-line form (`"cuda:1"`), in a sweep's manifest.
impl serde::Serialize for DeviceSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for DeviceSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Opens the device; CUDA problems under an explicit `cuda` request are
/// input errors (exit 2) with what to do. Under `auto`, a CUDA build that
/// finds no usable GPU says why on stderr and uses the CPU.
pub fn open(spec: DeviceSpec) -> Result<Device> {
    match spec {
        DeviceSpec::Cpu => Ok(Device::Cpu),
        DeviceSpec::Auto => {
            if !candle_core::utils::cuda_is_available() {
                return Ok(Device::Cpu);
            }
            match open_cuda(0) {
                Ok(d) => Ok(d),
                Err(why) => {
                    eprintln!("note: no usable CUDA GPU ({why}); using the CPU");
                    Ok(Device::Cpu)
                }
            }
        }
        DeviceSpec::Cuda(n) => {
            if !candle_core::utils::cuda_is_available() {
                crate::bail_input!(
                    "--device {spec}: this cnn was built without CUDA support; build one with \
                     scripts/build-cuda.sh (see the book, CUDA: docs/src/guide/cuda.md), or use --device cpu"
                );
            }
            open_cuda(n).map_err(|why| {
                crate::input_error!(
                    "--device {spec}: cannot use GPU {n}: {why}. Check that the NVIDIA driver is \
                     installed and the GPU exists (nvidia-smi lists them), that the CUDA 12 libraries \
                     (libcublas, libcurand) are on the library path, or use --device cpu / auto"
                )
            })
        }
    }
}

/// The free memory of a GPU (`cuMemGetInfo`), in bytes; `None` for the CPU
/// or when the driver does not say.
pub fn free_memory(device: &Device) -> Option<u64> {
    #[cfg(feature = "cuda")]
    if let Device::Cuda(d) = device {
        return d
            .cuda_stream()
            .context()
            .mem_get_info()
            .ok()
            .map(|(free, _)| free as u64);
    }
    let _ = device;
    None
}

/// Opens GPU `n`. A CUDA build made with scripts/build-cuda.sh loads the
/// NVIDIA libraries only now, and cudarc panics when one is missing; that
/// panic is caught (silently) and becomes the reason returned.
fn open_cuda(n: usize) -> std::result::Result<Device, String> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = std::panic::catch_unwind(|| Device::new_cuda(n));
    std::panic::set_hook(hook);
    match result {
        Ok(Ok(device)) => {
            #[cfg(feature = "cuda")]
            if let Device::Cuda(d) = &device {
                // cnn runs everything on the device's one stream, so the
                // events cudarc records on every tensor for each kernel that
                // uses it (to order work across streams) are pure cost: two
                // driver calls per operand of every launch.
                // SAFETY: one stream; no tensor is used on another.
                unsafe { d.disable_event_tracking() };
            }
            Ok(device)
        }
        Ok(Err(e)) => Err(first_line(&e.to_string())),
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "the CUDA libraries could not be loaded".into());
            Err(first_line(&msg))
        }
    }
}

/// The gist of a CUDA error: its first line (candle appends backtraces),
/// and for cudarc's "Unable to dynamically load the "cuda" shared library -
/// searched for [40 names]..." just which library is missing.
fn first_line(s: &str) -> String {
    let line = s.lines().next().unwrap_or("").trim();
    if let Some(rest) = line.split("Unable to dynamically load the \"").nth(1)
        && let Some((lib, _)) = rest.split_once('"')
    {
        let what = if lib == "cuda" {
            " (the NVIDIA driver's library) is not installed".to_string()
        } else {
            " cannot be found on the library path".to_string()
        };
        return format!("lib{lib}{what}");
    }
    line.to_string()
}

/// A short description such as `cpu (2 threads, avx512)` (the vector
/// instructions of the direct convolution kernels, when there are any) or
/// `cuda:0`.
pub fn describe(device: &Device) -> String {
    match device {
        Device::Cpu => {
            let threads = rayon::current_num_threads();
            match crate::ops::direct::isa() {
                Some(isa) => format!("cpu ({threads} threads, {})", isa.name),
                None => format!("cpu ({threads} threads)"),
            }
        }
        Device::Cuda(_) => {
            let ordinal = match device.location() {
                candle_core::DeviceLocation::Cuda { gpu_id } => gpu_id,
                _ => 0,
            };
            format!("cuda:{ordinal}")
        }
        other => format!("{:?}", other.location()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        assert_eq!("auto".parse(), Ok(DeviceSpec::Auto));
        assert_eq!("cpu".parse(), Ok(DeviceSpec::Cpu));
        assert_eq!("cuda".parse(), Ok(DeviceSpec::Cuda(0)));
        assert_eq!("cuda:3".parse(), Ok(DeviceSpec::Cuda(3)));
        assert!("cuda:x".parse::<DeviceSpec>().is_err());
        assert!("tpu".parse::<DeviceSpec>().is_err());
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_the_feature_is_an_input_error() {
        let err = open(DeviceSpec::Cuda(0)).unwrap_err();
        assert!(err.is::<crate::error::InputError>());
        assert!(format!("{err}").contains("built without CUDA support"));
        assert!(matches!(open(DeviceSpec::Auto).unwrap(), Device::Cpu));
    }
}
