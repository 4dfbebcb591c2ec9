//! The report's SVG plots (plotters): throughput ÷ direct per path and workload, client-observed
//! throughput around a failover per system, and the scale cost curve. Each returns the file name
//! it wrote under the plots dir.

use std::path::Path;

use anyhow::{Context, anyhow};
use plotters::prelude::*;
use serde_json::Value;

use super::tables::{distinct, list as items, ratio_spread};

const SIZE: (u32, u32) = (900, 480);
const FONT: &str = "sans-serif";

/// Draws the chart's legend at `pos`.
fn legend<'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, CT>,
    pos: SeriesLabelPosition,
) -> anyhow::Result<()> {
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(pos)
        .draw()?;
    Ok(())
}

/// Bars per workload, one per path (direct is the 1.0 line), with the range over rounds.
pub fn throughput(d: &Value, dir: &Path) -> anyhow::Result<String> {
    let cases = items(d, "cases");
    let workloads = distinct(cases, "workload");
    let paths: Vec<&str> = distinct(cases, "path")
        .into_iter()
        .filter(|p| *p != "direct")
        .collect();
    if workloads.is_empty() || paths.is_empty() {
        return Err(anyhow!("datapath.json has no cases besides direct"));
    }
    let bars: Vec<(usize, usize, (f64, f64, f64))> = workloads
        .iter()
        .enumerate()
        .flat_map(|(wi, w)| {
            paths
                .iter()
                .enumerate()
                .filter_map(move |(pi, p)| Some((wi, pi, ratio_spread(d, p, w)?)))
        })
        .collect();
    // Pooled connections (pgbouncer on `connect`) reach ×10 and more: clip, and print the value.
    let top = bars.iter().map(|b| b.2.2).fold(1.0, f64::max);
    let y_max = (top * 1.1).clamp(1.25, 2.0);
    let file = "throughput.svg";
    let out = dir.join(file);
    let root = SVGBackend::new(&out, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Throughput ÷ direct (median over rounds; whiskers: lowest–highest round)",
            (FONT, 18),
        )
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(45)
        .build_cartesian_2d(-0.5f64..(workloads.len() as f64 - 0.5), 0f64..y_max)?;
    let names = workloads.clone();
    let label = move |x: &f64| {
        let i = x.round();
        match (x - i).abs() < 1e-6 && i >= 0.0 {
            true => names
                .get(i as usize)
                .map_or(String::new(), |w| w.to_string()),
            false => String::new(),
        }
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(workloads.len())
        .x_label_formatter(&label)
        .y_desc("× direct")
        .draw()?;
    let x_end = workloads.len() as f64 - 0.5;
    chart.draw_series(LineSeries::new(
        [(-0.5, 1.0), (x_end, 1.0)],
        BLACK.stroke_width(1),
    ))?;
    let width = 0.8 / paths.len() as f64;
    for (pi, path) in paths.iter().enumerate() {
        let color = Palette99::pick(pi).to_rgba();
        let mine: Vec<_> = bars.iter().filter(|b| b.1 == pi).collect();
        let x0 = |wi: usize| wi as f64 - 0.4 + pi as f64 * width;
        chart
            .draw_series(mine.iter().map(|&&(wi, _, (m, _, _))| {
                Rectangle::new(
                    [(x0(wi), 0.0), (x0(wi) + width * 0.9, m.min(y_max))],
                    color.filled(),
                )
            }))?
            .label(*path)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
        chart.draw_series(mine.iter().map(|&&(wi, _, (_, lo, hi))| {
            let xc = x0(wi) + width * 0.45;
            PathElement::new([(xc, lo.min(y_max)), (xc, hi.min(y_max))], BLACK)
        }))?;
        chart.draw_series(
            mine.iter()
                .filter(|b| b.2.0 > y_max)
                .map(|&&(wi, _, (m, _, _))| {
                    Text::new(format!("{m:.1}×"), (x0(wi), y_max * 0.97), (FONT, 12))
                }),
        )?;
    }
    legend(&mut chart, SeriesLabelPosition::UpperRight)?;
    root.present()?;
    Ok(file.to_string())
}

/// Per fault, writes acknowledged per second around the fault, one line per system; systems at
/// their tightest settings get a plot of their own.
pub fn timelines(u: &Value, dir: &Path) -> Vec<anyhow::Result<String>> {
    let tls = items(u, "timelines");
    if tls.is_empty() {
        return vec![Err(anyhow!("unavailability.json has no timelines"))];
    }
    let mut out = Vec::new();
    for fault in distinct(tls, "fault") {
        for tight in [false, true] {
            let group: Vec<&Value> = tls
                .iter()
                .filter(|t| t["fault"] == fault)
                .filter(|t| t["system"].as_str().unwrap_or("").ends_with("-tight") == tight)
                .collect();
            if group.is_empty() {
                continue;
            }
            let suffix = if tight { "-tight" } else { "" };
            let file = format!("failover-{fault}{suffix}.svg");
            let series: Vec<(String, Vec<(f64, f64)>)> = group
                .iter()
                .filter_map(|t| {
                    let bucket = t["bucket_ms"].as_f64()?;
                    let at = t["fault_at_ms"].as_f64().unwrap_or(0.0);
                    let pts = items(t, "acks")
                        .iter()
                        .enumerate()
                        .filter_map(|(i, a)| {
                            let x = (i as f64 * bucket - at) / 1000.0;
                            Some((x, a.as_f64()? * 1000.0 / bucket))
                        })
                        .collect();
                    Some((t["system"].as_str().unwrap_or("?").to_string(), pts))
                })
                .collect();
            let title = format!("{fault}{suffix}: writes acknowledged per second (fault at 0 s)");
            out.push(
                lines(
                    &dir.join(&file),
                    &title,
                    "s since the fault",
                    "acks/s",
                    &series,
                )
                .map(|()| file),
            );
        }
    }
    out
}

fn lines(
    file: &Path,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[(String, Vec<(f64, f64)>)],
) -> anyhow::Result<()> {
    let all = series.iter().flat_map(|s| s.1.iter());
    let (x0, x1, y1) = all.fold((f64::MAX, f64::MIN, 0f64), |(a, b, c), &(x, y)| {
        (a.min(x), b.max(x), c.max(y))
    });
    if x0 >= x1 {
        return Err(anyhow!("no points to plot"));
    }
    let root = SVGBackend::new(file, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FONT, 18))
        .margin(12)
        .x_label_area_size(35)
        .y_label_area_size(50)
        .build_cartesian_2d(x0..x1, 0f64..(y1 * 1.1).max(1.0))?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()?;
    for (i, (name, pts)) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], color.stroke_width(2)));
    }
    legend(&mut chart, SeriesLabelPosition::LowerRight)?;
    root.present()?;
    Ok(())
}

/// RSS of each path's process against its idle sessions, both axes logarithmic.
pub fn scale_rss(s: &Value, dir: &Path) -> anyhow::Result<String> {
    let steps: Vec<&Value> = items(s, "steps")
        .iter()
        .filter(|x| x["mode"] == "idle" && x["proxy_rss_kb"].is_number())
        .collect();
    let mut series: Vec<(&str, Vec<(f64, f64)>)> = Vec::new();
    for x in &steps {
        let path = x["path"].as_str().unwrap_or("?");
        let n = x["connected"].as_f64().context("step without connected")?;
        let mb = x["proxy_rss_kb"].as_f64().unwrap_or(0.0) / 1024.0;
        match series.iter_mut().find(|(p, _)| *p == path) {
            Some((_, pts)) => pts.push((n.max(1.0), mb.max(0.1))),
            None => series.push((path, vec![(n.max(1.0), mb.max(0.1))])),
        }
    }
    if series.is_empty() {
        return Err(anyhow!("scale.json has no idle steps with a proxy RSS"));
    }
    let pts = series.iter().flat_map(|s| s.1.iter());
    let (x1, y0, y1) = pts.fold((10f64, f64::MAX, 1f64), |(a, b, c), &(x, y)| {
        (a.max(x), b.min(y), c.max(y))
    });
    let file = "scale-rss.svg";
    let out = dir.join(file);
    let root = SVGBackend::new(&out, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("RSS of the path's process vs idle sessions", (FONT, 18))
        .margin(12)
        .x_label_area_size(35)
        .y_label_area_size(55)
        .build_cartesian_2d(
            (1f64..x1 * 1.5).log_scale(),
            (y0 / 1.5..y1 * 1.5).log_scale(),
        )?;
    chart
        .configure_mesh()
        .x_desc("idle sessions")
        .y_desc("RSS MB")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()?;
    for (i, (name, pts)) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))?
            .label(*name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], color.stroke_width(2)));
        chart.draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
    }
    legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
    root.present()?;
    Ok(file.to_string())
}
