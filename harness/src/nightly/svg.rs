//! Inline SVG plots for the night's pages: line charts over time, stacked bars per night, and
//! the stages against the budget. Plain SVG elements with fixed colours, no scripts, nothing
//! fetched: a page that embeds them renders anywhere.

use std::fmt::Write as _;

/// Plot size.
const W: f64 = 520.0;
const H: f64 = 220.0;
const LEFT: f64 = 58.0;
const RIGHT: f64 = 14.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 38.0;

/// Series colours (chosen to differ from each other and from the page's own colours).
pub const COLORS: [&str; 5] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"];

/// One line of a chart.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend name.
    pub name: String,
    /// Stroke colour.
    pub color: &'static str,
    /// (x, y) points in order of x.
    pub points: Vec<(f64, f64)>,
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A round step near `range / 5`.
fn step(range: f64) -> f64 {
    if range <= 0.0 || !range.is_finite() {
        return 1.0;
    }
    let raw = range / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if raw <= m * mag {
            return m * mag;
        }
    }
    10.0 * mag
}

fn label(v: f64) -> String {
    if v.abs() >= 10_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if v.fract().abs() < 1e-9 {
        format!("{v:.0}")
    } else if v.abs() < 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.1}")
    }
}

fn frame(out: &mut String, id: &str, title: &str) {
    let _ = write!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"plot\" id=\"{}\" viewBox=\"0 0 {W} {H}\" width=\"{W}\" height=\"{H}\" role=\"img\" aria-label=\"{}\">",
        esc(id),
        esc(title)
    );
    let _ = write!(
        out,
        "<rect x=\"0\" y=\"0\" width=\"{W}\" height=\"{H}\" fill=\"#ffffff\" stroke=\"#cccccc\"/><text x=\"{LEFT}\" y=\"18\" font-size=\"13\" font-weight=\"bold\" fill=\"#222\">{}</text>",
        esc(title)
    );
}

/// Axes with ticks for [x0, x1] × [0, y1]; returns the data → pixel mappings.
fn axes(
    out: &mut String,
    x0: f64,
    x1: f64,
    y1: f64,
    x_label: &str,
) -> (impl Fn(f64) -> f64, impl Fn(f64) -> f64) {
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let xs = move |x: f64| LEFT + (x - x0) / (x1 - x0).max(1e-9) * pw;
    let ys = move |y: f64| TOP + ph - y / y1.max(1e-9) * ph;
    let ystep = step(y1);
    let mut y = 0.0;
    while y <= y1 + ystep * 1e-6 {
        let py = ys(y);
        let _ = write!(
            out,
            "<line x1=\"{LEFT}\" y1=\"{py:.1}\" x2=\"{:.1}\" y2=\"{py:.1}\" stroke=\"#eeeeee\"/><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"end\" fill=\"#555\">{}</text>",
            W - RIGHT,
            LEFT - 4.0,
            py + 3.0,
            label(y)
        );
        y += ystep;
    }
    let xstep = step(x1 - x0);
    let mut x = (x0 / xstep).ceil() * xstep;
    while x <= x1 + xstep * 1e-6 {
        let px = xs(x);
        let _ = write!(
            out,
            "<line x1=\"{px:.1}\" y1=\"{:.1}\" x2=\"{px:.1}\" y2=\"{:.1}\" stroke=\"#999\"/><text x=\"{px:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"middle\" fill=\"#555\">{}</text>",
            TOP + ph,
            TOP + ph + 4.0,
            TOP + ph + 15.0,
            label(x)
        );
        x += xstep;
    }
    let _ = write!(
        out,
        "<line x1=\"{LEFT}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"#555\"/><line x1=\"{LEFT}\" y1=\"{TOP}\" x2=\"{LEFT}\" y2=\"{:.1}\" stroke=\"#555\"/><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"middle\" fill=\"#555\">{}</text>",
        TOP + ph,
        W - RIGHT,
        TOP + ph,
        TOP + ph,
        LEFT + pw / 2.0,
        H - 6.0,
        esc(x_label)
    );
    (xs, ys)
}

fn legend(out: &mut String, names: &[(&str, &str)]) {
    let mut x = W - RIGHT;
    for (name, color) in names.iter().rev() {
        let w = 14.0 + 6.2 * name.len() as f64;
        x -= w + 10.0;
        let _ = write!(
            out,
            "<rect x=\"{x:.1}\" y=\"9\" width=\"10\" height=\"10\" fill=\"{color}\"/><text x=\"{:.1}\" y=\"18\" font-size=\"11\" fill=\"#333\">{}</text>",
            x + 13.0,
            esc(name)
        );
    }
}

/// A line chart of `series` over x; "no data" when there are no points.
pub fn line_chart(id: &str, title: &str, x_label: &str, series: &[Series]) -> String {
    let mut out = String::new();
    frame(&mut out, id, title);
    let pts: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|s| s.points.iter().copied())
        .collect();
    if pts.is_empty() {
        let _ = write!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"12\" text-anchor=\"middle\" fill=\"#888\">no data</text></svg>",
            W / 2.0,
            H / 2.0
        );
        return out;
    }
    let x0 = pts.iter().map(|p| p.0).fold(f64::INFINITY, f64::min);
    let mut x1 = pts.iter().map(|p| p.0).fold(f64::NEG_INFINITY, f64::max);
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    let ymax = pts.iter().map(|p| p.1).fold(0.0, f64::max);
    let y1 = if ymax <= 0.0 { 1.0 } else { ymax * 1.08 };
    let (xs, ys) = axes(&mut out, x0, x1, y1, x_label);
    for s in series {
        if s.points.len() == 1 {
            let (x, y) = s.points[0];
            let _ = write!(
                out,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{}\"/>",
                xs(x),
                ys(y),
                s.color
            );
            continue;
        }
        let coords: Vec<String> = s
            .points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", xs(x), ys(y)))
            .collect();
        let _ = write!(
            out,
            "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"2.5\" points=\"{}\"><title>{}</title></polyline>",
            s.color,
            coords.join(" "),
            esc(&s.name)
        );
    }
    let names: Vec<(&str, &str)> = series.iter().map(|s| (s.name.as_str(), s.color)).collect();
    legend(&mut out, &names);
    out.push_str("</svg>");
    out
}

/// Stacked bars, one per label (nights), each stack a (name, colour, values) layer.
pub fn stacked_bars(
    id: &str,
    title: &str,
    labels: &[String],
    layers: &[(&str, &'static str, Vec<f64>)],
) -> String {
    let mut out = String::new();
    frame(&mut out, id, title);
    let n = labels.len();
    let totals: Vec<f64> = (0..n)
        .map(|i| {
            layers
                .iter()
                .map(|l| l.2.get(i).copied().unwrap_or(0.0))
                .sum()
        })
        .collect();
    let ymax = totals.iter().copied().fold(0.0, f64::max);
    let y1 = if ymax <= 0.0 { 1.0 } else { ymax * 1.1 };
    // Night i (from 1) is centred on its slot.
    let (_, ys) = axes(&mut out, 0.5, n.max(1) as f64 + 0.5, y1, "night");
    let pw = W - LEFT - RIGHT;
    let slot = pw / n.max(1) as f64;
    let bw = (slot * 0.7).min(40.0);
    for (i, night) in labels.iter().enumerate() {
        let x = LEFT + slot * i as f64 + (slot - bw) / 2.0;
        let mut base = 0.0;
        for (name, color, vals) in layers {
            let v = vals.get(i).copied().unwrap_or(0.0);
            if v > 0.0 {
                let (top, bottom) = (ys(base + v), ys(base));
                let _ = write!(
                    out,
                    "<rect class=\"bar\" x=\"{x:.1}\" y=\"{top:.1}\" width=\"{bw:.1}\" height=\"{:.1}\" fill=\"{color}\"><title>{}: {} {}</title></rect>",
                    (bottom - top).max(0.5),
                    esc(night),
                    label(v),
                    esc(name)
                );
            }
            base += v;
        }
    }
    let names: Vec<(&str, &str)> = layers.iter().map(|l| (l.0, l.1)).collect();
    legend(&mut out, &names);
    out.push_str("</svg>");
    out
}

/// The stages as consecutive bars against the budget: (name, seconds, colour).
pub fn timeline(id: &str, budget_s: f64, stages: &[(String, f64, &'static str)]) -> String {
    let (w, h) = (W * 2.0 - 40.0, 64.0);
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"plot\" id=\"{}\" viewBox=\"0 0 {w} {h}\" width=\"{w}\" height=\"{h}\" role=\"img\" aria-label=\"stages\">",
        esc(id)
    );
    let total: f64 = stages.iter().map(|s| s.1).sum();
    let scale = (w - 20.0) / budget_s.max(total).max(1.0);
    let _ = write!(
        out,
        "<rect x=\"10\" y=\"12\" width=\"{:.1}\" height=\"26\" fill=\"#f4f4f4\" stroke=\"#bbbbbb\"/>",
        budget_s.max(total) * scale
    );
    let mut x = 10.0;
    for (name, secs, color) in stages {
        let bw = secs * scale;
        let _ = write!(
            out,
            "<rect class=\"stage\" x=\"{x:.1}\" y=\"12\" width=\"{:.1}\" height=\"26\" fill=\"{color}\"><title>{}: {secs:.0} s</title></rect>",
            bw.max(1.0),
            esc(name)
        );
        if bw > 60.0 {
            let _ = write!(
                out,
                "<text x=\"{:.1}\" y=\"29\" font-size=\"11\" fill=\"#fff\">{} {}</text>",
                x + 4.0,
                esc(name),
                super::html::duration(*secs)
            );
        }
        x += bw;
    }
    let _ = write!(
        out,
        "<text x=\"10\" y=\"54\" font-size=\"11\" fill=\"#555\">budget {} — used {}</text></svg>",
        super::html::duration(budget_s),
        super::html::duration(total)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_round_and_charts_have_their_lines() {
        assert_eq!(step(10.0), 2.0);
        assert_eq!(step(1000.0), 200.0);
        assert_eq!(step(0.3), 0.1);
        let c = line_chart(
            "p",
            "execs/s <all>",
            "minutes",
            &[Series {
                name: "execs/s".into(),
                color: COLORS[0],
                points: vec![(0.0, 1.0), (1.0, 2.0), (2.0, 1.5)],
            }],
        );
        assert!(c.contains("<polyline") && c.contains("&lt;all&gt;"), "{c}");
        assert!(line_chart("e", "empty", "x", &[]).contains("no data"));
        let b = stacked_bars(
            "t",
            "bugs",
            &["a".into(), "b".into()],
            &[("new", COLORS[1], vec![1.0, 0.0])],
        );
        assert_eq!(b.matches("class=\"bar\"").count(), 1);
    }
}
