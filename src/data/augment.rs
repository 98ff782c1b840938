//! Training-time augmentation of `u8` images (`c×h×w`), configured by
//! `data.augment`: a random resized crop, a random crop with padding
//! (constant or reflected), a horizontal flip (random, or alternating by
//! epoch), a small random affine transform (rotation, shift, zoom), colour
//! jitter and TrivialAugment or RandAugment ([`photo_ops`]), applied in that
//! order and never to validation or test images; random erasing follows on
//! the normalised image ([`super::Batcher`]).
//!
//! Everything random comes from the generator passed in. Training passes
//! a stream keyed by the seed, the optimizer step and the micro-batch
//! (`train::step`), so the same step of a resumed run gets the same images. Each configured transform draws the
//! same count of numbers whatever it decides, so one image's draws never
//! shift another's. The alternating flip draws nothing there: it depends
//! only on the image, the seed and the epoch ([`Visit`]).

use super::photo_ops;
use super::photos::Original;
use super::{ImageSet, Source};
use crate::config::{Affine, Augment, CropPadding, Flip, RandomCrop, RandomResizedCrop};
use crate::rng;
use anyhow::Result;
use rand::Rng;

/// Which image is augmented when: what the alternating flip depends on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Visit {
    pub seed: u64,
    /// 1-based.
    pub epoch: usize,
    /// The image's index in its set.
    pub image: u32,
}

/// An augmented copy of `image` (`shape` = `[c, h, w]`, bytes in `c×h×w`
/// order). With no transform configured the copy equals the input. Random
/// erasing, which works on the normalised image, is left to the batcher.
/// (Training goes through [`train_image`]; this is its form for bytes.)
#[cfg(test)]
pub fn augment(
    cfg: &Augment,
    image: &[u8],
    shape: [usize; 3],
    rng: &mut impl Rng,
    visit: Visit,
) -> Vec<u8> {
    let mut out = match &cfg.random_resized_crop {
        Some(r) => resized_crop(r, &Original::from_planes(image, shape), shape, rng),
        None => image.to_vec(),
    };
    augment_in_place(cfg, &mut out, shape, rng, visit);
    out
}

/// Image `i` of `set` augmented as [`augment`] does, the random resized
/// crop cut from the photo itself when the set streams from its files.
pub fn train_image(
    cfg: &Augment,
    set: &ImageSet,
    i: usize,
    rng: &mut impl Rng,
    visit: Visit,
) -> Result<Vec<u8>> {
    let source = set.source(i, cfg.random_resized_crop.is_some())?;
    Ok(augment_source(cfg, source, set.shape(), rng, visit))
}

/// [`train_image`] of an image already read: the set's bytes, or (for the
/// random resized crop of a streamed set) the photo at its own size.
pub fn augment_source(
    cfg: &Augment,
    source: Source,
    shape: [usize; 3],
    rng: &mut impl Rng,
    visit: Visit,
) -> Vec<u8> {
    let mut out = match (&cfg.random_resized_crop, source) {
        (Some(r), Source::Original(o)) => resized_crop(r, &o, shape, rng),
        (Some(r), Source::Pixels(p)) => {
            resized_crop(r, &Original::from_planes(&p, shape), shape, rng)
        }
        (None, Source::Pixels(p)) => p.into_owned(),
        (None, Source::Original(o)) => {
            debug_assert!(false, "an original without the resized crop");
            o.crop_resized((0, 0, o.dimensions().0, o.dimensions().1), shape)
        }
    };
    augment_in_place(cfg, &mut out, shape, rng, visit);
    out
}

/// Image `i` as a training step sees it, for `cnn samples --augmented`:
/// [`train_image`], then random erasing drawn on the bytes as though the
/// image were normalised about mid-grey (0 shows as grey 128).
pub fn shown(
    cfg: &Augment,
    set: &ImageSet,
    i: usize,
    rng: &mut impl Rng,
    visit: Visit,
) -> Result<Vec<u8>> {
    let mut img = train_image(cfg, set, i, rng, visit)?;
    if let Some(e) = &cfg.random_erasing
        && let Some(rect) = photo_ops::erase_rect(e, set.shape(), rng)
    {
        let mut xs: Vec<f32> = img.iter().map(|&p| (p as f32 - 128.0) / 64.0).collect();
        photo_ops::erase(&mut xs, set.shape(), &rect, e.value);
        for (p, v) in img.iter_mut().zip(xs) {
            *p = (v * 64.0 + 128.0).round().clamp(0.0, 255.0) as u8;
        }
    }
    Ok(img)
}

/// A random window of `original` made `shape`.
fn resized_crop(
    r: &RandomResizedCrop,
    original: &Original,
    shape: [usize; 3],
    rng: &mut impl Rng,
) -> Vec<u8> {
    let window = photo_ops::resized_crop_window(r, original.dimensions(), rng);
    original.crop_resized(window, shape)
}

/// Augments `image` in place (see [`augment`]) with every transform that
/// keeps the image's size: all but the random resized crop and erasing.
pub fn augment_in_place(
    cfg: &Augment,
    image: &mut [u8],
    shape: [usize; 3],
    rng: &mut impl Rng,
    visit: Visit,
) {
    debug_assert_eq!(image.len(), shape.iter().product::<usize>());
    if let Some(crop) = &cfg.random_crop {
        let p = crop.padding as i64;
        // Offsets of the crop window in the padded image, 0..=2p each.
        let dy = rng.random_range(0..=2 * p);
        let dx = rng.random_range(0..=2 * p);
        shift(image, shape, p - dy, p - dx, crop);
    }
    match cfg.horizontal_flip {
        None => {}
        Some(Flip::Random(p)) => {
            let u: f64 = rng.random();
            if u < p {
                flip_horizontal(image, shape);
            }
        }
        Some(Flip::Alternate) if flipped_in(visit) => flip_horizontal(image, shape),
        Some(Flip::Alternate) => {}
    }
    if let Some(a) = &cfg.affine {
        let params = AffineParams::draw(a, shape, rng);
        if !params.is_identity() {
            let src = image.to_vec();
            warp(&src, image, shape, &params, a.fill);
        }
    }
    if let Some(j) = &cfg.color_jitter {
        photo_ops::color_jitter(j, image, shape, rng);
    }
    if let Some(a) = &cfg.auto_augment {
        photo_ops::auto_augment(a, image, shape, rng);
    }
}

/// Whether the alternating flip mirrors the image of `visit`: its own
/// draw from the seed, inverted in even epochs.
pub fn flipped_in(visit: Visit) -> bool {
    let start: bool = rng::stream(visit.seed, rng::Purpose::Flip, visit.image as u64).random();
    start ^ visit.epoch.is_multiple_of(2)
}

/// `lo + (hi - lo)·u`: exactly `lo` when the range is empty.
fn uniform(rng: &mut impl Rng, lo: f64, hi: f64) -> f64 {
    let u: f64 = rng.random();
    lo + (hi - lo) * u
}

/// Where position `i` of an axis of length `n` reads from when the image is
/// mirrored at its border (`-1` reads 1, `n` reads `n - 2`).
fn reflect(i: i64, n: i64) -> i64 {
    let period = 2 * (n - 1).max(1);
    let m = i.rem_euclid(period);
    if m < n { m } else { period - m }
}

/// Moves the content down by `dy` and right by `dx` pixels (negative: up,
/// left); uncovered pixels get the crop's fill value, or the image mirrored
/// at its border. This is the crop of the padded image at offset
/// `(p - dy, p - dx)`.
fn shift(image: &mut [u8], [c, h, w]: [usize; 3], dy: i64, dx: i64, crop: &RandomCrop) {
    if dy == 0 && dx == 0 {
        return;
    }
    let src = image.to_vec();
    let (h, w) = (h as i64, w as i64);
    let reflected = crop.padding_mode == CropPadding::Reflect;
    for ch in 0..c {
        let plane = ch * (h * w) as usize;
        for y in 0..h {
            let sy = y - dy;
            for x in 0..w {
                let sx = x - dx;
                let v = if (0..h).contains(&sy) && (0..w).contains(&sx) {
                    src[plane + (sy * w + sx) as usize]
                } else if reflected {
                    src[plane + (reflect(sy, h) * w + reflect(sx, w)) as usize]
                } else {
                    crop.fill
                };
                image[plane + (y * w + x) as usize] = v;
            }
        }
    }
}

/// Mirrors every row.
pub fn flip_horizontal(image: &mut [u8], [_, _, w]: [usize; 3]) {
    for row in image.chunks_exact_mut(w) {
        row.reverse();
    }
}

/// One draw of the affine transform.
#[derive(Debug, Clone, Copy, PartialEq)]
struct AffineParams {
    /// Radians.
    angle: f64,
    /// Whole pixels, as torchvision rounds them.
    tx: f64,
    ty: f64,
    scale: f64,
}

impl AffineParams {
    fn draw(a: &Affine, [_, h, w]: [usize; 3], rng: &mut impl Rng) -> Self {
        let degrees = uniform(rng, -a.degrees, a.degrees);
        let max_x = a.translate.x * w as f64;
        let max_y = a.translate.y * h as f64;
        let tx = uniform(rng, -max_x, max_x).round();
        let ty = uniform(rng, -max_y, max_y).round();
        let scale = uniform(rng, a.scale[0], a.scale[1]);
        AffineParams {
            angle: degrees.to_radians(),
            // `+ 0.0` turns a rounded -0.0 into 0.0.
            tx: tx + 0.0,
            ty: ty + 0.0,
            scale,
        }
    }

    fn is_identity(&self) -> bool {
        self.angle == 0.0 && self.tx == 0.0 && self.ty == 0.0 && self.scale == 1.0
    }
}

/// Output pixel `p'` takes the input at `c + R(-angle)·(p' - c - t) / scale`
/// (`c` the image centre), sampled bilinearly; outside the image is `fill`.
fn warp(src: &[u8], dst: &mut [u8], [c, h, w]: [usize; 3], p: &AffineParams, fill: u8) {
    let (cos, sin) = (p.angle.cos(), p.angle.sin());
    let (cx, cy) = (w as f64 / 2.0, h as f64 / 2.0);
    let fill = fill as f64;
    let at = |plane: &[u8], x: i64, y: i64| -> f64 {
        if x >= 0 && y >= 0 && (x as usize) < w && (y as usize) < h {
            plane[y as usize * w + x as usize] as f64
        } else {
            fill
        }
    };
    for y in 0..h {
        for x in 0..w {
            // Pixel centres sit at +0.5.
            let u = (x as f64 + 0.5 - cx - p.tx) / p.scale;
            let v = (y as f64 + 0.5 - cy - p.ty) / p.scale;
            let sx = cos * u + sin * v + cx - 0.5;
            let sy = -sin * u + cos * v + cy - 0.5;
            let (x0, y0) = (sx.floor(), sy.floor());
            let (fx, fy) = (sx - x0, sy - y0);
            let (x0, y0) = (x0 as i64, y0 as i64);
            for ch in 0..c {
                let plane = &src[ch * h * w..(ch + 1) * h * w];
                let top = at(plane, x0, y0) * (1.0 - fx) + at(plane, x0 + 1, y0) * fx;
                let bottom = at(plane, x0, y0 + 1) * (1.0 - fx) + at(plane, x0 + 1, y0 + 1) * fx;
                let value = top * (1.0 - fy) + bottom * fy;
                dst[ch * h * w + y * w + x] = value.round().clamp(0.0, 255.0) as u8;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Translate;
    use crate::rng;

    const SHAPE: [usize; 3] = [2, 5, 6];

    /// Two 5×6 planes with distinct values.
    fn image() -> Vec<u8> {
        (0..60).map(|i| (i * 4 + 3) as u8).collect()
    }

    fn rng_for(i: u64) -> rng::Rng {
        rng::stream(1, rng::Purpose::Augment, i)
    }

    const VISIT: Visit = Visit {
        seed: 1,
        epoch: 1,
        image: 0,
    };

    fn augment(cfg: &Augment, image: &[u8], shape: [usize; 3], rng: &mut impl Rng) -> Vec<u8> {
        super::augment(cfg, image, shape, rng, VISIT)
    }

    fn full() -> Augment {
        Augment {
            random_crop: Some(RandomCrop {
                padding: 2,
                fill: 0,
                padding_mode: CropPadding::Constant,
            }),
            horizontal_flip: Some(Flip::Random(0.5)),
            affine: Some(Affine {
                degrees: 15.0,
                translate: Translate { x: 0.1, y: 0.1 },
                scale: [0.9, 1.1],
                fill: 0,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn same_generator_same_result_and_shape_is_kept() {
        let img = image();
        let a = augment(&full(), &img, SHAPE, &mut rng_for(3));
        let b = augment(&full(), &img, SHAPE, &mut rng_for(3));
        assert_eq!(a, b);
        assert_eq!(a.len(), img.len());
        let others: Vec<Vec<u8>> = (4..12)
            .map(|i| augment(&full(), &img, SHAPE, &mut rng_for(i)))
            .collect();
        assert!(others.iter().any(|o| *o != a), "other steps differ");
    }

    #[test]
    fn nothing_configured_is_the_identity() {
        let img = image();
        for i in 0..5 {
            assert_eq!(
                augment(&Augment::default(), &img, SHAPE, &mut rng_for(i)),
                img
            );
        }
    }

    #[test]
    fn flip_with_probability_one_mirrors_each_row() {
        let cfg = Augment {
            horizontal_flip: Some(Flip::Random(1.0)),
            ..Default::default()
        };
        let img = image();
        let out = augment(&cfg, &img, SHAPE, &mut rng_for(0));
        // Row 0 of plane 0 is 3, 7, 11, 15, 19, 23.
        assert_eq!(&out[..6], &[23, 19, 15, 11, 7, 3]);
        // Plane 1, row 4.
        assert_eq!(out[30 + 24], img[30 + 29]);
        let never = Augment {
            horizontal_flip: Some(Flip::Random(0.0)),
            ..Default::default()
        };
        assert_eq!(augment(&never, &img, SHAPE, &mut rng_for(0)), img);
    }

    #[test]
    fn crop_with_padding_shifts_and_fills() {
        let cfg = Augment {
            random_crop: Some(RandomCrop {
                padding: 1,
                fill: 9,
                padding_mode: CropPadding::Constant,
            }),
            ..Default::default()
        };
        let img = image();
        let mut seen_shifts = std::collections::HashSet::new();
        for i in 0..60 {
            let out = augment(&cfg, &img, SHAPE, &mut rng_for(i));
            // Find the shift that explains the output.
            let mut found = None;
            for dy in -1i64..=1 {
                for dx in -1i64..=1 {
                    let mut expect = img.clone();
                    shift(
                        &mut expect,
                        SHAPE,
                        dy,
                        dx,
                        cfg.random_crop.as_ref().unwrap(),
                    );
                    if expect == out {
                        found = Some((dy, dx));
                    }
                }
            }
            let (dy, dx) = found.expect("output is the image shifted by at most the padding");
            if (dy, dx) == (1, 0) {
                // Moved down one row: the top row is fill, row 1 is old row 0.
                assert!(out[..6].iter().all(|&v| v == 9));
                assert_eq!(&out[6..12], &img[..6]);
            }
            seen_shifts.insert((dy, dx));
        }
        assert_eq!(seen_shifts.len(), 9, "every offset in 0..=2p occurs");
    }

    // torch.nn.functional.pad(x, (1, 1, 1, 1), mode="reflect") of the 3×3
    // image 1..9, cropped at offset (0, 0): rows [5 4 5], [2 1 2], [5 4 5].
    #[test]
    fn reflect_padding_mirrors_the_border_as_pytorch_does() {
        let img: Vec<u8> = (1..=9).collect();
        let crop = RandomCrop {
            padding: 1,
            fill: 0,
            padding_mode: CropPadding::Reflect,
        };
        let mut out = img.clone();
        shift(&mut out, [1, 3, 3], 1, 1, &crop);
        assert_eq!(out, vec![5, 4, 5, 2, 1, 2, 5, 4, 5]);
        let mut out = img.clone();
        shift(&mut out, [1, 3, 3], -1, 0, &crop);
        assert_eq!(out, vec![4, 5, 6, 7, 8, 9, 4, 5, 6]);
    }

    #[test]
    fn the_alternating_flip_mirrors_each_image_in_every_other_epoch() {
        let cfg = Augment {
            horizontal_flip: Some(Flip::Alternate),
            ..Default::default()
        };
        let img = image();
        let mirrored = {
            let mut m = img.clone();
            flip_horizontal(&mut m, SHAPE);
            m
        };
        let mut starts = [0, 0];
        for i in 0..40u32 {
            let seen: Vec<bool> = (1..=4)
                .map(|epoch| {
                    let visit = Visit {
                        seed: 5,
                        epoch,
                        image: i,
                    };
                    let out = super::augment(&cfg, &img, SHAPE, &mut rng_for(epoch as u64), visit);
                    assert!(out == img || out == mirrored);
                    out == mirrored
                })
                .collect();
            assert_eq!(seen, [seen[0], !seen[0], seen[0], !seen[0]], "image {i}");
            starts[usize::from(seen[0])] += 1;
        }
        // Which images start mirrored is drawn: both kinds occur.
        assert!(starts[0] > 5 && starts[1] > 5, "{starts:?}");
    }

    #[test]
    fn affine_with_zero_ranges_is_the_identity() {
        let cfg = Augment {
            affine: Some(Affine {
                degrees: 0.0,
                translate: Translate::default(),
                scale: [1.0, 1.0],
                fill: 7,
            }),
            ..Default::default()
        };
        let img = image();
        for i in 0..5 {
            assert_eq!(augment(&cfg, &img, SHAPE, &mut rng_for(i)), img);
        }
        // Forced through the warp too.
        let mut out = vec![0; img.len()];
        let p = AffineParams {
            angle: 0.0,
            tx: 0.0,
            ty: 0.0,
            scale: 1.0,
        };
        warp(&img, &mut out, SHAPE, &p, 7);
        assert_eq!(out, img);
    }

    #[test]
    fn affine_shift_moves_whole_pixels_and_rotation_by_180_turns_the_image() {
        let img = image();
        let mut out = vec![0; img.len()];
        let p = AffineParams {
            angle: 0.0,
            tx: 2.0,
            ty: 0.0,
            scale: 1.0,
        };
        warp(&img, &mut out, SHAPE, &p, 1);
        assert_eq!(&out[..6], &[1, 1, img[0], img[1], img[2], img[3]]);
        let p = AffineParams {
            angle: std::f64::consts::PI,
            tx: 0.0,
            ty: 0.0,
            scale: 1.0,
        };
        warp(&img, &mut out, SHAPE, &p, 0);
        for ch in 0..2 {
            for y in 0..5 {
                for x in 0..6 {
                    assert_eq!(
                        out[ch * 30 + y * 6 + x],
                        img[ch * 30 + (4 - y) * 6 + (5 - x)],
                        "({ch}, {y}, {x})"
                    );
                }
            }
        }
    }

    #[test]
    fn zoom_in_keeps_the_centre_and_spreads_it() {
        // A 1×4×4 image, zoomed ×2: the middle 2×2 fills the image.
        let img: Vec<u8> = vec![0, 0, 0, 0, 0, 100, 200, 0, 0, 100, 200, 0, 0, 0, 0, 0];
        let mut out = vec![0; 16];
        let p = AffineParams {
            angle: 0.0,
            tx: 0.0,
            ty: 0.0,
            scale: 2.0,
        };
        warp(&img, &mut out, [1, 4, 4], &p, 0);
        // Columns 1 and 2 of each output row sample between the two middle values.
        assert_eq!(out[5], 125);
        assert_eq!(out[6], 175);
        assert!(out[4] < out[5] && out[7] < out[6]);
    }
}
