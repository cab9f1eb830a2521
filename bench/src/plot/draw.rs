//! Drawing one panel: its frame and axes, lines or bars, and its legend
//! box beside the plot area.

use std::fmt::Write as _;

use super::{
    esc, linear_ticks, log_ticks, short, Axis, Bars, Entry, Lines, Mark, Scale, PLOT_H, PLOT_W,
};

/// Title, frame, y ticks and labels of a plot area at (x0, y0).
fn frame(
    svg: &mut String,
    title: &str,
    y_label: &str,
    y: &Axis,
    y_ticks: &[f64],
    x0: f64,
    y0: f64,
) {
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="13">{}</text>"#,
        x0 + PLOT_W / 2.0,
        y0 - 14.0,
        esc(title)
    );
    for &t in y_ticks {
        let py = y.at(t);
        let _ = writeln!(
            svg,
            r##"<line x1="{x0:.1}" y1="{py:.1}" x2="{:.1}" y2="{py:.1}" stroke="#e4e4e4"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            x0 + PLOT_W,
            x0 - 5.0,
            py + 4.0,
            short(t)
        );
    }
    let _ = writeln!(
        svg,
        r#"<rect x="{x0:.1}" y="{y0:.1}" width="{PLOT_W}" height="{PLOT_H}" fill="none" stroke="black"/>"#
    );
    let (cx, cy) = (x0 - 56.0, y0 + PLOT_H / 2.0);
    let _ = writeln!(
        svg,
        r#"<text x="{cx:.1}" y="{cy:.1}" text-anchor="middle" transform="rotate(-90 {cx:.1} {cy:.1})">{}</text>"#,
        esc(y_label)
    );
}

/// y ticks covering `values` on `scale`.
fn y_ticks(scale: Scale, values: impl Iterator<Item = f64> + Clone) -> Vec<f64> {
    let max = values.clone().fold(0.0, f64::max);
    match scale {
        Scale::Linear => linear_ticks(max * 1.05),
        Scale::Log => {
            let min = values.filter(|v| *v > 0.0).fold(f64::INFINITY, f64::min);
            log_ticks(if min.is_finite() { min } else { 1.0 }, max)
        }
    }
}

/// A line panel with its plot area at (x0, y0).
pub(super) fn lines(svg: &mut String, l: &Lines, x0: f64, y0: f64) {
    let ys = l.series.iter().flat_map(|s| s.points.iter().map(|p| p.1));
    let yt = y_ticks(l.y_scale, ys);
    let y = Axis::new(l.y_scale, &yt, y0 + PLOT_H, y0);
    let mut xs: Vec<f64> = l
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .collect();
    xs.sort_by(f64::total_cmp);
    xs.dedup();
    let xt: Vec<(f64, String)> = l
        .x_ticks
        .clone()
        .unwrap_or_else(|| xs.iter().map(|v| (*v, short(*v))).collect());
    let mut range: Vec<f64> = xt.iter().map(|t| t.0).chain(xs.iter().copied()).collect();
    if l.x_scale == Scale::Linear {
        range.push(0.0);
    }
    let pad = 12.0;
    let x = Axis::new(l.x_scale, &range, x0 + pad, x0 + PLOT_W - pad);
    frame(svg, &l.title, &l.y_label, &y, &yt, x0, y0);
    for (v, label) in &xt {
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            x.at(*v),
            y0 + PLOT_H + 15.0,
            esc(label)
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
        x0 + PLOT_W / 2.0,
        y0 + PLOT_H + 34.0,
        esc(&l.x_label)
    );
    for s in &l.series {
        let mut pts = s.points.clone();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        let d: Vec<String> = pts
            .iter()
            .enumerate()
            .map(|(i, (px, py))| {
                format!(
                    "{}{:.1},{:.1}",
                    if i == 0 { "M" } else { "L" },
                    x.at(*px),
                    y.at(*py)
                )
            })
            .collect();
        let dash = if s.dashed {
            r#" stroke-dasharray="6,3""#
        } else {
            ""
        };
        let _ = writeln!(
            svg,
            r#"<path class="series" d="{}" fill="none" stroke="{}" stroke-width="2"{dash}><title>{}</title></path>"#,
            d.join(" "),
            s.color,
            esc(&s.label)
        );
        for (px, py) in &pts {
            let _ = writeln!(
                svg,
                r#"<circle cx="{:.1}" cy="{:.1}" r="2.5" fill="{}"/>"#,
                x.at(*px),
                y.at(*py),
                s.color
            );
        }
    }
}

/// A bar panel with its plot area at (x0, y0).
pub(super) fn bars(svg: &mut String, b: &Bars, x0: f64, y0: f64) {
    let values = b
        .series
        .iter()
        .flat_map(|(_, _, v)| v.iter().flatten().copied());
    let yt = y_ticks(Scale::Linear, values);
    let y = Axis::new(Scale::Linear, &yt, y0 + PLOT_H, y0);
    frame(svg, &b.title, &b.y_label, &y, &yt, x0, y0);
    let group_w = PLOT_W / b.groups.len().max(1) as f64;
    let bar_w = (group_w * 0.8) / b.series.len().max(1) as f64;
    for (g, name) in b.groups.iter().enumerate() {
        let gx = x0 + g as f64 * group_w + group_w * 0.1;
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            x0 + (g as f64 + 0.5) * group_w,
            y0 + PLOT_H + 15.0,
            esc(name)
        );
        for (k, (label, color, vals)) in b.series.iter().enumerate() {
            let Some(v) = vals.get(g).copied().flatten() else {
                continue;
            };
            let (bx, by) = (gx + k as f64 * bar_w, y.at(v));
            let _ = writeln!(
                svg,
                r#"<rect class="bar" x="{bx:.1}" y="{by:.1}" width="{:.1}" height="{:.1}" fill="{color}"><title>{}: {}</title></rect><text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="9">{}</text>"#,
                (bar_w - 2.0).max(1.0),
                (y0 + PLOT_H - by).max(0.0),
                esc(label),
                short(v),
                bx + bar_w / 2.0,
                by - 3.0,
                if v >= 10.0 {
                    format!("{v:.0}")
                } else {
                    format!("{v:.1}")
                }
            );
        }
    }
}

/// The legend box at (x, y), `w` wide: a line sample and the label per entry.
pub(super) fn legend(svg: &mut String, entries: &[Entry], x: f64, y: f64, w: f64) {
    if entries.is_empty() {
        return;
    }
    let h = 10.0 + 16.0 * entries.len() as f64;
    let _ = writeln!(
        svg,
        r##"<g class="legend"><rect x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{h:.1}" fill="white" stroke="#999"/>"##
    );
    for (i, (label, color, mark)) in entries.iter().enumerate() {
        let ly = y + 13.0 + 16.0 * i as f64;
        let sample = match mark {
            Mark::Box => format!(
                r#"<rect x="{:.1}" y="{:.1}" width="12" height="10" fill="{color}"/>"#,
                x + 15.0,
                ly - 5.0
            ),
            Mark::Line | Mark::Dashed => format!(
                r#"<line x1="{:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{color}" stroke-width="3"{}/>"#,
                x + 8.0,
                x + 34.0,
                if *mark == Mark::Dashed {
                    r#" stroke-dasharray="6,3""#
                } else {
                    ""
                }
            ),
        };
        let _ = writeln!(
            svg,
            r#"<g class="legend-entry">{sample}<text x="{:.1}" y="{:.1}">{}</text></g>"#,
            x + 40.0,
            ly + 4.0,
            esc(label)
        );
    }
    svg.push_str("</g>\n");
}
