//! Tables in and out: CSV, TSV, JSON Lines and Parquet through polars, picked by extension.
//!
//! Text formats are checked for UTF-8 up front so a bad byte is reported by line, and CSV/TSV
//! columns are read as strings so the output repeats the input exactly (no "007" → 7).

use std::fs::File;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use polars::prelude::*;

pub mod batch;
mod locate;
pub mod split;

use crate::error::{Error, Result};
use crate::fsutil::write_atomic;

/// A tabular file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Comma-separated values with a header row.
    Csv,
    /// Tab-separated values with a header row.
    Tsv,
    /// JSON Lines: one JSON object per line.
    JsonLines,
    /// Apache Parquet.
    Parquet,
}

impl Format {
    /// From a name as given to `--format`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "csv" => Some(Self::Csv),
            "tsv" | "tab" => Some(Self::Tsv),
            "jsonl" | "ndjson" | "json" => Some(Self::JsonLines),
            "parquet" | "pq" => Some(Self::Parquet),
            _ => None,
        }
    }

    /// The format of `path`: `forced` if given, else by extension.
    pub fn of(path: &Path, forced: Option<Format>) -> Result<Self> {
        if let Some(f) = forced {
            return Ok(f);
        }
        let ext = path
            .extension()
            .map(|e| e.to_string_lossy().into_owned())
            .unwrap_or_default();
        Self::from_name(&ext).ok_or_else(|| Error::UnknownFormat {
            path: path.to_path_buf(),
            ext: ext.to_string(),
        })
    }

    fn name(self) -> &'static str {
        match self {
            Self::Csv => "CSV",
            Self::Tsv => "TSV",
            Self::JsonLines => "JSON Lines",
            Self::Parquet => "Parquet",
        }
    }
}

/// A table read from a file, remembering where it came from for error messages.
pub struct Table {
    /// The file the table was read from.
    pub path: PathBuf,
    /// The table's contents.
    pub frame: DataFrame,
}

impl Table {
    /// Read `path` (format by extension unless `forced`).
    pub fn read(path: &Path, forced: Option<Format>) -> Result<Self> {
        let format = Format::of(path, forced)?;
        if !path.exists() {
            return Err(Error::FileNotFound {
                path: path.to_path_buf(),
            });
        }
        let parse_err = |e: PolarsError| Error::Parse {
            path: path.to_path_buf(),
            format: format.name().to_string(),
            reason: first_line(&e.to_string()),
        };
        let frame = match format {
            Format::Parquet => {
                let file = File::open(path).map_err(|source| Error::Io {
                    path: path.to_path_buf(),
                    source,
                })?;
                ParquetReader::new(file).finish().map_err(parse_err)?
            }
            Format::Csv | Format::Tsv | Format::JsonLines => {
                let bytes = std::fs::read(path).map_err(|source| Error::Io {
                    path: path.to_path_buf(),
                    source,
                })?;
                check_utf8(path, &bytes)?;
                let cursor = Cursor::new(&bytes[..]);
                let parsed = if format == Format::JsonLines {
                    JsonReader::new(cursor)
                        .with_json_format(JsonFormat::JsonLines)
                        .finish()
                } else {
                    let sep = if format == Format::Tsv { b'\t' } else { b',' };
                    CsvReadOptions::default()
                        .with_has_header(true)
                        .with_infer_schema_length(Some(0))
                        .map_parse_options(|o| o.with_separator(sep))
                        .into_reader_with_file_handle(cursor)
                        .finish()
                };
                // Polars names no line; find the first malformed one ourselves.
                parsed.map_err(|e| match locate::first_bad_line(&bytes, format) {
                    Some((line, column, reason)) => Error::BadLine {
                        path: path.to_path_buf(),
                        line,
                        column,
                        reason,
                    },
                    None => parse_err(e),
                })?
            }
        };
        Ok(Self {
            path: path.to_path_buf(),
            frame,
        })
    }

    /// Number of rows, header not counted.
    pub fn rows(&self) -> usize {
        self.frame.height()
    }

    /// The column names, in table order.
    pub fn column_names(&self) -> Vec<String> {
        self.frame
            .get_column_names()
            .into_iter()
            .map(|c| c.to_string())
            .collect()
    }

    /// Whether the table has a column called `name`.
    pub fn has_column(&self, name: &str) -> bool {
        self.frame.column(name).is_ok()
    }

    /// Column `name` as optional strings (numbers are rendered as text).
    fn strings(&self, name: &str) -> Result<Vec<Option<String>>> {
        let column = self.frame.column(name).map_err(|_| Error::MissingColumn {
            path: self.path.clone(),
            column: name.to_string(),
            available: self.column_names().join(", "),
        })?;
        let as_text = column.cast(&DataType::String).map_err(|e| Error::BadData {
            path: self.path.clone(),
            reason: format!(
                "column {name:?} cannot be read as text: {}",
                first_line(&e.to_string())
            ),
        })?;
        let chunked = as_text.str().map_err(|e| Error::BadData {
            path: self.path.clone(),
            reason: format!("column {name:?}: {}", first_line(&e.to_string())),
        })?;
        Ok(chunked.iter().map(|v| v.map(str::to_string)).collect())
    }

    /// The text column: every row must hold non-blank text. Rows are numbered from 1, header
    /// not counted.
    pub fn texts(&self, name: &str) -> Result<Vec<String>> {
        self.strings(name)?
            .into_iter()
            .enumerate()
            .map(|(i, v)| match text_value(v.as_deref()) {
                Ok(_) => Ok(v.unwrap_or_default()),
                Err(why) => Err(self.bad_value(i, name, why)),
            })
            .collect()
    }

    /// A label column: surrounding whitespace stripped; empty or null → `None` (unlabelled).
    pub fn labels(&self, name: &str) -> Result<Vec<Option<String>>> {
        Ok(self
            .strings(name)?
            .into_iter()
            .map(|v| v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty()))
            .collect())
    }

    /// An error about the value in row `index` (0-based) of `column`.
    pub fn bad_value(&self, index: usize, column: &str, reason: &str) -> Error {
        Error::BadValue {
            path: self.path.clone(),
            row: index + 1,
            column: column.to_string(),
            reason: reason.to_string(),
        }
    }
}

/// A text as every reader takes it — present and not blank — or why not.
pub fn text_value(v: Option<&str>) -> std::result::Result<&str, &'static str> {
    match v {
        Some(s) if !s.trim().is_empty() => Ok(s),
        Some(_) => Err("empty text"),
        None => Err("missing (null) text"),
    }
}

/// Write `frame` to `path` atomically in the format its extension names (or `forced`).
pub fn write_table(frame: &mut DataFrame, path: &Path, forced: Option<Format>) -> Result<()> {
    let format = Format::of(path, forced)?;
    write_atomic(path, |w| {
        let r = match format {
            Format::Csv => CsvWriter::new(w).finish(frame),
            Format::Tsv => CsvWriter::new(w).with_separator(b'\t').finish(frame),
            Format::JsonLines => JsonWriter::new(w)
                .with_json_format(JsonFormat::JsonLines)
                .finish(frame),
            Format::Parquet => ParquetWriter::new(w).finish(frame).map(|_| ()),
        };
        r.map_err(|e| first_line(&e.to_string()))
    })
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").trim().to_string()
}

/// Report the first invalid UTF-8 byte by line number.
fn check_utf8(path: &Path, bytes: &[u8]) -> Result<()> {
    match std::str::from_utf8(bytes) {
        Ok(_) => Ok(()),
        Err(e) => {
            let offset = e.valid_up_to();
            let line = bytes[..offset].iter().filter(|&&b| b == b'\n').count() + 1;
            Err(Error::NotUtf8 {
                path: path.to_path_buf(),
                line,
                offset,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, content: &[u8]) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, content).unwrap();
        p
    }

    #[test]
    fn csv_keeps_strings_and_reports_empty_text_by_row() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "a.csv",
            b"id,text,label\n007,milk, Dairy \n8,,\n",
        );
        let t = Table::read(&p, None).unwrap();
        assert_eq!(
            t.strings("id").unwrap(),
            vec![Some("007".into()), Some("8".into())]
        );
        assert_eq!(t.labels("label").unwrap(), vec![Some("Dairy".into()), None]);
        let err = t.texts("text").unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "{}: row 2, column \"text\": missing (null) text",
                p.display()
            )
        );
    }

    #[test]
    fn missing_column_lists_the_columns() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "a.tsv", b"a\tb\nx\ty\n");
        let t = Table::read(&p, None).unwrap();
        let err = t.texts("text").unwrap_err().to_string();
        assert_eq!(
            err,
            format!("{}: no column \"text\" (columns: a, b)", p.display())
        );
    }

    #[test]
    fn non_utf8_is_reported_by_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "a.csv", b"text\nok\ncaf\xe9\n");
        let err = Table::read(&p, None).err().unwrap().to_string();
        assert_eq!(
            err,
            format!(
                "{}: line 3: not valid UTF-8 (byte offset 11); re-encode the file as UTF-8",
                p.display()
            )
        );
    }

    #[test]
    fn round_trips_through_every_format() {
        let dir = tempfile::tempdir().unwrap();
        let src = write(
            dir.path(),
            "a.jsonl",
            b"{\"text\":\"milk\",\"n\":1}\n{\"text\":\"bread\",\"n\":2}\n",
        );
        let t = Table::read(&src, None).unwrap();
        for name in ["b.csv", "b.tsv", "b.parquet", "b.ndjson"] {
            let mut frame = t.frame.clone();
            let out = dir.path().join(name);
            write_table(&mut frame, &out, None).unwrap();
            let back = Table::read(&out, None).unwrap();
            assert_eq!(back.texts("text").unwrap(), vec!["milk", "bread"], "{name}");
            assert_eq!(
                back.strings("n").unwrap(),
                vec![Some("1".into()), Some("2".into())],
                "{name}"
            );
        }
        let err = Format::of(Path::new("x.xlsx"), None)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("x.xlsx: unknown file extension \"xlsx\""),
            "{err}"
        );
    }
}
