//! Line charts of training histories: loss, accuracy and learning rate per
//! epoch for one or several runs (colour per run; solid train, dashed
//! validation, dotted test), and a single-metric chart for comparing many
//! runs (`cnn report --plot`).

use super::{Figure, drawn, font, palette};
use crate::history::EpochRecord;
use anyhow::Result;
use plotters::coord::Shift;
use plotters::prelude::*;

/// One run's history and the name it goes by in legends.
#[derive(Debug, Clone)]
pub struct RunHistory {
    pub name: String,
    pub records: Vec<EpochRecord>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Train,
    Val,
    Test,
}

impl Split {
    fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::Test => "test",
        }
    }
}

/// A per-epoch quantity of the history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    Loss(Split),
    Accuracy(Split),
    Lr,
}

impl Metric {
    fn value(self, r: &EpochRecord) -> Option<f64> {
        match self {
            Metric::Loss(Split::Train) => Some(r.train_loss),
            Metric::Loss(Split::Val) => r.val_loss,
            Metric::Loss(Split::Test) => r.test_loss,
            Metric::Accuracy(Split::Train) => Some(100.0 * r.train_acc),
            Metric::Accuracy(Split::Val) => r.val_acc.map(|a| 100.0 * a),
            Metric::Accuracy(Split::Test) => r.test_acc.map(|a| 100.0 * a),
            Metric::Lr => Some(r.lr),
        }
        .filter(|v| v.is_finite())
    }
}

/// One line of a panel.
struct Series {
    label: String,
    color: RGBColor,
    split: Split,
    points: Vec<(f64, f64)>,
}

/// One chart: a title, axis labels and its lines.
struct Panel {
    title: String,
    y_label: &'static str,
    series: Vec<Series>,
    log_y: bool,
    legend: SeriesLabelPosition,
}

impl Panel {
    fn new(title: &str, y_label: &'static str, runs: &[RunHistory], metrics: &[Metric]) -> Panel {
        let mut series = Vec::new();
        for (i, run) in runs.iter().enumerate() {
            for &m in metrics {
                let points: Vec<(f64, f64)> = run
                    .records
                    .iter()
                    .filter_map(|r| m.value(r).map(|v| (r.epoch as f64, v)))
                    .collect();
                if points.is_empty() {
                    continue;
                }
                let split = match m {
                    Metric::Loss(s) | Metric::Accuracy(s) => s,
                    Metric::Lr => Split::Train,
                };
                let label = match (runs.len(), m) {
                    (1, Metric::Lr) => "learning rate".to_string(),
                    (1, _) => split.name().to_string(),
                    (_, Metric::Lr) => run.name.clone(),
                    _ if metrics.len() == 1 => run.name.clone(),
                    _ => format!("{} {}", run.name, split.name()),
                };
                // One run: a colour per split; several: a colour per run.
                let color = if runs.len() == 1 {
                    palette(split as usize)
                } else {
                    palette(i)
                };
                series.push(Series {
                    label,
                    color,
                    split,
                    points,
                });
            }
        }
        let ys = series.iter().flat_map(|s| s.points.iter().map(|p| p.1));
        let (lo, hi) = ys.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), y| {
            (a.min(y), b.max(y))
        });
        let log_y = metrics == [Metric::Lr] && lo > 0.0 && hi / lo > 20.0;
        // Accuracy rises towards the top right: keep the legend out of its way.
        let legend = if matches!(metrics.first(), Some(Metric::Accuracy(_))) {
            SeriesLabelPosition::LowerRight
        } else {
            SeriesLabelPosition::UpperRight
        };
        Panel {
            title: title.to_string(),
            y_label,
            series,
            log_y,
            legend,
        }
    }

    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<()> {
        let xs = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.0));
        let (x_lo, x_hi) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
            (a.min(x), b.max(x))
        });
        let ys = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1));
        let (y_lo, y_hi) = ys.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), y| {
            (a.min(y), b.max(y))
        });
        if !x_lo.is_finite() || !y_lo.is_finite() {
            drawn(area.titled(&format!("{} (no data)", self.title), font(22.0)))?;
            return Ok(());
        }
        // Epochs start at 1; leave half an epoch of margin on both sides.
        let x_range = (x_lo - 0.5).max(0.0)..x_hi + 0.5;
        let margin = ((y_hi - y_lo) * 0.08).max(y_hi.abs() * 0.02).max(1e-9);
        let mut builder = ChartBuilder::on(area);
        builder
            .caption(&self.title, font(22.0))
            .margin(12)
            .x_label_area_size(45)
            .y_label_area_size(80);
        let tick_count = ((x_hi - x_lo).round() as usize + 1).clamp(2, 12);
        if self.log_y {
            let mut chart =
                drawn(builder.build_cartesian_2d(x_range, (y_lo * 0.8..y_hi * 1.25).log_scale()))?;
            drawn(
                chart
                    .configure_mesh()
                    .x_desc("epoch")
                    .y_desc(self.y_label)
                    .x_labels(tick_count)
                    .x_label_formatter(&|x| format!("{x:.0}"))
                    .y_label_formatter(&|y| format!("{y:.0e}"))
                    .label_style(font(15.0))
                    .axis_desc_style(font(17.0))
                    .draw(),
            )?;
            self.lines(&mut chart)?;
        } else {
            let mut chart =
                drawn(builder.build_cartesian_2d(x_range, y_lo - margin..y_hi + margin))?;
            // Enough decimals to tell the ticks apart, no more.
            let span = (y_hi - y_lo + 2.0 * margin).max(1e-12);
            let decimals = (-(span / 8.0).log10()).ceil().clamp(0.0, 8.0) as usize;
            let tiny = y_hi.abs().max(y_lo.abs()) < 1e-3;
            drawn(
                chart
                    .configure_mesh()
                    .x_desc("epoch")
                    .y_desc(self.y_label)
                    .x_labels(tick_count)
                    .x_label_formatter(&|x| format!("{x:.0}"))
                    .y_label_formatter(&|y| {
                        if tiny {
                            format!("{y:.2e}")
                        } else {
                            format!("{y:.decimals$}")
                        }
                    })
                    .label_style(font(15.0))
                    .axis_desc_style(font(17.0))
                    .draw(),
            )?;
            self.lines(&mut chart)?;
        }
        Ok(())
    }

    fn lines<'a, DB: DrawingBackend + 'a, CT: CoordTranslate<From = (f64, f64)>>(
        &self,
        chart: &mut ChartContext<'a, DB, CT>,
    ) -> Result<()> {
        for s in &self.series {
            let style = ShapeStyle::from(&s.color).stroke_width(2);
            let annotation = match s.split {
                Split::Train => drawn(chart.draw_series(LineSeries::new(s.points.clone(), style)))?,
                Split::Val => {
                    drawn(chart.draw_series(DashedLineSeries::new(s.points.clone(), 10, 6, style)))?
                }
                Split::Test => {
                    drawn(chart.draw_series(DashedLineSeries::new(s.points.clone(), 2, 4, style)))?
                }
            };
            let (color, split) = (s.color, s.split);
            annotation.label(&s.label).legend(move |(x, y)| {
                let dash = match split {
                    Split::Train => 20,
                    Split::Val => 8,
                    Split::Test => 3,
                };
                PathElement::new(
                    vec![(x, y), (x + dash, y)],
                    ShapeStyle::from(&color).stroke_width(2),
                )
            });
            // Markers, so that a one-epoch run still shows up.
            drawn(
                chart.draw_series(
                    s.points
                        .iter()
                        .map(|&p| Circle::new(p, 3, s.color.filled())),
                ),
            )?;
        }
        drawn(
            chart
                .configure_series_labels()
                .label_font(font(14.0))
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK.mix(0.4))
                .position(self.legend.clone())
                .draw(),
        )?;
        Ok(())
    }
}

/// Loss, accuracy and learning rate of one or more runs, side by side.
pub struct HistoryChart {
    pub title: String,
    pub runs: Vec<RunHistory>,
}

impl Figure for HistoryChart {
    fn size(&self) -> (u32, u32) {
        (1800, 620)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        let root = drawn(root.titled(&self.title, font(28.0)))?;
        let splits = [Split::Train, Split::Val, Split::Test];
        let panels = [
            Panel::new(
                "Loss",
                "cross-entropy",
                &self.runs,
                &splits.map(Metric::Loss),
            ),
            Panel::new(
                "Accuracy",
                "accuracy (%)",
                &self.runs,
                &splits.map(Metric::Accuracy),
            ),
            Panel::new("Learning rate", "learning rate", &self.runs, &[Metric::Lr]),
        ];
        let areas = root.split_evenly((1, 3));
        for (panel, area) in panels.iter().zip(&areas) {
            panel.draw(area)?;
        }
        Ok(())
    }
}

/// One metric of many runs on one chart.
pub struct MetricChart {
    pub title: String,
    pub y_label: &'static str,
    pub metric: Metric,
    pub runs: Vec<RunHistory>,
}

impl Figure for MetricChart {
    fn size(&self) -> (u32, u32) {
        (1100, 700)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        Panel::new(&self.title, self.y_label, &self.runs, &[self.metric]).draw(root)
    }
}

/// The learning-rate range test: each step's loss (thin, grey) and its
/// smoothed value (blue) against the rate on a log axis, the suggested rate
/// marked in red.
pub struct LrFindChart {
    pub title: String,
    pub lrs: Vec<f64>,
    pub losses: Vec<f64>,
    pub smoothed: Vec<f64>,
    /// Index of the suggested rate.
    pub suggestion: Option<usize>,
}

impl Figure for LrFindChart {
    fn size(&self) -> (u32, u32) {
        (1100, 700)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        let points = |ys: &[f64]| -> Vec<(f64, f64)> {
            self.lrs
                .iter()
                .zip(ys)
                .filter(|(x, y)| x.is_finite() && *x > &0.0 && y.is_finite())
                .map(|(&x, &y)| (x, y))
                .collect()
        };
        let (raw, smooth) = (points(&self.losses), points(&self.smoothed));
        if smooth.len() < 2 {
            drawn(root.titled(&format!("{} (too few steps)", self.title), font(22.0)))?;
            return Ok(());
        }
        let x_lo = smooth.first().map_or(1e-7, |p| p.0);
        let x_hi = smooth.last().map_or(1.0, |p| p.0);
        // The y range follows the smoothed curve; the raw losses may leave it.
        let (y_lo, y_hi) = smooth
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
                (a.min(p.1), b.max(p.1))
            });
        let margin = ((y_hi - y_lo) * 0.1).max(1e-6);
        let mut chart = drawn(
            ChartBuilder::on(root)
                .caption(&self.title, font(24.0))
                .margin(16)
                .x_label_area_size(50)
                .y_label_area_size(80)
                .build_cartesian_2d((x_lo..x_hi).log_scale(), y_lo - margin..y_hi + margin),
        )?;
        drawn(
            chart
                .configure_mesh()
                .x_desc("learning rate")
                .y_desc("training loss")
                .x_label_formatter(&|x| format!("{x:.0e}"))
                .y_label_formatter(&|y| format!("{y:.2}"))
                .label_style(font(15.0))
                .axis_desc_style(font(17.0))
                .draw(),
        )?;
        let grey = RGBColor(170, 170, 170);
        let clipped: Vec<(f64, f64)> = raw
            .iter()
            .map(|&(x, y)| (x, y.clamp(y_lo - margin, y_hi + margin)))
            .collect();
        drawn(chart.draw_series(LineSeries::new(
            clipped,
            ShapeStyle::from(&grey).stroke_width(1),
        )))?
        .label("loss per step")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], grey));
        let blue = palette(0);
        drawn(chart.draw_series(LineSeries::new(
            smooth.clone(),
            ShapeStyle::from(&blue).stroke_width(3),
        )))?
        .label("smoothed")
        .legend(move |(x, y)| {
            PathElement::new(
                vec![(x, y), (x + 20, y)],
                ShapeStyle::from(&blue).stroke_width(3),
            )
        });
        if let Some(i) = self.suggestion
            && let (Some(&x), Some(&y)) = (self.lrs.get(i), self.smoothed.get(i))
        {
            let red = palette(3);
            drawn(chart.draw_series(LineSeries::new(
                vec![(x, y_lo - margin), (x, y_hi + margin)],
                ShapeStyle::from(&red).stroke_width(1),
            )))?;
            drawn(chart.draw_series(std::iter::once(Circle::new((x, y), 7, red.filled()))))?
                .label(format!("suggested: {x:.2e}"))
                .legend(move |(x, y)| Circle::new((x + 10, y), 6, red.filled()));
        }
        drawn(
            chart
                .configure_series_labels()
                .label_font(font(15.0))
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK.mix(0.4))
                .position(SeriesLabelPosition::UpperLeft)
                .draw(),
        )?;
        Ok(())
    }
}
