//! Pictures, drawn with plotters: training curves ([`chart`]), grids of small
//! images such as filters, feature maps and dataset samples ([`grid`]), and
//! confusion matrices. Text uses DejaVu Sans embedded in the binary, so
//! nothing needs to be installed. The output's extension picks the format:
//! PNG (encoded with `image`) or SVG. Files are written atomically.

pub mod chart;
pub mod grid;

use anyhow::{Context, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;
use std::sync::Once;

static FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

/// The font family every figure uses.
pub const FONT_FAMILY: &str = "sans-serif";

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for style in [FontStyle::Normal, FontStyle::Bold] {
            // The font is compiled in; it cannot fail to parse.
            let _ = plotters::style::register_font(FONT_FAMILY, style, FONT);
        }
    });
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Png,
    Svg,
}

/// The format for an output path, from its extension.
pub fn format_of(path: &Path) -> Result<Format> {
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "png" => Ok(Format::Png),
        "svg" => Ok(Format::Svg),
        _ => crate::bail_input!(
            "{}: a picture's file name must end in .png or .svg",
            path.display()
        ),
    }
}

/// Something drawn at a fixed size on any plotters backend.
pub trait Figure {
    /// Width and height in pixels.
    fn size(&self) -> (u32, u32);
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()>;
}

/// Turns a plotters drawing error into an `anyhow` error.
pub fn drawn<T, E: std::fmt::Display>(r: std::result::Result<T, E>) -> Result<T> {
    r.map_err(|e| anyhow::anyhow!("drawing the figure failed: {e}"))
}

/// Refuses, before any work, a picture path that is not `.png`/`.svg` or
/// that the output policy (`crate::output`) does not write; `flag` names
/// the option that gave it.
pub fn check(path: &Path, force: bool, flag: &str) -> Result<Format> {
    crate::output::check(path, force, flag)?;
    format_of(path)
}

/// Renders `figure` to `path` (PNG or SVG by extension), under the output
/// policy.
pub fn save(figure: &impl Figure, path: &Path, force: bool, flag: &str) -> Result<()> {
    let format = check(path, force, flag)?;
    let bytes = render(figure, format)?;
    crate::output::write(path, &bytes, force, flag)
        .with_context(|| format!("writing {}", path.display()))
}

/// The longest side of a picture, in pixels.
pub const MAX_SIDE: u32 = 16_384;
/// The most pixels a picture may have (its PNG buffer is 3 bytes each).
pub const MAX_PIXELS: u64 = 64 << 20;

/// Renders `figure` to the bytes of a PNG or SVG file. A picture too
/// large to be of use (and to fit in memory) is refused; the commands
/// bound their counts so that this is only the last guard.
pub fn render(figure: &impl Figure, format: Format) -> Result<Vec<u8>> {
    register_font();
    let (w, h) = figure.size();
    if w > MAX_SIDE || h > MAX_SIDE || w as u64 * h as u64 > MAX_PIXELS {
        crate::bail_input!(
            "the picture would be {w}×{h} pixels, more than the {MAX_SIDE} on a side and {} megapixels \
             cnn draws; show fewer images or maps",
            MAX_PIXELS >> 20
        );
    }
    match format {
        Format::Png => {
            let mut rgb = vec![255u8; w as usize * h as usize * 3];
            {
                let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
                drawn(root.fill(&WHITE))?;
                figure.draw(&root)?;
                drawn(root.present())?;
            }
            let img = image::RgbImage::from_raw(w, h, rgb).context("picture buffer size")?;
            let mut bytes = Vec::new();
            img.write_to(
                &mut std::io::Cursor::new(&mut bytes),
                image::ImageFormat::Png,
            )
            .context("encoding the PNG")?;
            Ok(bytes)
        }
        Format::Svg => {
            let mut svg = String::new();
            {
                let root = SVGBackend::with_string(&mut svg, (w, h)).into_drawing_area();
                drawn(root.fill(&WHITE))?;
                figure.draw(&root)?;
                drawn(root.present())?;
            }
            Ok(svg.into_bytes())
        }
    }
}

/// A text style in the embedded font.
pub fn font(size: f64) -> TextStyle<'static> {
    (FONT_FAMILY, size).into_font().into()
}

/// Distinct colours for runs or series (Tableau 10).
pub const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

pub fn palette(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}
