//! Streaming prediction: rows in from any reader, predictions out to any writer as they are
//! made, in JSON Lines or an Arrow IPC stream, with memory bounded by one chunk of rows
//! whatever the input size. A long-lived `catbert infer --file - --out -` is a worker that
//! any engine (Spark's `mapInArrow`, a shell pipe) can feed.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::Arc;

use arrow_array::{
    Array, ArrayRef, Float32Array, Int32Array, Int64Array, LargeStringArray, RecordBatch,
    StringArray, StringViewArray,
};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef};

use super::{Predictor, Quiet, TopK};
use crate::error::{Error, Result};

/// The wire format of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamFormat {
    /// One JSON object per line.
    Jsonl,
    /// An Arrow IPC stream (schema, then record batches).
    Arrow,
}

/// How a stream is predicted and laid out.
#[derive(Debug, Clone)]
pub struct StreamOptions {
    /// The text column (field).
    pub text_col: String,
    /// Categories per row.
    pub top_k: usize,
    /// One output row per (row, rank) instead of one per row with `category_i` /
    /// `probability_i` columns.
    pub long: bool,
    /// Input columns carried into the long layout (the wide layout keeps every column).
    pub key_cols: Vec<String>,
    /// Rows predicted (and written) at a time: the bound on memory.
    pub chunk_rows: usize,
}

/// What a stream carried.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamSummary {
    /// Input rows predicted.
    pub rows: usize,
    /// Chunks (JSON Lines) or record batches (Arrow) written.
    pub batches: usize,
}

/// The name errors give the input.
const STDIN: &str = "<stdin>";

fn input_error(row: usize, column: &str, reason: &str) -> Error {
    Error::BadValue {
        path: PathBuf::from(STDIN),
        row,
        column: column.to_string(),
        reason: reason.to_string(),
    }
}

fn write_error(source: std::io::Error) -> Error {
    Error::Io {
        path: PathBuf::from("<stdout>"),
        source,
    }
}

/// True when `e` is the reader of our output going away (a closed pipe): the end of the
/// stream, not a failure.
pub fn is_closed_output(e: &Error) -> bool {
    matches!(e, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::BrokenPipe)
}

/// Predict every row of `input` in `format` and write the predictions to `output` as they
/// are made.
pub fn predict_stream(
    predictor: &Predictor,
    input: impl BufRead,
    output: impl Write,
    format: StreamFormat,
    options: &StreamOptions,
) -> Result<StreamSummary> {
    if options.chunk_rows == 0 || options.top_k == 0 {
        return Err(Error::Usage(
            "`batch_size` and `top_k` must be at least 1".into(),
        ));
    }
    let k = options.top_k.min(predictor.labels().len());
    match format {
        StreamFormat::Jsonl => jsonl(predictor, input, output, options, k),
        StreamFormat::Arrow => arrow(predictor, input, output, options, k),
    }
}

fn predict_chunk(predictor: &Predictor, texts: &[String], k: usize) -> Result<TopK> {
    predictor.predict_encoded(&predictor.encode(texts)?, k, &Quiet)
}

/// A text value as the file readers take it (`data::text_value`), else an error naming the row.
fn checked_text(v: Option<&str>, row: usize, col: &str) -> Result<String> {
    crate::data::text_value(v)
        .map(str::to_string)
        .map_err(|why| input_error(row, col, why))
}

// ---- JSON Lines ----

fn jsonl(
    predictor: &Predictor,
    input: impl BufRead,
    mut output: impl Write,
    o: &StreamOptions,
    k: usize,
) -> Result<StreamSummary> {
    let mut summary = StreamSummary::default();
    let mut lines = input.lines();
    let mut line_no = 0usize;
    loop {
        // (the line as read, its parsed object) for up to one chunk of rows.
        let mut chunk: Vec<(String, serde_json::Map<String, serde_json::Value>)> = Vec::new();
        for line in lines.by_ref() {
            line_no += 1;
            let line = line.map_err(|source| Error::Io {
                path: PathBuf::from(STDIN),
                source,
            })?;
            if line.trim().is_empty() {
                continue;
            }
            let object = match serde_json::from_str::<serde_json::Value>(&line) {
                Ok(serde_json::Value::Object(m)) => m,
                Ok(_) => return Err(bad_line(line_no, None, "not a JSON object".into())),
                Err(e) => {
                    let at = format!(" at line {} column {}", e.line(), e.column());
                    let reason = e.to_string();
                    let reason = reason.strip_suffix(&at).unwrap_or(&reason).to_string();
                    return Err(bad_line(line_no, Some(e.column()), reason));
                }
            };
            chunk.push((line, object));
            if chunk.len() == o.chunk_rows {
                break;
            }
        }
        if chunk.is_empty() {
            break;
        }
        let first_row = summary.rows;
        let texts = (chunk.iter().enumerate())
            .map(|(i, (_, m))| {
                let row = first_row + i + 1;
                match m.get(&o.text_col) {
                    None => Err(input_error(row, &o.text_col, "no such field")),
                    Some(serde_json::Value::String(s)) => checked_text(Some(s), row, &o.text_col),
                    Some(serde_json::Value::Null) => checked_text(None, row, &o.text_col),
                    Some(other) => Ok(other.to_string()),
                }
            })
            .collect::<Result<Vec<_>>>()?;
        let top = predict_chunk(predictor, &texts, k)?;
        let mut out = String::new();
        for (r, (line, object)) in chunk.iter().enumerate() {
            jsonl_row(
                &mut out,
                predictor.labels(),
                &top,
                r,
                first_row + r,
                line,
                object,
                o,
            );
        }
        output.write_all(out.as_bytes()).map_err(write_error)?;
        output.flush().map_err(write_error)?;
        summary.rows += chunk.len();
        summary.batches += 1;
    }
    Ok(summary)
}

fn bad_line(line: usize, column: Option<usize>, reason: String) -> Error {
    Error::BadLine {
        path: PathBuf::from(STDIN),
        line,
        column,
        reason,
    }
}

/// The output line(s) of row `r` of a chunk: wide appends `category_i` / `probability_i` to
/// the input object as written; long writes one object per rank.
#[allow(clippy::too_many_arguments)]
fn jsonl_row(
    out: &mut String,
    labels: &[String],
    top: &TopK,
    r: usize,
    row_id: usize,
    line: &str,
    object: &serde_json::Map<String, serde_json::Value>,
    o: &StreamOptions,
) {
    let json = |s: &str| serde_json::Value::from(s).to_string();
    if o.long {
        for (rank, (class, p)) in top.row(r).enumerate() {
            out.push('{');
            for key in &o.key_cols {
                let v = object.get(key).cloned().unwrap_or(serde_json::Value::Null);
                out.push_str(&format!("{}:{v},", json(key)));
            }
            out.push_str(&format!(
                "\"row_id\":{row_id},\"rank\":{rank},\"category\":{},\"probability\":{p}}}\n",
                json(&labels[class as usize]),
            ));
        }
        return;
    }
    // The input object as written, its closing brace replaced by the predictions.
    let body = line.trim_end();
    let body = &body[..body.len() - 1];
    out.push_str(body);
    let mut first = object.is_empty();
    for (rank, (class, _)) in top.row(r).enumerate() {
        out.push_str(if first { "" } else { "," });
        first = false;
        out.push_str(&format!(
            "\"category_{}\":{}",
            rank + 1,
            json(&labels[class as usize])
        ));
    }
    for (rank, (_, p)) in top.row(r).enumerate() {
        // f32's shortest round-trip form, as the file outputs write it.
        out.push_str(&format!(",\"probability_{}\":{p}", rank + 1));
    }
    out.push_str("}\n");
}

// ---- Arrow IPC ----

/// An error writing (or building) the output stream.
fn arrow_error(e: ArrowError) -> Error {
    match e {
        ArrowError::IoError(_, source) => write_error(source),
        other => Error::Internal(format!("building the Arrow output: {other}")),
    }
}

/// An error reading the input stream.
fn arrow_read_error(e: ArrowError) -> Error {
    let reason = match e {
        ArrowError::IoError(_, source) if source.kind() == std::io::ErrorKind::UnexpectedEof => {
            "not an Arrow IPC stream, or one cut short".to_string()
        }
        ArrowError::IoError(_, source) => {
            return Error::Io {
                path: PathBuf::from(STDIN),
                source,
            }
        }
        other => other.to_string(),
    };
    Error::Parse {
        path: PathBuf::from(STDIN),
        format: "Arrow IPC stream".into(),
        reason,
    }
}

/// The texts of `col` in `batch`, whatever string type carries them.
fn arrow_texts(batch: &RecordBatch, col: &str, first_row: usize) -> Result<Vec<String>> {
    fn strings<'a>(array: &'a ArrayRef) -> Option<Box<dyn Fn(usize) -> Option<&'a str> + 'a>> {
        Some(match array.data_type() {
            DataType::Utf8 => {
                let a = array.as_any().downcast_ref::<StringArray>()?;
                Box::new(move |i| a.is_valid(i).then(|| a.value(i)))
            }
            DataType::LargeUtf8 => {
                let a = array.as_any().downcast_ref::<LargeStringArray>()?;
                Box::new(move |i| a.is_valid(i).then(|| a.value(i)))
            }
            DataType::Utf8View => {
                let a = array.as_any().downcast_ref::<StringViewArray>()?;
                Box::new(move |i| a.is_valid(i).then(|| a.value(i)))
            }
            _ => return None,
        })
    }
    let schema = batch.schema();
    let Some(array) = batch.column_by_name(col) else {
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        return Err(Error::MissingColumn {
            path: PathBuf::from(STDIN),
            column: col.to_string(),
            available: names.join(", "),
        });
    };
    let Some(get) = strings(array) else {
        return Err(input_error(
            first_row + 1,
            col,
            &format!("the column is {}, not text", array.data_type()),
        ));
    };
    (0..array.len())
        .map(|i| checked_text(get(i), first_row + i + 1, col))
        .collect()
}

/// The output schema for an input schema.
fn output_schema(input: &Schema, o: &StreamOptions, k: usize) -> Result<SchemaRef> {
    let mut fields: Vec<Arc<Field>> = Vec::new();
    if o.long {
        for key in &o.key_cols {
            let f = input
                .field_with_name(key)
                .map_err(|_| Error::MissingColumn {
                    path: PathBuf::from(STDIN),
                    column: key.clone(),
                    available: (input.fields().iter())
                        .map(|f| f.name().as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                })?;
            fields.push(Arc::new(f.clone()));
        }
        fields.push(Arc::new(Field::new("row_id", DataType::Int64, false)));
        fields.push(Arc::new(Field::new("rank", DataType::Int32, false)));
        fields.push(Arc::new(Field::new("category", DataType::Utf8, false)));
        fields.push(Arc::new(Field::new(
            "probability",
            DataType::Float32,
            false,
        )));
    } else {
        fields.extend(input.fields().iter().cloned());
        for i in 1..=k {
            fields.push(Arc::new(Field::new(
                format!("category_{i}"),
                DataType::Utf8,
                false,
            )));
        }
        for i in 1..=k {
            let name = format!("probability_{i}");
            fields.push(Arc::new(Field::new(name, DataType::Float32, false)));
        }
    }
    Ok(Arc::new(Schema::new(fields)))
}

/// The predictions of `batch` (rows from `first_row`) in the output schema.
fn arrow_output(
    batch: &RecordBatch,
    top: &TopK,
    labels: &[String],
    schema: &SchemaRef,
    first_row: usize,
    o: &StreamOptions,
) -> Result<RecordBatch> {
    let n = top.rows();
    let k = top.k;
    let category = |i: usize| labels[top.classes[i] as usize].as_str();
    let mut columns: Vec<ArrayRef> = Vec::new();
    if o.long {
        let take: Vec<u32> = (0..n * k).map(|i| (i / k) as u32).collect();
        let take = arrow_array::UInt32Array::from(take);
        for key in &o.key_cols {
            let col = batch.column_by_name(key).expect("checked with the schema");
            columns.push(arrow_select::take::take(col, &take, None).map_err(arrow_error)?);
        }
        columns.push(Arc::new(Int64Array::from_iter_values(
            (0..n * k).map(|i| (first_row + i / k) as i64),
        )));
        columns.push(Arc::new(Int32Array::from_iter_values(
            (0..n * k).map(|i| (i % k) as i32),
        )));
        columns.push(Arc::new(StringArray::from_iter_values(
            (0..n * k).map(category),
        )));
        columns.push(Arc::new(Float32Array::from(top.probs.clone())));
    } else {
        columns.extend(batch.columns().iter().cloned());
        for rank in 0..k {
            columns.push(Arc::new(StringArray::from_iter_values(
                (0..n).map(|r| category(r * k + rank)),
            )));
        }
        for rank in 0..k {
            columns.push(Arc::new(Float32Array::from_iter_values(
                (0..n).map(|r| top.probs[r * k + rank]),
            )));
        }
    }
    RecordBatch::try_new(schema.clone(), columns).map_err(arrow_error)
}

fn arrow(
    predictor: &Predictor,
    input: impl BufRead,
    output: impl Write,
    o: &StreamOptions,
    k: usize,
) -> Result<StreamSummary> {
    let reader = arrow_ipc::reader::StreamReader::try_new(input, None).map_err(arrow_read_error)?;
    let schema = output_schema(&reader.schema(), o, k)?;
    let mut writer =
        arrow_ipc::writer::StreamWriter::try_new(output, &schema).map_err(arrow_error)?;
    writer.flush().map_err(arrow_error)?;
    let mut summary = StreamSummary::default();
    for batch in reader {
        let batch = batch.map_err(arrow_read_error)?;
        // Large input batches are predicted and written a chunk at a time.
        let mut offset = 0;
        while offset < batch.num_rows() {
            let len = o.chunk_rows.min(batch.num_rows() - offset);
            let part = batch.slice(offset, len);
            let texts = arrow_texts(&part, &o.text_col, summary.rows)?;
            let top = predict_chunk(predictor, &texts, k)?;
            let out = arrow_output(&part, &top, predictor.labels(), &schema, summary.rows, o)?;
            writer.write(&out).map_err(arrow_error)?;
            writer.flush().map_err(arrow_error)?;
            summary.rows += len;
            summary.batches += 1;
            offset += len;
        }
    }
    writer.finish().map_err(arrow_error)?;
    Ok(summary)
}
