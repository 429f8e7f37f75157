//! Shared test helpers: where the oracle artefacts and the real model live.
#![allow(dead_code)]

pub mod server;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Artefacts made by `scripts/make-oracle.sh` with Python transformers.
pub fn oracle() -> PathBuf {
    let dir = std::env::var("CATBERT_ORACLE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo().join("target/oracle"));
    assert!(
        dir.join("STAMP").is_file(),
        "oracle artefacts missing in {}: run scripts/make-oracle.sh (scripts/test.sh does)",
        dir.display()
    );
    dir
}

/// The real all-MiniLM-L6-v2 fetched by `scripts/fetch-model.sh`.
pub fn minilm() -> PathBuf {
    let dir = repo().join("models/all-MiniLM-L6-v2");
    assert!(
        dir.join("model.safetensors").is_file(),
        "run scripts/fetch-model.sh first"
    );
    dir
}

pub fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

pub fn floats2(v: &serde_json::Value) -> Vec<Vec<f32>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect()
        })
        .collect()
}

pub fn ints2(v: &serde_json::Value) -> Vec<Vec<u32>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect()
        })
        .collect()
}

pub fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect()
}

/// Largest absolute difference between two equally shaped matrices.
pub fn max_abs_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .flat_map(|(x, y)| {
            assert_eq!(x.len(), y.len());
            x.iter().zip(y).map(|(p, q)| (p - q).abs())
        })
        .fold(0.0, f32::max)
}

/// Copy a folder (one level deep, following symlinks).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.path().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

/// `n` rows of three easily separable classes, deterministic.
pub fn synthetic(dir: &Path, name: &str, n: usize) -> PathBuf {
    let words = [
        ("dairy", ["milk", "cheese", "yogurt", "butter", "cream"]),
        ("home", ["soap", "towels", "shampoo", "detergent", "sponge"]),
        ("drinks", ["cola", "juice", "water", "tea", "coffee"]),
    ];
    let mut text = String::from("text,label\n");
    for i in 0..n {
        let (label, vocab) = words[i % 3];
        let len = 1 + (i * 7) % 4;
        let t: Vec<&str> = (0..len).map(|j| vocab[(i * 3 + j * 5) % 5]).collect();
        text.push_str(&format!("{},{label}\n", t.join(" ")));
    }
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// A local registry (CATBERT_HOME) for the runs of this test process, so tests never write
/// to the user's ~/.catbert.
pub fn test_home() -> PathBuf {
    std::env::temp_dir().join(format!("catbert-test-home-{}", std::process::id()))
}

/// The real binary with `args`; HF_HUB_OFFLINE and MLFLOW_TRACKING_URI are cleared and
/// CATBERT_HOME is [`test_home`] unless `env` sets them.
pub fn catbert_cmd(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_catbert"));
    cmd.args(args)
        .env("RAYON_NUM_THREADS", "2")
        .env("CATBERT_HOME", test_home())
        .env_remove("MLFLOW_TRACKING_URI")
        .env_remove("HF_HUB_OFFLINE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// Run the real binary with `args` and extra environment (see [`catbert_cmd`]).
pub fn catbert(args: &[&str], env: &[(&str, &str)]) -> Output {
    catbert_cmd(args, env).output().unwrap()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The run failed with exit `code` and printed exactly `line` (one line) on stderr.
pub fn assert_error(o: &Output, code: i32, line: &str) {
    assert_eq!(o.status.code(), Some(code), "stderr: {}", stderr(o));
    assert_eq!(stderr(o).trim_end(), line);
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

pub fn write(dir: &Path, name: &str, content: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, content).unwrap();
    p
}

/// The oracle venv's Python (scripts/py-oracle.sh; CATBERT_ORACLE_VENV overrides).
pub fn oracle_python() -> PathBuf {
    let venv = std::env::var("CATBERT_ORACLE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/catbert/oracle-venv")
        });
    venv.join("bin/python")
}

/// `catbert infer --model MODEL --file ROWS --out OUT --overwrite`, with extra environment.
pub fn infer_to(model: &str, rows: &Path, out: &Path, env: &[(&str, &str)]) -> Output {
    let args = [
        "infer",
        "--model",
        model,
        "--file",
        s(rows),
        "--out",
        s(out),
        "--overwrite",
    ];
    catbert(&args, env)
}

/// `catbert finetune` of the tiny test classifier on `train` into `out` for `epochs`, untracked;
/// asserts it succeeded and returns its stderr.
pub fn finetune_tiny(train: &Path, out: &Path, epochs: &str) -> String {
    let tiny = oracle().join("tiny");
    let args = [
        "finetune",
        "--train",
        s(train),
        "--model",
        s(&tiny),
        "--epochs",
        epochs,
        "--out",
        s(out),
        "--no-tracking",
    ];
    let o = catbert(&args, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    stderr(&o)
}

/// The tiny test classifier with dropout off (so every layout computes the same function), and
/// `texts` as one batch; asserts the texts differ in length (something to pad).
pub fn tiny_without_dropout(
    texts: &[&str],
) -> (
    catbert::checkpoint::Checkpoint,
    catbert::config::BertConfig,
    catbert::data::batch::TokenBatch,
) {
    let ckpt = catbert::checkpoint::Checkpoint::open(&oracle().join("tiny")).unwrap();
    let mut config = ckpt.config.clone();
    config.hidden_dropout_prob = 0.0;
    config.attention_probs_dropout_prob = 0.0;
    config.classifier_dropout = None;
    let ids = ckpt.text_encoder(64).unwrap().encode_all(texts).unwrap();
    let rows: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
    assert!(
        rows.iter().any(|r| r.len() != rows[0].len()),
        "no padding to test"
    );
    let batch = catbert::data::batch::TokenBatch::new(&rows, 0);
    (ckpt, config, batch)
}

/// Largest absolute difference of two equally long slices.
pub fn worst_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}
