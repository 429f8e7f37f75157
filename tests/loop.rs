//! The loop end to end on the bundled product sample, through the real binary and the local
//! registry: fine-tune and register → infer day by day with the human-verified labels
//! (stored as feedback) → retrain on the feedback behind the promotion gate → monitor the
//! days, the last one drifted (exit 3) → report with the monitoring timelines. The tiny test
//! model (MiniLM's vocabulary, 2 layers of width 32) keeps it to seconds.

mod common;

use catbert::data::Table;
use common::*;

/// One CSV field, quoted.
fn field(v: &str) -> String {
    format!("\"{}\"", v.replace('"', "\"\""))
}

#[test]
fn the_loop_runs_end_to_end_on_the_bundled_sample() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let env = [("CATBERT_HOME", s(&home))];
    let sample = repo().join("datasets/products-sample");
    let train = sample.join("train.csv");
    let tiny = oracle().join("tiny");
    let finetune = |out: &str, extra: &[&str]| {
        let out = dir.path().join(out);
        let mut args = vec![
            "finetune",
            "--train",
            s(&train),
            "--text-col",
            "product_description",
            "--label-col",
            "Category",
            "--model",
            s(&tiny),
            "--epochs",
            "2",
            "--lr",
            "2e-3",
            "--out",
            s(&out),
        ];
        args.extend_from_slice(extra);
        let o = catbert(&args, &env);
        assert!(o.status.success(), "{}", stderr(&o));
        stderr(&o)
    };
    let err = finetune("v1", &["--register", "shop", "--promote-if-better"]);
    assert!(
        err.contains("shop version 1 promoted: no champion yet"),
        "{err}"
    );

    // Days 1 and 2: the bundled queries in two halves, predicted by the champion; the rows
    // people verified carry their label.
    let queries = Table::read(&sample.join("queries.csv"), None).unwrap();
    let texts = queries.texts("product_description").unwrap();
    let verified = queries.labels("HUMAN_VERIFIED_Category").unwrap();
    let days = dir.path().join("days");
    std::fs::create_dir_all(&days).unwrap();
    let half = texts.len() / 2;
    let mut verified_per_day = Vec::new();
    for (day, range) in [("day1", 0..half), ("day2", half..texts.len())] {
        let mut csv = String::from("product_description,verified\n");
        for i in range.clone() {
            let label = verified[i].as_deref().unwrap_or("");
            csv.push_str(&format!("{},{}\n", field(&texts[i]), field(label)));
        }
        let n = verified[range].iter().flatten().count();
        verified_per_day.push(n);
        let input = write(dir.path(), &format!("{day}.csv"), csv.as_bytes());
        let out = days.join(format!("{day}.csv"));
        let o = catbert(
            &[
                "infer",
                "--model",
                "models:/shop@champion",
                "--file",
                s(&input),
                "--label-col",
                "verified",
                "--out",
                s(&out),
            ],
            &env,
        );
        assert!(o.status.success(), "{}", stderr(&o));
        let line = format!("feedback: {n} verified rows added to");
        assert!(stderr(&o).contains(&line), "{}", stderr(&o));
    }
    let total: usize = verified_per_day.iter().sum();
    assert!(total >= 100, "the sample has {total} verified queries");
    let store = home.join("models/shop/feedback");
    let o = catbert(&["feedback", "stats", s(&store)], &env);
    let stats = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        stats.contains(&format!("({total} read from 2 files;")),
        "{stats}"
    );

    // Retrain on the feedback; the gate compares the two models on the newest verified rows.
    let err = finetune(
        "v2",
        &[
            "--feedback",
            s(&store),
            "--register",
            "shop",
            "--promote-if-better",
        ],
    );
    assert!(err.contains("feedback from"), "{err}");
    assert!(
        err.contains("newest held out as the evaluation set"),
        "{err}"
    );
    assert!(
        err.contains("shop version 2 promoted:") || err.contains("shop version 2 not promoted:"),
        "{err}"
    );

    // Day 3 drifts: a day of nothing but beverages (real product rows, predicted by the
    // model that served days 1 and 2).
    let training = Table::read(&train, None).unwrap();
    let (t, l) = (
        training.texts("product_description").unwrap(),
        training.labels("Category").unwrap(),
    );
    let mut csv = String::from("product_description\n");
    for (text, _) in t
        .iter()
        .zip(&l)
        .filter(|(_, l)| l.as_deref() == Some("Beverages"))
    {
        csv.push_str(&format!("{}\n", field(text)));
    }
    let input = write(dir.path(), "day3.csv", csv.as_bytes());
    let o = infer_to("models:/shop/1", &input, &days.join("day3.csv"), &env);
    assert!(o.status.success(), "{}", stderr(&o));

    let monitor = ["--predictions", s(&days), "--feedback", s(&store)];
    let mut args = vec!["monitor", "--model", "models:/shop/1"];
    args.extend_from_slice(&monitor);
    let o = catbert(&args, &env);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(3), "{out}{}", stderr(&o));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    for (line, n) in lines[1..3].iter().zip(&verified_per_day) {
        let cells: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cells[2], n.to_string(), "{out}");
        assert!(cells[5].parse::<f64>().is_ok(), "f1_min measured: {out}");
        assert!(!line.ends_with("alert"), "{out}");
    }
    assert!(
        lines[3].starts_with("day3.csv") && lines[3].ends_with("alert"),
        "{out}"
    );

    // The report of the model that served, with the three days' timelines.
    let report = dir.path().join("report.html");
    let mut args = vec!["report", "models:/shop/1", "--out", s(&report)];
    args.extend_from_slice(&monitor);
    let o = catbert(&args, &env);
    assert!(o.status.success(), "{}", stderr(&o));
    let html = std::fs::read_to_string(&report).unwrap();
    for part in [
        "Training loss per step",
        "Confusion matrix",
        "Monitoring: 3 windows of predictions",
        "Quality on the verified rows per window",
        "Drift against the reference profile",
        "<td style=\"background:#f4b6b6\">alert</td>",
    ] {
        assert!(html.contains(part), "the report lacks {part:?}");
    }
}
