//! The augmentations of photos, on `u8` images of `c×h×w` planes (`c` is 1
//! or 3): the random resized crop's window, colour jitter, the operations
//! of TrivialAugment and RandAugment, and random erasing's rectangle. They
//! follow torchvision's definitions (ranges, magnitudes, the order of the
//! operations) so that a recipe written for torchvision means the same
//! here; pixels are rounded rather than truncated, so values may differ by
//! one from torchvision's.
//!
//! Every transform draws a fixed count of numbers from the generator,
//! whatever it decides (the crop's ten tries are always drawn), so one
//! image's draws never move another's.

use crate::config::{
    AutoAugment, ColorJitter, MAGNITUDE_BINS, Policy, RandomErasing, RandomResizedCrop,
};
use rand::Rng;

/// `lo + (hi - lo)·u`.
fn uniform(rng: &mut impl Rng, lo: f64, hi: f64) -> f64 {
    let u: f64 = rng.random();
    lo + (hi - lo) * u
}

/// A whole number in `0..n` from one draw.
fn below(rng: &mut impl Rng, n: usize) -> usize {
    let u: f64 = rng.random();
    ((u * n as f64) as usize).min(n.saturating_sub(1))
}

/// A fair coin from one draw.
fn coin(rng: &mut impl Rng) -> bool {
    rng.random::<u64>() >> 63 == 1
}

/// The window `(x, y, w, h)` of a `width × height` image that the random
/// resized crop cuts out: ten tries at an area in `scale` and a log-uniform
/// aspect ratio in `ratio`, then the centre crop at the nearest allowed
/// ratio (torchvision's `RandomResizedCrop.get_params`).
pub fn resized_crop_window(
    r: &RandomResizedCrop,
    (width, height): (u32, u32),
    rng: &mut impl Rng,
) -> (u32, u32, u32, u32) {
    let (wf, hf) = (width as f64, height as f64);
    let area = wf * hf;
    let (log_lo, log_hi) = (r.ratio[0].ln(), r.ratio[1].ln());
    let mut found = None;
    for _ in 0..10 {
        let target = area * uniform(rng, r.scale[0], r.scale[1]);
        let aspect = uniform(rng, log_lo, log_hi).exp();
        let (uy, ux): (f64, f64) = (rng.random(), rng.random());
        let w = (target * aspect).sqrt().round();
        let h = (target / aspect).sqrt().round();
        if found.is_none() && w > 0.0 && h > 0.0 && w <= wf && h <= hf {
            let (w, h) = (w as u32, h as u32);
            let y = ((uy * (height - h + 1) as f64) as u32).min(height - h);
            let x = ((ux * (width - w + 1) as f64) as u32).min(width - w);
            found = Some((x, y, w, h));
        }
    }
    found.unwrap_or_else(|| {
        let in_ratio = wf / hf;
        let (w, h) = if in_ratio < r.ratio[0] {
            (width, ((wf / r.ratio[0]).round() as u32).clamp(1, height))
        } else if in_ratio > r.ratio[1] {
            (((hf * r.ratio[1]).round() as u32).clamp(1, width), height)
        } else {
            (width, height)
        };
        ((width - w) / 2, (height - h) / 2, w, h)
    })
}

/// ITU-R 601 luma, as torchvision's `rgb_to_grayscale`.
fn luma(r: f32, g: f32, b: f32) -> f32 {
    0.299 * r + 0.587 * g + 0.114 * b
}

fn to_u8(v: f32) -> u8 {
    v.round().clamp(0.0, 255.0) as u8
}

/// `f·image + (1 - f)·other`, per pixel (`other` gives each pixel's
/// partner from its plane and position).
fn blend(img: &mut [u8], f: f32, plane: usize, other: impl Fn(usize, usize) -> f32) {
    for (k, p) in img.iter_mut().enumerate() {
        let o = other(k / plane, k % plane);
        *p = to_u8(f * *p as f32 + (1.0 - f) * o);
    }
}

/// The luma of each pixel (the plane itself for grayscale).
fn grays(img: &[u8], [c, h, w]: [usize; 3]) -> Vec<f32> {
    let plane = h * w;
    if c == 1 {
        return img.iter().map(|&p| p as f32).collect();
    }
    (0..plane)
        .map(|i| {
            luma(
                img[i] as f32,
                img[plane + i] as f32,
                img[2 * plane + i] as f32,
            )
        })
        .collect()
}

fn brightness(img: &mut [u8], f: f32) {
    for p in img.iter_mut() {
        *p = to_u8(*p as f32 * f);
    }
}

fn contrast(img: &mut [u8], shape: [usize; 3], f: f32) {
    let g = grays(img, shape);
    let mean = g.iter().sum::<f32>() / g.len().max(1) as f32;
    blend(img, f, shape[1] * shape[2], |_, _| mean);
}

fn saturation(img: &mut [u8], shape: [usize; 3], f: f32) {
    if shape[0] == 1 {
        return;
    }
    let g = grays(img, shape);
    blend(img, f, shape[1] * shape[2], |_, i| g[i]);
}

/// Turns the hue by `shift` of the colour circle (HSV).
fn hue(img: &mut [u8], [c, h, w]: [usize; 3], shift: f32) {
    if c == 1 || shift == 0.0 {
        return;
    }
    let plane = h * w;
    for i in 0..plane {
        let (r, g, b) = (
            img[i] as f32 / 255.0,
            img[plane + i] as f32 / 255.0,
            img[2 * plane + i] as f32 / 255.0,
        );
        let max = r.max(g).max(b);
        let min = r.min(g).min(b);
        let delta = max - min;
        if delta == 0.0 {
            continue; // gray: no hue to turn
        }
        let hue = if max == r {
            ((g - b) / delta).rem_euclid(6.0)
        } else if max == g {
            (b - r) / delta + 2.0
        } else {
            (r - g) / delta + 4.0
        } / 6.0;
        let hue = (hue + shift).rem_euclid(1.0) * 6.0;
        let (s, v) = (delta / max, max);
        let sector = (hue.floor() as i32).rem_euclid(6);
        let frac = hue - hue.floor();
        let (p, q, t) = (
            v * (1.0 - s),
            v * (1.0 - s * frac),
            v * (1.0 - s * (1.0 - frac)),
        );
        let (r, g, b) = match sector {
            0 => (v, t, p),
            1 => (q, v, p),
            2 => (p, v, t),
            3 => (p, q, v),
            4 => (t, p, v),
            _ => (v, p, q),
        };
        img[i] = to_u8(r * 255.0);
        img[plane + i] = to_u8(g * 255.0);
        img[2 * plane + i] = to_u8(b * 255.0);
    }
}

/// Blends with a 3×3 smoothing of the image (the border kept), as PIL's
/// and torchvision's `adjust_sharpness`.
fn sharpness(img: &mut [u8], [c, h, w]: [usize; 3], f: f32) {
    if h < 3 || w < 3 {
        return;
    }
    let src = img.to_vec();
    for ch in 0..c {
        let p = &src[ch * h * w..(ch + 1) * h * w];
        for y in 1..h - 1 {
            for x in 1..w - 1 {
                let mut sum = 4.0 * p[y * w + x] as f32;
                for dy in 0..3 {
                    for dx in 0..3 {
                        sum += p[(y + dy - 1) * w + x + dx - 1] as f32;
                    }
                }
                let smooth = sum / 13.0;
                let k = ch * h * w + y * w + x;
                img[k] = to_u8(f * p[y * w + x] as f32 + (1.0 - f) * smooth);
            }
        }
    }
}

fn posterize(img: &mut [u8], bits: u32) {
    let mask = (0xFFu32 << (8 - bits.clamp(1, 8))) as u8;
    for p in img.iter_mut() {
        *p &= mask;
    }
}

fn solarize(img: &mut [u8], threshold: f64) {
    for p in img.iter_mut() {
        if *p as f64 >= threshold {
            *p = 255 - *p;
        }
    }
}

/// Each plane stretched to 0..=255.
fn autocontrast(img: &mut [u8], [_, h, w]: [usize; 3]) {
    for plane in img.chunks_exact_mut(h * w) {
        let (lo, hi) = plane
            .iter()
            .fold((255u8, 0u8), |(lo, hi), &p| (lo.min(p), hi.max(p)));
        if hi > lo {
            let scale = 255.0 / (hi - lo) as f32;
            for p in plane.iter_mut() {
                *p = to_u8((*p - lo) as f32 * scale);
            }
        }
    }
}

/// Each plane's histogram equalised (PIL's `ImageOps.equalize`).
fn equalize(img: &mut [u8], [_, h, w]: [usize; 3]) {
    for plane in img.chunks_exact_mut(h * w) {
        let mut hist = [0usize; 256];
        for &p in plane.iter() {
            hist[p as usize] += 1;
        }
        let last = hist.iter().rposition(|&n| n > 0).map_or(0, |i| hist[i]);
        let step = (plane.len() - last) / 255;
        if step == 0 {
            continue;
        }
        let mut lut = [0u8; 256];
        let mut n = step / 2;
        for (v, count) in hist.iter().enumerate() {
            lut[v] = (n / step).min(255) as u8;
            n += count;
        }
        for p in plane.iter_mut() {
            *p = lut[*p as usize];
        }
    }
}

/// Each output pixel takes the input pixel nearest to `source(x, y)` (pixel
/// centres at +0.5), `fill` outside.
fn remap(img: &mut [u8], [c, h, w]: [usize; 3], fill: u8, source: impl Fn(f64, f64) -> (f64, f64)) {
    let src = img.to_vec();
    for y in 0..h {
        for x in 0..w {
            let (sx, sy) = source(x as f64 + 0.5, y as f64 + 0.5);
            let (fx, fy) = (sx.floor(), sy.floor());
            let inside = fx >= 0.0 && fy >= 0.0 && (fx as usize) < w && (fy as usize) < h;
            for ch in 0..c {
                img[ch * h * w + y * w + x] = if inside {
                    src[ch * h * w + fy as usize * w + fx as usize]
                } else {
                    fill
                };
            }
        }
    }
}

/// The operations of TrivialAugment and RandAugment, in torchvision's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Identity,
    ShearX,
    ShearY,
    TranslateX,
    TranslateY,
    Rotate,
    Brightness,
    Color,
    Contrast,
    Sharpness,
    Posterize,
    Solarize,
    AutoContrast,
    Equalize,
}

pub const OPS: [Op; 14] = [
    Op::Identity,
    Op::ShearX,
    Op::ShearY,
    Op::TranslateX,
    Op::TranslateY,
    Op::Rotate,
    Op::Brightness,
    Op::Color,
    Op::Contrast,
    Op::Sharpness,
    Op::Posterize,
    Op::Solarize,
    Op::AutoContrast,
    Op::Equalize,
];

/// `lo + (hi - lo)·bin/(bins - 1)`: torchvision's `linspace` magnitudes.
fn linspace(lo: f64, hi: f64, bin: usize) -> f64 {
    lo + (hi - lo) * bin as f64 / (MAGNITUDE_BINS - 1) as f64
}

impl Op {
    /// The strength of magnitude `bin` under `policy`, and whether a
    /// random sign applies (torchvision's `_augmentation_space`).
    fn magnitude(self, policy: Policy, bin: usize, [_, h, w]: [usize; 3]) -> (f64, bool) {
        let wide = policy == Policy::TrivialAugmentWide;
        let bins = (MAGNITUDE_BINS - 1) as f64;
        match self {
            Op::Identity | Op::AutoContrast | Op::Equalize => (0.0, false),
            Op::ShearX | Op::ShearY => (linspace(0.0, if wide { 0.99 } else { 0.3 }, bin), true),
            Op::TranslateX | Op::TranslateY => {
                let side = if self == Op::TranslateX { w } else { h };
                let most = if wide {
                    32.0
                } else {
                    150.0 / 331.0 * side as f64
                };
                (linspace(0.0, most, bin), true)
            }
            Op::Rotate => (linspace(0.0, if wide { 135.0 } else { 30.0 }, bin), true),
            Op::Brightness | Op::Color | Op::Contrast | Op::Sharpness => {
                (linspace(0.0, if wide { 0.99 } else { 0.9 }, bin), true)
            }
            Op::Posterize => {
                let span = if wide { 6.0 } else { 4.0 };
                (8.0 - (bin as f64 / (bins / span)).round(), false)
            }
            Op::Solarize => (linspace(255.0, 0.0, bin), false),
        }
    }

    /// Applies the operation at strength `m` (signed where it has a sign).
    pub fn apply(self, img: &mut [u8], shape: [usize; 3], m: f64, fill: u8) {
        let [_, h, w] = shape;
        let (cx, cy) = (w as f64 / 2.0, h as f64 / 2.0);
        match self {
            Op::Identity => {}
            Op::ShearX => remap(img, shape, fill, |x, y| (x + m * y, y)),
            Op::ShearY => remap(img, shape, fill, |x, y| (x, y + m * x)),
            Op::TranslateX => {
                let t = m.trunc();
                remap(img, shape, fill, |x, y| (x - t, y))
            }
            Op::TranslateY => {
                let t = m.trunc();
                remap(img, shape, fill, |x, y| (x, y - t))
            }
            Op::Rotate => {
                // Counter-clockwise by m degrees on screen (y down).
                let (sin, cos) = m.to_radians().sin_cos();
                remap(img, shape, fill, |x, y| {
                    let (u, v) = (x - cx, y - cy);
                    (cx + cos * u - sin * v, cy + sin * u + cos * v)
                })
            }
            Op::Brightness => brightness(img, (1.0 + m) as f32),
            Op::Color => saturation(img, shape, (1.0 + m) as f32),
            Op::Contrast => contrast(img, shape, (1.0 + m) as f32),
            Op::Sharpness => sharpness(img, shape, (1.0 + m) as f32),
            Op::Posterize => posterize(img, m as u32),
            Op::Solarize => solarize(img, m),
            Op::AutoContrast => autocontrast(img, shape),
            Op::Equalize => equalize(img, shape),
        }
    }
}

/// TrivialAugment (one operation at a random strength) or RandAugment
/// (`num_ops` operations at `magnitude`), each operation with a random sign.
pub fn auto_augment(a: &AutoAugment, img: &mut [u8], shape: [usize; 3], rng: &mut impl Rng) {
    match a.policy {
        Policy::TrivialAugmentWide => {
            let op = OPS[below(rng, OPS.len())];
            let bin = below(rng, MAGNITUDE_BINS);
            let negative = coin(rng);
            let (m, signed) = op.magnitude(a.policy, bin, shape);
            op.apply(img, shape, if signed && negative { -m } else { m }, a.fill);
        }
        Policy::RandAugment => {
            for _ in 0..a.num_ops() {
                let op = OPS[below(rng, OPS.len())];
                let negative = coin(rng);
                let (m, signed) = op.magnitude(a.policy, a.magnitude(), shape);
                op.apply(img, shape, if signed && negative { -m } else { m }, a.fill);
            }
        }
    }
}

/// Brightness, contrast, saturation and hue at random strengths, in a
/// random order (torchvision's `ColorJitter`).
pub fn color_jitter(j: &ColorJitter, img: &mut [u8], shape: [usize; 3], rng: &mut impl Rng) {
    let mut order: [(u64, usize); 4] = std::array::from_fn(|k| (rng.random(), k));
    order.sort_unstable();
    let factor = |rng: &mut _, x: f64| uniform(rng, (1.0 - x).max(0.0), 1.0 + x) as f32;
    let b = factor(rng, j.brightness);
    let c = factor(rng, j.contrast);
    let s = factor(rng, j.saturation);
    let h = uniform(rng, -j.hue, j.hue) as f32;
    for (_, k) in order {
        match k {
            0 if j.brightness > 0.0 => brightness(img, b),
            1 if j.contrast > 0.0 => contrast(img, shape, c),
            2 if j.saturation > 0.0 => saturation(img, shape, s),
            3 if j.hue > 0.0 => hue(img, shape, h),
            _ => {}
        }
    }
}

/// A rectangle to erase: rows `y..y + h`, columns `x..x + w`, and the seed
/// of its noise when the value is "random".
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Erase {
    pub y: usize,
    pub x: usize,
    pub h: usize,
    pub w: usize,
    pub noise: u64,
}

/// Whether and where random erasing cuts a rectangle out of an image of
/// `shape` (torchvision's `RandomErasing.get_params`: ten tries).
pub fn erase_rect(e: &RandomErasing, [_, h, w]: [usize; 3], rng: &mut impl Rng) -> Option<Erase> {
    let chance: f64 = rng.random();
    let noise: u64 = rng.random();
    let area = (h * w) as f64;
    let (log_lo, log_hi) = (e.ratio[0].ln(), e.ratio[1].ln());
    let mut found = None;
    for _ in 0..10 {
        let target = area * uniform(rng, e.scale[0], e.scale[1]);
        let aspect = uniform(rng, log_lo, log_hi).exp();
        let (uy, ux): (f64, f64) = (rng.random(), rng.random());
        let eh = (target * aspect).sqrt().round() as usize;
        let ew = (target / aspect).sqrt().round() as usize;
        if found.is_none() && eh > 0 && ew > 0 && eh < h && ew < w {
            let y = ((uy * (h - eh + 1) as f64) as usize).min(h - eh);
            let x = ((ux * (w - ew + 1) as f64) as usize).min(w - ew);
            found = Some(Erase {
                y,
                x,
                h: eh,
                w: ew,
                noise,
            });
        }
    }
    if chance < e.p { found } else { None }
}

/// Writes `value` (a number, or standard normal noise from the rectangle's
/// seed) into the rectangle of every plane of a normalised image.
pub fn erase(img: &mut [f32], [c, h, w]: [usize; 3], r: &Erase, value: crate::config::EraseValue) {
    use rand::SeedableRng;
    let mut noise = crate::rng::Rng::seed_from_u64(r.noise);
    for ch in 0..c {
        for y in r.y..r.y + r.h {
            let row = &mut img[ch * h * w + y * w + r.x..ch * h * w + y * w + r.x + r.w];
            for v in row {
                *v = match value {
                    crate::config::EraseValue::Constant(x) => x as f32,
                    crate::config::EraseValue::Random => {
                        rand_distr::Distribution::sample(&rand_distr::StandardNormal, &mut noise)
                    }
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EraseValue;
    use crate::rng;

    fn stream(i: u64) -> rng::Rng {
        rng::stream(3, rng::Purpose::Augment, i)
    }

    /// An RGB image whose planes ramp along x, y and both.
    fn ramp([_, h, w]: [usize; 3]) -> Vec<u8> {
        let mut v = Vec::new();
        for ch in 0..3 {
            for y in 0..h {
                for x in 0..w {
                    v.push(match ch {
                        0 => (x * 255 / (w - 1)) as u8,
                        1 => (y * 255 / (h - 1)) as u8,
                        _ => ((x + y) * 255 / (w + h - 2)) as u8,
                    });
                }
            }
        }
        v
    }

    #[test]
    fn the_crop_window_stays_inside_and_covers_the_scale() {
        let r = RandomResizedCrop::default();
        let mut areas = Vec::new();
        for i in 0..500 {
            let (x, y, w, h) = resized_crop_window(&r, (500, 375), &mut stream(i));
            assert!(
                w >= 1 && h >= 1 && x + w <= 500 && y + h <= 375,
                "{x} {y} {w} {h}"
            );
            let a = (w * h) as f64 / (500.0 * 375.0);
            assert!((0.07..=1.0).contains(&a), "{a}");
            let ratio = w as f64 / h as f64;
            assert!((0.7..=1.4).contains(&ratio), "{ratio}");
            areas.push(a);
        }
        // Areas spread over the range, not stuck at one size.
        let mean = areas.iter().sum::<f64>() / areas.len() as f64;
        assert!((0.4..0.65).contains(&mean), "{mean}");
        // A ratio no try can meet falls back to the centre at the nearest ratio.
        let thin = RandomResizedCrop {
            scale: [1.0, 1.0],
            ratio: [2.0, 2.0],
        };
        assert_eq!(
            resized_crop_window(&thin, (100, 100), &mut stream(0)),
            (0, 25, 100, 50)
        );
        // The whole image at scale 1 and the image's own ratio.
        let all = RandomResizedCrop {
            scale: [1.0, 1.0],
            ratio: [1.5, 1.5],
        };
        assert_eq!(
            resized_crop_window(&all, (60, 40), &mut stream(1)),
            (0, 0, 60, 40)
        );
    }

    #[test]
    fn colour_operations_do_what_their_names_say() {
        let shape = [3, 8, 8];
        let img = ramp(shape);
        let mean = |v: &[u8]| v.iter().map(|&p| p as f64).sum::<f64>() / v.len() as f64;
        let mut dark = img.clone();
        brightness(&mut dark, 0.5);
        assert!((mean(&dark) - mean(&img) / 2.0).abs() < 1.0);
        let mut flat = img.clone();
        contrast(&mut flat, shape, 0.0);
        assert!(flat.iter().all(|&p| p == flat[0]));
        let mut gray = img.clone();
        saturation(&mut gray, shape, 0.0);
        assert_eq!(gray[..64], gray[64..128]);
        assert_eq!(gray[..64], gray[128..]);
        // A hue turn of a third moves red to green.
        let mut red = vec![200, 0, 0];
        hue(&mut red, [3, 1, 1], 1.0 / 3.0);
        assert_eq!(red, [0, 200, 0]);
        let mut red = vec![200, 10, 10];
        hue(&mut red, [3, 1, 1], 0.0);
        assert_eq!(red, [200, 10, 10]);
        let mut p = vec![0b1011_0111];
        posterize(&mut p, 2);
        assert_eq!(p, [0b1000_0000]);
        let mut s = vec![10, 200];
        solarize(&mut s, 128.0);
        assert_eq!(s, [10, 55]);
        let mut a = vec![50, 100, 150, 50];
        autocontrast(&mut a, [1, 2, 2]);
        assert_eq!(a, [0, 128, 255, 0]);
        // A narrow band of values spreads over the whole range.
        let mut e: Vec<u8> = (0..4096).map(|v| (v / 256) as u8 + 100).collect();
        equalize(&mut e, [1, 64, 64]);
        assert!(e[0] < 20 && e[4095] > 230, "{} {}", e[0], e[4095]);
        // Sharpness 1 is the identity, and the border is kept at any factor.
        let mut same = img.clone();
        sharpness(&mut same, shape, 1.0);
        assert_eq!(same, img);
        let mut soft = img.clone();
        sharpness(&mut soft, shape, 0.0);
        assert_eq!(soft[..8], img[..8]);
    }

    #[test]
    fn geometric_operations_move_pixels_and_fill_the_rest() {
        let shape = [1, 4, 4];
        let img: Vec<u8> = (1..=16).collect();
        let mut t = img.clone();
        Op::TranslateX.apply(&mut t, shape, 1.0, 0);
        assert_eq!(t[..4], [0, 1, 2, 3]);
        let mut t = img.clone();
        Op::TranslateY.apply(&mut t, shape, -1.0, 9);
        assert_eq!(t[..4], [5, 6, 7, 8]);
        assert_eq!(t[12..], [9, 9, 9, 9]);
        let mut r = img.clone();
        Op::Rotate.apply(&mut r, shape, 180.0, 0);
        assert_eq!(r, img.iter().rev().copied().collect::<Vec<_>>());
        let mut s = img.clone();
        Op::ShearX.apply(&mut s, shape, 0.0, 0);
        assert_eq!(s, img);
    }

    #[test]
    fn policies_draw_a_fixed_count_and_the_same_stream_gives_the_same_image() {
        let shape = [3, 16, 16];
        for policy in [Policy::TrivialAugmentWide, Policy::RandAugment] {
            let a = AutoAugment {
                policy,
                num_ops: None,
                magnitude: None,
                fill: 0,
            };
            let mut changed = 0;
            for i in 0..40 {
                let (mut x, mut y) = (ramp(shape), ramp(shape));
                let (mut r1, mut r2) = (stream(i), stream(i));
                auto_augment(&a, &mut x, shape, &mut r1);
                auto_augment(&a, &mut y, shape, &mut r2);
                assert_eq!(x, y);
                changed += usize::from(x != ramp(shape));
                // The same count of draws whatever was picked.
                let mut fresh = stream(i);
                let draws = if policy == Policy::RandAugment { 4 } else { 3 };
                for _ in 0..draws {
                    let _: u64 = fresh.random();
                }
                assert_eq!(r1.random::<u64>(), fresh.random::<u64>());
            }
            assert!(changed > 25, "{policy:?}: {changed} of 40 changed");
        }
        // RandAugment's magnitudes grow with `magnitude`.
        let shape = [3, 32, 32];
        assert_eq!(
            Op::Rotate.magnitude(Policy::RandAugment, 30, shape),
            (30.0, true)
        );
        assert_eq!(
            Op::Posterize.magnitude(Policy::RandAugment, 30, shape).0,
            4.0
        );
        assert_eq!(
            Op::Posterize
                .magnitude(Policy::TrivialAugmentWide, 30, shape)
                .0,
            2.0
        );
        assert_eq!(
            Op::Solarize
                .magnitude(Policy::TrivialAugmentWide, 0, shape)
                .0,
            255.0
        );
    }

    #[test]
    fn jitter_of_zero_is_the_identity_and_erasing_keeps_its_rectangle() {
        let shape = [3, 8, 8];
        let mut img = ramp(shape);
        color_jitter(&ColorJitter::default(), &mut img, shape, &mut stream(0));
        assert_eq!(img, ramp(shape));
        let j = ColorJitter {
            brightness: 0.4,
            contrast: 0.4,
            saturation: 0.4,
            hue: 0.1,
        };
        color_jitter(&j, &mut img, shape, &mut stream(0));
        assert_ne!(img, ramp(shape));

        let e = RandomErasing {
            p: 1.0,
            scale: [0.1, 0.2],
            ratio: [0.5, 2.0],
            value: EraseValue::Constant(-7.0),
        };
        let shape = [2, 20, 20];
        let r = erase_rect(&e, shape, &mut stream(5)).expect("p = 1 always erases");
        let area = (r.h * r.w) as f64 / 400.0;
        assert!((0.05..0.25).contains(&area), "{r:?}");
        let mut xs = vec![1.0f32; 800];
        erase(&mut xs, shape, &r, e.value);
        let erased = xs.iter().filter(|&&v| v == -7.0).count();
        assert_eq!(erased, 2 * r.h * r.w);
        let never = RandomErasing { p: 0.0, ..e };
        assert!(erase_rect(&never, shape, &mut stream(5)).is_none());
        let mut noisy = vec![1.0f32; 800];
        erase(&mut noisy, shape, &r, EraseValue::Random);
        let again = {
            let mut v = vec![1.0f32; 800];
            erase(&mut v, shape, &r, EraseValue::Random);
            v
        };
        assert_eq!(noisy, again);
        assert!(noisy.iter().filter(|&&v| v != 1.0).count() == 2 * r.h * r.w);
    }
}
