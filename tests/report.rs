//! The training report: written by every fine-tune, and by `catbert report` with scored rows;
//! self-contained (nothing fetched, no scripts).

mod common;

use common::*;

fn assert_self_contained(html: &str) {
    assert!(html.starts_with("<!doctype html>"));
    assert!(html.ends_with("</body></html>\n"));
    assert!(!html.contains("<script"), "no scripts");
    for bad in ["src=\"http", "href=\"http", "@import", "url("] {
        assert!(!html.contains(bad), "fetches {bad}");
    }
}

#[test]
fn finetune_writes_a_report_and_catbert_report_adds_scored_rows() {
    let dir = tempfile::tempdir().unwrap();
    let train = synthetic(dir.path(), "train.csv", 300);
    let ck = dir.path().join("ck");
    let err = finetune_tiny(&train, &ck, "2");
    assert!(err.contains(&format!("report: {}", ck.join("report.html").display())));
    let html = std::fs::read_to_string(ck.join("report.html")).unwrap();
    assert_self_contained(&html);
    // Every optimizer step's loss is kept and drawn.
    let meta = read_json(&ck.join("catbert.json"));
    for epoch in meta["epochs"].as_array().unwrap() {
        let losses = epoch["step_losses"].as_array().unwrap();
        assert_eq!(losses.len() as u64, epoch["steps"].as_u64().unwrap());
        assert!(losses.iter().all(|l| l.as_f64().unwrap() > 0.0));
    }
    for part in [
        "Training loss per step",
        "Loss per epoch",
        "Hold-out metrics per epoch",
        "Best epoch 2: 30 rows",
        "Confusion matrix (counts)",
        "Confusion matrix (share of each true class)",
        "On 30 labelled rows of the hold-out rows",
        "Most frequent confusions",
        "expected calibration error",
    ] {
        assert!(html.contains(part), "{part}");
    }
    // Every class is in the per-class table.
    for class in ["dairy", "drinks", "home"] {
        assert!(html.contains(&format!("<td>{class}</td>")), "{class}");
    }

    let out = dir.path().join("r.html");
    let o = catbert(
        &["report", s(&ck), "--data", s(&train), "--out", s(&out)],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let html = std::fs::read_to_string(&out).unwrap();
    assert_self_contained(&html);
    assert!(html.contains(&format!("On 300 labelled rows of {}", train.display())));
}

#[test]
fn a_checkpoint_not_written_by_catbert_gets_one_line() {
    let model = oracle().join("minilm-cls");
    let o = catbert(&["report", s(&model)], &[]);
    assert_error(
        &o,
        2,
        &format!(
            "error: {} has no catbert.json: a report needs a checkpoint written by catbert finetune",
            model.display()
        ),
    );
}
