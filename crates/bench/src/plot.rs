//! SVG plots of a suite report, in the manner of the survey's figures: each test's figure
//! normalized to native (native = 1), one bar per backend.

use std::path::Path;

use plotters::prelude::*;

use crate::report::Report;
use crate::{Error, Result};

const COLORS: [RGBColor; 5] = [
    RGBColor(90, 90, 90),
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
];

/// Draw the rows of `r` that `keep` selects as grouped bars of the ratio to native into `path`
/// (SVG).
pub fn normalized(r: &Report, keep: impl Fn(&str) -> bool, title: &str, path: &Path) -> Result<()> {
    let plot = |e: &dyn std::fmt::Display| Error::Msg(format!("plotting {}: {e}", path.display()));
    let rows: Vec<_> = r.rows.iter().filter(|row| keep(&row.test)).collect();
    let nb = r.backends.len().max(1);
    let top = rows
        .iter()
        .flat_map(|row| row.cells.iter().map(|c| c.ratio_to_native))
        .filter(|v| v.is_finite())
        .fold(1.0f64, f64::max)
        * 1.3;
    let width = (120 + rows.len() * (nb * 14 + 40).max(96)).max(640) as u32;
    let root = SVGBackend::new(path, (width, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..rows.len() as f64, 0.0..top)
        .map_err(|e| plot(&e))?;
    let names: Vec<String> = rows.iter().map(|r| r.test.clone()).collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(rows.len() * 2 + 1)
        .x_label_formatter(&|x| {
            let i = x.floor() as usize;
            if (x - i as f64 - 0.5).abs() < 1e-6 {
                names.get(i).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .x_label_style(("sans-serif", 11))
        .y_desc("ratio to native (native = 1)")
        .draw()
        .map_err(|e| plot(&e))?;
    let bar = 0.8 / nb as f64;
    for (k, b) in r.backends.iter().enumerate() {
        let color = COLORS[k % COLORS.len()];
        chart
            .draw_series(rows.iter().enumerate().filter_map(|(i, row)| {
                let v = row.cells.get(k)?.ratio_to_native;
                let v = if v.is_finite() { v } else { f64::NAN };
                let x0 = i as f64 + 0.1 + k as f64 * bar;
                v.is_finite()
                    .then(|| Rectangle::new([(x0, 0.0), (x0 + bar * 0.9, v)], color.filled()))
            }))
            .map_err(|e| plot(&e))?
            .label(b.name())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
    }
    chart
        .draw_series(std::iter::once(PathElement::new(
            vec![(0.0, 1.0), (rows.len() as f64, 1.0)],
            BLACK.stroke_width(1),
        )))
        .map_err(|e| plot(&e))?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| plot(&e))?;
    root.present().map_err(|e| plot(&e))?;
    Ok(())
}

/// One line per series over n, as the survey's Figures 8–10.
pub fn lines(
    title: &str,
    y_desc: &str,
    series: &[(String, Vec<(f64, f64)>)],
    path: &Path,
) -> Result<()> {
    chart(title, "domains (n)", y_desc, series, true, path)
}

/// One line per series over time (s), as the survey's Figure 5.
pub fn over_time(
    title: &str,
    y_desc: &str,
    series: &[(String, Vec<(f64, f64)>)],
    path: &Path,
) -> Result<()> {
    chart(title, "time (s)", y_desc, series, false, path)
}

fn chart(
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[(String, Vec<(f64, f64)>)],
    markers: bool,
    path: &Path,
) -> Result<()> {
    let plot = |e: &dyn std::fmt::Display| Error::Msg(format!("plotting {}: {e}", path.display()));
    let xs = series.iter().flat_map(|s| s.1.iter().map(|p| p.0));
    let x_max = xs.fold(1.0f64, f64::max);
    let ys = || {
        series
            .iter()
            .flat_map(|s| s.1.iter().map(|p| p.1))
            .filter(|v| v.is_finite())
    };
    let y_max = ys().fold(0.0f64, f64::max).max(1e-9) * 1.15;
    let y_min = ys().fold(0.0f64, f64::min) * 1.15;
    let root = SVGBackend::new(path, (640, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..x_max * 1.05, y_min..y_max)
        .map_err(|e| plot(&e))?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .draw()
        .map_err(|e| plot(&e))?;
    for (k, (name, pts)) in series.iter().enumerate() {
        let color = COLORS[k % COLORS.len()];
        let pts: Vec<(f64, f64)> = pts.iter().copied().filter(|p| p.1.is_finite()).collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
            .map_err(|e| plot(&e))?
            .label(name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 14, y)], color.stroke_width(2))
            });
        if markers {
            chart
                .draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .map_err(|e| plot(&e))?;
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| plot(&e))?;
    root.present().map_err(|e| plot(&e))?;
    Ok(())
}

/// Histograms as lines: samples per µs of latency, on a log scale, one line per series.
pub fn histograms(
    title: &str,
    x_desc: &str,
    series: &[(String, Vec<(f64, f64)>)],
    path: &Path,
) -> Result<()> {
    let plot = |e: &dyn std::fmt::Display| Error::Msg(format!("plotting {}: {e}", path.display()));
    let x_max = series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.0))
        .fold(10.0f64, f64::max);
    let y_max = series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.1))
        .fold(10.0f64, f64::max);
    let root = SVGBackend::new(path, (720, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(
            (1.0..x_max * 1.2).log_scale(),
            (0.8..y_max * 2.0).log_scale(),
        )
        .map_err(|e| plot(&e))?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc("samples")
        .draw()
        .map_err(|e| plot(&e))?;
    for (i, (name, pts)) in series.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        let pts: Vec<(f64, f64)> = pts.iter().map(|&(x, y)| (x.max(1.0), y)).collect();
        chart
            .draw_series(LineSeries::new(pts, c.stroke_width(2)))
            .map_err(|e| plot(&e))?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], c));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| plot(&e))?;
    root.present().map_err(|e| plot(&e))
}
