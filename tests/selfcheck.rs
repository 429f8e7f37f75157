//! The first-use self-check of catbert's GPU kernels, driven on the CPU through its test hook
//! (`CATBERT_KERNEL_CHECK=inject:…` checks on the CPU too and spoils the kernel's result): the
//! run falls back to candle's composed ops, says so once per kernel, records it in
//! `catbert.json`, and trains to the same result.

mod common;

use common::server::Server;
use common::*;

fn finetune(
    dir: &std::path::Path,
    name: &str,
    env: &[(&str, &str)],
) -> (String, serde_json::Value) {
    let train = synthetic(dir, "train.csv", 120);
    let out = dir.join(name);
    let tiny = oracle().join("tiny");
    let args = [
        "finetune",
        "--train",
        s(&train),
        "--model",
        s(&tiny),
        "--epochs",
        "1",
        "--out",
        s(&out),
        "--no-tracking",
        "--overwrite",
    ];
    let o = catbert(&args, env);
    assert!(o.status.success(), "{}", stderr(&o));
    (stderr(&o), read_json(&out.join("catbert.json")))
}

#[test]
fn a_kernel_that_fails_its_check_is_replaced_reported_and_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let (clean_err, clean) = finetune(dir.path(), "clean", &[]);
    assert!(
        !clean_err.contains("self-check") && !clean_err.contains("off by"),
        "{clean_err}"
    );
    assert!(clean.get("kernel_fallbacks").is_none(), "{clean}");

    let (err, meta) = finetune(
        dir.path(),
        "spoilt",
        &[("CATBERT_KERNEL_CHECK", "inject:all")],
    );
    let recorded = strings(&meta["kernel_fallbacks"]);
    // Training uses two of the three (the loss and bias + GELU); inference the third.
    for kernel in ["weighted_cross_entropy", "bias_gelu"] {
        let line = format!("catbert's {kernel} kernel is off by");
        assert_eq!(
            err.matches(&line).count(),
            1,
            "{kernel} not reported once: {err}"
        );
        assert!(
            recorded.iter().any(|r| r.starts_with(&line)),
            "{kernel} not in catbert.json: {recorded:?}"
        );
    }
    assert!(
        err.contains("notice: catbert's bias_gelu kernel is off by"),
        "{err}"
    );
    assert!(
        recorded
            .iter()
            .all(|r| r.ends_with("candle's composed ops are used instead")),
        "{recorded:?}"
    );
    // The composed ops compute the same run: same loss, same scores.
    let (a, b) = (&clean["epochs"][0], &meta["epochs"][0]);
    let (la, lb) = (
        a["train_loss"].as_f64().unwrap(),
        b["train_loss"].as_f64().unwrap(),
    );
    assert!(
        (la - lb).abs() < 1e-4 * la.abs().max(1.0),
        "train loss {la} vs {lb}"
    );

    let rows = write(
        dir.path(),
        "rows.csv",
        b"text\nOrganic Honey\nPaper towels\n",
    );
    let (plain, spoilt) = (dir.path().join("plain.csv"), dir.path().join("spoilt.csv"));
    let model = dir.path().join("clean");
    let o = infer_to(s(&model), &rows, &plain, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = infer_to(
        s(&model),
        &rows,
        &spoilt,
        &[("CATBERT_KERNEL_CHECK", "inject:all")],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let line = "notice: catbert's softmax_top_k kernel is off by";
    assert_eq!(stderr(&o).matches(line).count(), 1, "{}", stderr(&o));
    assert_eq!(
        std::fs::read_to_string(&plain).unwrap(),
        std::fs::read_to_string(&spoilt).unwrap(),
        "the composed softmax and ranking differ"
    );

    // Only the named kernel is spoilt.
    let (err, meta) = finetune(
        dir.path(),
        "one",
        &[("CATBERT_KERNEL_CHECK", "inject:bias_gelu")],
    );
    assert_eq!(strings(&meta["kernel_fallbacks"]).len(), 1, "{err}");
    assert!(err.contains("bias_gelu kernel is off by"), "{err}");
}

#[test]
fn serve_says_so_before_it_listens() {
    let dir = tempfile::tempdir().unwrap();
    let (_, _) = finetune(dir.path(), "model", &[]);
    let model = dir.path().join("model");
    let mut server = Server::start(
        &["--model", s(&model)],
        &[("CATBERT_KERNEL_CHECK", "inject:softmax_top_k")],
    );
    // The notice comes from the first prediction, made before the listening line: the reader
    // kept it before it saw that line, which is what `start` waited for.
    let log = server.log.lock().unwrap().clone();
    assert!(
        log.iter()
            .any(|l| l.contains("softmax_top_k kernel is off by")),
        "{log:?}"
    );
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}
