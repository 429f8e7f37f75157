//! `catbert serve` driven over real sockets: TEI's shapes and errors, agreement with
//! `catbert infer` under 32 concurrent clients, limits and the API key, SIGTERM under load,
//! an alias moved under load, a broken new version, SIGHUP, and feedback.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::server::*;
use common::*;
use serde_json::{json, Value};

#[test]
fn tei_routes_shapes_and_errors() {
    let model = minilm_cls();
    let srv = Server::start(
        &[
            "--model",
            s(&model),
            "--max-client-batch-size",
            "4",
            "--payload-limit",
            "4000",
            "--log-level",
            "debug",
        ],
        &[],
    );
    let agent = ureq::agent();
    let (status, _, _) = get(&srv.url("/health"));
    assert_eq!(status, 200);
    let (status, _, info) = get(&srv.url("/info"));
    assert_eq!(status, 200);
    let id2label = info["model_type"]["classifier"]["id2label"]
        .as_object()
        .unwrap();
    assert_eq!(id2label.len(), 5);
    assert_eq!(info["max_input_length"], 128);
    assert_eq!(info["max_client_batch_size"], 4);
    assert_eq!(info["auto_truncate"], true);
    assert_eq!(info["model_dtype"], "float32");
    assert_eq!(info["model_id"], s(&model));

    // One text: every label, best first, probabilities summing to 1.
    let (status, version, single) = post(
        &agent,
        &srv.url("/predict"),
        &json!({"inputs": "Organic whole milk 1 gallon"}),
        None,
    );
    assert_eq!(status, 200, "{single}");
    assert_eq!(version, s(&model));
    let preds = single.as_array().unwrap();
    assert_eq!(preds.len(), 5);
    let scores: Vec<f64> = preds.iter().map(|p| p["score"].as_f64().unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]));
    assert!((scores.iter().sum::<f64>() - 1.0).abs() < 1e-5);
    // ["text"] is one text too; [["a"],["b"]] a batch.
    let (_, _, same) = post(
        &agent,
        &srv.url("/predict"),
        &json!({"inputs": ["Organic whole milk 1 gallon"]}),
        None,
    );
    assert_eq!(same, single);
    let (status, _, batch) = post(
        &agent,
        &srv.url("/predict"),
        &json!({"inputs": [["Organic whole milk 1 gallon"], ["Paper towels 6 rolls"]]}),
        None,
    );
    assert_eq!(status, 200);
    // Alone or in a batch: the same labels, probabilities within 1e-5.
    same_predictions(&batch[0], &single);
    assert_eq!(batch.as_array().unwrap().len(), 2);
    // raw_scores: logits in the same order; top_k: the k best.
    let (_, _, raw) = post(
        &agent,
        &srv.url("/predict"),
        &json!({"inputs": "Organic whole milk 1 gallon", "raw_scores": true}),
        None,
    );
    assert_eq!(raw[0]["label"], single[0]["label"]);
    assert!(raw
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["score"].as_f64().unwrap() < 0.0 || p["score"].as_f64().unwrap() > 1.0));
    let (_, _, top2) = post(
        &agent,
        &srv.url("/predict"),
        &json!({"inputs": "Organic whole milk 1 gallon", "top_k": 2}),
        None,
    );
    assert_eq!(top2.as_array().unwrap().len(), 2);
    assert_eq!(top2[1], single[1]);

    // Errors: TEI's body and status.
    let err = |body: Value| post(&agent, &srv.url("/predict"), &body, None);
    let check = |(status, _, body): (u16, String, Value), want: u16, kind: &str, text: &str| {
        assert_eq!(status, want, "{body}");
        assert_eq!(body["error_type"], kind, "{body}");
        assert!(body["error"].as_str().unwrap().contains(text), "{body}");
    };
    check(
        err(json!({"inputs": ["a", "b"]})),
        422,
        "Validation",
        "text pairs are not supported",
    );
    check(err(json!({"inputs": []})), 400, "Empty", "batch is empty");
    check(
        err(json!({"inputs": 3})),
        422,
        "Validation",
        "`inputs` must be a string",
    );
    check(
        err(json!({"nope": 1})),
        422,
        "Validation",
        "invalid JSON: missing field `inputs`",
    );
    check(
        err(json!({"inputs": [["a"], ["b"], ["c"], ["d"], ["e"]]})),
        422,
        "Validation",
        "batch size 5 > maximum allowed batch size 4",
    );
    check(
        err(json!({"inputs": "a", "top_k": 0})),
        422,
        "Validation",
        "`top_k` must be at least 1",
    );
    let long = "milk ".repeat(300);
    check(
        err(json!({"inputs": long, "truncate": false})),
        422,
        "Validation",
        "input 0 has 302 tokens, more than the model's maximum of 128",
    );
    let (status, _, _) = err(json!({"inputs": long}));
    assert_eq!(status, 200, "truncated by default");
    check(
        err(json!({"inputs": "x".repeat(5000)})),
        413,
        "Validation",
        "payload limit",
    );
    let raw = agent
        .post(&srv.url("/predict"))
        .set("Content-Type", "application/json")
        .send_string("{not json");
    check(answer(raw), 422, "Validation", "invalid JSON");

    // Prometheus metrics.
    let text = ureq::get(&srv.url("/metrics"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    assert!(
        text.contains("catbert_requests_total{route=\"/predict\",status=\"200\"}"),
        "{text}"
    );
    assert!(text.contains("catbert_requests_total{route=\"/predict\",status=\"422\"}"));
    assert!(text.contains("# TYPE catbert_inference_duration_seconds histogram"));
    assert!(text.contains("catbert_batch_size_count"));
    assert!(text.contains("catbert_top1_probability_bucket"));
    assert!(text.contains("catbert_predictions_total{class="));
    // One log line per request at debug, errors at warn.
    assert!(srv.logged("level=debug method=POST path=\"/predict\" status=200"));
    assert!(srv.logged("level=warn method=POST path=\"/predict\" status=422"));
}

#[test]
fn answers_equal_catbert_infer_under_32_concurrent_clients() {
    let dir = tempfile::tempdir().unwrap();
    let model = minilm_cls();
    let out = dir.path().join("pred.csv");
    let file = repo().join("datasets/products-sample/queries.csv");
    let o = catbert(
        &[
            "infer",
            "--model",
            s(&model),
            "--file",
            s(&file),
            "--text-col",
            "product_description",
            "--out",
            s(&out),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let expected = csv_rows(&out);
    let header = &expected[0];
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let (c1, p1, c2, p2) = (
        col("category_1"),
        col("probability_1"),
        col("category_2"),
        col("probability_2"),
    );
    let texts = queries();
    assert_eq!(texts.len(), expected.len() - 1);

    let srv = Server::start(&["--model", s(&model)], &[]);
    let next = Arc::new(AtomicUsize::new(0));
    let answers: Arc<Mutex<Vec<Option<Value>>>> = Arc::new(Mutex::new(vec![None; texts.len()]));
    let texts = Arc::new(texts);
    let threads: Vec<_> = (0..32)
        .map(|t| {
            let (next, answers, texts, url) = (
                next.clone(),
                answers.clone(),
                texts.clone(),
                srv.url("/v1/predict"),
            );
            std::thread::spawn(move || {
                let agent = ureq::agent();
                loop {
                    // Odd threads send 3 texts a request, even ones 1.
                    let n = if t % 2 == 1 { 3 } else { 1 };
                    let start = next.fetch_add(n, Ordering::SeqCst);
                    if start >= texts.len() {
                        return;
                    }
                    let end = (start + n).min(texts.len());
                    let (status, _, body) = post(
                        &agent,
                        &url,
                        &json!({"texts": texts[start..end], "top_k": 2}),
                        None,
                    );
                    assert_eq!(status, 200, "{body}");
                    let mut a = answers.lock().unwrap();
                    for (i, r) in body["results"].as_array().unwrap().iter().enumerate() {
                        a[start + i] = Some(r.clone());
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let answers = answers.lock().unwrap();
    for (i, row) in expected[1..].iter().enumerate() {
        let got = answers[i].as_ref().unwrap();
        let close = |a: f64, b: &str| (a - b.parse::<f64>().unwrap()).abs() < 1e-5;
        assert_eq!(got["labels"][0], row[c1].as_str(), "row {i}");
        assert!(
            close(got["probabilities"][0].as_f64().unwrap(), &row[p1]),
            "row {i}: {got} vs {}",
            row[p1]
        );
        assert!(
            close(got["probabilities"][1].as_f64().unwrap(), &row[p2]),
            "row {i}"
        );
        if row[p1] != row[p2] {
            assert_eq!(got["labels"][1], row[c2].as_str(), "row {i}");
        }
    }
    // The batcher did batch under that load.
    let text = ureq::get(&srv.url("/metrics"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    let count = |name: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(name))
            .unwrap()
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert!(
        count("catbert_batch_size_count") < count("catbert_batch_size_sum"),
        "{text}"
    );
}

#[test]
fn limits_api_key_and_feedback() {
    let dir = tempfile::tempdir().unwrap();
    let model = minilm_cls();
    let feedback = dir.path().join("fb");
    let srv = Server::start(
        &[
            "--model",
            s(&model),
            "--max-concurrent-requests",
            "1",
            "--feedback",
            s(&feedback),
        ],
        &[("CATBERT_API_KEY", "sesame")],
    );
    let agent = ureq::agent();
    let body = json!({"inputs": "Paper towels"});
    let (status, _, e) = post(&agent, &srv.url("/predict"), &body, None);
    assert_eq!(
        (status, e["error_type"].as_str()),
        (401, Some("Unauthorized"))
    );
    let (status, _, _) = post(&agent, &srv.url("/predict"), &body, Some("wrong"));
    assert_eq!(status, 401);
    assert_eq!(get(&srv.url("/health")).0, 200);
    assert_eq!(
        post(&agent, &srv.url("/predict"), &body, Some("sesame")).0,
        200
    );

    // One request in flight at a time: concurrent clients see 429s, never anything else.
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..16)
            .map(|_| {
                let url = srv.url("/v1/predict");
                scope.spawn(move || {
                    let agent = ureq::agent();
                    let texts: Vec<String> =
                        (0..32).map(|i| format!("item {i} paper towels")).collect();
                    (0..4)
                        .map(|_| post(&agent, &url, &json!({"texts": texts}), Some("sesame")))
                        .map(|(st, _, b)| {
                            if st == 429 {
                                assert_eq!(b["error_type"], "Overloaded");
                            }
                            st
                        })
                        .collect::<Vec<u16>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    assert!(
        statuses.iter().all(|&st| st == 200 || st == 429),
        "{statuses:?}"
    );
    assert!(
        statuses.contains(&429) && statuses.contains(&200),
        "{statuses:?}"
    );

    // Feedback: appended, and a label the model does not know is refused by name.
    let labels: Vec<String> = {
        let info = answer(
            agent
                .get(&srv.url("/info"))
                .set("Authorization", "Bearer sesame")
                .call(),
        )
        .2;
        let map = info["model_type"]["classifier"]["id2label"]
            .as_object()
            .unwrap()
            .clone();
        (0..map.len())
            .map(|i| map[&i.to_string()].as_str().unwrap().to_string())
            .collect()
    };
    let items = json!({"items": [{"text": "Oat milk, 1L", "label": labels[0]}, {"text": "Soap", "label": labels[1]}]});
    let (status, _, body) = post(&agent, &srv.url("/v1/feedback"), &items, Some("sesame"));
    assert_eq!((status, body), (200, json!({"stored": 2})));
    // In the feedback store, read back through the library.
    let stored = catbert::feedback::FeedbackStore::new(&feedback)
        .read(None)
        .unwrap();
    let got: Vec<(&str, &str, &str)> = stored
        .rows
        .iter()
        .map(|r| (r.text.as_str(), r.label.as_str(), r.source.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("Oat milk, 1L", labels[0].as_str(), "serve"),
            ("Soap", labels[1].as_str(), "serve")
        ]
    );
    assert_eq!(stored.rows[0].model.as_deref(), Some(s(&model)));
    // With what the serving model predicted for the text.
    assert!(stored
        .rows
        .iter()
        .all(|r| r.predicted.is_some() && r.probability.is_some()));
    let bad = json!({"items": [{"text": "x", "label": "Toys"}]});
    let (status, _, body) = post(&agent, &srv.url("/v1/feedback"), &bad, Some("sesame"));
    assert_eq!(status, 422);
    assert_eq!(
        body["error"],
        format!(
            "items[0]: label \"Toys\" is not a class of the model (classes: {})",
            labels.join(", ")
        )
    );
}

#[test]
fn sigterm_under_load_finishes_every_accepted_request() {
    let model = minilm_cls();
    let srv = Server::start(&["--model", s(&model)], &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..16)
        .map(|_| {
            let (stop, ok, url) = (stop.clone(), ok.clone(), srv.url("/v1/predict"));
            std::thread::spawn(move || {
                let agent = ureq::agent();
                let texts: Vec<String> = (0..16).map(|i| format!("sparkling water {i}")).collect();
                while !stop.load(Ordering::Relaxed) {
                    let r = agent
                        .post(&url)
                        .set("Content-Type", "application/json")
                        .send_string(&json!({"texts": texts}).to_string());
                    match r {
                        Ok(resp) => {
                            assert_eq!(resp.status(), 200);
                            let body: Value =
                                serde_json::from_str(&resp.into_string().unwrap()).unwrap();
                            assert_eq!(body["results"].as_array().unwrap().len(), 16);
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        // A status other than 200 is a lost request.
                        Err(ureq::Error::Status(code, _)) => {
                            panic!("status {code} during shutdown")
                        }
                        // Refused or closed before it was read: never accepted.
                        Err(ureq::Error::Transport(_)) => return,
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    let before = ok.load(Ordering::Relaxed);
    assert!(before > 0);
    srv.signal(libc::SIGTERM);
    let mut srv = srv;
    let started = Instant::now();
    let status = loop {
        if let Some(st) = srv.child.try_wait().unwrap() {
            break st;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "server did not stop"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    assert_eq!(status.code(), Some(0));
    assert!(srv.logged("event=stopped"));
}

/// A local registry with versions 1 and 2 of "shop" (tiny classifiers) and champion at 1.
fn registry_with_two(dir: &Path, home: &Path) {
    let train = synthetic(dir, "train.csv", 120);
    for out in ["v1", "v2"] {
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
                s(&dir.join(out)),
                "--register",
                "shop",
            ],
            &[("CATBERT_HOME", s(home))],
        );
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let o = catbert(
        &["registry", "promote", "shop", "1"],
        &[("CATBERT_HOME", s(home))],
    );
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn a_moved_alias_is_served_without_a_failed_request_and_a_broken_one_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    registry_with_two(dir.path(), &home);
    let env = [("CATBERT_HOME", s(&home))];
    let srv = Server::start(&["--model", "models:/shop@champion", "--poll", "0.2"], &env);
    assert_eq!(get(&srv.url("/info")).2["model_version"], 1);
    let stop = Arc::new(AtomicBool::new(false));
    // (sent, answered, version) of every request.
    let seen: Arc<Mutex<Vec<(Instant, Instant, String)>>> = Arc::default();
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let (stop, seen, url) = (stop.clone(), seen.clone(), srv.url("/predict"));
            std::thread::spawn(move || {
                let agent = ureq::agent();
                while !stop.load(Ordering::Relaxed) {
                    let sent = Instant::now();
                    let (status, version, body) =
                        post(&agent, &url, &json!({"inputs": "milk"}), None);
                    assert_eq!(status, 200, "{body}");
                    seen.lock().unwrap().push((sent, Instant::now(), version));
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let o = catbert(&["registry", "promote", "shop", "2"], &env);
    assert!(o.status.success(), "{}", stderr(&o));
    let started = Instant::now();
    while !seen.lock().unwrap().iter().any(|(_, _, v)| v == "2") {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "never switched"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    // Once 2 answered, no request sent later was answered by 1.
    let seen = seen.lock().unwrap();
    let switched = seen
        .iter()
        .filter(|(_, _, v)| v == "2")
        .map(|(_, answered, _)| *answered)
        .min()
        .unwrap();
    assert!(seen
        .iter()
        .filter(|(sent, _, _)| *sent > switched)
        .all(|(_, _, v)| v == "2"));
    assert!(seen.iter().any(|(_, _, v)| v == "1"));
    assert!(srv.logged("event=model_swapped reason=poll from=\"1\" to=\"2\""));

    // A broken version 3: the load fails, version 2 goes on answering.
    let v3 = {
        let o = catbert(
            &[
                "finetune",
                "--train",
                s(&dir.path().join("train.csv")),
                "--model",
                s(&oracle().join("tiny")),
                "--epochs",
                "1",
                "--out",
                s(&dir.path().join("v3")),
                "--register",
                "shop",
            ],
            &env,
        );
        assert!(o.status.success(), "{}", stderr(&o));
        home.join("models/shop/3/model/model.safetensors")
    };
    std::fs::write(&v3, b"not weights").unwrap();
    assert!(catbert(&["registry", "promote", "shop", "3"], &env)
        .status
        .success());
    let started = Instant::now();
    while !srv.logged("event=model_load_failed reason=poll") {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no failed load logged"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let agent = ureq::agent();
    let (status, version, _) = post(
        &agent,
        &srv.url("/predict"),
        &json!({"inputs": "milk"}),
        None,
    );
    assert_eq!((status, version.as_str()), (200, "2"));
    // SIGHUP reloads on demand: back at 2 after a rollback.
    assert!(catbert(&["registry", "rollback", "shop"], &env)
        .status
        .success());
    srv.signal(libc::SIGHUP);
    let started = Instant::now();
    while !srv.logged("reason=sighup") {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "SIGHUP not handled"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(get(&srv.url("/info")).2["model_version"], 2);
}

#[test]
fn drift_gauges_follow_the_recent_predictions() {
    let dir = tempfile::tempdir().unwrap();
    let train = synthetic(dir.path(), "train.csv", 300);
    let ck = dir.path().join("ck");
    finetune_tiny(&train, &ck, "1");
    let srv = Server::start(&["--model", s(&ck)], &[]);
    let agent = ureq::agent();
    let texts: Vec<String> = (0..12).map(|i| format!("milk cheese {i}")).collect();
    let (status, _, _) = post(
        &agent,
        &srv.url("/v1/predict"),
        &json!({"texts": texts}),
        None,
    );
    assert_eq!(status, 200);
    let text = ureq::get(&srv.url("/metrics"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    assert!(
        text.contains("catbert_drift{measure=\"window_rows\"} 12\n"),
        "{text}"
    );
    for m in ["js_classes", "psi_classes", "psi_top1", "mean_top1"] {
        assert!(
            text.contains(&format!("catbert_drift{{measure=\"{m}\"}} ")),
            "{m}: {text}"
        );
    }
}
