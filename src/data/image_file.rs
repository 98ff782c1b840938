//! Decoding image files and image bytes with bounds: a small file can
//! declare an enormous picture (a 439 KB PNG of 20000×20000 pixels takes
//! gigabytes once decoded), so the size an image declares is checked before
//! any pixel is decoded, and the decoder's allocations are capped too. Files
//! are read as [`crate::fsutil::read_input`] reads them: regular files only
//! (a FIFO never blocks), and no larger than [`MAX_FILE_BYTES`].

use crate::fsutil::{Input, read_input};
use anyhow::Result;
use image::{DynamicImage, ImageReader, Limits};
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

/// [`open`] with the reason as plain text, for readers that may skip a bad
/// file (an image folder with `on_bad_image: "skip"`).
pub fn open_or_why(path: &Path) -> Result<DynamicImage, String> {
    let bytes = read_input(
        path,
        Input {
            what: "image",
            max_bytes: MAX_FILE_BYTES,
        },
    )
    .map_err(|e| format!("{e:#}"))?;
    decode(&bytes, Some(path))
}

/// Decodes image bytes; `path` gives the format when the content does not.
pub fn decode(bytes: &[u8], path: Option<&Path>) -> Result<DynamicImage, String> {
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
    let unreadable = |e: image::ImageError| match e {
        image::ImageError::Limits(_) => format!(
            "the image is too large to decode (at most {MAX_SIDE} pixels on a side and {} megapixels); \
             shrink it first",
            MAX_PIXELS / 1_000_000
        ),
        e => format!("not an image cnn can read (PNG, JPEG, BMP, PGM/PPM), or it is damaged: {e}"),
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
    reader()?.decode().map_err(unreadable)
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
