//! `catbert finetune` through the real binary: the checkpoint it writes (read back by
//! transformers and by `catbert infer`), resume after a kill, and bad input.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use candle_core::{DType, Device};
use catbert::checkpoint::save::write_safetensors;
use catbert::checkpoint::Checkpoint;
use catbert::data::Table;
use common::*;

fn catbert(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_catbert"));
    cmd.args(args).env("RAYON_NUM_THREADS", "2");
    cmd
}

fn run(args: &[&str]) -> Output {
    catbert(args).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn finetune_args<'a>(train: &'a Path, out: &'a Path, epochs: &'a str) -> Vec<&'a str> {
    vec![
        "finetune",
        "--train",
        s(train),
        "--model",
        s_static(&oracle().join("tiny")),
        "--epochs",
        epochs,
        "--out",
        s(out),
        "--batch-size",
        "16",
        "--lr",
        "1e-3",
    ]
}

/// Leak a path so argument vectors can borrow it for the test's lifetime.
fn s_static(p: &Path) -> &'static str {
    Box::leak(p.to_str().unwrap().to_string().into_boxed_str())
}

#[test]
fn checkpoint_loads_in_transformers_and_catbert_alike_and_round_trips_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let train = synthetic(dir.path(), "train.csv", 150);
    let out = dir.path().join("ckpt");
    let o = run(&finetune_args(&train, &out, "2"));
    assert!(o.status.success(), "{}", stderr(&o));
    let last = stderr(&o).lines().last().unwrap().to_string();
    assert!(last.starts_with("best epoch "), "{last}");
    assert!(stderr(&o).contains("run state (run/) deleted: the run is finished"));

    let config = read_json(&out.join("config.json"));
    assert_eq!(config["architectures"][0], "BertForSequenceClassification");
    assert_eq!(config["problem_type"], "single_label_classification");
    assert_eq!(config["id2label"]["2"], "home");
    assert_eq!(config["label2id"]["dairy"], 0);
    let meta = read_json(&out.join("catbert.json"));
    assert_eq!(meta["text_column"], "text");
    assert_eq!(meta["label_column"], "label");
    assert_eq!(meta["labels"].as_array().unwrap().len(), 3);
    assert!(meta["best_epoch"].as_u64().unwrap() >= 1);
    let metrics = read_json(&out.join("metrics.json"));
    assert_eq!(metrics.as_array().unwrap().len(), 2);
    let holdout = &metrics[1]["holdout"];
    assert_eq!(holdout["n"], 15);
    assert_eq!(holdout["confusion"].as_array().unwrap().len(), 3);
    for f in ["tokenizer.json", "vocab.txt", "model.safetensors"] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    assert!(
        !out.join("run").exists(),
        "a finished run's state is deleted"
    );

    // catbert infer and transformers give the same probabilities.
    let pred = dir.path().join("pred.csv");
    let o = run(&[
        "infer",
        "--model",
        s(&out),
        "--file",
        s(&train),
        "--out",
        s(&pred),
        "--top-k",
        "3",
        "-q",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let py = Command::new(oracle_python())
        .args([
            s(&repo().join("scripts/check-checkpoint.py")),
            s(&out),
            s(&train),
            "--text-col",
            "text",
        ])
        .output()
        .unwrap();
    assert!(
        py.status.success(),
        "transformers could not load the checkpoint: {}",
        String::from_utf8_lossy(&py.stderr)
    );
    let py: serde_json::Value = serde_json::from_slice(&py.stdout).unwrap();
    let names = strings(&py["id2label"]);
    let probs = floats2(&py["probs"]);
    let t = Table::read(&pred, None).unwrap();
    let mut worst = 0f32;
    for rank in 1..=3 {
        let cats = t.labels(&format!("category_{rank}")).unwrap();
        let ps = t.labels(&format!("probability_{rank}")).unwrap();
        for (r, (c, p)) in cats.iter().zip(&ps).enumerate() {
            let class = names.iter().position(|n| Some(n) == c.as_ref()).unwrap();
            let p: f32 = p.as_ref().unwrap().parse().unwrap();
            worst = worst.max((p - probs[r][class]).abs());
        }
    }
    eprintln!("catbert infer vs transformers on our checkpoint: max |prob diff| {worst:e}");
    assert!(worst < 1e-5, "max |prob diff| {worst}");

    // save → load → save is bit-identical.
    let loaded = Checkpoint::open(&out)
        .unwrap()
        .load_classifier(&Device::Cpu, DType::F32)
        .unwrap();
    let again = dir.path().join("again.safetensors");
    write_safetensors(&again, &loaded.params.tensors).unwrap();
    assert_eq!(
        std::fs::read(&again).unwrap(),
        std::fs::read(out.join("model.safetensors")).unwrap()
    );
}

fn epochs_done(out: &Path) -> u64 {
    std::fs::read_to_string(out.join("run/state.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v["epochs_done"].as_u64())
        .unwrap_or(0)
}

#[test]
fn a_killed_run_keeps_its_last_checkpoint_and_resumes_to_the_same_result() {
    let dir = tempfile::tempdir().unwrap();
    let train = synthetic(dir.path(), "train.csv", 3000);
    // Near ties on: the best epoch's per-row outcomes must survive the kill in the run state.
    let finetune_args = |train, out, epochs| {
        let mut args = finetune_args(train, out, epochs);
        args.extend(["--near-tie", "1"]);
        args
    };
    let whole = dir.path().join("whole");
    let o = run(&finetune_args(&train, &whole, "3"));
    assert!(o.status.success(), "{}", stderr(&o));

    let cut = dir.path().join("cut");
    let mut child = catbert(&finetune_args(&train, &cut, "3"))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while epochs_done(&cut) < 1 {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "epoch 1 never finished"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        epochs_done(&cut) < 3,
        "the run finished before it could be killed"
    );

    // What the killed run left is a good checkpoint.
    let o = run(&[
        "infer",
        "--model",
        s(&cut),
        "--file",
        s(&train),
        "--out",
        s(&dir.path().join("p.csv")),
        "-q",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));

    // Starting over on it without --resume is refused; with --resume it completes.
    let o = run(&finetune_args(&train, &cut, "3"));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("already holds a run"), "{}", stderr(&o));
    let mut args = finetune_args(&train, &cut, "3");
    args.push("--resume");
    let o = run(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("resuming after epoch"),
        "{}",
        stderr(&o)
    );

    assert_same_run(&cut, &whole);
}

/// A resumed run ended where the uninterrupted one did: same weights, same per-epoch losses
/// and hold-out metrics, same kept epoch.
fn assert_same_run(cut: &Path, whole: &Path) {
    assert_eq!(
        std::fs::read(cut.join("model.safetensors")).unwrap(),
        std::fs::read(whole.join("model.safetensors")).unwrap(),
        "resumed and uninterrupted runs end with different weights"
    );
    let strip = |v: serde_json::Value| -> Vec<serde_json::Value> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|e| {
                serde_json::json!([e["epoch"], e["train_loss"], e["holdout"], e["selection_se"]])
            })
            .collect()
    };
    assert_eq!(
        strip(read_json(&cut.join("metrics.json"))),
        strip(read_json(&whole.join("metrics.json")))
    );
    assert_eq!(
        read_json(&cut.join("catbert.json"))["best_epoch"],
        read_json(&whole.join("catbert.json"))["best_epoch"]
    );
}

fn assert_error(o: &Output, code: i32, line: &str) {
    assert_eq!(o.status.code(), Some(code), "stderr: {}", stderr(o));
    assert_eq!(
        stderr(o).lines().last().unwrap_or(""),
        line,
        "full stderr: {}",
        stderr(o)
    );
}

#[test]
fn bad_training_input() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = d.join("out");
    let tiny = s_static(&oracle().join("tiny"));
    let base = |train: &Path| {
        vec![
            "finetune".to_string(),
            "--train".into(),
            s(train).into(),
            "--model".into(),
            tiny.into(),
            "--out".into(),
            s(&out).into(),
            "--epochs".into(),
            "1".into(),
        ]
    };
    let go = |args: Vec<String>| run(&args.iter().map(String::as_str).collect::<Vec<_>>());

    let one = d.join("one.csv");
    std::fs::write(&one, "text,label\nmilk,dairy\ncheese,dairy\n").unwrap();
    assert_error(&go(base(&one)), 2, &format!("error: {}: column \"label\" has only one class (\"dairy\"); a classifier needs at least 2", one.display()));

    let empty = d.join("empty.csv");
    std::fs::write(&empty, "text,label\nmilk,dairy\n ,home\n").unwrap();
    assert_error(
        &go(base(&empty)),
        2,
        &format!(
            "error: {}: row 2, column \"text\": empty text",
            empty.display()
        ),
    );

    let train = synthetic(d, "train.csv", 60);
    let few = d.join("few.csv");
    std::fs::write(
        &few,
        format!("{}tea,rare\n", std::fs::read_to_string(&train).unwrap()),
    )
    .unwrap();
    assert_error(
        &go(base(&few)),
        2,
        &format!("error: {}: --val-split 0.1 leaves class \"rare\" (1 rows) without training or hold-out rows; add rows or change --val-split", few.display()),
    );

    let eval = d.join("eval.csv");
    std::fs::write(&eval, "text,label\nmilk,dairy\nrobot,toys\n").unwrap();
    let mut args = base(&train);
    args.extend(["--eval".into(), s(&eval).into()]);
    assert_error(
        &go(args),
        2,
        &format!("error: {}: row 2, column \"label\": label \"toys\" does not occur in the training data (classes: dairy, drinks, home)", eval.display()),
    );

    let mut args = base(&train);
    args.extend(["--metric".into(), "f2".into()]);
    let o = go(args);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).starts_with("error: invalid value 'f2' for '--metric <METRIC>': unknown metric \"f2\" (expected f1_min, f1_weighted, f1_macro, accuracy or loss)"), "{}", stderr(&o));

    let file = d.join("plain-file");
    std::fs::write(&file, "x").unwrap();
    let mut args = base(&train);
    args[6] = s(&file.join("sub")).into();
    let o = go(args);
    assert_eq!(o.status.code(), Some(1));
    let last = stderr(&o).lines().last().unwrap().to_string();
    assert!(
        last.starts_with(&format!(
            "error: {}: output folder is not writable: ",
            file.join("sub").display()
        )),
        "{last}"
    );

    let mut args = base(&train);
    args.extend(["--lr".into(), "1e30".into()]);
    assert_error(&go(args), 1, "error: training diverged: the loss is NaN at epoch 1, step 2; no checkpoint was written; try a lower --lr");
}

#[test]
fn kept_state_survives_and_a_kill_between_the_state_files_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let train = synthetic(dir.path(), "train.csv", 300);
    let whole = dir.path().join("whole");
    let mut args = finetune_args(&train, &whole, "2");
    args.push("--keep-state");
    let o = run(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let state = read_json(&whole.join("run/state.json"));
    assert_eq!(state["weights_file"], "state-0002.safetensors");
    let files = std::fs::read_dir(whole.join("run")).unwrap().count();
    assert_eq!(files, 2, "state.json and the one weights file it names");

    // Abort after epoch 2's weights file is written, before state.json names it.
    let cut = dir.path().join("cut");
    let o = catbert(&finetune_args(&train, &cut, "2"))
        .env("CATBERT_TEST_CRASH", "between-state-files@2")
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert_eq!(epochs_done(&cut), 1);
    let torn = dir.path().join("torn");
    copy_dir(&cut, &torn);
    copy_dir(&cut.join("run"), &torn.join("run"));

    let mut args = finetune_args(&train, &cut, "2");
    args.push("--resume");
    let o = run(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("resuming after epoch 1"),
        "{}",
        stderr(&o)
    );
    assert_same_run(&cut, &whole);

    // The newer weights under the older state.json's name: refused, not trained twice.
    let run_dir = torn.join("run");
    std::fs::copy(
        run_dir.join("state-0002.safetensors"),
        run_dir.join("state-0001.safetensors"),
    )
    .unwrap();
    let mut args = finetune_args(&train, &torn, "2");
    args.push("--resume");
    assert_error(
        &run(&args),
        2,
        &format!(
            "error: {}: the run state is torn: state-0001.safetensors does not match the checksum in state.json; the checkpoint in {} is intact, but this run cannot be resumed (start afresh with --overwrite)",
            run_dir.join("state.json").display(),
            torn.display()
        ),
    );
}

#[test]
fn out_is_never_a_folder_catbert_did_not_write() {
    let dir = tempfile::tempdir().unwrap();
    let train = synthetic(dir.path(), "train.csv", 60);
    // The base model's own folder: refused, nothing touched.
    let base = dir.path().join("base");
    copy_dir(&oracle().join("tiny"), &base);
    let before = std::fs::read(base.join("model.safetensors")).unwrap();
    for flag in [None, Some("--overwrite")] {
        let mut args = finetune_args(&train, &base, "1");
        args.extend(flag);
        let o = run(&args);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        let last = stderr(&o).lines().last().unwrap().to_string();
        assert!(
            last.starts_with(&format!(
                "error: {}: not empty and not a catbert output (it holds config.json, ",
                base.display()
            )),
            "{last}"
        );
        assert!(last.ends_with("; choose a new or empty --out"), "{last}");
    }
    assert_eq!(
        std::fs::read(base.join("model.safetensors")).unwrap(),
        before
    );

    // A finished run: refused without --overwrite, replaced with it.
    let out = dir.path().join("out");
    assert!(run(&finetune_args(&train, &out, "1")).status.success());
    assert_error(
        &run(&finetune_args(&train, &out, "1")),
        2,
        &format!("error: {} already holds a finished run; pass --overwrite to replace it, or choose another --out", out.display()),
    );
    let mut args = finetune_args(&train, &out, "1");
    args.push("--resume");
    assert_error(
        &run(&args),
        2,
        &format!("error: {} holds a finished run whose state was not kept; nothing to resume (pass --overwrite to start afresh; --keep-state keeps the state of future runs)", out.display()),
    );
    let mut args = finetune_args(&train, &out, "1");
    args.push("--overwrite");
    let o = run(&args);
    assert!(o.status.success(), "{}", stderr(&o));
}
