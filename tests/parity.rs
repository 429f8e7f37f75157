//! Our numbers against Python transformers' (artefacts from scripts/make-oracle.sh).

mod common;

use candle_core::{DType, Device};
use catbert::checkpoint::Checkpoint;
use catbert::data::batch::TokenBatch;
use catbert::infer::{predict_probs, top_k, Quiet};
use catbert::model::{BertClassifier, Mode, ParamStore};
use common::*;

const TOL: f32 = 1e-5;

fn logits_of(dir: &std::path::Path) {
    let expected = read_json(&dir.join("expected.json"));
    let ckpt = Checkpoint::open(dir).unwrap();
    let loaded = ckpt.load_classifier(&Device::Cpu, DType::F32).unwrap();
    assert_eq!(loaded.labels.len(), 7);
    let texts = strings(&expected["texts"]);
    let want_ids = ints2(&expected["input_ids"]);
    let encoder = ckpt.text_encoder(128).unwrap();
    assert_eq!(
        encoder.max_len(),
        64,
        "truncation is capped by max_position_embeddings"
    );
    assert_eq!(encoder.encode_all(&texts).unwrap(), want_ids);

    let rows: Vec<&[u32]> = want_ids.iter().map(Vec::as_slice).collect();
    let logits = loaded
        .model
        .forward(&TokenBatch::new(&rows, 0), &mut Mode::Eval)
        .unwrap();
    let got = logits.to_vec2::<f32>().unwrap();
    let diff = max_abs_diff(&got, &floats2(&expected["logits"]));
    eprintln!("{}: max |logit diff| = {diff:e}", dir.display());
    assert!(diff < TOL, "max |logit diff| {diff}");
}

#[test]
fn tiny_random_classifier_logits_match_transformers() {
    logits_of(&oracle().join("tiny"));
}

#[test]
fn tiny_gelu_new_classifier_logits_match_transformers() {
    logits_of(&oracle().join("tiny-gelu-new"));
}

fn minilm_top5(dir: &std::path::Path) {
    let expected = read_json(&oracle().join("minilm-cls/expected.json"));
    let ckpt = Checkpoint::open(dir).unwrap();
    let loaded = ckpt.load_classifier(&Device::Cpu, DType::F32).unwrap();
    assert_eq!(loaded.labels[4], "Specialty & Miscellaneous");
    let encoder = ckpt.text_encoder(128).unwrap();
    let texts = strings(&expected["texts"]);
    let encoded = encoder.encode_all(&texts).unwrap();
    assert_eq!(encoded, ints2(&expected["input_ids"]));
    let probs = predict_probs(&loaded.model, &encoded, encoder.pad_id(), 64, &Quiet).unwrap();
    let top = top_k(&probs, 5, 5);
    let want_top = ints2(&expected["top5"]);
    let want_probs = floats2(&expected["probs"]);
    let mut max_diff = 0f32;
    for r in 0..texts.len() {
        let got: Vec<(u32, f32)> = top.row(r).collect();
        let classes: Vec<u32> = got.iter().map(|g| g.0).collect();
        assert_eq!(classes, want_top[r], "row {r}: {:?}", texts[r]);
        for (c, p) in got {
            max_diff = max_diff.max((p - want_probs[r][c as usize]).abs());
        }
    }
    eprintln!(
        "{}: max |prob diff| over 200 rows = {max_diff:e}",
        dir.display()
    );
    assert!(max_diff < TOL, "max |prob diff| {max_diff}");
}

#[test]
fn minilm_classifier_top5_matches_transformers() {
    minilm_top5(&oracle().join("minilm-cls"));
}

#[test]
fn minilm_classifier_with_vocab_txt_only_matches_transformers() {
    let dir = oracle().join("minilm-cls-vocab");
    assert!(!dir.join("tokenizer.json").exists());
    minilm_top5(&dir);
}

#[test]
fn tokenizer_matches_python_on_odd_text() {
    let cases = read_json(&oracle().join("tokenizer_cases.json"));
    let from_json = Checkpoint::open(&minilm()).unwrap();
    let vocab_dir = oracle().join("minilm-cls-vocab");
    let from_vocab = Checkpoint::open(&vocab_dir).unwrap();
    let mut checked = 0;
    for case in cases["cases"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let max_len = case["max_length"].as_u64().unwrap() as usize;
        let want: Vec<u32> = serde_json::from_value(case["ids"].clone()).unwrap();
        let want_vocab: Vec<u32> = serde_json::from_value(case["ids_vocab"].clone()).unwrap();
        let got = from_json
            .text_encoder(max_len)
            .unwrap()
            .encode_all(&[text])
            .unwrap();
        assert_eq!(got[0], want, "tokenizer.json, case {}", case["name"]);
        let got = from_vocab
            .text_encoder(max_len)
            .unwrap()
            .encode_all(&[text])
            .unwrap();
        assert_eq!(got[0], want_vocab, "vocab.txt, case {}", case["name"]);
        checked += 1;
    }
    assert!(checked >= 40);
}

#[test]
fn base_model_with_bare_names_loads_and_matches_encoder_and_pooler() {
    let expected = read_json(&oracle().join("base-minilm-expected.json"));
    let ckpt = Checkpoint::open(&minilm()).unwrap();
    let tensors = ckpt.read_tensors().unwrap();
    assert!(tensors.contains_key("embeddings.word_embeddings.weight"));
    let store = ParamStore::new(tensors, &Device::Cpu, DType::F32, false, 42);
    let model = BertClassifier::load(&store, &ckpt.config, 3).unwrap();
    let (_, report) = store.finish();
    assert_eq!(report.missing, vec!["classifier.weight", "classifier.bias"]);
    assert!(report.unexpected.is_empty(), "{:?}", report.unexpected);
    assert!(report.mismatched.is_empty());

    let ids = ints2(&expected["input_ids"]);
    let rows: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
    let (cls, pooled) = model
        .encode(&TokenBatch::new(&rows, 0), &mut Mode::Eval)
        .unwrap();
    let cls = cls.to_vec2::<f32>().unwrap();
    let d_cls = max_abs_diff(&cls, &floats2(&expected["cls_hidden"]));
    let d_pool = max_abs_diff(
        &pooled.to_vec2::<f32>().unwrap(),
        &floats2(&expected["pooler_output"]),
    );
    eprintln!("base MiniLM: max |CLS diff| {d_cls:e}, max |pooler diff| {d_pool:e}");
    assert!(d_cls < TOL && d_pool < TOL);
}
