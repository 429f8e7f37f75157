//! The handlers: TEI's `/predict`, `/info`, `/health`, `/metrics`, and catbert's `/v1/predict`
//! and `/v1/feedback`.

use std::collections::BTreeMap;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use super::tei::{FeedbackRequest, Inputs, PredictRequest, Prediction, V1Answer, V1Request};
use super::{ApiError, App};
use crate::serve::{top_indices, Classified, ServeError};

type Answer = Result<Response, ApiError>;

/// The body as JSON of type `T`: too large is 413, unreadable or malformed 422.
fn parse<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let bytes = body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Validation",
                "request body is larger than the payload limit".into(),
            )
        } else {
            ApiError::from(ServeError::Validation(r.body_text()))
        }
    })?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::from(ServeError::Validation(format!("invalid JSON: {e}"))))
}

/// TEI's timing headers, and the version that answered.
fn headers(out: &Classified, chars: usize, started: Instant) -> HeaderMap {
    let ms = |d: std::time::Duration| format!("{}", d.as_millis());
    let queue = out.texts.iter().map(|t| t.queue).max().unwrap_or_default();
    let inference = out
        .texts
        .iter()
        .map(|t| t.inference)
        .max()
        .unwrap_or_default();
    let mut h = HeaderMap::new();
    let mut put = |k: &'static str, v: String| {
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(k, v);
        }
    };
    put(
        "x-compute-type",
        out.model.predictor.device_description().to_string(),
    );
    put("x-compute-characters", chars.to_string());
    put("x-compute-tokens", out.tokens.to_string());
    put("x-total-time", ms(started.elapsed()));
    put("x-tokenization-time", ms(out.tokenization));
    put("x-queue-time", ms(queue));
    put("x-inference-time", ms(inference));
    put("x-model-version", out.model.version_label());
    put("x-model-reference", out.model.reference.clone());
    h
}

fn check_top_k(top_k: Option<usize>) -> Result<(), ApiError> {
    if top_k == Some(0) {
        return Err(ServeError::Validation("`top_k` must be at least 1".into()).into());
    }
    Ok(())
}

/// `POST /predict`, as TEI.
pub async fn predict(State(app): State<App>, body: Result<Bytes, BytesRejection>) -> Answer {
    let started = Instant::now();
    let req: PredictRequest = parse(body)?;
    let _permit = app.service.admit()?;
    let inputs = Inputs::parse(&req.inputs)?;
    if let Some(d) = &req.truncation_direction {
        if !d.eq_ignore_ascii_case("right") {
            return Err(ServeError::Validation(format!(
                "`truncation_direction` {d:?} is not supported (only \"right\")"
            ))
            .into());
        }
    }
    check_top_k(req.top_k)?;
    let single = matches!(inputs, Inputs::Single(_));
    let texts = inputs.texts();
    let chars = texts.iter().map(|t| t.chars().count()).sum();
    let out = app.service.classify(&texts, req.truncate).await?;
    let labels = out.model.predictor.labels();
    let k = req.top_k.unwrap_or(labels.len());
    let mut answers: Vec<Vec<Prediction>> = (out.texts.iter().zip(&out.probs))
        .map(|(t, probs)| {
            let scores = if req.raw_scores { &t.logits } else { probs };
            // Ranked by probability (the logits' order), ties to the lower class.
            top_indices(probs, k)
                .into_iter()
                .map(|c| Prediction {
                    score: scores[c],
                    label: labels[c].clone(),
                })
                .collect()
        })
        .collect();
    let h = headers(&out, chars, started);
    let body = if single {
        json!(answers.pop())
    } else {
        json!(answers)
    };
    Ok((h, Json(body)).into_response())
}

/// `POST /v1/predict`: the k best labels and probabilities per text, as `catbert infer`.
pub async fn v1_predict(State(app): State<App>, body: Result<Bytes, BytesRejection>) -> Answer {
    let started = Instant::now();
    let req: V1Request = parse(body)?;
    let _permit = app.service.admit()?;
    check_top_k(req.top_k)?;
    let chars = req.texts.iter().map(|t| t.chars().count()).sum();
    let out = app.service.classify(&req.texts, req.truncate).await?;
    let labels = out.model.predictor.labels();
    let k = req.top_k.unwrap_or(5);
    let results: Vec<V1Answer> = (out.probs.iter())
        .map(|probs| {
            let best = top_indices(probs, k);
            V1Answer {
                labels: best.iter().map(|&c| labels[c].clone()).collect(),
                probabilities: best.iter().map(|&c| probs[c]).collect(),
            }
        })
        .collect();
    let h = headers(&out, chars, started);
    let body = json!({
        "model": out.model.reference,
        "model_version": out.model.version_label(),
        "results": results,
    });
    Ok((h, Json(body)).into_response())
}

/// `POST /v1/feedback`: verified labels, stored durably.
pub async fn v1_feedback(State(app): State<App>, body: Result<Bytes, BytesRejection>) -> Answer {
    let req: FeedbackRequest = parse(body)?;
    let _permit = app.service.admit()?;
    let items: Vec<(String, String)> = req.items.into_iter().map(|i| (i.text, i.label)).collect();
    let service = app.service.clone();
    // The write ends in fsync: off the async workers.
    let stored = tokio::task::spawn_blocking(move || service.feedback(&items))
        .await
        .map_err(|e| ApiError::from(ServeError::Unhealthy(e.to_string())))??;
    Ok(Json(json!({ "stored": stored })).into_response())
}

/// `GET /info`: TEI's fields, plus the model's version, reference and origin.
pub async fn info(State(app): State<App>) -> Response {
    let model = app.service.model();
    let s = app.service.settings();
    let labels = model.predictor.labels();
    let id2label: BTreeMap<String, &String> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| (i.to_string(), l))
        .collect();
    let label2id: BTreeMap<&String, usize> =
        labels.iter().enumerate().map(|(i, l)| (l, i)).collect();
    let dtype = match (model.predictor.quantize(), model.predictor.precision()) {
        (crate::model::Quantize::Int8, _) => "int8",
        (_, crate::device::Precision::Fp32) => "float32",
        (_, crate::device::Precision::Bf16) => "bfloat16",
    };
    Json(json!({
        "model_id": model.reference,
        "model_sha": Value::Null,
        "model_dtype": dtype,
        "model_type": { "classifier": { "id2label": id2label, "label2id": label2id } },
        "max_concurrent_requests": s.max_concurrent_requests,
        "max_input_length": model.predictor.max_len(),
        "max_batch_tokens": s.max_batch_tokens,
        "max_batch_requests": s.max_batch_requests,
        "max_client_batch_size": s.max_client_batch_size,
        "auto_truncate": s.auto_truncate,
        "tokenization_workers": app.http_workers,
        "version": env!("CARGO_PKG_VERSION"),
        "sha": Value::Null,
        "docker_label": Value::Null,
        "model_version": model.version,
        "model_origin": model.predictor.origin(),
        "model_loaded_at": crate::track::store::format_time(model.loaded_at),
        "device": model.predictor.device_description(),
    }))
    .into_response()
}

/// `GET /health`: 200 while a model is loaded and the inference thread answers.
pub async fn health(State(app): State<App>) -> Response {
    let _ = app.service.model();
    StatusCode::OK.into_response()
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(app): State<App>) -> Response {
    app.service.update_drift();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        app.service.metrics().render(),
    )
        .into_response()
}
