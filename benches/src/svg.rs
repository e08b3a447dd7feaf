//! Small SVG charts for the benchmark reports: lines on a linear or log-10 y axis, and bars.
//! Plain SVG text (no font files, no plotting crate): viewable in a browser or on GitHub.

use std::fmt::Write as _;

/// Colours of successive series.
pub const COLORS: [&str; 6] = [
    "#d62728", "#1f77b4", "#ff7f0e", "#2ca02c", "#7f7f7f", "#9467bd",
];

/// One line of a chart.
pub struct Line {
    /// Legend text.
    pub name: String,
    /// Stroke colour.
    pub color: &'static str,
    /// Dashed (reference values, e.g. the paper's).
    pub dashed: bool,
    /// Points, x ascending.
    pub points: Vec<(f64, f64)>,
}

/// The y axis.
#[derive(Clone, Copy)]
pub enum Scale {
    /// From 0.
    Linear,
    /// Log 10, whole decades around the data.
    Log,
}

const W: f64 = 860.0;
const H: f64 = 480.0;
const LEFT: f64 = 70.0;
/// Right margin: room for the legend of line charts; bars have none.
const RIGHT: f64 = 270.0;
const RIGHT_BARS: f64 = 20.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;

fn header(title: &str, right: f64) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="24" text-anchor="middle" font-size="15">{}</text>
"#,
        (LEFT + W - right) / 2.0,
        escape(title)
    );
    s
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The y range and its ticks.
struct YAxis {
    scale: Scale,
    lo: f64,
    hi: f64,
}

impl YAxis {
    fn new(scale: Scale, values: impl Iterator<Item = f64>) -> YAxis {
        let (mut lo, mut hi) = (f64::MAX, f64::MIN);
        for v in values.filter(|v| v.is_finite()) {
            lo = lo.min(v);
            hi = hi.max(v);
        }
        if lo > hi {
            (lo, hi) = (1.0, 10.0);
        }
        match scale {
            Scale::Linear => YAxis {
                scale,
                lo: 0.0,
                hi: nice_ceiling(hi * 1.1),
            },
            Scale::Log => YAxis {
                scale,
                lo: 10f64.powf(lo.max(1e-9).log10().floor()),
                hi: 10f64.powf(hi.max(1e-9).log10().ceil().max(lo.log10().floor() + 1.0)),
            },
        }
    }

    /// Pixel y of `v`.
    fn y(&self, v: f64) -> f64 {
        let f = match self.scale {
            Scale::Linear => (v - self.lo) / (self.hi - self.lo),
            Scale::Log => (v.max(self.lo).log10() - self.lo.log10()) / (self.hi / self.lo).log10(),
        };
        H - BOTTOM - f * (H - TOP - BOTTOM)
    }

    fn ticks(&self) -> Vec<f64> {
        match self.scale {
            Scale::Linear => (0..=5).map(|i| self.hi * i as f64 / 5.0).collect(),
            Scale::Log => {
                let mut t = Vec::new();
                let mut d = self.lo;
                while d <= self.hi * 1.0001 {
                    t.extend([d, 2.0 * d, 5.0 * d].into_iter().filter(|v| *v <= self.hi));
                    d *= 10.0;
                }
                t
            }
        }
    }

    fn draw(&self, s: &mut String, label: &str, right: f64) {
        for t in self.ticks() {
            let y = self.y(t);
            let _ = writeln!(
                s,
                r##"<line x1="{LEFT}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
                W - right,
                LEFT - 6.0,
                y + 4.0,
                number(t)
            );
        }
        let _ = writeln!(
            s,
            r#"<text transform="translate(16 {:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
            (TOP + H - BOTTOM) / 2.0,
            escape(label)
        );
    }
}

/// A round number at or above `v`.
fn nice_ceiling(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let decade = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * decade)
        .find(|c| *c >= v)
        .unwrap_or(10.0 * decade)
}

/// `v` short: 1,234 / 12.5 / 0.25.
pub fn number(v: f64) -> String {
    if v >= 1000.0 {
        let n = v.round() as u64;
        let (a, b) = (n / 1000, n % 1000);
        format!("{a},{b:03}")
    } else if v >= 10.0 || v == v.round() {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else if v <= 0.0 {
        "0".to_owned()
    } else {
        // Two significant digits, trailing zeros dropped: 0.25, 0.05, 0.0018.
        let decimals = (1.0 - v.log10().floor()).max(2.0) as usize;
        let s = format!("{v:.decimals$}");
        s.trim_end_matches('0').to_owned()
    }
}

fn legend(s: &mut String, entries: &[(&str, &str, bool)]) {
    for (i, (name, color, dashed)) in entries.iter().enumerate() {
        let y = TOP + 10.0 + 20.0 * i as f64;
        let x = W - RIGHT + 15.0;
        let dash = if *dashed {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        };
        let _ = writeln!(
            s,
            r#"<line x1="{x}" x2="{}" y1="{y}" y2="{y}" stroke="{color}" stroke-width="2"{dash}/><text x="{}" y="{}">{}</text>"#,
            x + 24.0,
            x + 30.0,
            y + 4.0,
            escape(name)
        );
    }
}

/// Lines over a linear x axis.
pub fn lines(title: &str, x_label: &str, y_label: &str, scale: Scale, series: &[Line]) -> String {
    let mut s = header(title, RIGHT);
    let xs = series.iter().flat_map(|l| l.points.iter().map(|p| p.0));
    let (x_lo, x_hi) = xs.fold((f64::MAX, f64::MIN), |(a, b), x| (a.min(x), b.max(x)));
    let (x_lo, x_hi) = if x_lo < x_hi {
        (x_lo, x_hi)
    } else {
        (0.0, 1.0)
    };
    let pad = (x_hi - x_lo) * 0.04;
    let (x_lo, x_hi) = (x_lo - pad, x_hi + pad);
    let x = |v: f64| LEFT + (v - x_lo) / (x_hi - x_lo) * (W - RIGHT - LEFT);
    let y_axis = YAxis::new(
        scale,
        series.iter().flat_map(|l| l.points.iter().map(|p| p.1)),
    );
    y_axis.draw(&mut s, y_label, RIGHT);
    // x ticks at the first series' points.
    if let Some(first) = series.first() {
        for (v, _) in &first.points {
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
                x(*v),
                H - BOTTOM + 16.0,
                number(*v)
            );
        }
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        (LEFT + W - RIGHT) / 2.0,
        H - 12.0,
        escape(x_label)
    );
    let _ = writeln!(
        s,
        r#"<rect x="{LEFT}" y="{TOP}" width="{}" height="{}" fill="none" stroke="black"/>"#,
        W - RIGHT - LEFT,
        H - TOP - BOTTOM
    );
    for line in series {
        let points: Vec<String> = line
            .points
            .iter()
            .map(|(a, b)| format!("{:.1},{:.1}", x(*a), y_axis.y(*b)))
            .collect();
        let dash = if line.dashed {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        };
        let _ = writeln!(
            s,
            r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="2"{dash}/>"#,
            points.join(" "),
            line.color
        );
        for p in &points {
            let (cx, cy) = p.split_once(',').unwrap_or(("0", "0"));
            let _ = writeln!(
                s,
                r#"<circle cx="{cx}" cy="{cy}" r="3" fill="{}"/>"#,
                line.color
            );
        }
    }
    let entries: Vec<(&str, &str, bool)> = series
        .iter()
        .map(|l| (l.name.as_str(), l.color, l.dashed))
        .collect();
    legend(&mut s, &entries);
    s.push_str("</svg>\n");
    s
}

/// One bar: its label under the axis, value, colour.
pub struct Bar {
    /// Under the bar.
    pub label: String,
    /// Its height.
    pub value: f64,
    /// Fill colour.
    pub color: &'static str,
}

/// Bars with their values written on top.
pub fn bars(title: &str, y_label: &str, scale: Scale, bars: &[Bar]) -> String {
    let mut s = header(title, RIGHT_BARS);
    let y_axis = YAxis::new(scale, bars.iter().map(|b| b.value));
    y_axis.draw(&mut s, y_label, RIGHT_BARS);
    let slot = (W - RIGHT_BARS - LEFT) / bars.len().max(1) as f64;
    let base = y_axis.y(y_axis.lo);
    for (i, bar) in bars.iter().enumerate() {
        let x = LEFT + slot * i as f64 + slot * 0.15;
        let top = y_axis.y(bar.value.max(y_axis.lo));
        let _ = writeln!(
            s,
            r#"<rect x="{x:.1}" y="{top:.1}" width="{:.1}" height="{:.1}" fill="{}"/><text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            slot * 0.7,
            base - top,
            bar.color,
            x + slot * 0.35,
            top - 4.0,
            number(bar.value)
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{}" text-anchor="middle" font-size="11">{}</text>"#,
            x + slot * 0.35,
            H - BOTTOM + 16.0,
            escape(&bar.label)
        );
    }
    let _ = writeln!(
        s,
        r#"<rect x="{LEFT}" y="{TOP}" width="{}" height="{}" fill="none" stroke="black"/>"#,
        W - RIGHT_BARS - LEFT,
        H - TOP - BOTTOM
    );
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_short() {
        assert_eq!(number(1234.4), "1,234");
        assert_eq!(number(12.4), "12");
        assert_eq!(number(2.0), "2");
        assert_eq!(number(2.26), "2.3");
        assert_eq!(number(0.25), "0.25");
        assert_eq!(number(0.05), "0.05");
        assert_eq!(number(0.0018), "0.0018");
        assert_eq!(number(0.0625), "0.062");
        assert_eq!(number(0.0), "0");
        assert_eq!(nice_ceiling(7.3), 10.0);
        assert_eq!(nice_ceiling(0.23), 0.25);
    }

    #[test]
    fn log_axes_span_whole_decades() {
        let a = YAxis::new(Scale::Log, [3.0, 1500.0].into_iter());
        assert_eq!((a.lo, a.hi), (1.0, 10_000.0));
        assert_eq!(a.y(1.0), H - BOTTOM);
        assert_eq!(a.y(10_000.0), TOP);
        assert!(a.ticks().contains(&500.0));
    }

    #[test]
    fn charts_hold_every_series_and_bar() {
        let svg = lines(
            "t <1>",
            "x",
            "ms",
            Scale::Log,
            &[Line {
                name: "a & b".into(),
                color: COLORS[0],
                dashed: true,
                points: vec![(10.0, 5.0), (20.0, 50.0)],
            }],
        );
        assert!(svg.contains("t &lt;1&gt;") && svg.contains("a &amp; b"));
        assert_eq!(svg.matches("<polyline").count(), 1);
        assert_eq!(svg.matches("<circle").count(), 2);
        let svg = bars(
            "b",
            "MB",
            Scale::Linear,
            &[
                Bar {
                    label: "x".into(),
                    value: 3.0,
                    color: COLORS[1],
                },
                Bar {
                    label: "y".into(),
                    value: 8850.0,
                    color: COLORS[2],
                },
            ],
        );
        assert!(svg.contains(">8,850<"));
        assert!(svg.ends_with("</svg>\n"));
    }
}
