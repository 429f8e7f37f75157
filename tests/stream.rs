//! The streaming worker, `catbert infer --file - --out -`: JSON Lines and Arrow IPC streams
//! give what `catbert infer` gives on a file; memory stays flat whatever the input size; a
//! closed stdout ends the process quietly; bad streams get one line.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::Stdio;

use catbert::data::Table;
use common::*;

/// The bundled queries as JSON Lines (`id`, `product_description`).
fn queries_jsonl() -> (Vec<String>, String) {
    let table = Table::read(&repo().join("datasets/products-sample/queries.csv"), None).unwrap();
    let texts = table.texts("product_description").unwrap();
    let mut jsonl = String::new();
    for (i, t) in texts.iter().enumerate() {
        let line = serde_json::json!({"id": format!("q{i}"), "product_description": t});
        jsonl.push_str(&format!("{line}\n"));
    }
    (texts, jsonl)
}

/// Run the binary with `args`, `input` on stdin; (status, stdout, stderr).
fn pipe(args: &[&str], input: Vec<u8>) -> (std::process::ExitStatus, Vec<u8>, String) {
    let mut child = catbert_cmd(args, &[])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // A writer thread: the worker writes while it reads, and pipes are finite.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let o = child.wait_with_output().unwrap();
    writer.join().unwrap();
    let err = stderr(&o);
    (o.status, o.stdout, err)
}

/// The top-5 (categories, probabilities) per row of a wide predictions table.
fn top5(table: &Table) -> Vec<(Vec<String>, Vec<f32>)> {
    let cats: Vec<Vec<String>> = (1..=5)
        .map(|i| table.texts(&format!("category_{i}")).unwrap())
        .collect();
    let probs: Vec<Vec<String>> = (1..=5)
        .map(|i| table.texts(&format!("probability_{i}")).unwrap())
        .collect();
    (0..cats[0].len())
        .map(|r| {
            (
                cats.iter().map(|c| c[r].clone()).collect(),
                probs.iter().map(|p| p[r].parse().unwrap()).collect(),
            )
        })
        .collect()
}

fn assert_same_top5(got: &[(Vec<String>, Vec<f32>)], want: &[(Vec<String>, Vec<f32>)]) {
    assert_eq!(got.len(), want.len());
    for (r, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.0, w.0, "row {r}");
        for (a, b) in g.1.iter().zip(&w.1) {
            assert!((a - b).abs() <= 1e-6, "row {r}: {a} vs {b}");
        }
    }
}

/// `catbert infer` on the bundled queries with the tiny model, as the reference.
fn infer_reference(dir: &std::path::Path) -> Vec<(Vec<String>, Vec<f32>)> {
    let out = dir.join("reference.csv");
    let model = oracle().join("tiny");
    let queries = repo().join("datasets/products-sample/queries.csv");
    let o = catbert(
        &[
            "infer",
            "--model",
            s(&model),
            "--file",
            s(&queries),
            "--text-col",
            "product_description",
            "--out",
            s(&out),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    top5(&Table::read(&out, None).unwrap())
}

#[test]
fn a_jsonl_stream_gives_what_infer_gives_on_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let want = infer_reference(dir.path());
    let (texts, jsonl) = queries_jsonl();
    let model = oracle().join("tiny");
    let args = [
        "infer",
        "--model",
        s(&model),
        "--file",
        "-",
        "--format",
        "jsonl",
        "--text-col",
        "product_description",
        "--batch-size",
        "50",
    ];
    let (status, stdout, err) = pipe(&args, jsonl.clone().into_bytes());
    assert!(status.success(), "{err}");
    assert!(err.contains("600 rows streamed in"), "{err}");
    // Chunks of --batch-size × 2 threads = 100 rows.
    assert!(err.contains("6 batches"), "{err}");
    let got = write(dir.path(), "got.jsonl", &stdout);
    let table = Table::read(&got, None).unwrap();
    // Wide: every input field kept, in order, then the predictions.
    assert_eq!(table.texts("product_description").unwrap(), texts);
    assert_eq!(table.texts("id").unwrap()[599], "q599");
    assert_same_top5(&top5(&table), &want);

    // Long, carrying the id.
    let mut long = args.to_vec();
    long.extend(["--long", "--key-cols", "id", "--top-k", "2"]);
    let (status, stdout, err) = pipe(&long, jsonl.into_bytes());
    assert!(status.success(), "{err}");
    let lines: Vec<serde_json::Value> = (String::from_utf8(stdout).unwrap().lines())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1200);
    assert_eq!(
        lines[3],
        serde_json::json!({"id": "q1", "row_id": 1, "rank": 1, "category": want[1].0[1],
            "probability": lines[3]["probability"]})
    );
    let p = lines[3]["probability"].as_f64().unwrap() as f32;
    assert!((p - want[1].1[1]).abs() <= 1e-6);
}

#[test]
fn an_arrow_stream_gives_what_infer_gives_and_long_carries_the_keys() {
    let dir = tempfile::tempdir().unwrap();
    let want = infer_reference(dir.path());
    let input = dir.path().join("in.arrows");
    let queries = repo().join("datasets/products-sample/queries.csv");
    // pyarrow writes the queries as an IPC stream of 250-row batches (large_string texts, as
    // pandas gives them) and reads our output back.
    let py = r#"
import sys, pyarrow as pa, pyarrow.csv as pc, pyarrow.ipc as ipc
mode, path = sys.argv[1], sys.argv[2]
if mode == "write":
    t = pc.read_csv(sys.argv[3])
    t = t.select(["product_description"]).append_column("id", pa.array(range(t.num_rows), pa.int64()))
    t = t.set_column(0, "product_description", t.column(0).cast(pa.large_string()))
    with ipc.new_stream(path, t.schema) as w:
        for b in t.to_batches(max_chunksize=250):
            w.write_batch(b)
else:
    r = ipc.open_stream(open(path, "rb"))
    t = r.read_all()
    print(t.schema.to_string(show_schema_metadata=False).replace("\n", "; "))
    print(t.num_rows)
    for row in t.slice(0, 3).to_pylist():
        print({k: (round(v, 6) if isinstance(v, float) else v) for k, v in row.items()})
"#;
    let run_py = |args: &[&str]| {
        let o = std::process::Command::new(oracle_python())
            .arg("-c")
            .arg(py)
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        String::from_utf8(o.stdout).unwrap()
    };
    run_py(&["write", s(&input), s(&queries)]);
    let model = oracle().join("tiny");
    let args = [
        "infer",
        "--model",
        s(&model),
        "--file",
        "-",
        "--format",
        "arrow",
        "--text-col",
        "product_description",
        "--batch-size",
        "64",
    ];
    let (status, stdout, err) = pipe(&args, std::fs::read(&input).unwrap());
    assert!(status.success(), "{err}");
    // 250-row batches cut into chunks of at most 64 × 2 threads: 2 + 2 + 1 chunks.
    assert!(
        err.contains("600 rows streamed in") && err.contains("5 batches"),
        "{err}"
    );
    let out = write(dir.path(), "out.arrows", &stdout);
    let seen = run_py(&["read", s(&out)]);
    let lines: Vec<&str> = seen.lines().collect();
    assert_eq!(
        lines[0],
        "product_description: large_string; id: int64; category_1: string not null; category_2: string not null; category_3: string not null; category_4: string not null; category_5: string not null; probability_1: float not null; probability_2: float not null; probability_3: float not null; probability_4: float not null; probability_5: float not null"
    );
    assert_eq!(lines[1], "600");
    assert!(
        lines[2].contains(&format!("'category_1': '{}'", want[0].0[0])),
        "{seen}"
    );

    // The same stream as a wide Parquet through the file path agrees on every row.
    let converted = dir.path().join("out.parquet");
    let o = std::process::Command::new(oracle_python())
        .args([
            "-c",
            "import sys, pyarrow.ipc as ipc, pyarrow.parquet as pq; pq.write_table(ipc.open_stream(open(sys.argv[1],'rb')).read_all(), sys.argv[2])",
            s(&out),
            s(&converted),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_same_top5(&top5(&Table::read(&converted, None).unwrap()), &want);

    let mut long = args.to_vec();
    long.extend(["--long", "--key-cols", "id"]);
    let (status, stdout, err) = pipe(&long, std::fs::read(&input).unwrap());
    assert!(status.success(), "{err}");
    let out = write(dir.path(), "long.arrows", &stdout);
    let seen = run_py(&["read", s(&out)]);
    let lines: Vec<&str> = seen.lines().collect();
    assert_eq!(
        lines[0],
        "id: int64; row_id: int64 not null; rank: int32 not null; category: string not null; probability: float not null"
    );
    assert_eq!(lines[1], "3000");
    assert!(
        lines[3].starts_with("{'id': 0, 'row_id': 0, 'rank': 1, "),
        "{seen}"
    );
}

/// A JSON Lines worker on the tiny model, its stdin and stdout piped.
fn jsonl_worker(stderr: Stdio) -> std::process::Child {
    let model = oracle().join("tiny");
    let args = [
        "infer",
        "--model",
        s(&model),
        "--file",
        "-",
        "--format",
        "jsonl",
        "-q",
    ];
    catbert_cmd(&args, &[])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap()
}

/// Peak RSS (KiB) of the worker streaming `rows` generated rows.
#[allow(clippy::zombie_processes)] // reaped by wait4, which also gives its peak RSS
fn peak_rss_streaming(rows: usize) -> i64 {
    let mut child = jsonl_worker(Stdio::null());
    let mut stdin = std::io::BufWriter::new(child.stdin.take().unwrap());
    let writer = std::thread::spawn(move || {
        let words = [
            "milk",
            "organic cheese",
            "cola 12 pack",
            "towels",
            "green tea",
        ];
        for i in 0..rows {
            let text = format!("{} {} no {i}", words[i % 5], words[(i / 5) % 5]);
            writeln!(stdin, "{}", serde_json::json!({"text": text})).unwrap();
        }
    });
    let mut lines = 0usize;
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        line.unwrap();
        lines += 1;
    }
    writer.join().unwrap();
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = child.id() as libc::pid_t;
    assert_eq!(unsafe { libc::wait4(pid, &mut status, 0, &mut usage) }, pid);
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
    assert_eq!(lines, rows);
    usage.ru_maxrss
}

#[test]
fn memory_stays_flat_whatever_the_stream_length() {
    let small = peak_rss_streaming(2_000);
    let large = peak_rss_streaming(200_000);
    assert!(
        (large as f64) <= small as f64 * 1.2,
        "peak RSS {large} KiB for 200,000 rows vs {small} KiB for 2,000"
    );
}

#[test]
fn a_closed_stdout_ends_the_worker_quietly() {
    let mut child = jsonl_worker(Stdio::piped());
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        for i in 0..1_000_000 {
            // The worker is gone once the reader closes: stop feeding it.
            if writeln!(stdin, "{{\"text\": \"item {i}\"}}").is_err() {
                break;
            }
        }
    });
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.contains("\"category_1\""), "{first}");
    // stdout dropped here: the reader has gone.
    let status = child.wait().unwrap();
    writer.join().unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "{status:?}: {err}");
    assert!(!err.contains("error"), "{err}");
}

#[test]
fn bad_streams_get_one_line() {
    let model = oracle().join("tiny");
    let jsonl = |input: &str| {
        let args = [
            "infer",
            "--model",
            s(&model),
            "--file",
            "-",
            "--format",
            "jsonl",
            "-q",
        ];
        pipe(&args, input.as_bytes().to_vec())
    };
    let check = |(status, _, err): (std::process::ExitStatus, Vec<u8>, String), line: &str| {
        assert_eq!(status.code(), Some(2), "{err}");
        assert_eq!(err.trim_end(), line);
    };
    check(
        jsonl("{\"text\": \"milk\"}\n{\"name\": \"tea\"}\n"),
        "error: <stdin>: row 2, column \"text\": no such field",
    );
    check(
        jsonl("{\"text\": \"milk\"}\n\n{\"text\": \"tea\"\n"),
        "error: <stdin>: line 3, column 14: EOF while parsing an object",
    );
    check(
        jsonl("{\"text\": \"  \"}\n"),
        "error: <stdin>: row 1, column \"text\": empty text",
    );
    let o = catbert(&["infer", "--model", s(&model), "--file", "-"], &[]);
    assert_error(
        &o,
        2,
        "error: --file - streams rows from stdin: say how with --format jsonl or --format arrow",
    );
    let o = catbert(
        &[
            "infer",
            "--model",
            s(&model),
            "--file",
            "-",
            "--format",
            "jsonl",
            "--label-col",
            "label",
        ],
        &[],
    );
    assert_error(
        &o,
        2,
        "error: --label-col needs a file: it cannot be used when streaming (--file -)",
    );
    // An Arrow stream without the text column names the columns it has.
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.arrows");
    let o = std::process::Command::new(oracle_python())
        .args([
            "-c",
            "import sys, pyarrow as pa, pyarrow.ipc as ipc\nt = pa.table({'id': [1], 'name': ['tea']})\nwith ipc.new_stream(sys.argv[1], t.schema) as w: w.write_table(t)",
            s(&input),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let args = [
        "infer",
        "--model",
        s(&model),
        "--file",
        "-",
        "--format",
        "arrow",
        "-q",
    ];
    check(
        pipe(&args, std::fs::read(&input).unwrap()),
        "error: <stdin>: no column \"text\" (columns: id, name)",
    );
    check(
        pipe(&args, b"not arrow at all".to_vec()),
        "error: <stdin>: cannot parse as Arrow IPC stream: not an Arrow IPC stream, or one cut short",
    );
}
