//! Small inline-SVG charts for the report: lines over epochs, a heat map, a reliability
//! diagram. No scripts, no fonts or styles from elsewhere: the file stands alone.

use std::fmt::Write as _;

/// Colours of successive series.
pub const PALETTE: &[&str] = &[
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b",
];

/// Escape text for SVG and HTML.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// One line of a chart.
pub struct Series {
    /// Legend name.
    pub name: String,
    /// Values per x position (`None`: no point).
    pub values: Vec<Option<f64>>,
    /// Dashed line.
    pub dashed: bool,
}

/// Five horizontal rules with their values, from `lo` to `lo + span`, across the plot.
fn y_grid(
    s: &mut String,
    (left, plot_w): (f64, f64),
    (lo, span): (f64, f64),
    y: &dyn Fn(f64) -> f64,
) {
    for k in 0..=4 {
        let v = lo + span * k as f64 / 4.0;
        let _ = write!(
            s,
            r##"<line x1="{left}" x2="{}" y1="{yv:.1}" y2="{yv:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" font-size="10" text-anchor="end">{v:.2}</text>"##,
            left + plot_w,
            left - 4.0,
            y(v) + 3.0,
            yv = y(v)
        );
    }
}

/// A line chart of `series` over x positions labelled `x_labels`, y over [lo, hi].
pub fn lines(title: &str, x_labels: &[String], series: &[Series], lo: f64, hi: f64) -> String {
    let (w, h, left, top, bottom) = (560.0, 260.0, 48.0, 28.0, 36.0);
    let right = 150.0;
    let plot_w = w - left - right;
    let plot_h = h - top - bottom;
    let n = x_labels.len().max(1);
    let x = |i: usize| {
        left + if n == 1 {
            plot_w / 2.0
        } else {
            plot_w * i as f64 / (n - 1) as f64
        }
    };
    let span = if hi > lo { hi - lo } else { 1.0 };
    let y = |v: f64| top + plot_h * (1.0 - (v - lo) / span);
    let mut s = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img"><title>{}</title>"#,
        esc(title)
    );
    let _ = write!(
        s,
        r#"<text x="{left}" y="16" font-size="13" font-weight="bold">{}</text>"#,
        esc(title)
    );
    y_grid(&mut s, (left, plot_w), (lo, span), &y);
    // At most about eight labels, so that many windows (days) stay readable.
    let every = n.div_ceil(8);
    for (i, label) in x_labels.iter().enumerate().filter(|(i, _)| i % every == 0) {
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{}" font-size="10" text-anchor="middle">{}</text>"#,
            x(i),
            h - bottom + 14.0,
            esc(label)
        );
    }
    for (k, line) in series.iter().enumerate() {
        let colour = PALETTE[k % PALETTE.len()];
        let points: Vec<String> = (line.values.iter().enumerate())
            .filter_map(|(i, v)| v.map(|v| format!("{:.1},{:.1}", x(i), y(v))))
            .collect();
        let dash = if line.dashed {
            r#" stroke-dasharray="5,3""#
        } else {
            ""
        };
        let _ = write!(
            s,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="2"{dash} points="{}"/>"#,
            points.join(" ")
        );
        for p in &points {
            let (px, py) = p.split_once(',').expect("x,y");
            let _ = write!(s, r#"<circle cx="{px}" cy="{py}" r="3" fill="{colour}"/>"#);
        }
        let ly = top + 14.0 * k as f64 + 6.0;
        let _ = write!(
            s,
            r#"<line x1="{}" x2="{}" y1="{ly}" y2="{ly}" stroke="{colour}" stroke-width="2"{dash}/><text x="{}" y="{}" font-size="11">{}</text>"#,
            w - right + 10.0,
            w - right + 30.0,
            w - right + 34.0,
            ly + 4.0,
            esc(&line.name)
        );
    }
    s.push_str("</svg>");
    s
}

/// The training loss of every step (thin, light) with its moving average (the mean of the
/// last `n / 40` steps, bold), epoch boundaries as dashed rules. `epochs` holds each epoch's
/// step losses. Over 1,500 steps, consecutive steps are averaged in pairs (or more) first.
pub fn steps(title: &str, epochs: &[&[f32]]) -> String {
    let (w, h, left, top, bottom, right) = (720.0, 260.0, 48.0, 28.0, 36.0, 20.0);
    let (plot_w, plot_h) = (w - left - right, h - top - bottom);
    let all: Vec<f64> = epochs
        .iter()
        .flat_map(|e| e.iter().map(|&v| f64::from(v)))
        .collect();
    let n = all.len();
    let stride = n.div_ceil(1500).max(1);
    let raw: Vec<f64> = all
        .chunks(stride)
        .map(|c| c.iter().sum::<f64>() / c.len() as f64)
        .collect();
    let window = (n / 40).max(1);
    let mut smooth = Vec::with_capacity(n);
    let mut sum = 0.0;
    for (i, v) in all.iter().enumerate() {
        sum += v;
        if i >= window {
            sum -= all[i - window];
        }
        smooth.push(sum / (i + 1).min(window) as f64);
    }
    let hi = raw.iter().fold(0.0f64, |a, &b| a.max(b)).max(1e-6) * 1.05;
    let x = |step: f64| left + plot_w * step / (n.max(2) - 1) as f64;
    let y = |v: f64| top + plot_h * (1.0 - v / hi);
    let mut s = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img"><title>{t}</title><text x="{left}" y="16" font-size="13" font-weight="bold">{t}</text>"#,
        t = esc(title)
    );
    y_grid(&mut s, (left, plot_w), (0.0, hi), &y);
    for k in 0..=4 {
        let step = (n.saturating_sub(1) * k / 4) as f64;
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{}" font-size="10" text-anchor="middle">{}</text>"#,
            x(step),
            h - bottom + 14.0,
            step as usize + 1
        );
    }
    let _ = write!(
        s,
        r#"<text x="{}" y="{}" font-size="10" text-anchor="end">step</text>"#,
        left + plot_w,
        h - 4.0
    );
    let mut at = 0;
    for (k, e) in epochs.iter().enumerate() {
        if k > 0 {
            let _ = write!(
                s,
                r##"<line x1="{bx:.1}" x2="{bx:.1}" y1="{top}" y2="{}" stroke="#999" stroke-dasharray="4,3"/>"##,
                top + plot_h,
                bx = x(at as f64 - 0.5)
            );
        }
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{}" font-size="10">epoch {}</text>"#,
            x(at as f64) + 4.0,
            top + 10.0,
            k + 1
        );
        at += e.len();
    }
    let raw_points: Vec<String> = (raw.iter().enumerate())
        .map(|(i, &v)| format!("{:.1},{:.1}", x((i * stride) as f64), y(v)))
        .collect();
    let smooth_points: Vec<String> = (smooth.iter().enumerate())
        .step_by(stride)
        .map(|(i, &v)| format!("{:.1},{:.1}", x(i as f64), y(v)))
        .collect();
    let _ = write!(
        s,
        r##"<polyline fill="none" stroke="#9ecae1" stroke-width="1" points="{}"/><polyline fill="none" stroke="#1f77b4" stroke-width="2" points="{}"/></svg>"##,
        raw_points.join(" "),
        smooth_points.join(" ")
    );
    s
}

/// A heat map of `matrix` (rows = true class, columns = predicted), cells shaded by `shade`
/// (values in [0, 1]) and labelled by `label`.
pub fn heatmap(
    title: &str,
    classes: &[String],
    shade: &dyn Fn(usize, usize) -> f64,
    label: &dyn Fn(usize, usize) -> String,
) -> String {
    let n = classes.len();
    let cell = (360.0 / n.max(1) as f64).clamp(14.0, 48.0);
    let left = 170.0;
    let top = 40.0;
    let (w, h) = (left + cell * n as f64 + 20.0, top + cell * n as f64 + 30.0);
    let mut s = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w:.0}" height="{h:.0}" role="img"><title>{}</title><text x="4" y="16" font-size="13" font-weight="bold">{}</text>"#,
        esc(title),
        esc(title)
    );
    let _ = write!(
        s,
        r#"<text x="{left}" y="32" font-size="10">predicted → (columns in the order of the rows)</text>"#
    );
    for (i, c) in classes.iter().enumerate() {
        let name: String = c.chars().take(26).collect();
        let _ = write!(
            s,
            r#"<text x="{}" y="{:.1}" font-size="10" text-anchor="end">{i} {}</text>"#,
            left - 4.0,
            top + cell * (i as f64 + 0.6),
            esc(&name)
        );
        for j in 0..n {
            let v = shade(i, j).clamp(0.0, 1.0);
            let light = (255.0 - 200.0 * v) as u8;
            let text_colour = if v > 0.6 { "#fff" } else { "#000" };
            let _ = write!(
                s,
                r##"<rect x="{:.1}" y="{:.1}" width="{cell:.1}" height="{cell:.1}" fill="rgb({light},{light},255)" stroke="#fff"/><text x="{:.1}" y="{:.1}" font-size="9" text-anchor="middle" fill="{text_colour}">{}</text>"##,
                left + cell * j as f64,
                top + cell * i as f64,
                left + cell * (j as f64 + 0.5),
                top + cell * (i as f64 + 0.6),
                esc(&label(i, j))
            );
        }
    }
    for j in 0..n {
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{:.1}" font-size="10" text-anchor="middle">{j}</text>"#,
            left + cell * (j as f64 + 0.5),
            top + cell * n as f64 + 14.0
        );
    }
    s.push_str("</svg>");
    s
}

/// A reliability diagram: per confidence bin, accuracy (bars) against the diagonal.
pub fn reliability(title: &str, bins: &[(f64, f64, usize)]) -> String {
    let (w, h, left, top) = (380.0, 300.0, 64.0, 28.0);
    let size = 240.0;
    let mut s = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img"><title>{}</title><text x="4" y="16" font-size="13" font-weight="bold">{}</text><rect x="{left}" y="{top}" width="{size}" height="{size}" fill="none" stroke="#999"/><line x1="{left}" y1="{}" x2="{}" y2="{top}" stroke="#999" stroke-dasharray="4,3"/>"##,
        esc(title),
        esc(title),
        top + size,
        left + size
    );
    let width = size / bins.len().max(1) as f64;
    for (i, &(_, acc, count)) in bins.iter().enumerate() {
        if count == 0 {
            continue;
        }
        let bh = size * acc;
        let _ = write!(
            s,
            r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{bh:.1}" fill="#1f77b4" opacity="0.8"><title>{count} rows, accuracy {acc:.3}</title></rect>"##,
            left + width * i as f64 + 1.0,
            top + size - bh,
            width - 2.0
        );
    }
    let _ = write!(
        s,
        r#"<text x="{left}" y="{}" font-size="10">0</text><text x="{}" y="{}" font-size="10" text-anchor="end">1 — confidence (top-1 probability)</text><text x="{}" y="{}" font-size="10" text-anchor="end">accuracy 1</text>"#,
        top + size + 14.0,
        left + size,
        top + size + 14.0,
        left - 4.0,
        top + 8.0
    );
    s.push_str("</svg>");
    s
}
