//! Decoding image files and image bytes with bounds: a small file can
//! declare an enormous picture (a 439 KB PNG of 20000×20000 pixels takes
//! gigabytes once decoded), so the size an image declares is checked before
//! any pixel is decoded, and the decoder's allocations are capped too. Files
//! are read as [`crate::fsutil::read_input`] reads them: regular files only
//! (a FIFO never blocks), and no larger than [`MAX_FILE_BYTES`].

use crate::fsutil::{Input, read_input};
use anyhow::Result;
use image::{DynamicImage, ImageDecoder, ImageReader, Limits};
use std::io::Cursor;
use std::path::Path;

/// The most pixels an image may have (50 megapixels: more than a
/// phone camera's photos; a network's input is far smaller).
pub const MAX_PIXELS: u64 = 50_000_000;
/// The longest side an image may have.
pub const MAX_SIDE: u32 = 16_384;
/// The largest image file read.
pub const MAX_FILE_BYTES: u64 = 256 << 20;

/// Reads and decodes the image file `path` (format from its content, else
/// its extension); errors are input errors that name the file.
pub fn open(path: &Path) -> Result<DynamicImage> {
    let bytes = read_input(
        path,
        Input {
            what: "image",
            max_bytes: MAX_FILE_BYTES,
        },
    )?;
    decode(&bytes, Some(path)).map_err(|why| crate::input_error!("{}: {why}", path.display()))
}

/// The bytes of the image file `path`, the reason as plain text.
fn bytes_or_why(path: &Path) -> Result<Vec<u8>, String> {
    read_input(
        path,
        Input {
            what: "image",
            max_bytes: MAX_FILE_BYTES,
        },
    )
    .map_err(|e| format!("{e:#}"))
}

/// [`open`] with the reason as plain text, for readers that may skip a bad
/// file (an image folder with `on_bad_image: "skip"`).
pub fn open_or_why(path: &Path) -> Result<DynamicImage, String> {
    decode(&bytes_or_why(path)?, Some(path))
}

/// The width and height the image file `path` declares, checked as
/// [`decode`] checks them, without decoding its pixels: a folder streamed
/// from its files (`data.cache: "none"`) is checked this way when listed.
pub fn dimensions_or_why(path: &Path) -> Result<(u32, u32), String> {
    Ok(probe(&bytes_or_why(path)?, Some(path))?.0)
}

/// Decodes image bytes; `path` gives the format when the content does not.
pub fn decode(bytes: &[u8], path: Option<&Path>) -> Result<DynamicImage, String> {
    let (_, reader) = probe(bytes, path)?;
    // A photo's EXIF orientation is applied, as torchvision's readers and
    // every viewer do: a phone's portrait shot comes out upright.
    let mut decoder = reader.into_decoder().map_err(unreadable)?;
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder).map_err(unreadable)?;
    img.apply_orientation(orientation);
    Ok(img)
}

fn unreadable(e: image::ImageError) -> String {
    match e {
        image::ImageError::Limits(_) => format!(
            "the image is too large to decode (at most {MAX_SIDE} pixels on a side and {} megapixels); \
             shrink it first",
            MAX_PIXELS / 1_000_000
        ),
        e => format!("not an image cnn can read (PNG, JPEG, BMP, PGM/PPM), or it is damaged: {e}"),
    }
}

/// An image's declared width and height, and a reader to decode it with.
type Probed<'a> = ((u32, u32), ImageReader<Cursor<&'a [u8]>>);

/// The declared size, refused when empty or too large, and a fresh reader
/// to decode the pixels with.
fn probe<'a>(bytes: &'a [u8], path: Option<&Path>) -> Result<Probed<'a>, String> {
    let reader = || -> Result<ImageReader<Cursor<&[u8]>>, String> {
        let mut r = ImageReader::new(Cursor::new(bytes));
        if let Some(format) = path.and_then(|p| image::ImageFormat::from_path(p).ok()) {
            r.set_format(format);
        }
        let mut r = r.with_guessed_format().map_err(|e| e.to_string())?;
        let mut limits = Limits::default();
        limits.max_image_width = Some(MAX_SIDE);
        limits.max_image_height = Some(MAX_SIDE);
        r.limits(limits);
        Ok(r)
    };
    let (w, h) = reader()?.into_dimensions().map_err(unreadable)?;
    if w == 0 || h == 0 {
        return Err(format!("an empty image ({w}×{h} pixels)"));
    }
    if w > MAX_SIDE || h > MAX_SIDE || w as u64 * h as u64 > MAX_PIXELS {
        return Err(format!(
            "the image is {w}×{h} pixels, too large to decode (at most {MAX_SIDE} on a side and {} \
             megapixels); shrink it first",
            MAX_PIXELS / 1_000_000
        ));
    }
    Ok(((w, h), reader()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A PNG of `w`×`h` black pixels, compressed to almost nothing.
    fn png(w: u32, h: u32) -> Vec<u8> {
        let img = image::GrayImage::new(w, h);
        let mut out = Vec::new();
        img.write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png)
            .unwrap();
        out
    }

    #[test]
    fn an_image_declaring_too_many_pixels_is_refused_before_decoding() {
        assert_eq!(decode(&png(3, 2), None).unwrap().width(), 3);
        // 9000×9000 = 81 megapixels in a small file.
        let big = png(9000, 9000);
        assert!(big.len() < 1_000_000, "{}", big.len());
        let started = std::time::Instant::now();
        let err = decode(&big, None).unwrap_err();
        assert!(err.contains("9000×9000 pixels, too large"), "{err}");
        assert!(started.elapsed().as_secs() < 2);
        let err = decode(b"not an image", None).unwrap_err();
        assert!(err.contains("not an image cnn can read"), "{err}");
    }

    /// A 4×2 JPEG, left half black and right half white, whose EXIF says
    /// "rotate 90° clockwise to view" (orientation 6).
    fn rotated_jpeg() -> Vec<u8> {
        use image::ImageEncoder;
        let img =
            image::GrayImage::from_fn(4, 2, |x, _| image::Luma([if x < 2 { 0 } else { 255 }]));
        // TIFF header (big-endian), one IFD entry: 0x0112 Orientation, SHORT, 1, value 6.
        let exif = [
            b'M', b'M', 0, 42, 0, 0, 0, 8, 0, 1, 0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 6, 0, 0, 0, 0, 0,
            0,
        ];
        let mut out = Vec::new();
        let mut enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 100);
        enc.set_exif_metadata(exif.to_vec()).unwrap();
        enc.write_image(img.as_raw(), 4, 2, image::ExtendedColorType::L8)
            .unwrap();
        out
    }

    #[test]
    fn exif_orientation_is_applied_and_odd_pngs_decode() {
        let img = decode(&rotated_jpeg(), None).unwrap().to_luma8();
        // Upright: 2 wide and 4 tall, the white half (on the right) now at the bottom.
        assert_eq!(img.dimensions(), (2, 4));
        assert!(img.get_pixel(0, 0).0[0] < 60 && img.get_pixel(1, 3).0[0] > 200);
        // 16-bit gray and RGBA PNGs are read, scaled to 8 bits.
        let mut wide = Vec::new();
        image::ImageBuffer::<image::Luma<u16>, _>::from_pixel(2, 2, image::Luma([65535u16]))
            .write_to(&mut Cursor::new(&mut wide), image::ImageFormat::Png)
            .unwrap();
        assert_eq!(
            decode(&wide, None).unwrap().to_luma8().get_pixel(0, 0).0,
            [255]
        );
        let mut rgba = Vec::new();
        image::RgbaImage::from_pixel(2, 2, image::Rgba([10, 20, 30, 40]))
            .write_to(&mut Cursor::new(&mut rgba), image::ImageFormat::Png)
            .unwrap();
        assert_eq!(
            decode(&rgba, None).unwrap().to_rgb8().get_pixel(1, 1).0,
            [10, 20, 30]
        );
        // A JPEG cut short is named as damaged, not decoded into garbage or a panic.
        let jpeg = rotated_jpeg();
        let err = decode(&jpeg[..jpeg.len() / 2], None).unwrap_err();
        assert!(err.contains("damaged"), "{err}");
    }

    #[test]
    fn a_cmyk_jpeg_decodes_to_its_colours() {
        // 8×8, left half red and right half blue, saved by Pillow as CMYK.
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/photos/cmyk.jpg");
        let rgb = open(&path).unwrap().to_rgb8();
        assert_eq!(rgb.dimensions(), (8, 8));
        let [r, g, b] = rgb.get_pixel(1, 4).0;
        assert!(r > 200 && g < 60 && b < 60, "left {:?}", [r, g, b]);
        let [r, g, b] = rgb.get_pixel(6, 4).0;
        assert!(r < 60 && g < 60 && b > 200, "right {:?}", [r, g, b]);
    }

    #[test]
    fn a_fifo_or_a_directory_is_named_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let err = open(dir.path()).unwrap_err();
        assert_eq!(crate::error::exit_code(&err), 2);
        assert!(format!("{err:#}").contains("is a directory"), "{err:#}");
        let fifo = dir.path().join("pipe.png");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let err = open_or_why(&fifo).unwrap_err();
        assert!(err.contains("FIFO"), "{err}");
    }
}
