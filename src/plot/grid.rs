//! Grids of small images with captions (dataset samples, learned filters,
//! feature maps, the most confident mistakes) and the confusion matrix.
//! Values map to colours through a [`Scale`] that the figure states.

use super::{Figure, drawn, font};
use anyhow::Result;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// One small image: `channels × h × w` values (channel-major, as tensors are).
#[derive(Debug, Clone)]
pub struct Tile {
    pub w: usize,
    pub h: usize,
    /// 1 (mapped through the grid's scale) or 3 (RGB in [0, 1]).
    pub channels: usize,
    pub values: Vec<f32>,
    pub caption: String,
    /// Red captions mark something wrong (a mistake).
    pub alert: bool,
}

impl Tile {
    /// A grayscale or RGB image from bytes (`c×h×w`).
    pub fn from_bytes(bytes: &[u8], channels: usize, h: usize, w: usize, caption: String) -> Tile {
        Tile {
            w,
            h,
            channels,
            values: bytes.iter().map(|&b| b as f32 / 255.0).collect(),
            caption,
            alert: false,
        }
    }

    fn min_max(&self) -> (f32, f32) {
        self.values
            .iter()
            .filter(|v| v.is_finite())
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
                (a.min(v), b.max(v))
            })
    }
}

/// How single-channel values become colours.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scale {
    /// 0 is black, 1 is white (images).
    Gray,
    /// Each tile stretched from its own minimum (black) to maximum (white).
    GrayPerTile,
    /// Blue for −max, white for 0, red for +max, shared by every tile.
    Diverging { max: f32 },
}

impl Scale {
    fn color(self, v: f32, tile_range: (f32, f32)) -> RGBColor {
        let gray = |t: f32| {
            let g = (t.clamp(0.0, 1.0) * 255.0).round() as u8;
            RGBColor(g, g, g)
        };
        match self {
            Scale::Gray => gray(v),
            Scale::GrayPerTile => {
                let (lo, hi) = tile_range;
                gray(if hi > lo { (v - lo) / (hi - lo) } else { 0.5 })
            }
            Scale::Diverging { max } => diverging(if max > 0.0 { v / max } else { 0.0 }),
        }
    }

    /// What the colours mean, for the figure's footer.
    fn legend(self) -> Option<String> {
        match self {
            Scale::Gray => None,
            Scale::GrayPerTile => {
                Some("each map scaled from its own minimum (black) to maximum (white)".into())
            }
            Scale::Diverging { max } => Some(format!(
                "colour scale shared by all tiles: blue = {:.3}, white = 0, red = +{:.3}",
                -max, max
            )),
        }
    }
}

/// Blue (-1) → white (0) → red (+1).
fn diverging(t: f32) -> RGBColor {
    let t = t.clamp(-1.0, 1.0);
    let (r, g, b) = if t < 0.0 {
        let s = -t;
        (1.0 - s * 0.8, 1.0 - s * 0.6, 1.0)
    } else {
        (1.0, 1.0 - t * 0.75, 1.0 - t * 0.8)
    };
    RGBColor((r * 255.0) as u8, (g * 255.0) as u8, (b * 255.0) as u8)
}

/// A labelled row of tiles.
#[derive(Debug, Clone, Default)]
pub struct Row {
    pub label: Option<String>,
    pub tiles: Vec<Tile>,
}

/// Rows of tiles under a title, with a footer stating the colour scale.
#[derive(Debug, Clone)]
pub struct Grid {
    pub title: String,
    pub rows: Vec<Row>,
    /// Side of a tile in pixels.
    pub cell: u32,
    pub scale: Scale,
    /// Extra footer line.
    pub note: Option<String>,
    /// Row labels in a column on the left (a matrix of tiles) instead of
    /// above each row.
    pub labels_left: bool,
}

const TITLE_H: u32 = 50;
const ROW_LABEL_H: u32 = 26;
const CAPTION_H: u32 = 22;
const GAP: u32 = 8;
const FOOTER_LINE_H: u32 = 24;

/// Rough width of a line of text: about 0.55 em per character.
fn text_width(s: &str, px: f64) -> u32 {
    (s.chars().count() as f64 * px * 0.55) as u32
}

impl Grid {
    fn columns(&self) -> usize {
        self.rows
            .iter()
            .map(|r| r.tiles.len())
            .max()
            .unwrap_or(0)
            .max(1)
    }
    fn label_above(&self, row: &Row) -> u32 {
        if row.label.is_some() && !self.labels_left {
            ROW_LABEL_H
        } else {
            0
        }
    }
    fn row_height(&self, row: &Row) -> u32 {
        let captioned = row.tiles.iter().any(|t| !t.caption.is_empty());
        self.label_above(row) + self.cell + if captioned { CAPTION_H } else { 0 } + GAP
    }
    /// Where the tiles start: after the label column, if any.
    fn left(&self) -> u32 {
        let labels = self.rows.iter().filter_map(|r| r.label.as_deref());
        match labels.map(|l| text_width(l, 15.0)).max() {
            Some(w) if self.labels_left => w + 2 * GAP,
            _ => GAP,
        }
    }
    /// The note broken after spaces and commas to the width of the tiles
    /// and title (a long augmentation setting would otherwise stretch the
    /// picture to several times their width).
    fn footer_lines(&self) -> Vec<String> {
        let room = self.base_width().saturating_sub(2 * GAP);
        let mut lines: Vec<String> = self.scale.legend().into_iter().collect();
        let Some(note) = &self.note else {
            return lines;
        };
        let mut line = String::new();
        for piece in note.split_inclusive([' ', ',']) {
            if !line.is_empty() && text_width(&format!("{line}{piece}"), 15.0) > room {
                lines.push(std::mem::take(&mut line).trim_end().to_string());
            }
            line.push_str(piece);
        }
        if !line.is_empty() {
            lines.push(line);
        }
        lines
    }

    /// Wide enough for the tiles, the title and the row labels.
    fn base_width(&self) -> u32 {
        let labels = self.rows.iter().filter_map(|r| r.label.as_deref());
        let widest_label = labels.map(|l| text_width(l, 17.0)).max().unwrap_or(0);
        (self.left() + self.columns() as u32 * (self.cell + GAP))
            .max(text_width(&self.title, 24.0) + 2 * GAP)
            .max(widest_label + 2 * GAP)
            .max(320)
    }
}

impl Figure for Grid {
    fn size(&self) -> (u32, u32) {
        // Wide enough for the tiles, the title, the row labels and the
        // footer (whose note is broken to fit, a word too long excepted).
        let widest_footer = self
            .footer_lines()
            .iter()
            .map(|l| text_width(l, 15.0))
            .max()
            .unwrap_or(0);
        let w = self.base_width().max(widest_footer + 2 * GAP);
        let rows: u32 = self.rows.iter().map(|r| self.row_height(r)).sum();
        let footer = self.footer_lines().len() as u32 * FOOTER_LINE_H + GAP;
        (w, TITLE_H + rows + footer)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        let (_, h) = self.size();
        drawn(root.draw(&Text::new(
            self.title.clone(),
            (GAP as i32, 12),
            font(24.0).pos(Pos::new(HPos::Left, VPos::Top)),
        )))?;
        let left = self.left();
        let mut y = TITLE_H as i32;
        for row in &self.rows {
            if let Some(label) = &row.label {
                let text = if self.labels_left {
                    Text::new(
                        label.clone(),
                        (GAP as i32, y + self.cell as i32 / 2),
                        font(15.0).pos(Pos::new(HPos::Left, VPos::Center)),
                    )
                } else {
                    Text::new(label.clone(), (GAP as i32, y + 4), font(17.0))
                };
                drawn(root.draw(&text))?;
            }
            y += self.label_above(row) as i32;
            for (i, tile) in row.tiles.iter().enumerate() {
                let x0 = (left + i as u32 * (self.cell + GAP)) as i32;
                self.draw_tile(root, tile, x0, y)?;
                if !tile.caption.is_empty() {
                    let color = if tile.alert {
                        RGBColor(200, 0, 0)
                    } else {
                        BLACK
                    };
                    drawn(
                        root.draw(&Text::new(
                            tile.caption.clone(),
                            (x0 + self.cell as i32 / 2, y + self.cell as i32 + 3),
                            font(14.0)
                                .color(&color)
                                .pos(Pos::new(HPos::Center, VPos::Top)),
                        )),
                    )?;
                }
            }
            y += (self.row_height(row) - self.label_above(row)) as i32;
        }
        let mut fy = h as i32 - (self.footer_lines().len() as u32 * FOOTER_LINE_H) as i32 - 4;
        for line in self.footer_lines() {
            drawn(root.draw(&Text::new(line, (GAP as i32, fy), font(15.0))))?;
            fy += FOOTER_LINE_H as i32;
        }
        Ok(())
    }
}

impl Grid {
    /// One tile, each image pixel a block of screen pixels, with a thin frame.
    fn draw_tile<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
        tile: &Tile,
        x0: i32,
        y0: i32,
    ) -> Result<()> {
        let side = tile.w.max(tile.h).max(1) as f64;
        let px = self.cell as f64 / side;
        // Centre a non-square tile in its square cell.
        let ox = x0 as f64 + (self.cell as f64 - px * tile.w as f64) / 2.0;
        let oy = y0 as f64 + (self.cell as f64 - px * tile.h as f64) / 2.0;
        let range = tile.min_max();
        let plane = tile.w * tile.h;
        for yy in 0..tile.h {
            for xx in 0..tile.w {
                let color = if tile.channels == 3 {
                    let c = |k: usize| {
                        (tile.values[k * plane + yy * tile.w + xx].clamp(0.0, 1.0) * 255.0) as u8
                    };
                    RGBColor(c(0), c(1), c(2))
                } else {
                    self.scale.color(tile.values[yy * tile.w + xx], range)
                };
                let a = (
                    (ox + xx as f64 * px).round() as i32,
                    (oy + yy as f64 * px).round() as i32,
                );
                let b = (
                    (ox + (xx + 1) as f64 * px).round() as i32,
                    (oy + (yy + 1) as f64 * px).round() as i32,
                );
                drawn(root.draw(&Rectangle::new([a, b], color.filled())))?;
            }
        }
        let frame = [(x0, y0), (x0 + self.cell as i32, y0 + self.cell as i32)];
        drawn(root.draw(&Rectangle::new(frame, BLACK.mix(0.25))))?;
        Ok(())
    }
}

/// Counts of (true class, predicted class), coloured by the share of each
/// true class, with the count in every cell.
pub struct ConfusionFigure {
    pub title: String,
    pub classes: Vec<String>,
    /// `matrix[true][predicted]`.
    pub matrix: Vec<Vec<u64>>,
}

impl Figure for ConfusionFigure {
    fn size(&self) -> (u32, u32) {
        let n = self.classes.len() as u32;
        let cell = (700 / n.max(1)).clamp(18, 70);
        let label_w = self.label_width();
        (label_w + 60 + n * cell + 40, 90 + n * cell + label_w + 40)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        let n = self.classes.len();
        let cell = (700 / (n as u32).max(1)).clamp(18, 70) as i32;
        let left = self.label_width() as i32 + 60;
        let top = 90;
        drawn(root.draw(&Text::new(self.title.clone(), (12, 12), font(24.0))))?;
        drawn(root.draw(&Text::new(
            "predicted class →".to_string(),
            (left + cell * n as i32 / 2, top - 30),
            font(17.0).pos(Pos::new(HPos::Center, VPos::Top)),
        )))?;
        drawn(root.draw(&Text::new(
            "true class ↓".to_string(),
            (12, top - 30),
            font(17.0),
        )))?;
        let small = (cell as f64 * 0.32).clamp(9.0, 16.0);
        for (t, row) in self.matrix.iter().enumerate() {
            let total: u64 = row.iter().sum::<u64>().max(1);
            for (p, &count) in row.iter().enumerate() {
                let share = count as f32 / total as f32;
                let color = if t == p {
                    blend(RGBColor(255, 255, 255), RGBColor(33, 113, 181), share)
                } else {
                    blend(
                        RGBColor(255, 255, 255),
                        RGBColor(203, 24, 29),
                        (share * 4.0).min(1.0),
                    )
                };
                let (x, y) = (left + p as i32 * cell, top + t as i32 * cell);
                drawn(root.draw(&Rectangle::new(
                    [(x, y), (x + cell, y + cell)],
                    color.filled(),
                )))?;
                drawn(root.draw(&Rectangle::new(
                    [(x, y), (x + cell, y + cell)],
                    BLACK.mix(0.15),
                )))?;
                if count > 0 {
                    let text_color = if t == p && share > 0.6 { WHITE } else { BLACK };
                    drawn(
                        root.draw(&Text::new(
                            count.to_string(),
                            (x + cell / 2, y + cell / 2),
                            font(small)
                                .color(&text_color)
                                .pos(Pos::new(HPos::Center, VPos::Center)),
                        )),
                    )?;
                }
            }
            drawn(root.draw(&Text::new(
                self.classes[t].clone(),
                (left - 8, top + t as i32 * cell + cell / 2),
                font(15.0).pos(Pos::new(HPos::Right, VPos::Center)),
            )))?;
        }
        let bottom = top + n as i32 * cell + 8;
        for (p, name) in self.classes.iter().enumerate() {
            // Column labels run downwards so long names fit.
            drawn(
                root.draw(&Text::new(
                    name.clone(),
                    (left + p as i32 * cell + cell / 2, bottom),
                    font(15.0)
                        .transform(FontTransform::Rotate90)
                        .pos(Pos::new(HPos::Left, VPos::Center)),
                )),
            )?;
        }
        Ok(())
    }
}

impl ConfusionFigure {
    fn label_width(&self) -> u32 {
        let longest = self
            .classes
            .iter()
            .map(|c| c.chars().count())
            .max()
            .unwrap_or(1) as u32;
        (longest * 9).clamp(20, 200)
    }
}

fn blend(a: RGBColor, b: RGBColor, t: f32) -> RGBColor {
    let mix = |x: u8, y: u8| (x as f32 + (y as f32 - x as f32) * t.clamp(0.0, 1.0)) as u8;
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}
