//! `catbert monitor`: the reference profile a fine-tune leaves, quality on verified rows, an
//! injected drift that alerts (exit code 3), and bad input.

mod common;

use catbert::feedback::{FeedbackRow, FeedbackStore};
use catbert::monitor::{Profile, PROFILE_FILE};
use common::*;

#[test]
fn a_drifted_window_alerts_with_exit_code_3() {
    let dir = tempfile::tempdir().unwrap();
    let train = synthetic(dir.path(), "train.csv", 600);
    let ck = dir.path().join("ck");
    let err = finetune_tiny(&train, &ck, "2");
    let profile = Profile::load(&ck)
        .unwrap()
        .expect("a fine-tune leaves a profile");
    assert_eq!(profile.rows, 60);
    assert!(err.contains(&format!(
        "reference profile of 60 rows for catbert monitor: {}",
        ck.join(PROFILE_FILE).display()
    )));

    // Day 1: the model's own predictions on rows like its training data.
    let day1 = dir.path().join("windows/day1.csv");
    std::fs::create_dir_all(day1.parent().unwrap()).unwrap();
    let o = catbert(
        &[
            "infer",
            "--model",
            s(&ck),
            "--file",
            s(&train),
            "--out",
            s(&day1),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    // Day 2: every row predicted as the class the reference saw least, with certainty.
    let rarest = profile
        .predicted
        .iter()
        .enumerate()
        .min_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| profile.classes[i].clone())
        .unwrap();
    let mut csv = String::from("text,category_1,probability_1\n");
    for i in 0..200 {
        csv.push_str(&format!("cola juice {i},{rarest},0.99\n"));
    }
    std::fs::write(dir.path().join("windows/day2.csv"), csv).unwrap();
    // Some verified labels for day 1.
    let store = dir.path().join("fb");
    let table = catbert::data::Table::read(&train, None).unwrap();
    let (texts, labels) = (table.texts("text").unwrap(), table.labels("label").unwrap());
    let rows: Vec<FeedbackRow> = (0..30)
        .map(|i| FeedbackRow::new(texts[i].clone(), labels[i].clone().unwrap(), "test"))
        .collect();
    FeedbackStore::new(&store).append(&rows).unwrap();

    let o = catbert(
        &[
            "monitor",
            "--model",
            s(&ck),
            "--predictions",
            s(&dir.path().join("windows")),
            "--feedback",
            s(&store),
        ],
        &[],
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(3), "{out}\n{}", stderr(&o));
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("window"), "{out}");
    assert!(
        lines[1].starts_with("day1.csv") && !lines[1].ends_with("alert"),
        "{out}"
    );
    let verified: usize = lines[1].split_whitespace().nth(2).unwrap().parse().unwrap();
    assert!(verified >= 30, "{out}");
    assert!(
        lines[2].starts_with("day2.csv") && lines[2].ends_with("alert"),
        "{out}"
    );
    assert_eq!(
        stderr(&o).trim(),
        "alert: the latest window drifted past PSI 0.25 (exit code 3)"
    );
}

#[test]
fn old_checkpoints_and_bad_windows() {
    let dir = tempfile::tempdir().unwrap();
    let model = oracle().join("minilm-cls");
    let w = write(dir.path(), "w.csv", b"text,category\nmilk,x\n");
    let o = catbert(
        &["monitor", "--model", s(&model), "--predictions", s(&w)],
        &[],
    );
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    let lines: Vec<&str> = err.lines().collect();
    assert!(
        lines[0].starts_with("notice: ") && lines[0].contains("has no reference profile"),
        "{err}"
    );
    assert_eq!(
        lines[1],
        format!(
            "error: {}: no column \"category_1\" (columns: text, category)",
            w.display()
        )
    );
    let missing = dir.path().join("nope.csv");
    let o = catbert(
        &[
            "monitor",
            "--model",
            s(&model),
            "--predictions",
            s(&missing),
        ],
        &[],
    );
    assert!(stderr(&o).ends_with(&format!("error: {}: file not found\n", missing.display())));
}

#[test]
fn a_time_column_makes_one_window_per_day_across_files() {
    let dir = tempfile::tempdir().unwrap();
    let train = synthetic(dir.path(), "train.csv", 300);
    let ck = dir.path().join("ck");
    finetune_tiny(&train, &ck, "1");
    let profile = Profile::load(&ck).unwrap().unwrap();
    let class = &profile.classes[0];
    // Two files, three days, the middle day split across both.
    let a = "text,category_1,probability_1,at\n".to_string()
        + &format!("milk,{class},0.5,2026-11-30T08:00:00Z\nsoap,{class},0.5,2026-12-01 09:00\n");
    let b = format!("text,category_1,probability_1,at\ncola,{class},0.5,2026-12-01\ntea,{class},0.5,2026-12-02\n");
    let w = dir.path().join("w");
    std::fs::create_dir_all(&w).unwrap();
    std::fs::write(w.join("a.csv"), a).unwrap();
    std::fs::write(w.join("b.csv"), b).unwrap();
    let monitor = || {
        catbert(
            &[
                "monitor",
                "--model",
                s(&ck),
                "--predictions",
                s(&w),
                "--time-col",
                "at",
            ],
            &[],
        )
    };
    let o = monitor();
    let out = String::from_utf8_lossy(&o.stdout);
    let days: Vec<(&str, &str)> = out
        .lines()
        .skip(1)
        .map(|l| {
            let mut f = l.split_whitespace();
            (f.next().unwrap(), f.next().unwrap())
        })
        .collect();
    assert_eq!(
        days,
        [
            ("2026-11-30", "1"),
            ("2026-12-01", "2"),
            ("2026-12-02", "1")
        ],
        "{out}{}",
        stderr(&o)
    );
    std::fs::write(
        w.join("c.csv"),
        format!("text,category_1,probability_1,at\nx,{class},0.5,yesterday\n"),
    )
    .unwrap();
    let o = monitor();
    assert_error(
        &o,
        2,
        &format!(
            "error: {}: row 1, column \"at\": \"yesterday\" does not start with a date YYYY-MM-DD",
            w.join("c.csv").display()
        ),
    );
}
