//! `catbert lr-find`: the learning-rate range test through the real binary on the tiny model.

mod common;

use common::*;

fn lr_find(train: &std::path::Path, extra: &[&str]) -> std::process::Output {
    let tiny = oracle().join("tiny");
    let mut args = vec!["lr-find", "--train", s(train), "--model", s(&tiny)];
    args.extend_from_slice(extra);
    catbert(&args, &[])
}

#[test]
fn lr_find_suggests_a_tenth_of_the_lowest_points_rate_and_writes_its_curve() {
    let dir = tempfile::tempdir().unwrap();
    let train = synthetic(dir.path(), "train.csv", 300);
    let curve = dir.path().join("curve.csv");
    let o = lr_find(&train, &["--batch-size", "8", "--curve", s(&curve)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);

    // The curve: one row per step (100 by default), rates exponential from 1e-7 to 1.
    let text = std::fs::read_to_string(&curve).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("step,lr,loss,smoothed_loss"));
    let rows: Vec<Vec<f64>> = lines
        .map(|l| l.split(',').map(|v| v.parse().unwrap()).collect())
        .collect();
    assert!(
        rows.len() >= 60 && rows.len() <= 100,
        "{} steps",
        rows.len()
    );
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(r[0] as usize, i + 1);
        let want = 1e-7 * (1e7f64).powf(i as f64 / 99.0);
        assert!(
            (r[1] / want - 1.0).abs() < 1e-9,
            "step {}: lr {}",
            i + 1,
            r[1]
        );
        assert!(r[2].is_finite() && r[3].is_finite());
    }
    // The first smoothed value is the first loss (bias-corrected average).
    assert!((rows[0][3] - rows[0][2]).abs() < 1e-9);
    // Training lowers the loss somewhere along the way.
    let (min_at, min) = rows
        .iter()
        .enumerate()
        .map(|(i, r)| (i, r[3]))
        .fold((0, f64::INFINITY), |a, b| if b.1 < a.1 { b } else { a });
    assert!(
        min < rows[0][3] * 0.9,
        "lowest smoothed {min} vs first {}",
        rows[0][3]
    );

    // The suggestion is a tenth of the rate at the lowest smoothed loss.
    let lowest = rows[min_at][1];
    assert!(
        err.contains(&format!("lowest smoothed loss at lr {lowest:.1e}")),
        "{err}"
    );
    assert!(
        err.contains(&format!("suggested --lr {:.1e} ", lowest / 10.0)),
        "{err}"
    );
    // Nothing else written: no checkpoint folder, no scratch left behind.
    assert!(!dir.path().join("checkpoints").exists());
    let scratch = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("catbert-lr-find-")
        })
        .count();
    assert_eq!(scratch, 0, "scratch folder left in the temp dir");
}

#[test]
fn lr_find_refuses_what_does_not_apply_and_never_overwrites_a_curve() {
    let dir = tempfile::tempdir().unwrap();
    let train = synthetic(dir.path(), "train.csv", 30);
    assert_error(
        &lr_find(&train, &["--epochs", "3"]),
        2,
        "error: --epochs does not apply to lr-find (it tries rates from --start-lr to --end-lr and saves no model)",
    );
    assert_error(
        &lr_find(&train, &["--start-lr", "1e-2", "--end-lr", "1e-3"]),
        2,
        "error: lr-find needs 0 < start_lr < end_lr, at least 2 steps, smoothing in [0, 1) and diverge > 1 (got start 0.01, end 0.001, steps 100, smoothing 0.98, diverge 4)",
    );
    let curve = write(dir.path(), "curve.csv", b"keep me\n");
    assert_error(
        &lr_find(&train, &["--curve", s(&curve)]),
        2,
        &format!(
            "error: {} already exists; pass --overwrite to replace it, or choose another --curve",
            curve.display()
        ),
    );
    assert_eq!(std::fs::read(&curve).unwrap(), b"keep me\n");
}

/// `finetune --lr auto` trains at what `lr-find` with the same settings suggests (the printed
/// two digits), records that rate, and a resumed run keeps it without searching again.
#[test]
fn finetune_lr_auto_trains_at_lr_finds_suggestion_and_resume_keeps_it() {
    let dir = tempfile::tempdir().unwrap();
    let train = synthetic(dir.path(), "train.csv", 300);
    let o = lr_find(&train, &["--batch-size", "8"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    let suggested = err
        .lines()
        .find_map(|l| l.strip_prefix("suggested --lr "))
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("{err}"))
        .to_string();

    let tiny = oracle().join("tiny");
    let out = dir.path().join("out");
    let finetune = |epochs: &str, extra: &[&str]| {
        let mut args = vec![
            "finetune",
            "--train",
            s(&train),
            "--model",
            s(&tiny),
            "--batch-size",
            "8",
            "--lr",
            "auto",
            "--epochs",
            epochs,
            "--keep-state",
            "--out",
            s(&out),
        ];
        args.extend_from_slice(extra);
        let o = catbert(&args, &[]);
        assert!(o.status.success(), "{}", stderr(&o));
        stderr(&o)
    };
    let err = finetune("1", &[]);
    assert!(
        err.contains(&format!("; training at a tenth of it, --lr {suggested}")),
        "{err}"
    );
    let lr = |meta: serde_json::Value| meta["args"]["hyper"]["lr"].as_f64().unwrap();
    let want: f64 = suggested.parse().unwrap();
    assert_eq!(lr(read_json(&out.join("catbert.json"))), want);

    let err = finetune("2", &["--resume"]);
    assert!(
        err.contains(&format!(
            "--lr auto: resuming at the rate found when the run started, {suggested}"
        )),
        "{err}"
    );
    assert!(!err.contains("lr-find ("), "{err}");
    assert_eq!(lr(read_json(&out.join("catbert.json"))), want);
}
