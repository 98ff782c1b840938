//! Input normalisation: per-channel mean and standard deviation of the
//! training split (or given in the config), stored in every checkpoint and
//! applied identically by training, `cnn eval` and `cnn predict`.

use super::Subset;
use crate::config::Normalize;
use anyhow::Result;
use serde::{Deserialize, Serialize};

/// The images `"auto"` normalisation decodes of a set that streams from its
/// files (all of a set in memory).
pub const STREAMED_SAMPLE: usize = 2_000;

/// Per-channel statistics of pixels scaled to [0, 1]; inputs become
/// `(pixel/255 - mean) / std`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Normalization {
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
}

impl Normalization {
    pub fn identity(channels: usize) -> Self {
        Normalization {
            mean: vec![0.0; channels],
            std: vec![1.0; channels],
        }
    }

    /// Resolves the config's setting against the training images.
    pub fn resolve(setting: &Normalize, train: &Subset) -> Result<Normalization> {
        let c = train.set.channels;
        match setting {
            Normalize::None => Ok(Self::identity(c)),
            Normalize::Given { mean, std } => {
                if mean.len() != c || std.len() != c {
                    crate::bail_input!(
                        "data.normalize gives {} means and {} stds but the images have {c} channel(s); give one of each per channel",
                        mean.len(),
                        std.len()
                    );
                }
                if let Some(s) = std.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
                    crate::bail_input!(
                        "data.normalize.std contains {s}; every std must be positive"
                    );
                }
                if let Some(m) = mean.iter().find(|m| !m.is_finite()) {
                    crate::bail_input!(
                        "data.normalize.mean contains {m}; every mean must be finite"
                    );
                }
                Ok(Normalization {
                    mean: mean.clone(),
                    std: std.clone(),
                })
            }
            Normalize::Auto => Self::compute(train),
        }
    }

    /// Mean and standard deviation per channel over a subset; over
    /// [`STREAMED_SAMPLE`] of its images, evenly spread, when they stream
    /// from their files.
    pub fn compute(subset: &Subset) -> Result<Normalization> {
        use rayon::prelude::*;
        let set = subset.set;
        let plane = set.height * set.width;
        let mut sum = vec![0u64; set.channels];
        let mut sq = vec![0u64; set.channels];
        let mut add = |img: &[u8]| {
            for ch in 0..set.channels {
                for &p in &img[ch * plane..(ch + 1) * plane] {
                    sum[ch] += p as u64;
                    sq[ch] += (p as u64) * (p as u64);
                }
            }
        };
        let images = if set.files.is_some() && subset.len() > STREAMED_SAMPLE {
            let n = subset.len();
            (0..STREAMED_SAMPLE)
                .map(|k| subset.indices[k * n / STREAMED_SAMPLE])
                .collect()
        } else {
            subset.indices.clone()
        };
        if set.files.is_some() {
            let decoded: Vec<Vec<u8>> = images
                .par_iter()
                .map(|&i| Ok(set.pixels_of(i as usize)?.into_owned()))
                .collect::<Result<_>>()?;
            decoded.iter().for_each(|img| add(img));
        } else {
            images.iter().for_each(|&i| add(set.image(i as usize)));
        }
        let count = (images.len() * plane).max(1) as f64;
        let mean: Vec<f64> = sum.iter().map(|&s| s as f64 / count / 255.0).collect();
        let std = sq
            .iter()
            .zip(&mean)
            .map(|(&q, &m)| {
                let var = q as f64 / count / (255.0 * 255.0) - m * m;
                let s = var.max(0.0).sqrt();
                if s > 1e-6 { s } else { 1.0 }
            })
            .collect();
        Ok(Normalization { mean, std })
    }

    /// Lookup tables byte → normalised value, one per channel.
    pub(super) fn tables(&self) -> Vec<[f32; 256]> {
        self.mean
            .iter()
            .zip(&self.std)
            .map(|(&m, &s)| {
                let mut t = [0f32; 256];
                for (p, v) in t.iter_mut().enumerate() {
                    *v = ((p as f64 / 255.0 - m) / s) as f32;
                }
                t
            })
            .collect()
    }
}
