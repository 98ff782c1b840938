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

/// Opens the device; CUDA problems under an explicit `cuda` request are
/// input errors (exit 2) with what to do.
pub fn open(spec: DeviceSpec) -> Result<Device> {
    match spec {
        DeviceSpec::Cpu => Ok(Device::Cpu),
        DeviceSpec::Auto => {
            if candle_core::utils::cuda_is_available()
                && let Ok(d) = Device::new_cuda(0)
            {
                return Ok(d);
            }
            Ok(Device::Cpu)
        }
        DeviceSpec::Cuda(n) => {
            if !candle_core::utils::cuda_is_available() {
                crate::bail_input!(
                    "--device {spec}: this cnn was built without CUDA support; rebuild it with \
                     `cargo build --release --features cuda` (see README, CUDA), or use --device cpu"
                );
            }
            Device::new_cuda(n).map_err(|e| {
                crate::input_error!(
                    "--device {spec}: cannot open GPU {n} ({e}); check that the NVIDIA driver is loaded \
                     and the GPU exists (nvidia-smi lists them), or use --device cpu / auto"
                )
            })
        }
    }
}

/// A short description such as `cpu (2 threads)` or `cuda:0`.
pub fn describe(device: &Device) -> String {
    match device {
        Device::Cpu => format!("cpu ({} threads)", candle_core::utils::get_num_threads()),
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
