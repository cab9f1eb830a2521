//! Hand-written SVG charts for the results plots (`bench/results/*.svg`):
//! line panels (linear or log axes) and grouped bars, each with its legend
//! in a column of its own to the right of the plot area, so a legend never
//! covers a line. Text is plain SVG `<text>` in a generic sans-serif: no
//! font files or plotting library needed, and the output diffs well in git.
//! [`figures`] builds the charts from records.

mod draw;
mod families;
/// The results plots built from records.
pub mod figures;
mod ingest;

use draw::{bars, legend, lines};

/// Width of one plot area, px.
const PLOT_W: f64 = 400.0;
/// Height of one plot area, px.
const PLOT_H: f64 = 250.0;
/// Room left of the plot area (tick labels, y label).
const LEFT: f64 = 78.0;
/// Room above the plot area (title).
const TOP: f64 = 40.0;
/// Room below (tick labels, x label).
const BOTTOM: f64 = 50.0;
/// Gap between the plot area and its legend.
const LEGEND_GAP: f64 = 16.0;

/// An axis scale.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scale {
    /// Linear from 0 (or the data's minimum when it is negative).
    Linear,
    /// Base-10 logarithmic over the data's range (positive values only).
    Log,
}

/// One line of a panel.
#[derive(Clone, Debug)]
pub struct Series {
    /// Legend text.
    pub label: String,
    /// Stroke colour.
    pub color: String,
    /// Dashed instead of solid.
    pub dashed: bool,
    /// (x, y) points, drawn in x order.
    pub points: Vec<(f64, f64)>,
}

/// A line chart.
#[derive(Clone, Debug)]
pub struct Lines {
    /// Title above the plot area.
    pub title: String,
    /// x-axis label, with its unit.
    pub x_label: String,
    /// y-axis label, with its unit.
    pub y_label: String,
    /// x scale.
    pub x_scale: Scale,
    /// y scale.
    pub y_scale: Scale,
    /// Explicit x ticks (value, label); default: the data's distinct x values.
    pub x_ticks: Option<Vec<(f64, String)>>,
    /// The lines.
    pub series: Vec<Series>,
}

/// A grouped bar chart (a bar per series in each group).
#[derive(Clone, Debug)]
pub struct Bars {
    /// Title above the plot area.
    pub title: String,
    /// y-axis label, with its unit.
    pub y_label: String,
    /// Group names along x.
    pub groups: Vec<String>,
    /// (legend text, colour, one value per group).
    pub series: Vec<(String, String, Vec<Option<f64>>)>,
}

/// One panel of a figure.
#[derive(Clone, Debug)]
pub enum Chart {
    /// Lines.
    Lines(Lines),
    /// Bars.
    Bars(Bars),
}

/// How a legend entry shows its series.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mark {
    /// A solid line.
    Line,
    /// A dashed line.
    Dashed,
    /// A filled square (bars).
    Box,
}

/// One legend entry: label, colour, mark.
pub type Entry = (String, String, Mark);

impl Chart {
    fn legend(&self) -> Vec<Entry> {
        match self {
            Chart::Lines(l) => l
                .series
                .iter()
                .map(|s| {
                    let mark = if s.dashed { Mark::Dashed } else { Mark::Line };
                    (s.label.clone(), s.color.clone(), mark)
                })
                .collect(),
            Chart::Bars(b) => b
                .series
                .iter()
                .map(|(l, c, _)| (l.clone(), c.clone(), Mark::Box))
                .collect(),
        }
    }
}

/// Escapes text for XML.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A compact number: 1,500 → `1.5k`, 2,000,000 → `2M`, 0.25 → `0.25`;
/// an integer under 10,000 that is not a round thousand stays whole
/// (4096, not `4.1k`).
pub fn short(v: f64) -> String {
    let a = v.abs();
    if a < 10_000.0 && v == v.round() && v % 1000.0 != 0.0 {
        return format!("{v:.0}");
    }
    let (x, unit) = if a >= 1e6 {
        (v / 1e6, "M")
    } else if a >= 1e3 {
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    let s = if x == x.round() {
        format!("{x:.0}")
    } else if x.abs() >= 1.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    };
    format!("{s}{unit}")
}

/// Linear ticks: 0 and four more at a round step up to at least `max`.
fn linear_ticks(max: f64) -> Vec<f64> {
    let max = if max > 0.0 { max } else { 1.0 };
    let raw = max / 4.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| s * 4.0 >= max)
        .unwrap_or(10.0 * mag);
    (0..=4).map(|i| i as f64 * step).collect()
}

/// Powers of ten covering `[lo, hi]`.
fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let a = lo.max(1e-12).log10().floor() as i32;
    let b = hi.max(lo * 10.0).log10().ceil() as i32;
    (a..=b).map(|e| 10f64.powi(e)).collect()
}

/// Maps data to pixels along one axis.
struct Axis {
    scale: Scale,
    lo: f64,
    hi: f64,
    from: f64,
    to: f64,
}

impl Axis {
    fn new(scale: Scale, ticks: &[f64], from: f64, to: f64) -> Self {
        let lo = ticks.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = ticks.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        Axis {
            scale,
            lo,
            hi: if hi > lo { hi } else { lo + 1.0 },
            from,
            to,
        }
    }

    fn at(&self, v: f64) -> f64 {
        let f = match self.scale {
            Scale::Linear => (v - self.lo) / (self.hi - self.lo),
            Scale::Log => {
                (v.max(1e-12).log10() - self.lo.log10()) / (self.hi.log10() - self.lo.log10())
            }
        };
        self.from + f * (self.to - self.from)
    }
}

/// Renders `charts` as one SVG, two panels per row, under `title`.
pub fn render(title: &str, charts: &[Chart]) -> String {
    let longest = charts
        .iter()
        .flat_map(Chart::legend)
        .map(|(l, _, _)| l.chars().count())
        .max()
        .unwrap_or(8);
    let legend_w = 44.0 + 6.6 * longest as f64;
    let cell_w = LEFT + PLOT_W + LEGEND_GAP + legend_w + 16.0;
    let cell_h = TOP + PLOT_H + BOTTOM;
    let cols = charts.len().clamp(1, 2);
    let rows = charts.len().div_ceil(2).max(1);
    let (w, h) = (cell_w * cols as f64, 30.0 + cell_h * rows as f64);
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w:.0}" height="{h:.0}" viewBox="0 0 {w:.0} {h:.0}" font-family="sans-serif" font-size="11">
<rect width="100%" height="100%" fill="white"/>
<text x="{:.0}" y="20" text-anchor="middle" font-size="15" font-weight="bold">{}</text>
"#,
        w / 2.0,
        esc(title)
    );
    for (i, chart) in charts.iter().enumerate() {
        let x0 = (i % 2) as f64 * cell_w + LEFT;
        let y0 = 30.0 + (i / 2) as f64 * cell_h + TOP;
        match chart {
            Chart::Lines(l) => lines(&mut svg, l, x0, y0),
            Chart::Bars(b) => bars(&mut svg, b, x0, y0),
        }
        legend(
            &mut svg,
            &chart.legend(),
            x0 + PLOT_W + LEGEND_GAP,
            y0,
            legend_w,
        );
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(label: &str, pts: &[(f64, f64)]) -> Series {
        Series {
            label: label.into(),
            color: "#d62728".into(),
            dashed: false,
            points: pts.to_vec(),
        }
    }

    fn num(node: &roxmltree::Node, a: &str) -> f64 {
        node.attribute(a).unwrap().parse().unwrap()
    }

    #[test]
    fn lines_are_valid_xml_with_one_path_per_series_and_the_legend_outside() {
        let chart = Chart::Lines(Lines {
            title: "a & b".into(),
            x_label: "topics (log)".into(),
            y_label: "acked publishes/s".into(),
            x_scale: Scale::Log,
            y_scale: Scale::Linear,
            x_ticks: None,
            series: vec![
                series(
                    "herald <always>",
                    &[(1.0, 10.0), (100.0, 30.0), (1e5, 20.0)],
                ),
                series("jetstream", &[(1.0, 5.0), (1e5, 2.0)]),
            ],
        });
        let svg = render("ingest", &[chart.clone(), chart]);
        let doc = roxmltree::Document::parse(&svg).expect("valid XML");
        let paths: Vec<_> = doc
            .descendants()
            .filter(|n| n.has_tag_name("path") && n.attribute("class") == Some("series"))
            .collect();
        assert_eq!(paths.len(), 4, "one path per series per panel");
        let entries: Vec<String> = doc
            .descendants()
            .filter(|n| n.attribute("class") == Some("legend-entry"))
            .map(|n| {
                n.descendants()
                    .filter(|t| t.is_text())
                    .filter_map(|t| t.text())
                    .collect()
            })
            .collect();
        assert_eq!(entries[..2], ["herald <always>", "jetstream"]);
        // every legend box starts right of its plot area's right edge, and
        // every point of the first panel is inside its plot area
        let frames: Vec<_> = doc
            .descendants()
            .filter(|n| n.has_tag_name("rect") && n.attribute("fill") == Some("none"))
            .collect();
        let legends: Vec<_> = doc
            .descendants()
            .filter(|n| n.attribute("class") == Some("legend"))
            .map(|g| g.first_element_child().unwrap())
            .collect();
        for (f, l) in frames.iter().zip(&legends) {
            assert!(num(l, "x") > num(f, "x") + num(f, "width"));
        }
        let (fx, fw) = (num(&frames[0], "x"), num(&frames[0], "width"));
        for c in doc
            .descendants()
            .filter(|n| n.has_tag_name("circle"))
            .take(5)
        {
            let cx = num(&c, "cx");
            assert!(cx >= fx && cx <= fx + fw, "{cx} outside {fx}..{}", fx + fw);
        }
    }

    #[test]
    fn bars_and_ticks() {
        let chart = Chart::Bars(Bars {
            title: "idle".into(),
            y_label: "KiB per connection".into(),
            groups: vec!["subscribed".into(), "bare".into()],
            series: vec![
                (
                    "herald".into(),
                    "#d62728".into(),
                    vec![Some(5.2), Some(3.1)],
                ),
                ("nats".into(), "#1f77b4".into(), vec![Some(9.0), None]),
            ],
        });
        let svg = render("idle memory", &[chart]);
        let doc = roxmltree::Document::parse(&svg).expect("valid XML");
        let bars = doc
            .descendants()
            .filter(|n| n.attribute("class") == Some("bar"))
            .count();
        assert_eq!(bars, 3);
        assert_eq!(linear_ticks(9.0), [0.0, 2.5, 5.0, 7.5, 10.0]);
        assert_eq!(log_ticks(3.0, 2e4), [1.0, 10.0, 100.0, 1e3, 1e4, 1e5]);
        assert_eq!(
            (short(1500.0), short(2e6), short(0.25), short(12_500.0)),
            ("1500".into(), "2M".into(), "0.25".into(), "12.5k".into())
        );
    }
}
