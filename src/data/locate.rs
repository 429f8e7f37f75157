//! Where a text table is malformed: the first line whose field count differs from the header
//! (CSV/TSV, quote-aware) or that is not a JSON object (JSON Lines). Used to give a parse
//! failure a line number.

/// `(line, column, reason)` of the first malformed record, lines and columns from 1.
pub fn first_bad_line(
    bytes: &[u8],
    format: super::Format,
) -> Option<(usize, Option<usize>, String)> {
    match format {
        super::Format::Csv => delimited(bytes, b','),
        super::Format::Tsv => delimited(bytes, b'\t'),
        super::Format::JsonLines => json_lines(bytes),
        super::Format::Parquet => None,
    }
}

fn json_lines(bytes: &[u8]) -> Option<(usize, Option<usize>, String)> {
    let text = std::str::from_utf8(bytes).ok()?;
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<serde_json::Value>(line) {
            Err(e) => {
                let text = e.to_string();
                let what = text
                    .rsplit_once(" at line ")
                    .map_or(text.as_str(), |(w, _)| w);
                return Some((i + 1, Some(e.column()), format!("not valid JSON: {what}")));
            }
            Ok(v) if !v.is_object() => {
                return Some((
                    i + 1,
                    None,
                    "not a JSON object (one object per line)".into(),
                ))
            }
            Ok(_) => {}
        }
    }
    None
}

/// Field counts per record, honouring quotes ("" inside quotes is a quote; quoted fields may
/// hold separators and newlines).
fn delimited(bytes: &[u8], sep: u8) -> Option<(usize, Option<usize>, String)> {
    let mut line = 1;
    let mut record_line = 1;
    let mut fields = 1;
    let mut header: Option<usize> = None;
    let mut in_quotes = false;
    let mut at_field_start = true;
    let mut record_empty = true;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if in_quotes {
            if b == b'"' {
                if bytes.get(i + 1) == Some(&b'"') {
                    i += 1;
                } else {
                    in_quotes = false;
                }
            } else if b == b'\n' {
                line += 1;
            }
        } else if b == b'"' && at_field_start {
            in_quotes = true;
            record_empty = false;
        } else if b == sep {
            fields += 1;
            at_field_start = true;
            record_empty = false;
            i += 1;
            continue;
        } else if b == b'\n' {
            if !record_empty || fields > 1 {
                match header {
                    None => header = Some(fields),
                    Some(h) if h != fields => {
                        return Some((
                            record_line,
                            None,
                            format!("{fields} fields, but the header has {h}"),
                        ))
                    }
                    _ => {}
                }
            }
            line += 1;
            record_line = line;
            fields = 1;
            record_empty = true;
            at_field_start = true;
            i += 1;
            continue;
        } else if b != b'\r' {
            record_empty = false;
        }
        at_field_start = false;
        i += 1;
    }
    if in_quotes {
        return Some((record_line, None, "a quoted field is never closed".into()));
    }
    match header {
        Some(h) if !record_empty && fields != h => Some((
            record_line,
            None,
            format!("{fields} fields, but the header has {h}"),
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Format;

    #[test]
    fn finds_the_ragged_row_and_the_bad_json_line() {
        let csv = b"text,label\n\"milk, whole\",dairy\n\"two\nlines\",x\nsoap,home,extra\n";
        assert_eq!(
            first_bad_line(csv, Format::Csv),
            Some((5, None, "3 fields, but the header has 2".into()))
        );
        assert_eq!(first_bad_line(b"a,b\n1,2\n\n3,4", Format::Csv), None);
        assert_eq!(
            first_bad_line(b"a,b\n\"1,2\n", Format::Csv).unwrap().2,
            "a quoted field is never closed"
        );
        let jsonl = b"{\"text\":\"a\"}\n\n{\"text\": oops}\n";
        let (line, col, why) = first_bad_line(jsonl, Format::JsonLines).unwrap();
        assert_eq!((line, col), (3, Some(10)));
        assert!(why.starts_with("not valid JSON: expected value"), "{why}");
    }
}
