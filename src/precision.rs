//! `training.precision`: what convolutions and linear layers multiply. A
//! leaf, so that the config (which reads it) and the layers (which pass it
//! to the kernels) can both name it.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// `training.precision`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    Fp32,
    Bf16,
}

impl Precision {
    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Bf16 => "bf16",
        }
    }

    /// `--precision` and `training.precision`: the choices, and why fp16
    /// is not one of them.
    pub fn parse(s: &str) -> std::result::Result<Precision, String> {
        match s {
            "fp32" => Ok(Precision::Fp32),
            "bf16" => Ok(Precision::Bf16),
            "fp16" | "float16" | "half" => Err(format!(
                "precision {s:?} is not supported: fp16 needs loss scaling, and bf16 gives the same \
                 speed-up on these CPUs' matrix units with fp32's range; use \"bf16\" or \"fp32\""
            )),
            _ => Err(format!(
                "unknown precision \"{s}\"; the choices are \"fp32\" (the default) and \"bf16\""
            )),
        }
    }
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Precision::parse(s)
    }
}

impl<'de> Deserialize<'de> for Precision {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        match &v {
            Value::String(s) => Precision::parse(s).map_err(serde::de::Error::custom),
            other => Err(serde::de::Error::custom(format!(
                "expected \"fp32\" or \"bf16\", got {other}"
            ))),
        }
    }
}
