//! Draws the chart of the whole run: jobs/s (1-s rate, log scale) and the
//! workers wanted over time, and below it jobs/s as a percentage of the
//! target, with a mark where each phase began. Writes an SVG.
//!
//! It draws what the feed recorded; it never measures.

use std::path::Path;

use anyhow::anyhow;
use plotters::prelude::*;

use crate::feed::Sample;

/// (seconds since the first sample, 1-s rate, workers) for each sample
/// that has one second of history behind it.
fn series(samples: &[Sample]) -> Vec<(f64, f64, f64)> {
    let Some(first) = samples.first() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut back = 0;
    for (i, now) in samples.iter().enumerate() {
        while back + 1 < i && now.t_ms - samples[back + 1].t_ms >= 1000.0 {
            back += 1;
        }
        let then = &samples[back];
        let dt = now.t_ms - then.t_ms;
        if (1000.0..2500.0).contains(&dt) {
            let rate = now.jobs_total.saturating_sub(then.jobs_total) as f64 * 1000.0 / dt;
            out.push(((now.t_ms - first.t_ms) / 1000.0, rate, now.workers as f64));
        }
    }
    out
}

pub fn draw(path: &Path, samples: &[Sample], marks: &[(f64, String)]) -> anyhow::Result<()> {
    let points = series(samples);
    let start_ms = samples.first().map_or(0.0, |s| s.t_ms);
    let end = points.last().map_or(1.0, |p| p.0).max(1.0);
    let top = points.iter().map(|p| p.1.max(p.2)).fold(10_000.0, f64::max) * 1.5;
    let root = SVGBackend::new(path, (1400, 800)).into_drawing_area();
    let fail = |e: &dyn std::fmt::Display| anyhow!("drawing {}: {e}", path.display());
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    let (upper, lower) = root.split_vertically(500);

    let mut chart = ChartBuilder::on(&upper)
        .caption(
            "system, one scheduler: successful jobs/s (1-s windows) through the scenario",
            ("sans-serif", 22),
        )
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..end, (100f64..top).log_scale())
        .map_err(|e| fail(&e))?;
    chart
        .configure_mesh()
        .y_desc("jobs/s")
        .y_label_formatter(&|v| format!("{:.0}k", v / 1000.0))
        .draw()
        .map_err(|e| fail(&e))?;
    chart
        .draw_series(LineSeries::new(
            points.iter().map(|p| (p.0, p.2.max(100.0))),
            ShapeStyle::from(&BLACK.mix(0.4)).stroke_width(1),
        ))
        .map_err(|e| fail(&e))?
        .label("target (workers)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.mix(0.4)));
    chart
        .draw_series(LineSeries::new(
            points.iter().map(|p| (p.0, p.1.max(100.0))),
            ShapeStyle::from(&BLUE).stroke_width(2),
        ))
        .map_err(|e| fail(&e))?
        .label("jobs/s")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    for (row, (at, label)) in marks.iter().enumerate() {
        let x = (at - start_ms) / 1000.0;
        // Three rows of labels, so that phases close together stay readable.
        let y = top / 1.4 / 2.5f64.powi((row % 3) as i32);
        chart
            .draw_series(LineSeries::new(
                vec![(x, 100.0), (x, top)],
                ShapeStyle::from(&RED.mix(0.5)).stroke_width(1),
            ))
            .map_err(|e| fail(&e))?;
        chart
            .draw_series(std::iter::once(Text::new(
                label.clone(),
                (x, y),
                ("sans-serif", 13).into_font().color(&RED),
            )))
            .map_err(|e| fail(&e))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| fail(&e))?;

    let mut percent = ChartBuilder::on(&lower)
        .caption("jobs/s as % of target", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(35)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..end, 50f64..105f64)
        .map_err(|e| fail(&e))?;
    percent
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("%")
        .draw()
        .map_err(|e| fail(&e))?;
    percent
        .draw_series(LineSeries::new(
            vec![(0.0, 99.0), (end, 99.0)],
            ShapeStyle::from(&GREEN.mix(0.7)).stroke_width(1),
        ))
        .map_err(|e| fail(&e))?;
    // One line per stretch with a target: no line across the idle gaps.
    for stretch in points.split(|p| p.2 <= 0.0).filter(|s| !s.is_empty()) {
        percent
            .draw_series(LineSeries::new(
                stretch
                    .iter()
                    .map(|p| (p.0, (100.0 * p.1 / p.2).clamp(50.0, 105.0))),
                ShapeStyle::from(&BLUE).stroke_width(1),
            ))
            .map_err(|e| fail(&e))?;
    }
    for (at, _) in marks {
        let x = (at - start_ms) / 1000.0;
        percent
            .draw_series(LineSeries::new(
                vec![(x, 50.0), (x, 105.0)],
                ShapeStyle::from(&RED.mix(0.5)).stroke_width(1),
            ))
            .map_err(|e| fail(&e))?;
    }
    root.present().map_err(|e| fail(&e))?;
    Ok(())
}
