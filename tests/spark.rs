//! Batch scoring on Apache Spark (pyspark 4.3.0 in local mode, scripts/spark-infer.sh): the
//! rows and top-5 of `catbert infer`; a task that fails once is retried without duplicating
//! rows; bad partitions and corrupt files fail with one line.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// The Spark venv's Python (scripts/spark-env.sh, idempotent).
fn spark_python() -> PathBuf {
    let o = Command::new("bash")
        .arg(repo().join("scripts/spark-env.sh"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    PathBuf::from(String::from_utf8(o.stdout).unwrap().trim())
}

fn python(code: &str, args: &[&str]) -> String {
    let o = Command::new(spark_python())
        .arg("-c")
        .arg(code)
        .args(args)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    String::from_utf8(o.stdout).unwrap()
}

/// `n` rows (`id`, `text`) as one Parquet file; `null_at` makes that row's text null.
fn input(path: &Path, n: usize, null_at: Option<usize>) {
    python(
        r#"
import sys, pyarrow as pa, pyarrow.parquet as pq
n, null_at = int(sys.argv[2]), int(sys.argv[3])
words = ["milk", "organic cheese", "cola 12 pack", "paper towels", "green tea", "dish soap", "rye bread"]
texts = [None if i == null_at else f"{words[i % 7]} {words[(i // 7) % 7]} {i}" for i in range(n)]
pq.write_table(pa.table({"id": pa.array(range(n), pa.int64()), "text": texts}), sys.argv[1])
"#,
        &[
            s(path),
            &n.to_string(),
            &null_at.map_or(-1, |i| i as i64).to_string(),
        ],
    );
}

fn spark_infer(args: &[&str]) -> std::process::Output {
    Command::new("bash")
        .arg(repo().join("scripts/spark-infer.sh"))
        .args(args)
        .env("CATBERT_BIN", env!("CARGO_BIN_EXE_catbert"))
        .output()
        .unwrap()
}

#[test]
fn spark_gives_infers_rows_and_a_retried_task_adds_no_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let rows = dir.path().join("rows.parquet");
    input(&rows, 20_000, None);
    let model = oracle().join("tiny");
    let out = dir.path().join("scored");
    let marker = dir.path().join("failed-once");
    let o = spark_infer(&[
        s(&rows),
        s(&out),
        "--model",
        s(&model),
        "--key-cols",
        "id,date",
        "--partitions",
        "8",
        "--date",
        "2026-12-01",
        "--master",
        "local[2,2]",
        "--fail-once",
        s(&marker),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        marker.exists(),
        "the injected failure happened (and was retried)"
    );

    // The reference: catbert infer on the same file, long, with the id.
    let reference = dir.path().join("reference.parquet");
    let o = catbert(
        &[
            "infer",
            "--model",
            s(&model),
            "--file",
            s(&rows),
            "--long",
            "--key-cols",
            "id",
            "--out",
            s(&reference),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let report = python(
        r#"
import sys, pyarrow.dataset as ds, pyarrow.parquet as pq
got = ds.dataset(sys.argv[1], format="parquet", partitioning="hive").to_table()
want = pq.read_table(sys.argv[2])
print(sorted(set(got.column("date").to_pylist())))
g = sorted(zip(got["id"].to_pylist(), got["rank"].to_pylist(), got["category"].to_pylist(), got["probability"].to_pylist()))
w = sorted(zip(want["id"].to_pylist(), want["rank"].to_pylist(), want["category"].to_pylist(), want["probability"].to_pylist()))
print(len(g), len(w), len(set((a, b) for a, b, _, _ in g)))
print(all(a[:3] == b[:3] for a, b in zip(g, w)), max(abs(a[3] - b[3]) for a, b in zip(g, w)))
"#,
        &[s(&out), s(&reference)],
    );
    let lines: Vec<&str> = report.lines().collect();
    assert_eq!(lines[0], "['2026-12-01']", "{report}");
    // 20,000 rows × top 5, each (id, rank) once: the retried task's first attempt left nothing.
    assert_eq!(lines[1], "100000 100000 100000", "{report}");
    let (same, diff) = lines[2].split_once(' ').unwrap();
    assert_eq!(same, "True", "{report}");
    assert!(diff.parse::<f64>().unwrap() <= 1e-6, "{report}");
}

#[test]
fn bad_partitions_and_corrupt_files_fail_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let model = oracle().join("tiny");
    let rows = dir.path().join("rows.parquet");
    input(&rows, 300, Some(5));
    let o = spark_infer(&[s(&rows), s(&dir.path().join("out")), "--model", s(&model)]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: ")
            && last.contains("catbert worker failed (exit 2): error: <stdin>: row 6, column \"text\": missing (null) text"),
        "last line: {last:?}"
    );

    let o = spark_infer(&[
        s(&rows),
        s(&dir.path().join("out")),
        "--model",
        s(&model),
        "--text-col",
        "title",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stderr(&o).lines().last().unwrap_or_default(),
        format!("error: {}: no column 'title' (columns: id, text)", s(&rows))
    );

    let corrupt = write(
        dir.path(),
        "corrupt.parquet",
        b"PAR1 this is not parquet PAR1",
    );
    let o = spark_infer(&[
        s(&corrupt),
        s(&dir.path().join("out")),
        "--model",
        s(&model),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let last = stderr(&o).lines().last().unwrap_or_default().to_string();
    assert!(
        last.starts_with("error: ") && last.contains("corrupt.parquet"),
        "{last}"
    );
}
