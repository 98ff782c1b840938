//! Making an arbitrary image file look like the training data, for
//! `cnn predict` and `cnn feature-maps --image`: decode (PNG, JPEG, BMP,
//! PGM/PPM), flatten transparency onto white, convert to grayscale or RGB,
//! invert dark-on-light drawings for datasets of light-on-dark images, and
//! resize in one of three ways:
//! - `digit` (MNIST): crop to the ink, scale its longer side to 20/28 of the
//!   input, and centre it by its centre of mass, as MNIST itself was made;
//! - `fit` (Fashion-MNIST): scale the whole picture to fit, keeping the
//!   aspect ratio, centred on a black background;
//! - `stretch` (CIFAR-10, image folders): resize to the input size, as the
//!   training images were;
//! - `crop` (a config with `data.resize: {"shorter_side": N}`, such as the
//!   ImageNet models of configs/zoo): scale the shorter side to N, aspect
//!   kept, and cut out the centre.

use anyhow::Result;
use image::imageops::{self, FilterType};
use image::{GrayImage, RgbImage};
use serde::Serialize;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Fit {
    Digit,
    Fit,
    Stretch,
    /// The shorter side scaled (to `data.resize.shorter_side`, else 8/7 of
    /// the input's longer side, 256 for 224), then the centre cut out.
    Crop,
}

impl Fit {
    /// The way a config's training images were made: its `data.resize`,
    /// else the dataset's way.
    pub fn for_config(config: &crate::config::Config) -> Fit {
        match config.data.resize {
            crate::config::Resize::ShorterSide(_) => Fit::Crop,
            crate::config::Resize::Stretch => Fit::for_dataset(config.data.dataset.name()),
        }
    }

    /// The way that matches how a dataset's images were made.
    pub fn for_dataset(dataset: &str) -> Fit {
        match dataset {
            "mnist" => Fit::Digit,
            "fashion-mnist" => Fit::Fit,
            _ => Fit::Stretch,
        }
    }

    /// Whether images of this kind are light on a dark background.
    fn dark_background(self) -> bool {
        matches!(self, Fit::Digit | Fit::Fit)
    }
}

/// `img` made `w × h`: stretched, or (with `shorter`) its shorter side
/// scaled to `shorter` with the aspect ratio kept and the centre cut out,
/// as torchvision's `Resize(shorter)` then `CenterCrop((h, w))`: the longer
/// side becomes `shorter × long / short` rounded down, and the crop starts
/// at half the excess, rounded half to even.
pub fn resize<P>(
    img: &image::ImageBuffer<P, Vec<u8>>,
    w: u32,
    h: u32,
    shorter: Option<u32>,
) -> image::ImageBuffer<P, Vec<u8>>
where
    P: image::Pixel<Subpixel = u8> + 'static,
{
    let (ow, oh) = img.dimensions();
    let Some(s) = shorter else {
        if (ow, oh) == (w, h) {
            return img.clone();
        }
        return imageops::resize(img, w, h, FilterType::Triangle);
    };
    let long = |a: u32, b: u32| ((s as u64 * a as u64) / b.max(1) as u64).max(1) as u32;
    let (nw, nh) = if ow <= oh {
        (s, long(oh, ow))
    } else {
        (long(ow, oh), s)
    };
    let scaled = if (nw, nh) == (ow, oh) {
        img.clone()
    } else {
        imageops::resize(img, nw, nh, FilterType::Triangle)
    };
    let start =
        |total: u32, want: u32| (total.saturating_sub(want) as f64 / 2.0).round_ties_even() as u32;
    let (x, y) = (start(nw, w), start(nh, h));
    imageops::crop_imm(&scaled, x, y, w.min(nw), h.min(nh)).to_image()
}

/// The shorter side [`Fit::Crop`] scales to without `data.resize`: 8/7 of
/// the input's longer side (ImageNet's 256 for 224; timm's `crop_pct` 0.875).
pub fn default_shorter_side(h: usize, w: usize) -> u32 {
    (h.max(w) as f64 / 0.875).round() as u32
}

/// Reads an image file as `channels × h × w` bytes shaped like the training
/// data; [`Fit::Crop`] scales the shorter side to `shorter` (default
/// [`default_shorter_side`]).
pub fn load_image(
    path: &Path,
    channels: usize,
    h: usize,
    w: usize,
    fit: Fit,
    shorter: Option<u32>,
) -> Result<Vec<u8>> {
    let crop = (fit == Fit::Crop).then(|| shorter.unwrap_or_else(|| default_shorter_side(h, w)));
    let img = super::image_file::open(path)?;
    // Transparent pixels become white, as on a page.
    let rgba = img.to_rgba8();
    let flat = RgbImage::from_fn(rgba.width(), rgba.height(), |x, y| {
        let p = rgba.get_pixel(x, y).0;
        let a = p[3] as f32 / 255.0;
        let mix = |c: u8| (c as f32 * a + 255.0 * (1.0 - a)).round() as u8;
        image::Rgb([mix(p[0]), mix(p[1]), mix(p[2])])
    });
    match channels {
        1 => {
            let mut gray = image::DynamicImage::ImageRgb8(flat).to_luma8();
            if fit.dark_background() && border_mean(&gray) > 127.0 {
                imageops::invert(&mut gray);
            }
            Ok(match fit {
                Fit::Digit => digit(&gray, h, w),
                Fit::Fit => letterbox(&gray, h, w),
                Fit::Stretch | Fit::Crop => resize(&gray, w as u32, h as u32, crop),
            }
            .into_raw())
        }
        3 => {
            let rgb = resize(&flat, w as u32, h as u32, crop);
            // Channel-major, as tensors are.
            let plane = h * w;
            let mut out = vec![0u8; 3 * plane];
            for (i, p) in rgb.pixels().enumerate() {
                for c in 0..3 {
                    out[c * plane + i] = p.0[c];
                }
            }
            Ok(out)
        }
        c => crate::bail_input!(
            "the model takes {c}-channel images; cnn reads images as 1 (gray) or 3 (RGB) channels"
        ),
    }
}

/// Mean of the outermost pixels: light means a light background.
fn border_mean(img: &GrayImage) -> f64 {
    let (w, h) = img.dimensions();
    let mut sum = 0u64;
    let mut n = 0u64;
    for (x, y, p) in img.enumerate_pixels() {
        if x == 0 || y == 0 || x + 1 == w || y + 1 == h {
            sum += p.0[0] as u64;
            n += 1;
        }
    }
    sum as f64 / n.max(1) as f64
}

/// Scales `img` to fit inside `h × w` keeping its aspect ratio, centred on black.
fn letterbox(img: &GrayImage, h: usize, w: usize) -> GrayImage {
    let (iw, ih) = img.dimensions();
    let scale = (w as f64 / iw as f64).min(h as f64 / ih as f64);
    let nw = ((iw as f64 * scale).round() as u32).clamp(1, w as u32);
    let nh = ((ih as f64 * scale).round() as u32).clamp(1, h as u32);
    let small = imageops::resize(img, nw, nh, FilterType::Triangle);
    let mut canvas = GrayImage::new(w as u32, h as u32);
    imageops::overlay(
        &mut canvas,
        &small,
        ((w as u32 - nw) / 2).into(),
        ((h as u32 - nh) / 2).into(),
    );
    canvas
}

/// MNIST's recipe: the ink's bounding box scaled to 20×20 (for 28×28),
/// keeping the aspect ratio, then placed so its centre of mass is the centre.
fn digit(img: &GrayImage, h: usize, w: usize) -> GrayImage {
    let (iw, ih) = img.dimensions();
    let max = img.pixels().map(|p| p.0[0]).max().unwrap_or(0);
    let threshold = (max as f32 * 0.2) as u8;
    let (mut x0, mut y0, mut x1, mut y1) = (iw, ih, 0, 0);
    for (x, y, p) in img.enumerate_pixels() {
        if max > 0 && p.0[0] > threshold {
            x0 = x0.min(x);
            y0 = y0.min(y);
            x1 = x1.max(x);
            y1 = y1.max(y);
        }
    }
    if x0 > x1 {
        // No ink at all: a blank input stays blank.
        return GrayImage::new(w as u32, h as u32);
    }
    let ink = imageops::crop_imm(img, x0, y0, x1 - x0 + 1, y1 - y0 + 1).to_image();
    let box_side = ((h.min(w) as f64) * 20.0 / 28.0).round().max(1.0);
    let (cw, ch) = ink.dimensions();
    let scale = box_side / cw.max(ch) as f64;
    let nw = ((cw as f64 * scale).round() as u32).max(1);
    let nh = ((ch as f64 * scale).round() as u32).max(1);
    let small = imageops::resize(&ink, nw, nh, FilterType::CatmullRom);
    // Centre of mass of the scaled digit.
    let (mut sx, mut sy, mut total) = (0f64, 0f64, 0f64);
    for (x, y, p) in small.enumerate_pixels() {
        let v = p.0[0] as f64;
        sx += v * x as f64;
        sy += v * y as f64;
        total += v;
    }
    let (cx, cy) = if total > 0.0 {
        (sx / total, sy / total)
    } else {
        (nw as f64 / 2.0, nh as f64 / 2.0)
    };
    let left = (w as f64 / 2.0 - cx - 0.5).round() as i64;
    let top = (h as f64 / 2.0 - cy - 0.5).round() as i64;
    let mut canvas = GrayImage::new(w as u32, h as u32);
    imageops::overlay(&mut canvas, &small, left, top);
    canvas
}

#[cfg(test)]
mod tests {
    use super::*;

    fn save(img: &GrayImage, dir: &Path, name: &str) -> std::path::PathBuf {
        let p = dir.join(name);
        img.save(&p).unwrap();
        p
    }

    #[test]
    fn black_on_white_digits_are_inverted_cropped_and_centred() {
        let dir = tempfile::tempdir().unwrap();
        // A dark bar on white, off-centre in a 100×60 picture.
        let img = GrayImage::from_fn(100, 60, |x, y| {
            image::Luma([if (10..20).contains(&x) && (5..45).contains(&y) {
                0
            } else {
                255
            }])
        });
        let px = load_image(
            &save(&img, dir.path(), "bar.png"),
            1,
            28,
            28,
            Fit::Digit,
            None,
        )
        .unwrap();
        assert_eq!(px.len(), 784);
        // Light on dark now, 20 pixels tall, centred: the middle is ink, the corners are not.
        assert!(px[14 * 28 + 14] > 200, "centre is ink");
        assert_eq!(px[0], 0);
        let rows_with_ink = (0..28)
            .filter(|r| px[r * 28..(r + 1) * 28].iter().any(|&v| v > 100))
            .count();
        assert!((19..=21).contains(&rows_with_ink), "{rows_with_ink}");
    }

    #[test]
    fn fit_keeps_the_aspect_ratio() {
        let dir = tempfile::tempdir().unwrap();
        let img = GrayImage::from_pixel(56, 28, image::Luma([200]));
        let px = load_image(
            &save(&img, dir.path(), "wide.png"),
            1,
            28,
            28,
            Fit::Fit,
            None,
        )
        .unwrap();
        // 56×28 → 28×14 in the middle rows; light background → inverted to 55.
        assert_eq!(px[0], 0);
        assert_eq!(px[14 * 28 + 14], 55);
    }

    #[test]
    fn crop_scales_the_shorter_side_and_cuts_out_the_centre() {
        // Each pixel tells where it was: x in red, y in green.
        let img = RgbImage::from_fn(60, 30, |x, y| image::Rgb([x as u8, y as u8, 0]));
        // Shorter side already 30: no scaling; a 20×20 centre crop starts at (20, 5).
        let out = resize(&img, 20, 20, Some(30));
        assert_eq!(out.dimensions(), (20, 20));
        assert_eq!(out.get_pixel(0, 0).0, [20, 5, 0]);
        assert_eq!(out.get_pixel(19, 19).0, [39, 24, 0]);
        // Shorter side to 32: 60×30 becomes 64×32 (64 = 32 × 60 / 30) and
        // the crop starts at half the excess: (18, 2) for 28×28.
        let out = resize(&img, 28, 28, Some(32));
        assert_eq!(out.dimensions(), (28, 28));
        // A tall image: the longer side rounds down, as torchvision's.
        let tall = RgbImage::from_fn(30, 71, |x, y| image::Rgb([x as u8, y as u8, 0]));
        let out = resize(&tall, 20, 20, Some(30));
        // 71 is the longer side; the crop starts at (5, round_half_even(51 / 2) = 26).
        assert_eq!(out.get_pixel(0, 0).0, [5, 26, 0]);
        // Stretch ignores the aspect ratio.
        assert_eq!(resize(&img, 28, 28, None).dimensions(), (28, 28));
        // load_image's crop: 8/7 of the input by default (256 for 224).
        assert_eq!(default_shorter_side(224, 224), 256);
    }

    #[test]
    fn unreadable_files_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("not-an-image.png");
        std::fs::write(&p, b"hello").unwrap();
        let err = load_image(&p, 1, 28, 28, Fit::Digit, None).unwrap_err();
        assert!(
            err.is::<crate::error::InputError>() || format!("{err:#}").contains("not-an-image.png")
        );
        assert!(format!("{err:#}").contains("not-an-image.png"), "{err:#}");
    }
}
