//! The loop end to end on one machine, through the real binary and the local registry:
//! fine-tune and register → infer with verified labels (stored as feedback) → retrain on the
//! feedback behind the promotion gate → monitor several days, one with injected drift (exit 3)
//! → report.

mod common;

use common::*;

#[test]
fn the_loop_runs_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let env = [("CATBERT_HOME", s(&home))];
    let train = synthetic(dir.path(), "train.csv", 300);
    let tiny = oracle().join("tiny");
    let finetune = |out: &str, extra: &[&str]| {
        let mut args = vec![
            "finetune",
            "--train",
            s(&train),
            "--model",
            s(&tiny),
            "--epochs",
            "2",
            "--out",
        ];
        let out = dir.path().join(out);
        args.push(s(&out));
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

    // Day 1 and day 2: predictions by the champion, some rows verified by people.
    let days = dir.path().join("days");
    std::fs::create_dir_all(&days).unwrap();
    for day in ["day1", "day2"] {
        let rows = synthetic(dir.path(), &format!("{day}-in.csv"), 90);
        let text = std::fs::read_to_string(&rows).unwrap();
        // Keep the label of every third row only: the verified ones.
        let mut csv = String::from("text,verified\n");
        for (i, line) in text.lines().skip(1).enumerate() {
            let (t, l) = line.rsplit_once(',').unwrap();
            csv.push_str(&format!("{t} {day},{}\n", if i % 3 == 0 { l } else { "" }));
        }
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
        assert!(
            stderr(&o).contains("feedback: 30 verified rows added to"),
            "{}",
            stderr(&o)
        );
    }
    let store = home.join("models/shop/feedback");
    let o = catbert(&["feedback", "stats", s(&store)], &env);
    let stats = String::from_utf8_lossy(&o.stdout).into_owned();
    // 60 verified rows; the synthetic texts repeat, so fewer distinct texts.
    assert!(stats.contains("(60 read from 2 files;"), "{stats}");

    // Retrain on the feedback; the gate compares on the newest verified rows.
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
        err.contains(": 40 verified rows")
            && err.contains("8 newest held out as the evaluation set"),
        "{err}"
    );
    assert!(
        err.contains("shop version 2 promoted:") || err.contains("shop version 2 not promoted:"),
        "{err}"
    );

    // Day 3 drifts: everything predicted as one class with certainty.
    let mut csv = String::from("text,category_1,probability_1\n");
    for i in 0..120 {
        csv.push_str(&format!("cola {i},drinks,0.999\n"));
    }
    std::fs::write(days.join("day3.csv"), csv).unwrap();
    let o = catbert(
        &[
            "monitor",
            "--model",
            "models:/shop/1",
            "--predictions",
            s(&days),
            "--feedback",
            s(&store),
        ],
        &env,
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(3), "{out}{}", stderr(&o));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert!(
        lines[3].starts_with("day3.csv") && lines[3].ends_with("alert"),
        "{out}"
    );
    let verified: usize = lines[1].split_whitespace().nth(2).unwrap().parse().unwrap();
    assert_eq!(verified, 30, "{out}");

    // The report of the champion.
    let report = dir.path().join("report.html");
    let o = catbert(
        &["report", "models:/shop@champion", "--out", s(&report)],
        &env,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(std::fs::read_to_string(&report)
        .unwrap()
        .contains("Confusion matrix"));
}
