//! The evaluation table printed after every epoch and by `catbert infer --label-col`.

use super::Evaluation;

/// Terminal width the table is laid out for; the confusion matrix wraps into column blocks.
const TABLE_WIDTH: usize = 100;

/// The label of class `c`, falling back to its index when `labels` is short or the name empty.
fn label(labels: &[String], c: usize) -> String {
    match labels.get(c) {
        Some(l) if !l.is_empty() => l.clone(),
        _ => c.to_string(),
    }
}

/// An aligned text table of `e` for the terminal: a summary line, one line per class (its
/// index and its full name: the legend of the matrix), then the confusion matrix (rows = true,
/// columns = predicted, both by class index; wrapped into blocks of at most 100 columns).
///
/// `labels[c]` names class `c`; missing or empty names show the index instead.
pub fn format_table(e: &Evaluation, labels: &[String]) -> String {
    use std::fmt::Write as _;

    let k = e.per_class.len();
    let names: Vec<String> = (0..k).map(|c| label(labels, c)).collect();
    let mut out = String::new();

    // Writing to a String cannot fail, hence the ignored results below.
    let _ = write!(out, "n={}", e.n);
    if let Some(loss) = e.loss {
        let _ = write!(out, " loss={loss:.4}");
    }
    let _ = write!(
        out,
        " accuracy={:.4} f1_weighted={:.4} f1_macro={:.4} f1_min={:.4}",
        e.accuracy, e.f1_weighted, e.f1_macro, e.f1_min
    );
    if let Some(name) = names.get(e.f1_min_class) {
        let _ = write!(out, " ({name})");
    }
    out.push('\n');

    let idx_w = k.saturating_sub(1).to_string().len();
    let name_w = names
        .iter()
        .map(|s| s.chars().count())
        .max()
        .unwrap_or(0)
        .max(5);
    let support_w = (e.per_class.iter())
        .map(|m| m.support.to_string().len())
        .max()
        .unwrap_or(0)
        .max(7);
    let _ = writeln!(
        out,
        "{:>idx_w$} {:<name_w$}  {:>9}  {:>9}  {:>9}  {:>support_w$}",
        "", "class", "precision", "recall", "f1", "support"
    );
    for (c, (name, m)) in names.iter().zip(&e.per_class).enumerate() {
        let _ = writeln!(
            out,
            "{c:>idx_w$} {name:<name_w$}  {:>9.4}  {:>9.4}  {:>9.4}  {:>support_w$}",
            m.precision, m.recall, m.f1, m.support
        );
    }

    if k == 0 {
        return out;
    }
    // Rows and columns by class index (names in the lines above).
    let max_count = e.confusion.iter().flatten().copied().max().unwrap_or(0);
    let cell_w = max_count.to_string().len().max(idx_w) + 1;
    let per_block = ((TABLE_WIDTH.saturating_sub(idx_w)) / cell_w).max(1);
    out.push_str("confusion (rows = true, columns = predicted, by class index):\n");
    for start in (0..k).step_by(per_block) {
        let cols = start..(start + per_block).min(k);
        let _ = write!(out, "{:idx_w$}", "");
        for c in cols.clone() {
            let _ = write!(out, "{c:>cell_w$}");
        }
        out.push('\n');
        for (t, row) in e.confusion.iter().enumerate() {
            let _ = write!(out, "{t:>idx_w$}");
            for count in &row[cols.clone()] {
                let _ = write!(out, "{count:>cell_w$}");
            }
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::evaluate;

    #[test]
    fn table_layout() {
        let mut e = evaluate(&[0, 0, 0, 1, 1, 2], &[0, 0, 1, 1, 2, 2], 3);
        e.loss = Some(0.5);
        let labels: Vec<String> = [
            "negative",
            "a label name much longer than twenty-eight chars",
            "",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let table = format_table(&e, &labels);
        let expected = "\
n=6 loss=0.5000 accuracy=0.6667 f1_weighted=0.6778 f1_macro=0.6556 f1_min=0.5000 (a label name much longer than twenty-eight chars)
  class                                             precision     recall         f1  support
0 negative                                             1.0000     0.6667     0.8000        3
1 a label name much longer than twenty-eight chars     0.5000     0.5000     0.5000        2
2 2                                                    0.5000     1.0000     0.6667        1
confusion (rows = true, columns = predicted, by class index):
  0 1 2
0 2 1 0
1 0 1 1
2 0 0 1
";
        assert_eq!(table, expected, "\n{table}");
    }

    #[test]
    fn table_wraps_wide_confusion_into_blocks() {
        // 60 classes of 3 digits' counts cannot fit in one 100-column block.
        let k = 60;
        let y: Vec<usize> = (0..k).flat_map(|c| std::iter::repeat_n(c, 100)).collect();
        let e = evaluate(&y, &y, k);
        let labels: Vec<String> = (0..k).map(|c| format!("class number {c}")).collect();
        let table = format_table(&e, &labels);
        let matrix = table.split("by class index):\n").nth(1).unwrap();
        for line in matrix.lines() {
            assert!(line.chars().count() <= TABLE_WIDTH, "too wide: {line:?}");
        }
        assert!(table.contains(" class number 59 "), "names in full");
        // Every class appears once as a column header across the blocks.
        let headers: Vec<&str> = matrix.lines().filter(|l| l.starts_with("  ")).collect();
        let n_headers: usize = headers.iter().map(|l| l.split_whitespace().count()).sum();
        assert_eq!(n_headers, k);
        assert!(headers.len() > 1);
    }
}
