//! The monitoring part of the report: quality on verified rows and drift, window by window.

use std::fmt::Write as _;

use super::svg::{esc, lines, Series};
use crate::metrics::Evaluation;
use crate::monitor::windows::Assessment;
use crate::monitor::{Drift, Thresholds};

/// Windows of predictions as `catbert monitor` measured them, with the thresholds used.
pub struct Monitoring<'a> {
    /// One assessment per window, in time order.
    pub windows: &'a [Assessment],
    /// The thresholds that marked them.
    pub thresholds: Thresholds,
    /// Where the predictions came from, for the heading.
    pub source: String,
}

fn series(name: &str, values: Vec<Option<f64>>, dashed: bool) -> Series {
    Series {
        name: name.into(),
        values,
        dashed,
    }
}

/// The section: a quality timeline, a drift timeline with the thresholds, a confidence
/// timeline, and the table of every window.
pub fn section(m: &Monitoring) -> String {
    let w = m.windows;
    let xs: Vec<String> = w.iter().map(|a| a.name.clone()).collect();
    let mut h = format!(
        "<section><h2>Monitoring: {} windows of predictions</h2><p>From {}.</p>",
        w.len(),
        esc(&m.source)
    );
    let quality = |f: fn(&Evaluation) -> f64| -> Vec<Option<f64>> {
        w.iter().map(|a| a.quality.as_ref().map(f)).collect()
    };
    if w.iter().any(|a| a.quality.is_some()) {
        h.push_str(&lines(
            "Quality on the verified rows per window",
            &xs,
            &[
                series("accuracy", quality(|e| e.accuracy), false),
                series("f1_weighted", quality(|e| e.f1_weighted), false),
                series("f1_min", quality(|e| e.f1_min), false),
            ],
            0.0,
            1.0,
        ));
    } else {
        h.push_str("<p>No verified rows in these windows (give a feedback store for the quality timeline).</p>");
    }
    let drift = |f: fn(&Drift) -> f64| -> Vec<Option<f64>> {
        w.iter().map(|a| a.drift.as_ref().map(f)).collect()
    };
    if w.iter().any(|a| a.drift.is_some()) {
        let t = m.thresholds;
        let top = (w.iter().filter_map(|a| a.drift.as_ref()))
            .map(|d| d.js_classes.max(d.psi_classes).max(d.psi_top1))
            .fold(t.alert_psi * 1.2, f64::max);
        let constant = |v: f64| vec![Some(v); w.len()];
        h.push_str(&lines(
            "Drift against the reference profile",
            &xs,
            &[
                series("JS classes", drift(|d| d.js_classes), false),
                series("PSI classes", drift(|d| d.psi_classes), false),
                series("PSI top-1 prob.", drift(|d| d.psi_top1), false),
                series(
                    &format!("warn PSI {}", t.warn_psi),
                    constant(t.warn_psi),
                    true,
                ),
                series(
                    &format!("alert PSI {}", t.alert_psi),
                    constant(t.alert_psi),
                    true,
                ),
            ],
            0.0,
            top,
        ));
    } else {
        h.push_str("<p>The checkpoint has no reference profile: no drift figures.</p>");
    }
    let each =
        |f: fn(&Assessment) -> f64| -> Vec<Option<f64>> { w.iter().map(|a| Some(f(a))).collect() };
    h.push_str(&lines(
        "Confidence and input per window",
        &xs,
        &[
            series("mean top-1 prob.", each(|a| a.profile.mean_top1), false),
            series("low confidence", each(|a| a.low_confidence), false),
            series("[UNK] rate", each(|a| a.profile.unk_rate), false),
            series("truncated", each(|a| a.profile.truncation_rate), false),
        ],
        0.0,
        1.0,
    ));
    h.push_str("<table><tr><th>window</th><th>rows</th><th>verified</th><th>accuracy</th><th>f1_min</th><th>JS classes</th><th>PSI classes</th><th>PSI top-1</th><th>status</th></tr>");
    let cell = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.4}"));
    for a in w {
        let status = a.drift.as_ref().map_or("-", |d| d.status);
        let colour = match status {
            "alert" => " style=\"background:#f4b6b6\"",
            "warn" => " style=\"background:#f9e3a3\"",
            _ => "",
        };
        let _ = write!(
            h,
            "<tr><td>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td><td{colour}>{status}</td></tr>",
            esc(&a.name),
            a.profile.rows,
            a.verified,
            cell(a.quality.as_ref().map(|e| e.accuracy)),
            cell(a.quality.as_ref().map(|e| e.f1_min)),
            cell(a.drift.as_ref().map(|d| d.js_classes)),
            cell(a.drift.as_ref().map(|d| d.psi_classes)),
            cell(a.drift.as_ref().map(|d| d.psi_top1)),
        );
    }
    h.push_str("</table></section>");
    h
}
