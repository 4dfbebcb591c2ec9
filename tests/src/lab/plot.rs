//! One SVG per run: acknowledged writes per 100 ms per node, with the faults shaded and the
//! leader changes marked, so a failover's gap (or a second node taking writes) shows at a
//! glance.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use plotters::element::DashedPathElement;
use plotters::prelude::*;

use crate::lab::history::{History, Outcome};

const BUCKET_MS: f64 = 100.0;
const SIZE: (u32, u32) = (1000, 400);

#[derive(Debug)]
pub struct PlotError(String);

impl fmt::Display for PlotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "plotting the history: {}", self.0)
    }
}

impl std::error::Error for PlotError {}

fn draw_err(e: impl std::error::Error) -> PlotError {
    PlotError(e.to_string())
}

/// Acked writes per node per bucket, by acceptance (server) time, else ack time.
fn buckets(h: &History) -> BTreeMap<&str, Vec<u32>> {
    let n = ((h.ended_ms - h.started_ms) / BUCKET_MS).ceil().max(1.0) as usize;
    let mut per_node: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    for w in &h.writes {
        let (Outcome::Ok, Some(node)) = (&w.outcome, &w.node) else {
            continue;
        };
        let Some(at) = w.server_ms.or(w.ack_ms) else {
            continue;
        };
        let i = ((at - h.started_ms) / BUCKET_MS).floor();
        if i >= 0.0 && (i as usize) < n {
            per_node.entry(node).or_insert_with(|| vec![0; n])[i as usize] += 1;
        }
    }
    per_node
}

pub fn write_svg(h: &History, path: &Path) -> Result<(), PlotError> {
    let secs = |ms: f64| (ms - h.started_ms) / 1000.0;
    let x_end = secs(h.ended_ms).max(0.1);
    let per_node = buckets(h);
    let peak = per_node
        .values()
        .flatten()
        .copied()
        .max()
        .unwrap_or(0)
        .max(1);
    // Headroom above the peak for the fault and leader labels.
    let y_top = f64::from(peak) * 1.35 + 1.0;

    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(draw_err)?;
    let caption = format!("{} (seed {}): acked writes per node", h.scenario, h.seed);
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..x_end, 0f64..y_top)
        .map_err(draw_err)?;
    chart
        .configure_mesh()
        .x_desc("seconds since start")
        .y_desc(format!("acked writes / {BUCKET_MS} ms"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .light_line_style(WHITE)
        .draw()
        .map_err(draw_err)?;

    let band = RGBColor(230, 80, 60);
    for f in &h.faults {
        let (start, end) = (secs(f.start_ms), secs(f.end_ms.unwrap_or(h.ended_ms)));
        chart
            .draw_series([Rectangle::new(
                [(start, 0.0), (end, y_top)],
                band.mix(0.12).filled(),
            )])
            .map_err(draw_err)?;
        let label = Text::new(
            f.label.clone(),
            (start, y_top * 0.97),
            ("sans-serif", 13).into_font().color(&band),
        );
        chart.draw_series([label]).map_err(draw_err)?;
    }

    // Stagger leader labels over three heights so close changes stay readable.
    for (i, c) in h.leaders.iter().enumerate() {
        let x = secs(c.at_ms);
        let who = match (&c.node, c.token) {
            (Some(node), Some(token)) => format!("{}: {node}/{token}", c.location),
            (Some(node), None) => format!("{}: {node}", c.location),
            (None, _) => format!("{}: no leader", c.location),
        };
        let line = DashedPathElement::new([(x, 0.0), (x, y_top)], 4, 3, BLACK.mix(0.6));
        let y = y_top * (0.90 - 0.06 * (i % 3) as f64);
        let text = Text::new(who, (x, y), ("sans-serif", 12).into_font().color(&BLACK));
        chart.draw_series([line]).map_err(draw_err)?;
        chart.draw_series([text]).map_err(draw_err)?;
    }

    for (i, (node, counts)) in per_node.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        // A step per bucket: a count holds for its whole 100 ms, so gaps read as flat zeros.
        let width = BUCKET_MS / 1000.0;
        let points = counts.iter().enumerate().flat_map(|(b, &n)| {
            let x = b as f64 * width;
            [(x, f64::from(n)), (x + width, f64::from(n))]
        });
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(draw_err)?
            .label(*node)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(draw_err)?;
    root.present().map_err(draw_err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::history::{FaultMark, LeaderChange, WriteRecord};

    fn write(client: &str, seq: u64, node: &str, at: f64) -> WriteRecord {
        WriteRecord {
            client: client.into(),
            location: "east".into(),
            path: "kernel".into(),
            seq,
            send_ms: at - 1.0,
            ack_ms: Some(at + 1.0),
            outcome: Outcome::Ok,
            node: Some(node.into()),
            server_ms: Some(at),
        }
    }

    fn history() -> History {
        let mut writes: Vec<_> = (0..10)
            .map(|i| write("c1", i, "pg-alpha", 10.0 + 20.0 * i as f64))
            .collect();
        writes.extend((0..5).map(|i| write("c1", 100 + i, "pg-beta", 1500.0 + 10.0 * i as f64)));
        let leader = |at, node: &str, token| LeaderChange {
            at_ms: at,
            location: "east".into(),
            node: Some(node.into()),
            token: Some(token),
        };
        History {
            scenario: "crash-leader".into(),
            seed: 3,
            lease_ms: 6000,
            started_ms: 0.0,
            ended_ms: 2000.0,
            writes,
            leaders: vec![leader(0.0, "pg-alpha", 11), leader(1400.0, "pg-beta", 27)],
            faults: vec![FaultMark {
                start_ms: 1000.0,
                end_ms: Some(1400.0),
                label: "kill pg-alpha".into(),
            }],
            rows: vec![],
            converge_from: vec![],
            outages: vec![],
            replication: "multi_writer".into(),
            primaries: vec![],
        }
    }

    #[test]
    fn buckets_count_acked_writes_per_node_by_server_time() {
        let h = history();
        let b = buckets(&h);
        assert_eq!(b["pg-alpha"].len(), 20);
        assert_eq!(&b["pg-alpha"][..3], [5, 5, 0]);
        assert_eq!(b["pg-beta"][15], 5);
        assert_eq!(b["pg-beta"].iter().sum::<u32>(), 5);
    }

    #[test]
    fn svg_is_written_with_nodes_faults_and_leader_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.svg");
        write_svg(&history(), &path).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.contains(r#"width="1000""#),
            "{svg}"
        );
        for label in [
            "pg-alpha",
            "pg-beta",
            "kill pg-alpha",
            "east: pg-beta/27",
            "crash-leader",
        ] {
            assert!(svg.contains(label), "{label} missing from the SVG");
        }
    }

    #[test]
    fn an_unwritable_path_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing-dir").join("run.svg");
        assert!(write_svg(&history(), &path).is_err());
    }
}
