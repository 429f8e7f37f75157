//! The feedback store through the real binary: infer's verified rows, `feedback add` from
//! files (several writers at once), `feedback stats`, and bad input.

mod common;

use catbert::feedback::FeedbackStore;
use common::*;

#[test]
fn infer_stores_verified_rows_with_the_models_prediction() {
    let dir = tempfile::tempdir().unwrap();
    let model = oracle().join("minilm-cls");
    let queries = repo().join("datasets/products-sample/queries.csv");
    let store = dir.path().join("fb");
    let o = catbert(
        &[
            "infer",
            "--model",
            s(&model),
            "--file",
            s(&queries),
            "--text-col",
            "product_description",
            "--label-col",
            "HUMAN_VERIFIED_Category",
            "--out",
            s(&dir.path().join("p.csv")),
            "--feedback",
            s(&store),
            "--client",
            "acme",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let table = catbert::data::Table::read(&queries, None).unwrap();
    let verified = table
        .labels("HUMAN_VERIFIED_Category")
        .unwrap()
        .iter()
        .flatten()
        .count();
    let set = FeedbackStore::new(&store).read(None).unwrap();
    assert_eq!(set.read, verified);
    assert!(stderr(&o).contains(&format!(
        "feedback: {verified} verified rows added to {}",
        store.display()
    )));
    let r = &set.rows[0];
    assert!(r.predicted.is_some() && r.probability.is_some());
    assert_eq!(r.client.as_deref(), Some("acme"));
    assert_eq!(r.source, "infer:queries.csv");

    let o = catbert(&["feedback", "stats", s(&store), "--model", s(&model)], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.starts_with(&format!(
            "feedback in {}: {} rows",
            store.display(),
            set.rows.len()
        )),
        "{out}"
    );
    let agreed = set
        .rows
        .iter()
        .filter(|r| r.predicted.as_deref() == Some(r.label.as_str()))
        .count();
    let line = format!(
        "agreement with the model: {:.1} % of {} rows with a prediction",
        agreed as f64 * 100.0 / set.rows.len() as f64,
        set.rows.len()
    );
    assert!(out.contains(&line), "{out}\nwanted: {line}");
}

#[test]
fn files_added_by_concurrent_writers_are_all_kept() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("fb");
    let files: Vec<_> = (0..4)
        .map(|w| {
            let mut csv = String::from("text,label\n");
            for i in 0..50 {
                csv.push_str(&format!(
                    "item {w}-{i},{}\n",
                    if i % 10 == 9 { "" } else { "drinks" }
                ));
            }
            csv.push_str(&format!("toy {w},Toys\n"));
            write(dir.path(), &format!("w{w}.csv"), csv.as_bytes())
        })
        .collect();
    let children: Vec<_> = files
        .iter()
        .map(|f| {
            catbert_cmd(
                &[
                    "feedback",
                    "add",
                    s(f),
                    "--label-col",
                    "label",
                    "--feedback",
                    s(&store),
                ],
                &[],
            )
            .output()
        })
        .collect();
    for c in children {
        let o = c.unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(
            stderr(&o).contains("46 verified rows added to"),
            "{}",
            stderr(&o)
        );
        assert!(stderr(&o).contains("(5 rows without a label skipped)"));
    }
    let set = FeedbackStore::new(&store).read(None).unwrap();
    assert_eq!((set.read, set.rows.len()), (4 * 46, 4 * 46));
    // Labels the model does not know are listed by stats, given the model.
    let tiny = oracle().join("tiny");
    let o = catbert(&["feedback", "stats", s(&store), "--model", s(&tiny)], &[]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("labels the model does not know (kept, not used for retraining):"),
        "{out}"
    );
    assert!(out.contains("Toys (4)"), "{out}");
}

#[test]
fn bad_feedback_input_gets_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "v.csv", b"text,verified\nmilk,dairy\n");
    let store = dir.path().join("fb");
    let o = catbert(
        &[
            "feedback",
            "add",
            s(&f),
            "--label-col",
            "label",
            "--feedback",
            s(&store),
        ],
        &[],
    );
    assert_error(
        &o,
        2,
        &format!(
            "error: {}: no column \"label\" (columns: text, verified)",
            f.display()
        ),
    );
    let o = catbert(&["feedback", "add", s(&f), "--label-col", "verified"], &[]);
    assert_error(
        &o,
        2,
        "error: name the feedback store: a folder (--feedback) or the model it belongs to (--model)",
    );
    let missing = dir.path().join("nowhere");
    let o = catbert(&["feedback", "stats", s(&missing)], &[]);
    assert_error(
        &o,
        2,
        &format!("error: {}: file not found", missing.display()),
    );
}

#[test]
fn finetune_learns_from_the_store_and_evaluates_on_its_newest_rows() {
    let dir = tempfile::tempdir().unwrap();
    let train = synthetic(dir.path(), "train.csv", 120);
    let store = dir.path().join("fb");
    // "milk" is dairy in training; the verification says home. Ten new texts, one foreign label.
    let mut csv = String::from("text,label\nmilk,home\nrobot,toys\n");
    for i in 0..10 {
        csv.push_str(&format!("fresh juice {i},drinks\n"));
    }
    let f = write(dir.path(), "verified.csv", csv.as_bytes());
    let o = catbert(
        &[
            "feedback",
            "add",
            s(&f),
            "--label-col",
            "label",
            "--feedback",
            s(&store),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = catbert(
        &[
            "finetune",
            "--train",
            s(&train),
            "--model",
            s(&oracle().join("tiny")),
            "--epochs",
            "1",
            "--out",
            s(&dir.path().join("ck")),
            "--feedback",
            s(&store),
            "--feedback-eval",
            "0.25",
            "--no-tracking",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    let line = format!(
        "feedback from {}: 12 verified rows (0 confirm a training label, 1 relabel a training row, 7 new; 3 newest held out as the evaluation set; 1 with a label training lacks, not used; 0 conflicting texts, the latest verification kept); training rows 120 → 127",
        store.display()
    );
    assert!(err.contains(&line), "{err}\nwanted: {line}");
    assert!(err.contains(" 3 eval"), "{err}");
    // A store that is not there is one line.
    let o = catbert(
        &[
            "finetune",
            "--train",
            s(&train),
            "--model",
            s(&oracle().join("tiny")),
            "--out",
            s(&dir.path().join("ck2")),
            "--feedback",
            s(&dir.path().join("none")),
            "--no-tracking",
        ],
        &[],
    );
    assert_error(
        &o,
        2,
        &format!(
            "error: {}: file not found",
            dir.path().join("none").display()
        ),
    );
}

#[test]
fn the_review_queue_lists_the_least_certain_unverified_rows_first() {
    let dir = tempfile::tempdir().unwrap();
    let model = oracle().join("minilm-cls");
    let queries = repo().join("datasets/products-sample/queries.csv");
    let review = dir.path().join("review.csv");
    let out = dir.path().join("p.csv");
    let o = catbert(
        &[
            "infer",
            "--model",
            s(&model),
            "--file",
            s(&queries),
            "--text-col",
            "product_description",
            "--label-col",
            "HUMAN_VERIFIED_Category",
            "--out",
            s(&out),
            "--feedback",
            s(&dir.path().join("fb")),
            "--review-out",
            s(&review),
            "--review-budget",
            "25",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains(&format!(
        "25 rows to review (smallest margin first) -> {}",
        review.display()
    )));
    let table = catbert::data::Table::read(&review, None).unwrap();
    assert_eq!(table.rows(), 25);
    let margins = table.texts("margin").unwrap();
    let margins: Vec<f64> = margins.iter().map(|m| m.parse().unwrap()).collect();
    assert!(margins.windows(2).all(|w| w[0] <= w[1]), "{margins:?}");
    // No queued row is already verified, and no unverified row has a smaller margin than the
    // last one queued.
    let input = catbert::data::Table::read(&queries, None).unwrap();
    let verified = input.labels("HUMAN_VERIFIED_Category").unwrap();
    let rows: Vec<usize> = table
        .texts("row_id")
        .unwrap()
        .iter()
        .map(|r| r.parse().unwrap())
        .collect();
    assert!(rows.iter().all(|&r| verified[r].is_none()));
    let preds = catbert::data::Table::read(&out, None).unwrap();
    let p1 = preds.texts("probability_1").unwrap();
    let p2 = preds.texts("probability_2").unwrap();
    let worst = margins[24];
    for r in (0..verified.len()).filter(|&r| verified[r].is_none() && !rows.contains(&r)) {
        let m: f64 = p1[r].parse::<f64>().unwrap() - p2[r].parse::<f64>().unwrap();
        assert!(m >= worst - 1e-6, "row {r}: margin {m} < {worst}");
    }
}
