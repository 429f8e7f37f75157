//! The server's counters, gauges and histograms, rendered in Prometheus' text format (0.0.4).
//! Small and lock-light: label sets are few (routes × statuses, classes), so each family is a
//! mutex-guarded map updated once per request or batch.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

/// Upper bounds of the duration histograms, seconds.
pub const DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Upper bounds of the batch-size histogram, rows.
pub const SIZE_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];
/// Upper bounds of the batch-token histogram.
pub const TOKEN_BUCKETS: &[f64] = &[
    16.0, 64.0, 256.0, 1024.0, 2048.0, 4096.0, 8192.0, 16384.0, 32768.0, 65536.0,
];
/// Upper bounds of the top-1 probability histogram.
pub const PROBABILITY_BUCKETS: &[f64] = &[0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0];

type Labels = Vec<(&'static str, String)>;

#[derive(Debug, Clone)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(buckets: usize) -> Self {
        Self {
            counts: vec![0; buckets],
            sum: 0.0,
            count: 0,
        }
    }
}

/// One metric family: a name, help text, kind and values by label set.
#[derive(Debug)]
struct Family<T> {
    name: &'static str,
    help: &'static str,
    values: Mutex<BTreeMap<Labels, T>>,
}

impl<T: Clone> Family<T> {
    fn new(name: &'static str, help: &'static str) -> Self {
        Self {
            name,
            help,
            values: Mutex::new(BTreeMap::new()),
        }
    }

    fn update(&self, labels: Labels, init: impl FnOnce() -> T, f: impl FnOnce(&mut T)) {
        let mut values = self.values.lock().unwrap_or_else(|p| p.into_inner());
        f(values.entry(labels).or_insert_with(init));
    }

    fn snapshot(&self) -> Vec<(Labels, T)> {
        let values = self.values.lock().unwrap_or_else(|p| p.into_inner());
        values.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

/// A counter family (monotonic).
#[derive(Debug)]
pub struct Counter(Family<f64>);

impl Counter {
    /// A counter `name` (Prometheus style: `_total` suffix).
    pub fn new(name: &'static str, help: &'static str) -> Self {
        Self(Family::new(name, help))
    }

    /// Add `by` to the series with `labels`.
    pub fn add(&self, labels: &[(&'static str, &str)], by: f64) {
        self.0.update(owned(labels), || 0.0, |v| *v += by);
    }

    /// The value of the series with `labels` (0 when never touched).
    pub fn get(&self, labels: &[(&'static str, &str)]) -> f64 {
        let key = owned(labels);
        let values = self.0.values.lock().unwrap_or_else(|p| p.into_inner());
        values.get(&key).copied().unwrap_or(0.0)
    }

    fn render(&self, out: &mut String) {
        header(out, self.0.name, self.0.help, "counter");
        for (labels, v) in self.0.snapshot() {
            let _ = writeln!(out, "{}{} {}", self.0.name, label_text(&labels, None), v);
        }
    }
}

/// A gauge family (set to a value).
#[derive(Debug)]
pub struct Gauge(Family<f64>);

impl Gauge {
    /// A gauge `name`.
    pub fn new(name: &'static str, help: &'static str) -> Self {
        Self(Family::new(name, help))
    }

    /// Set the series with `labels` to `v`.
    pub fn set(&self, labels: &[(&'static str, &str)], v: f64) {
        self.0.update(owned(labels), || 0.0, |x| *x = v);
    }

    /// Forget every series (before setting the current one of an info-style gauge).
    pub fn clear(&self) {
        self.0
            .values
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    fn render(&self, out: &mut String) {
        header(out, self.0.name, self.0.help, "gauge");
        for (labels, v) in self.0.snapshot() {
            let _ = writeln!(out, "{}{} {}", self.0.name, label_text(&labels, None), v);
        }
    }
}

/// A histogram family with fixed buckets.
#[derive(Debug)]
pub struct Histo {
    family: Family<Histogram>,
    buckets: &'static [f64],
}

impl Histo {
    /// A histogram `name` with upper bounds `buckets` (ascending; `+Inf` is implied).
    pub fn new(name: &'static str, help: &'static str, buckets: &'static [f64]) -> Self {
        Self {
            family: Family::new(name, help),
            buckets,
        }
    }

    /// Record `v` in the series with `labels`.
    pub fn observe(&self, labels: &[(&'static str, &str)], v: f64) {
        let n = self.buckets.len();
        let slot = self.buckets.iter().position(|&b| v <= b).unwrap_or(n);
        self.family.update(
            owned(labels),
            || Histogram::new(n + 1),
            |h| {
                h.counts[slot] += 1;
                h.sum += v;
                h.count += 1;
            },
        );
    }

    fn render(&self, out: &mut String) {
        let name = self.family.name;
        header(out, name, self.family.help, "histogram");
        for (labels, h) in self.family.snapshot() {
            let mut cumulative = 0;
            for (i, c) in h.counts.iter().enumerate() {
                cumulative += c;
                let le = self
                    .buckets
                    .get(i)
                    .map_or("+Inf".to_string(), |b| b.to_string());
                let _ = writeln!(
                    out,
                    "{name}_bucket{} {cumulative}",
                    label_text(&labels, Some(&le))
                );
            }
            let l = label_text(&labels, None);
            let _ = writeln!(out, "{name}_sum{l} {}", h.sum);
            let _ = writeln!(out, "{name}_count{l} {}", h.count);
        }
    }
}

fn owned(labels: &[(&'static str, &str)]) -> Labels {
    labels.iter().map(|(k, v)| (*k, v.to_string())).collect()
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// `{a="x",b="y"}` (with `le` last for buckets), or nothing for no labels.
fn label_text(labels: &Labels, le: Option<&str>) -> String {
    let mut parts: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    if let Some(le) = le {
        parts.push(format!("le=\"{le}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Everything the server measures.
#[derive(Debug)]
pub struct ServeMetrics {
    /// Requests by route and HTTP status.
    pub requests: Counter,
    /// Whole-request time by route.
    pub request_seconds: Histo,
    /// Time texts waited in the queue.
    pub queue_seconds: Histo,
    /// Time of each batch's forward pass.
    pub inference_seconds: Histo,
    /// Texts per batch.
    pub batch_size: Histo,
    /// Tokens per batch.
    pub batch_tokens: Histo,
    /// Texts waiting now.
    pub queue_size: Gauge,
    /// The loaded model: version (0 for a folder or Hub model), labelled by reference.
    pub model_version: Gauge,
    /// Model loads by outcome (`ok`, `failed`).
    pub model_loads: Counter,
    /// Top-1 predictions by class.
    pub predictions: Counter,
    /// Top-1 probability.
    pub top1_probability: Histo,
    /// Feedback items accepted.
    pub feedback: Counter,
    /// Drift of the recent predictions against the model's reference profile, by measure.
    pub drift: Gauge,
}

impl Default for ServeMetrics {
    fn default() -> Self {
        Self {
            requests: Counter::new(
                "catbert_requests_total",
                "HTTP requests by route and status",
            ),
            request_seconds: Histo::new(
                "catbert_request_duration_seconds",
                "Whole-request time by route",
                DURATION_BUCKETS,
            ),
            queue_seconds: Histo::new(
                "catbert_queue_duration_seconds",
                "Time a text waited for its batch",
                DURATION_BUCKETS,
            ),
            inference_seconds: Histo::new(
                "catbert_inference_duration_seconds",
                "Forward pass time per batch",
                DURATION_BUCKETS,
            ),
            batch_size: Histo::new("catbert_batch_size", "Texts per batch", SIZE_BUCKETS),
            batch_tokens: Histo::new("catbert_batch_tokens", "Tokens per batch", TOKEN_BUCKETS),
            queue_size: Gauge::new("catbert_queue_size", "Texts waiting for a batch"),
            model_version: Gauge::new(
                "catbert_model_version",
                "Registry version of the model answering (0: a folder or Hub model)",
            ),
            model_loads: Counter::new("catbert_model_loads_total", "Model loads by outcome"),
            predictions: Counter::new(
                "catbert_predictions_total",
                "Texts classified, by top-1 class",
            ),
            top1_probability: Histo::new(
                "catbert_top1_probability",
                "Probability of the top-1 class",
                PROBABILITY_BUCKETS,
            ),
            feedback: Counter::new("catbert_feedback_total", "Feedback items stored, by label"),
            drift: Gauge::new(
                "catbert_drift",
                "Recent predictions against the reference profile: js_classes, psi_classes, psi_top1, mean_top1, window_rows",
            ),
        }
    }
}

impl ServeMetrics {
    /// The Prometheus text exposition of everything.
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.requests.render(&mut out);
        self.request_seconds.render(&mut out);
        self.queue_seconds.render(&mut out);
        self.inference_seconds.render(&mut out);
        self.batch_size.render(&mut out);
        self.batch_tokens.render(&mut out);
        self.queue_size.render(&mut out);
        self.model_version.render(&mut out);
        self.model_loads.render(&mut out);
        self.predictions.render(&mut out);
        self.top1_probability.render(&mut out);
        self.feedback.render(&mut out);
        self.drift.render(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_format() {
        let m = ServeMetrics::default();
        m.requests
            .add(&[("route", "/predict"), ("status", "200")], 1.0);
        m.batch_size.observe(&[], 3.0);
        m.batch_size.observe(&[], 600.0);
        m.predictions.add(&[("class", "a \"b\"")], 2.0);
        let text = m.render();
        assert!(text.contains("# TYPE catbert_requests_total counter\n"));
        assert!(text.contains("catbert_requests_total{route=\"/predict\",status=\"200\"} 1\n"));
        assert!(text.contains("catbert_batch_size_bucket{le=\"2\"} 0\n"));
        assert!(text.contains("catbert_batch_size_bucket{le=\"4\"} 1\n"));
        assert!(text.contains("catbert_batch_size_bucket{le=\"+Inf\"} 2\n"));
        assert!(text.contains("catbert_batch_size_sum 603\n"));
        assert!(text.contains("catbert_batch_size_count 2\n"));
        assert!(text.contains("catbert_predictions_total{class=\"a \\\"b\\\"\"} 2\n"));
    }
}
