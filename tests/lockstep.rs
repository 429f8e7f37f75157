//! `scripts/lockstep.py`: catbert and PyTorch + transformers trained side by side from the same
//! start on the same batches (tiny BERT, 240 sample rows, batch 8: ~27 steps on the CPU), every
//! step's loss and gradient norm compared; and a difference in the recipe caught at its step.

mod common;

use std::process::{Command, Output};

use common::*;

fn lockstep(dir: &std::path::Path, extra: &[&str]) -> Output {
    let json = dir.join("steps.json");
    let work = dir.join("work");
    let mut cmd = Command::new(oracle_python());
    cmd.arg(repo().join("scripts/lockstep.py"))
        .args(["--model", s(&oracle().join("tiny"))])
        .args([
            "--train",
            s(&repo().join("datasets/products-sample/train.csv")),
        ])
        .args(["--rows", "240", "--batch-size", "8", "--threads", "2"])
        .args(["--catbert", env!("CARGO_BIN_EXE_catbert")])
        .args(["--json", s(&json), "--work", s(&work)])
        .args(extra)
        .env("CATBERT_HOME", test_home());
    cmd.output().unwrap()
}

#[test]
fn catbert_and_pytorch_agree_on_every_step() {
    let dir = tempfile::tempdir().unwrap();
    let o = lockstep(dir.path(), &[]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}\n{}", stderr(&o));
    assert!(out.contains("ok: every step within tolerance"), "{out}");
    let report = read_json(&dir.path().join("steps.json"));
    let steps = report["steps"].as_array().unwrap();
    // 240 rows less a 10 % hold-out, in batches of 8: a few dozen steps.
    assert!(steps.len() >= 24, "{} steps\n{out}", steps.len());
    for key in ["loss", "grad_norm", "lr"] {
        let worst = report["worst"][key].as_f64().unwrap();
        // Measured 1.5e-7 (loss) and 3e-7 (gradient norm): f32 rounding only.
        assert!(worst < 1e-5, "{key}: {worst}\n{out}");
    }
    assert!(report["notes"].as_array().unwrap().is_empty(), "{out}");
}

#[test]
fn a_different_recipe_is_caught_at_its_first_step() {
    let dir = tempfile::tempdir().unwrap();
    let o = lockstep(dir.path(), &["--catbert-arg=--class-weights=none"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{out}\n{}", stderr(&o));
    assert!(
        stderr(&o).contains("error: step 1: loss catbert"),
        "{}",
        stderr(&o)
    );
    assert!(out.contains("note: class weights differ"), "{out}");
}

/// The options beyond the reference (label smoothing, layer-wise learning-rate decay, the
/// balanced sampler) replayed in PyTorch as it has them — CrossEntropyLoss(label_smoothing=),
/// parameter groups with their own lr, the logged batches — agree at every step too.
#[test]
fn options_beyond_the_reference_agree_with_pytorch() {
    let dir = tempfile::tempdir().unwrap();
    let o = lockstep(
        dir.path(),
        &[
            "--catbert-arg=--label-smoothing=0.1",
            "--catbert-arg=--layer-lr-decay=0.6",
            "--catbert-arg=--sampler=balanced",
            "--catbert-arg=--class-weights=balanced",
        ],
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}\n{}", stderr(&o));
    let report = read_json(&dir.path().join("steps.json"));
    for key in ["loss", "grad_norm", "lr"] {
        let worst = report["worst"][key].as_f64().unwrap();
        assert!(worst < 1e-5, "{key}: {worst}\n{out}");
    }
    assert!(report["notes"].as_array().unwrap().is_empty(), "{out}");
    // The options took effect: the step log (kept in --work) records them, and the balanced
    // sampler drew some row more than once in the epoch.
    let lines: Vec<serde_json::Value> =
        std::fs::read_to_string(dir.path().join("work/steps.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
    assert_eq!(lines[0]["label_smoothing"], 0.1);
    let scales = lines[0]["lr_scales"].as_object().unwrap();
    assert_eq!(scales["classifier.weight"], 1.0);
    let lowest = scales
        .values()
        .map(|v| v.as_f64().unwrap())
        .fold(1.0, f64::min);
    assert!(lowest < 0.6 * 0.6, "{scales:?}");
    let mut rows: Vec<u64> = lines[1..]
        .iter()
        .flat_map(|l| {
            l["rows"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r.as_u64().unwrap())
        })
        .collect();
    let drawn = rows.len();
    rows.sort_unstable();
    rows.dedup();
    assert!(rows.len() < drawn, "no row drawn twice in {drawn} draws");
}
