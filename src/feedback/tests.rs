use super::*;

fn row(text: &str, label: &str, at: i64) -> FeedbackRow {
    FeedbackRow {
        verified_at: at,
        ..FeedbackRow::new(text.into(), label.into(), "test")
    }
}

const DAY: i64 = 86_400_000;
// 2026-12-01 00:00:00 UTC
const T0: i64 = 1_796_083_200_000;

#[test]
fn appends_partition_by_day_and_the_latest_verification_wins() {
    let dir = tempfile::tempdir().unwrap();
    let store = FeedbackStore::new(dir.path().join("fb"));
    let mut first = row("Oat milk", "dairy", T0);
    first.predicted = Some("drinks".into());
    first.probability = Some(0.6);
    store
        .append(&[first, row("Cola", "drinks", T0 + 1)])
        .unwrap();
    store
        .append(&[
            row("Oat milk", "drinks", T0 + DAY),
            row("Soap", "home", T0 + DAY),
        ])
        .unwrap();
    assert!(dir.path().join("fb/date=2026-12-01").is_dir());
    assert!(dir.path().join("fb/date=2026-12-02").is_dir());
    // A killed append leaves a dot-file that readers skip.
    std::fs::write(
        dir.path().join("fb/date=2026-12-02/.part-x.parquet.tmp"),
        b"half",
    )
    .unwrap();

    let set = store.read(None).unwrap();
    assert_eq!((set.read, set.files, set.rows.len()), (4, 2, 3));
    let texts: Vec<(&str, &str)> = set
        .rows
        .iter()
        .map(|r| (r.text.as_str(), r.label.as_str()))
        .collect();
    assert_eq!(
        texts,
        [("Cola", "drinks"), ("Oat milk", "drinks"), ("Soap", "home")]
    );
    assert_eq!(
        set.conflicts,
        vec![(
            "Oat milk".to_string(),
            vec!["dairy".to_string(), "drinks".to_string()]
        )]
    );
    let since = store.read(Some("2026-12-02")).unwrap();
    assert_eq!(since.rows.len(), 2);

    let known = ["drinks".to_string(), "dairy".to_string()];
    let s = stats(&set, Some(&known));
    assert_eq!(s.per_day["2026-12-01"], 1);
    assert_eq!(s.per_day["2026-12-02"], 2);
    assert_eq!(s.per_label["drinks"], 2);
    assert_eq!(s.unknown_labels["home"], 1);
    // The dairy verification (with its prediction) was superseded.
    assert_eq!(s.agreement(), None);
}

#[test]
fn every_field_round_trips_and_empty_text_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = FeedbackStore::new(dir.path());
    let full = FeedbackRow {
        text: "Tea, \"green\"".into(),
        label: "drinks".into(),
        predicted: Some("drinks".into()),
        probability: Some(0.75),
        model: Some("shop".into()),
        model_version: Some("3".into()),
        client: Some("acme".into()),
        source: "serve".into(),
        verified_at: T0,
    };
    store.append(std::slice::from_ref(&full)).unwrap();
    assert_eq!(store.read(None).unwrap().rows, vec![full]);
    let err = store.append(&[row(" ", "x", T0)]).unwrap_err();
    assert_eq!(err.to_string(), "feedback row 0: empty text");
}
