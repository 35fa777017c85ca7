//! The throughput plot: Gbps against frame size, both axes logarithmic (sizes span three
//! decades, rates often two), one line per series, written as plain SVG.

use std::fmt::Write as _;

use crate::cell::Direction;
use crate::report::RunReport;
use crate::runner::Status;
use crate::workload::{Kind, Role};

const WIDTH: f64 = 960.0;
const HEIGHT: f64 = 540.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 260.0; // room for the legend
const TOP: f64 = 50.0;
const BOTTOM: f64 = 70.0;

/// Colours of subject series without a direction (and of any beyond the first few).
const PALETTE: [&str; 6] = [
    "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#1f77b4",
];

/// References are drawn in black and greys so no subject colour is mistaken for one.
const REFERENCE_COLOURS: [&str; 3] = ["#000000", "#555555", "#999999"];
/// Dash patterns of the references, in order (limit first).
const REFERENCE_DASHES: [&str; 3] = ["8,4", "2,3", "8,3,2,3"];

/// One plotted line.
struct Series {
    name: String,
    role: Role,
    direction: Option<Direction>,
    queues: u16,
    points: Vec<(f64, f64)>, // (frame size, Gbps), sorted by size
}

/// How a line is drawn.
struct Style {
    colour: &'static str,
    width: f64,
    /// `stroke-dasharray`, empty for a solid line.
    dash: &'static str,
    /// Square markers (instead of circles) for the second and later queue counts.
    square: bool,
}

/// Subject series take their colour from their direction and their line style from
/// their queue count (1 queue solid, more dashed with square markers), so eight pvnet
/// lines stay tellable apart; references are black and grey, dashed or dotted.
fn style(ser: &Series, reference_index: usize, subject_index: usize) -> Style {
    if ser.role != Role::Subject {
        return Style {
            colour: REFERENCE_COLOURS[reference_index.min(REFERENCE_COLOURS.len() - 1)],
            width: 2.0,
            dash: REFERENCE_DASHES[reference_index % REFERENCE_DASHES.len()],
            square: false,
        };
    }
    let colour = match ser.direction {
        Some(Direction::GuestToDom0) => "#1f77b4",
        Some(Direction::Dom0ToGuest) => "#ff7f0e",
        Some(Direction::Bidirectional) => "#2ca02c",
        Some(Direction::GuestToGuest) => "#d62728",
        None => PALETTE[subject_index % PALETTE.len()],
    };
    let multi = ser.queues > 1;
    Style {
        colour,
        width: if multi { 2.5 } else { 3.0 },
        dash: if multi { "7,4" } else { "" },
        square: multi,
    }
}

/// A marker at (`x`, `y`) with an optional tooltip.
fn marker(x: f64, y: f64, st: &Style, title: &str) -> String {
    let title = if title.is_empty() {
        String::new()
    } else {
        format!("<title>{title}</title>")
    };
    if st.square {
        format!(
            r#"<rect x="{:.1}" y="{:.1}" width="7" height="7" fill="{}">{title}</rect>"#,
            x - 3.5,
            y - 3.5,
            st.colour
        )
    } else {
        format!(
            r#"<circle cx="{x:.1}" cy="{y:.1}" r="3.5" fill="{}">{title}</circle>"#,
            st.colour
        )
    }
}

fn collect(report: &RunReport) -> Vec<Series> {
    let mut out: Vec<Series> = Vec::new();
    for c in &report.cells {
        if c.kind != Kind::Throughput || c.status != Status::Ok {
            continue;
        }
        let Some(r) = c.result.as_ref() else { continue };
        if !(r.gbps > 0.0 && r.gbps.is_finite()) {
            continue;
        }
        let name = c.series_label();
        let p = (f64::from(c.frame_size), r.gbps);
        match out.iter_mut().find(|s| s.name == name) {
            Some(s) => s.points.push(p),
            None => out.push(Series {
                name,
                role: c.role,
                direction: c.direction,
                queues: c.queues,
                points: vec![p],
            }),
        }
    }
    for s in &mut out {
        s.points.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    out
}

/// Escapes text for an SVG text node or attribute.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A logarithmic axis mapping `[lo, hi]` (log10 units) onto `[a, b]` pixels.
struct LogAxis {
    lo: f64,
    hi: f64,
    a: f64,
    b: f64,
}

impl LogAxis {
    fn new(min: f64, max: f64, pad: f64, a: f64, b: f64) -> Self {
        let (mut lo, mut hi) = (min.log10() - pad, max.log10() + pad);
        if hi - lo < 0.5 {
            let mid = (lo + hi) / 2.0;
            lo = mid - 0.25;
            hi = mid + 0.25;
        }
        LogAxis { lo, hi, a, b }
    }

    fn px(&self, v: f64) -> f64 {
        self.a + (v.log10() - self.lo) / (self.hi - self.lo) * (self.b - self.a)
    }

    /// 1, 2 and 5 times each power of ten inside the range; `true` marks powers of ten.
    fn ticks(&self) -> Vec<(f64, bool)> {
        let mut t = Vec::new();
        for e in (self.lo.floor() as i32)..=(self.hi.ceil() as i32) {
            for m in [1.0, 2.0, 5.0] {
                let v = m * 10f64.powi(e);
                let l = v.log10();
                if l >= self.lo - 1e-9 && l <= self.hi + 1e-9 {
                    t.push((v, m == 1.0));
                }
            }
        }
        t
    }
}

fn number(v: f64) -> String {
    if v >= 1.0 {
        format!("{}", v.round() as u64)
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

/// Renders the plot; with no throughput data it is a framed "no data" notice.
pub fn render(report: &RunReport) -> String {
    let series = collect(report);
    let (x0, x1, y0, y1) = (LEFT, WIDTH - RIGHT, HEIGHT - BOTTOM, TOP);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>"#
    );
    let title = format!(
        "Throughput vs frame size — {} ({} CPUs), {}",
        report.machine.cpu_model, report.machine.logical_cpus, report.started_utc
    );
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="28" text-anchor="middle" font-size="15" font-weight="bold">{}</text>"#,
        (x0 + x1) / 2.0,
        escape(&title)
    );
    let pts = series.iter().flat_map(|s| s.points.iter());
    let (mut xmin, mut xmax, mut ymin, mut ymax) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in pts {
        xmin = xmin.min(x);
        xmax = xmax.max(x);
        ymin = ymin.min(y);
        ymax = ymax.max(y);
    }
    let _ = writeln!(
        s,
        r##"<rect x="{x0}" y="{y1}" width="{:.1}" height="{:.1}" fill="none" stroke="#333"/>"##,
        x1 - x0,
        y0 - y1
    );
    if series.is_empty() {
        let _ = writeln!(
            s,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#666">no throughput data</text>"##,
            (x0 + x1) / 2.0,
            (y0 + y1) / 2.0
        );
        s.push_str("</svg>\n");
        return s;
    }
    let xa = LogAxis::new(xmin, xmax, 0.1, x0, x1);
    let ya = LogAxis::new(ymin, ymax, 0.15, y0, y1);

    // Grid and y ticks.
    for (v, major) in ya.ticks() {
        let y = ya.px(v);
        let (stroke, dash) = if major {
            ("#bbb", "")
        } else {
            ("#e3e3e3", r#" stroke-dasharray="3,3""#)
        };
        let _ = writeln!(
            s,
            r#"<line x1="{x0}" y1="{y:.1}" x2="{x1}" y2="{y:.1}" stroke="{stroke}"{dash}/>"#
        );
        let _ = writeln!(
            s,
            r##"<line x1="{:.1}" y1="{y:.1}" x2="{x0}" y2="{y:.1}" stroke="#333"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            x0 - 5.0,
            x0 - 8.0,
            y + 4.0,
            number(v)
        );
    }
    // x ticks: the measured sizes, labelled.
    let mut sizes: Vec<f64> = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .collect();
    sizes.sort_by(f64::total_cmp);
    sizes.dedup();
    for v in sizes {
        let x = xa.px(v);
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{y1}" x2="{x:.1}" y2="{y0}" stroke="#ccc"/><line x1="{x:.1}" y1="{y0}" x2="{x:.1}" y2="{:.1}" stroke="#333"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            y0 + 5.0,
            y0 + 20.0,
            number(v)
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="13">frame size (bytes, log scale; above 9018 = GSO)</text>"#,
        (x0 + x1) / 2.0,
        HEIGHT - 22.0
    );
    let _ = writeln!(
        s,
        r#"<text transform="translate(22 {:.1}) rotate(-90)" text-anchor="middle" font-size="13">throughput (Gbit/s of frame bytes, log scale)</text>"#,
        (y0 + y1) / 2.0
    );

    // Lines and legend.
    let lx = x1 + 20.0;
    let _ = writeln!(
        s,
        r#"<text x="{lx:.1}" y="{:.1}" font-weight="bold">series</text>"#,
        y1 + 4.0
    );
    let (mut refs, mut subjects) = (0usize, 0usize);
    for (i, ser) in series.iter().enumerate() {
        let st = if ser.role == Role::Subject {
            subjects += 1;
            style(ser, 0, subjects - 1)
        } else {
            refs += 1;
            style(ser, refs - 1, 0)
        };
        let dash = if st.dash.is_empty() {
            String::new()
        } else {
            format!(r#" stroke-dasharray="{}""#, st.dash)
        };
        let path: Vec<String> = ser
            .points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", xa.px(x), ya.px(y)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="{}"{dash}/>"#,
            path.join(" "),
            st.colour,
            st.width
        );
        for &(x, y) in &ser.points {
            let title = format!("{}: {} B, {:.2} Gbit/s", escape(&ser.name), x, y);
            let _ = writeln!(s, "{}", marker(xa.px(x), ya.px(y), &st, &title));
        }
        let ly = y1 + 24.0 + 20.0 * i as f64;
        let role = match ser.role {
            Role::Limit => " (limit)",
            Role::Peer => " (peer)",
            Role::Subject => "",
        };
        let _ = writeln!(
            s,
            r#"<line x1="{lx:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{}" stroke-width="{}"{dash}/>{}<text x="{:.1}" y="{:.1}">{}</text>"#,
            lx + 30.0,
            st.colour,
            st.width,
            marker(lx + 15.0, ly, &st, ""),
            lx + 38.0,
            ly + 4.0,
            escape(&format!("{}{role}", ser.name))
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_axis_maps_decades_evenly() {
        let a = LogAxis::new(10.0, 1000.0, 0.0, 0.0, 200.0);
        assert!((a.px(10.0) - 0.0).abs() < 1e-9);
        assert!((a.px(100.0) - 100.0).abs() < 1e-9);
        assert!((a.px(1000.0) - 200.0).abs() < 1e-9);
        let majors: Vec<f64> = a.ticks().into_iter().filter(|t| t.1).map(|t| t.0).collect();
        assert_eq!(majors, vec![10.0, 100.0, 1000.0]);
    }

    #[test]
    fn single_point_axis_is_not_degenerate() {
        let a = LogAxis::new(64.0, 64.0, 0.0, 0.0, 100.0);
        assert!(a.hi > a.lo);
        assert!((a.px(64.0) - 50.0).abs() < 1e-6);
    }

    fn series(role: Role, direction: Option<Direction>, queues: u16) -> Series {
        Series {
            name: String::new(),
            role,
            direction,
            queues,
            points: Vec::new(),
        }
    }

    #[test]
    fn subjects_are_coloured_by_direction_and_dashed_by_queues() {
        let mut colours = Vec::new();
        for d in Direction::ALL {
            let one = style(&series(Role::Subject, Some(d), 1), 0, 0);
            let two = style(&series(Role::Subject, Some(d), 2), 0, 0);
            assert_eq!(one.colour, two.colour, "same direction, same colour");
            assert!(one.dash.is_empty() && !one.square);
            assert!(!two.dash.is_empty() && two.square);
            colours.push(one.colour);
        }
        let refs: Vec<&str> = (0..3)
            .map(|i| style(&series(Role::Peer, None, 1), i, 0).colour)
            .collect();
        for c in &colours {
            assert!(!refs.contains(c), "{c} is also a reference colour");
        }
        colours.sort_unstable();
        colours.dedup();
        assert_eq!(colours.len(), 4, "one colour per direction");
    }

    #[test]
    fn labels_and_escaping() {
        assert_eq!(number(65536.0), "65536");
        assert_eq!(number(0.5), "0.5");
        assert_eq!(escape("a<b&\"c\">"), "a&lt;b&amp;&quot;c&quot;&gt;");
    }
}
