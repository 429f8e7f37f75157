//! `catbert infer --file - --out -`: a streaming worker. Rows in on stdin (JSON Lines or an
//! Arrow IPC stream), predictions out on stdout as they are made; the model is loaded once
//! and memory stays bounded by `--batch-size`. A closed stdout ends the process quietly.

use std::io::{BufReader, BufWriter};
use std::time::Instant;

use super::infer::{load_predictor, open_model, InferArgs};
use super::progress::Ui;
use crate::checkpoint::ModelRef;
use crate::error::Error;
use crate::infer::stream::{is_closed_output, predict_stream, StreamFormat, StreamOptions};

fn stream_format(name: Option<&str>) -> Result<StreamFormat, Error> {
    match name {
        Some("jsonl" | "ndjson" | "json") => Ok(StreamFormat::Jsonl),
        Some("arrow" | "ipc" | "arrows") => Ok(StreamFormat::Arrow),
        Some(other) => Err(Error::Usage(format!(
            "`format` {other:?} cannot stream: use jsonl or arrow with `file` -"
        ))),
        None => Err(Error::Usage(
            "`file` - streams rows from stdin: say how with `format` jsonl or `format` arrow"
                .into(),
        )),
    }
}

pub fn run(args: &InferArgs, ui: &Ui) -> anyhow::Result<()> {
    let format = stream_format(args.format.as_deref())?;
    if args.out.as_deref().is_some_and(|o| o.as_os_str() != "-") {
        return Err(Error::Usage(
            "`file` - streams predictions to stdout: leave out `out` or give `out` -".into(),
        )
        .into());
    }
    for (given, flag) in [
        (args.label_col.is_some(), "label_col"),
        (args.review_out.is_some(), "review_out"),
    ] {
        if given {
            return Err(Error::Usage(format!(
                "`{flag}` needs a file: it cannot be used when streaming (`file` -)"
            ))
            .into());
        }
    }
    let reference = ModelRef::try_parse(&args.model)?;
    let (model, checkpoint, text_col) = open_model(&reference, args)?;
    let predictor = load_predictor(args, checkpoint, &model.origin)?;
    predictor.notices().iter().for_each(|n| ui.notice(n));
    ui.info(&format!(
        "model {} ({} classes) on {}, {}; streaming {} rows from stdin",
        predictor.origin(),
        predictor.labels().len(),
        predictor.device_description(),
        predictor.precision_name(),
        match format {
            StreamFormat::Jsonl => "JSON Lines",
            StreamFormat::Arrow => "Arrow IPC",
        }
    ));
    let stream = StreamOptions {
        text_col,
        top_k: args.top_k,
        long: args.long,
        key_cols: args.key_cols.clone(),
        // One batch per math thread at a time (the CPU runs them side by side); memory stays
        // bounded by this many rows.
        chunk_rows: args.batch_size * rayon::current_num_threads().max(1),
    };
    let start = Instant::now();
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    let result = predict_stream(
        &predictor,
        BufReader::with_capacity(1 << 16, stdin.lock()),
        BufWriter::with_capacity(1 << 16, stdout.lock()),
        format,
        &stream,
    );
    match result {
        Ok(summary) => {
            let seconds = start.elapsed().as_secs_f64();
            ui.result(&format!(
                "{} rows streamed in {seconds:.2} s ({:.1} rows/s, {} batches)",
                summary.rows,
                summary.rows as f64 / seconds.max(1e-9),
                summary.batches
            ));
            Ok(())
        }
        // Whoever read our output has gone: nothing to report.
        Err(e) if is_closed_output(&e) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
