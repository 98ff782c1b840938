//! Batch assembly: lists of image indices become normalised `f32` tensors on
//! the device, training batches optionally augmented first.

use super::augment::{Visit, augment_source};
use super::{ImageSet, Normalization, Source, photo_ops};
use crate::config::Augment;
use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use rayon::prelude::*;
use std::borrow::Cow;

/// Turns lists of image indices into normalised `f32` batches on a device.
pub struct Batcher {
    tables: Vec<[f32; 256]>,
    device: Device,
}

impl Batcher {
    pub fn new(norm: &Normalization, device: &Device) -> Self {
        Batcher {
            tables: norm.tables(),
            device: device.clone(),
        }
    }

    /// One image's bytes (`c×h×w`) as a normalised `[1, c, h, w]` tensor.
    pub fn tensor_from_pixels(&self, pixels: &[u8], [c, h, w]: [usize; 3]) -> Result<Tensor> {
        let plane = h * w;
        let xs: Vec<f32> = pixels
            .chunks(plane)
            .zip(&self.tables)
            .flat_map(|(ch, table)| ch.iter().map(|&p| table[p as usize]))
            .collect();
        Ok(Tensor::from_vec(xs, (1, c, h, w), &Device::Cpu)?.to_device(&self.device)?)
    }

    /// Images `[n, c, h, w]` (f32) and labels `[n]` (u32) for `indices` of `set`.
    pub fn batch(&self, set: &ImageSet, indices: &[u32]) -> Result<(Tensor, Tensor)> {
        self.assemble(set, indices, None)
    }

    /// A training batch: each image augmented (in order, drawing from `rng`;
    /// `visit` gives the seed and epoch) before it is normalised. The same as [`Batcher::batch`] when `augment`
    /// configures nothing.
    pub fn train_batch(
        &self,
        set: &ImageSet,
        indices: &[u32],
        augment: &Augment,
        rng: &mut crate::rng::Rng,
        visit: Visit,
    ) -> Result<(Tensor, Tensor)> {
        if augment.is_none() {
            return self.batch(set, indices);
        }
        self.assemble(set, indices, Some((augment, rng, visit)))
    }

    fn assemble(
        &self,
        set: &ImageSet,
        indices: &[u32],
        mut augment: Option<(&Augment, &mut crate::rng::Rng, Visit)>,
    ) -> Result<(Tensor, Tensor)> {
        let plane = set.height * set.width;
        let shape = set.shape();
        let images = crate::profile::scope(|| {
            let how = if set.files.is_some() { "decode, " } else { "" };
            format!("batch: images ({how}augment, normalise)")
        });
        let mut xs = Vec::with_capacity(indices.len() * set.image_len());
        let mut ys = Vec::with_capacity(indices.len());
        // Photos streamed from their files are all read first, in parallel
        // (reading is a pure function of the file); augmentation then draws
        // from the stream image by image, in order.
        let whole = augment
            .as_ref()
            .is_some_and(|(cfg, _, _)| cfg.random_resized_crop.is_some());
        let mut read: Vec<Option<Source>> = match set.files {
            Some(_) => indices
                .par_iter()
                .map(|&i| set.source(i as usize, whole).map(Some))
                .collect::<Result<_>>()?,
            None => Vec::new(),
        };
        for (k, &i) in indices.iter().enumerate() {
            let source = match read.get_mut(k) {
                Some(s) => s.take().expect("read once"),
                None => set.source(i as usize, whole)?,
            };
            let (img, erase) = match augment.as_mut() {
                Some((cfg, rng, visit)) => {
                    let visit = Visit { image: i, ..*visit };
                    let img = augment_source(cfg, source, shape, *rng, visit);
                    let erase = cfg
                        .random_erasing
                        .as_ref()
                        .and_then(|e| photo_ops::erase_rect(e, shape, *rng).map(|r| (r, e.value)));
                    (Cow::Owned(img), erase)
                }
                None => match source {
                    Source::Pixels(p) => (p, None),
                    Source::Original(_) => unreachable!("read whole only for the resized crop"),
                },
            };
            let start = xs.len();
            for (ch, table) in self.tables.iter().enumerate() {
                xs.extend(
                    img[ch * plane..(ch + 1) * plane]
                        .iter()
                        .map(|&p| table[p as usize]),
                );
            }
            if let Some((rect, value)) = erase {
                photo_ops::erase(&mut xs[start..], shape, &rect, value);
            }
            ys.push(set.labels[i as usize] as u32);
        }
        drop(images);
        let n = indices.len();
        let x = Tensor::from_vec(xs, (n, set.channels, set.height, set.width), &Device::Cpu)?
            .to_device(&self.device)
            .context("moving a batch of images to the device")?;
        let y = Tensor::from_vec(ys, n, &Device::Cpu)?.to_device(&self.device)?;
        Ok((x, y))
    }
}
