//! The real `catbert` binary: formats in and out, and every bad input with its exact error
//! line and exit code.

mod common;

use std::path::{Path, PathBuf};

use catbert::data::Table;
use common::*;

fn tiny() -> PathBuf {
    oracle().join("tiny")
}

const SMALL_CSV: &[u8] = b"id,text\n1,Organic Balsamic Vinegar Of Modena\n2,White Multifold Towels\n3,\"Cheesecake, Chocolate Truffle\"\n";

#[test]
#[allow(clippy::needless_range_loop)] // rows × ranks of three parallel tables
fn csv_in_csv_out_matches_transformers_top5_in_input_order() {
    let dir = tempfile::tempdir().unwrap();
    let input = oracle().join("minilm-cls/rows200.csv");
    let out = dir.path().join("pred.csv");
    let o = catbert(
        &[
            "infer",
            "--model",
            s(&oracle().join("minilm-cls")),
            "--file",
            s(&input),
            "--text-col",
            "product_description",
            "--out",
            s(&out),
            "--batch-size",
            "16",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let last = stderr(&o).lines().last().unwrap().to_string();
    assert!(
        last.starts_with("200 rows in ") && last.contains(" rows/s) -> "),
        "{last}"
    );

    let expected = read_json(&oracle().join("minilm-cls/expected.json"));
    let labels = [
        "Beverages",
        "Dry Goods & Pantry Staples",
        "Fresh & Perishable Items",
        "Household & Personal Care",
        "Specialty & Miscellaneous",
    ];
    let t = Table::read(&out, None).unwrap();
    assert_eq!(t.column_names()[0], "product_description");
    assert_eq!(
        t.texts("product_description").unwrap(),
        strings(&expected["texts"])
    );
    let want_top = ints2(&expected["top5"]);
    let want_p = floats2(&expected["probs"]);
    for rank in 0..5 {
        let cats = t.labels(&format!("category_{}", rank + 1)).unwrap();
        let probs = t.labels(&format!("probability_{}", rank + 1)).unwrap();
        for r in 0..200 {
            let class = want_top[r][rank] as usize;
            assert_eq!(
                cats[r].as_deref(),
                Some(labels[class]),
                "row {r} rank {rank}"
            );
            let p: f32 = probs[r].as_ref().unwrap().parse().unwrap();
            assert!(
                (p - want_p[r][class]).abs() < 1e-5,
                "row {r}: {p} vs {}",
                want_p[r][class]
            );
        }
    }
}

#[test]
fn jsonl_in_parquet_out_and_long_form() {
    let dir = tempfile::tempdir().unwrap();
    let input = write(dir.path(), "in.jsonl", b"{\"text\":\"milk\",\"n\":1}\n{\"text\":\"paper towels\",\"n\":2}\n{\"text\":\"apples\",\"n\":3}\n");
    let wide = dir.path().join("wide.parquet");
    let o = catbert(
        &[
            "infer",
            "--model",
            s(&tiny()),
            "--file",
            s(&input),
            "--out",
            s(&wide),
            "--top-k",
            "3",
            "-q",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    // --quiet: no progress and no informational lines, only the one result line.
    let lines: Vec<String> = stderr(&o).lines().map(String::from).collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with("3 rows in ") && lines[0].ends_with(&format!("-> {}", wide.display())),
        "{lines:?}"
    );
    let t = Table::read(&wide, None).unwrap();
    assert_eq!(
        t.column_names(),
        [
            "text",
            "n",
            "category_1",
            "category_2",
            "category_3",
            "probability_1",
            "probability_2",
            "probability_3"
        ]
    );
    assert_eq!(t.texts("text").unwrap(), ["milk", "paper towels", "apples"]);

    let long = dir.path().join("long.csv");
    let o = catbert(
        &[
            "infer",
            "--model",
            s(&tiny()),
            "--file",
            s(&input),
            "--out",
            s(&long),
            "--top-k",
            "3",
            "--long",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(&long).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "row_id,rank,category,probability");
    assert_eq!(lines.len(), 1 + 3 * 3);
    let row_rank: Vec<String> = lines[1..]
        .iter()
        .map(|l| l.split(',').take(2).collect::<Vec<_>>().join(","))
        .collect();
    assert_eq!(
        row_rank,
        ["0,0", "0,1", "0,2", "1,0", "1,1", "1,2", "2,0", "2,1", "2,2"]
    );
    // Long and wide agree on row 1's best class.
    let wide_cat = t.labels("category_1").unwrap()[1].clone().unwrap();
    assert_eq!(lines[4].split(',').nth(2).unwrap(), wide_cat);
}

#[test]
fn default_output_sits_beside_the_input_and_text_column_comes_from_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    copy_dir(&tiny(), &model);
    write(&model, "catbert.json", br#"{"text_column": "desc"}"#);
    let input = write(dir.path(), "items.tsv", b"desc\tprice\nsoap\t1\nbread\t2\n");
    let o = catbert(&["infer", "--model", s(&model), "--file", s(&input)], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let t = Table::read(&dir.path().join("items.predictions.csv"), None).unwrap();
    assert_eq!(t.rows(), 2);
    assert_eq!(t.column_names().len(), 2 + 10);
}

#[test]
fn top_k_larger_than_the_classes_is_clamped_with_a_notice() {
    let dir = tempfile::tempdir().unwrap();
    let input = write(dir.path(), "a.csv", SMALL_CSV);
    let out = dir.path().join("o.csv");
    let o = catbert(
        &[
            "infer",
            "--model",
            s(&tiny()),
            "--file",
            s(&input),
            "--out",
            s(&out),
            "--top-k",
            "9",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o)
        .contains("notice: --top-k 9 is more than the model's 7 classes; writing the top 7\n"));
    let t = Table::read(&out, None).unwrap();
    assert!(t.has_column("category_7") && !t.has_column("category_8"));
}

#[test]
fn hub_id_resolves_from_a_prefilled_cache_offline() {
    let dir = tempfile::tempdir().unwrap();
    let input = write(dir.path(), "a.csv", SMALL_CSV);
    let cache = oracle().join("hub-cache");
    for model in [
        "catbert-test/tiny-classifier",
        "catbert-test/tiny-classifier@v1",
    ] {
        let out = dir.path().join("o.csv");
        let o = catbert(
            &[
                "infer",
                "--model",
                model,
                "--file",
                s(&input),
                "--out",
                s(&out),
                "--overwrite",
            ],
            &[("HF_HUB_OFFLINE", "1"), ("HF_HUB_CACHE", s(&cache))],
        );
        assert!(o.status.success(), "{model}: {}", stderr(&o));
        assert!(stderr(&o).contains(&format!(
            "model hf://{}",
            if model.contains('@') {
                model.to_string()
            } else {
                format!("{model}@main")
            }
        )));
    }
    // Online mode answers from the same cache; the endpoint is a closed local port, so any
    // attempt to download a file that is cached would fail the run.
    let out = dir.path().join("o2.csv");
    let o = catbert(
        &[
            "infer",
            "--model",
            "catbert-test/tiny-classifier",
            "--file",
            s(&input),
            "--out",
            s(&out),
        ],
        &[
            ("HF_HOME", s(dir.path())),
            ("HF_HUB_CACHE", s(&cache)),
            ("HF_ENDPOINT", "http://127.0.0.1:9"),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));

    let o = catbert(
        &[
            "infer",
            "--model",
            "catbert-test/absent",
            "--file",
            s(&input),
        ],
        &[("HF_HUB_OFFLINE", "1"), ("HF_HUB_CACHE", s(&cache))],
    );
    assert_error(
        &o,
        2,
        &format!(
            "error: model \"catbert-test/absent\" (revision main) is not in the Hugging Face cache at {} and HF_HUB_OFFLINE=1 forbids downloading it",
            cache.display()
        ),
    );
}

#[test]
fn bad_data_files() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny();
    let run = |input: &Path, extra: &[&str]| {
        let mut args = vec!["infer", "--model", s(&model), "--file", s(input)];
        args.extend_from_slice(extra);
        catbert(&args, &[])
    };

    let missing = dir.path().join("nope.csv");
    assert_error(
        &run(&missing, &[]),
        2,
        &format!("error: {}: file not found", missing.display()),
    );

    let xlsx = write(dir.path(), "a.xlsx", b"x");
    assert_error(
        &run(&xlsx, &[]),
        2,
        &format!("error: {}: unknown file extension \"xlsx\" (expected .csv, .tsv, .jsonl, .ndjson, .json or .parquet; or pass --format)", xlsx.display()),
    );

    let no_col = write(dir.path(), "b.csv", b"name,price\nsoap,1\n");
    assert_error(
        &run(&no_col, &[]),
        2,
        &format!(
            "error: {}: no column \"text\" (columns: name, price)",
            no_col.display()
        ),
    );

    let empty = write(dir.path(), "c.csv", b"text\nsoap\n   \nbread\n");
    let out = dir.path().join("c.out.csv");
    assert_error(
        &run(&empty, &["--out", s(&out)]),
        2,
        &format!(
            "error: {}: row 2, column \"text\": empty text",
            empty.display()
        ),
    );
    assert!(!out.exists(), "nothing is written on failure");

    let null = write(
        dir.path(),
        "d.jsonl",
        b"{\"text\":\"soap\"}\n{\"text\":null}\n",
    );
    assert_error(
        &run(&null, &[]),
        2,
        &format!(
            "error: {}: row 2, column \"text\": missing (null) text",
            null.display()
        ),
    );

    let latin1 = write(dir.path(), "e.csv", b"text\nsoap\ncr\xe8me\n");
    assert_error(
        &run(&latin1, &[]),
        2,
        &format!(
            "error: {}: line 3: not valid UTF-8 (byte offset 12); re-encode the file as UTF-8",
            latin1.display()
        ),
    );

    let ok = write(dir.path(), "f.csv", SMALL_CSV);
    let o = run(&ok, &["--device", "cuda"]);
    // scripts/build-cuda.sh installs catbert-cuda beside catbert; without a driver it can't run.
    let gpu_build = Path::new(env!("CARGO_BIN_EXE_catbert")).with_file_name("catbert-cuda");
    assert_error(
        &o,
        2,
        if gpu_build.is_file() {
            "error: no usable GPU: the CUDA driver (libcuda.so.1) does not load on this machine"
        } else {
            "error: this catbert was built without CUDA support and no GPU build (catbert-cuda) is installed beside it; see scripts/build-cuda.sh"
        },
    );
    let o = run(&ok, &["--out", s(&dir.path().join("x.docx"))]);
    assert!(
        stderr(&o).starts_with("error: ") && stderr(&o).contains("unknown file extension \"docx\"")
    );
}

#[test]
fn bad_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let input = write(dir.path(), "a.csv", SMALL_CSV);
    let run = |model: &Path| catbert(&["infer", "--model", s(model), "--file", s(&input)], &[]);
    let broken = |name: &str| {
        let m = dir.path().join(name);
        copy_dir(&tiny(), &m);
        m
    };

    let m = broken("no-config");
    std::fs::remove_file(m.join("config.json")).unwrap();
    assert_error(
        &run(&m),
        2,
        &format!("error: {}: not a model folder: no config.json", m.display()),
    );

    let m = broken("no-weights");
    std::fs::remove_file(m.join("model.safetensors")).unwrap();
    assert_error(
        &run(&m),
        2,
        &format!(
            "error: {}: not a model folder: no model.safetensors",
            m.display()
        ),
    );

    let m = broken("truncated");
    let w = m.join("model.safetensors");
    let bytes = std::fs::read(&w).unwrap();
    std::fs::write(&w, &bytes[..bytes.len() / 2]).unwrap();
    let o = run(&m);
    assert_eq!(o.status.code(), Some(2));
    let prefix = format!(
        "error: {}: corrupt or truncated safetensors file: ",
        w.display()
    );
    assert!(
        stderr(&o).starts_with(&prefix) && stderr(&o).lines().count() == 1,
        "{}",
        stderr(&o)
    );

    let m = broken("garbage");
    std::fs::write(
        m.join("model.safetensors"),
        b"\x08\x00\x00\x00\x00\x00\x00\x00{not json",
    )
    .unwrap();
    assert!(stderr(&run(&m)).starts_with(&format!(
        "error: {}: corrupt or truncated safetensors file: ",
        m.join("model.safetensors").display()
    )));

    let m = broken("shapes");
    let cfg = std::fs::read_to_string(m.join("config.json"))
        .unwrap()
        .replace("\"intermediate_size\": 37", "\"intermediate_size\": 40");
    std::fs::write(m.join("config.json"), cfg).unwrap();
    assert_error(
        &run(&m),
        2,
        &format!(
            "error: {}: tensor bert.encoder.layer.0.intermediate.dense.weight has shape [37, 32], the config expects [40, 32]",
            m.join("model.safetensors").display()
        ),
    );

    let m = broken("big-vocab");
    std::fs::remove_file(m.join("tokenizer.json")).unwrap();
    let mut vocab = std::fs::read_to_string(m.join("vocab.txt"))
        .unwrap()
        .trim_end()
        .to_string();
    for i in 0..10 {
        vocab.push_str(&format!("\nextra{i}"));
    }
    std::fs::write(m.join("vocab.txt"), vocab).unwrap();
    assert_error(
        &run(&m),
        2,
        &format!(
            "error: {}: tokenizer has 30532 tokens but the model's embedding has 30522 rows: the tokenizer does not belong to this model",
            m.join("vocab.txt").display()
        ),
    );

    let o = run(&minilm());
    assert_error(
        &o,
        2,
        &format!(
            "error: {}: not a model folder: no classifier.* tensors: this is a base model, not a fine-tuned classifier (fine-tune it first with `catbert finetune`)",
            minilm().display()
        ),
    );
}

#[test]
fn labelled_rows_are_scored_and_kept_as_feedback() {
    let dir = tempfile::tempdir().unwrap();
    let input = write(
        dir.path(),
        "q.csv",
        b"text,truth\nmilk,class_1\nsoap,\nbread,class_3\ncheese,class_1\nwine,new_class\ntea,class_0\n",
    );
    let out = dir.path().join("q.out.csv");
    let o = catbert(
        &[
            "infer",
            "--model",
            s(&tiny()),
            "--file",
            s(&input),
            "--out",
            s(&out),
            "--label-col",
            "truth",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("notice: 1 labelled rows carry a class the model does not know"),
        "{}",
        stderr(&o)
    );
    let pred = Table::read(&out, None).unwrap();
    let truth = pred.labels("truth").unwrap();
    let best = pred.labels("category_1").unwrap();
    let scored: Vec<usize> = (0..6)
        .filter(|&i| truth[i].as_deref().is_some_and(|t| t.starts_with("class_")))
        .collect();
    let correct = scored.iter().filter(|&&i| truth[i] == best[i]).count();

    let metrics = read_json(&dir.path().join("q.out.metrics.json"));
    assert_eq!(metrics["metrics"]["n"], 4);
    assert_eq!(metrics["unknown_label_rows"], 1);
    assert!(
        (metrics["metrics"]["accuracy"].as_f64().unwrap() - correct as f64 / 4.0).abs() < 1e-12
    );
    let feedback = std::fs::read_to_string(dir.path().join("q.out.feedback.csv")).unwrap();
    assert_eq!(
        feedback,
        "text,truth\nmilk,class_1\nbread,class_3\ncheese,class_1\nwine,new_class\ntea,class_0\n"
    );
}
