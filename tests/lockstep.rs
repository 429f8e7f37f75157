//! `scripts/lockstep.py`: catbert and PyTorch + transformers trained side by side from the same
//! start on the same batches (tiny BERT, 240 sample rows, batch 8: ~27 steps on the CPU), every
//! step's loss and gradient norm compared; and a difference in the recipe caught at its step.

mod common;

use std::process::{Command, Output};

use common::*;

fn lockstep(dir: &std::path::Path, extra: &[&str]) -> Output {
    let json = dir.join("steps.json");
    let mut cmd = Command::new(oracle_python());
    cmd.arg(repo().join("scripts/lockstep.py"))
        .args(["--model", s(&oracle().join("tiny"))])
        .args([
            "--train",
            s(&repo().join("datasets/products-sample/train.csv")),
        ])
        .args(["--rows", "240", "--batch-size", "8", "--threads", "2"])
        .args(["--catbert", env!("CARGO_BIN_EXE_catbert")])
        .args(["--json", s(&json)])
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
