//! catbert: fine-tune BERT-family text classifiers and run batched top-k inference, on Candle.
//!
//! The two things an application does are one call each:
//!
//! - **predict**: [`infer::Predictor`] loads a fine-tuned classifier (a folder or a Hub id) and
//!   returns the top-k `(label, probability)` pairs of any texts; it is `Send + Sync`.
//! - **fine-tune**: [`train::Finetune`] takes a [`train::FinetuneConfig`] (its `Default` holds
//!   every default), prepares tables ([`data::Table`]) into training data and fits, reporting to
//!   [`train::Callback`]s; the best epoch is kept as a Hugging Face checkpoint.
//!
//! Errors are [`Error`]s with an [`ErrorKind`] that front ends map to exit codes or HTTP
//! statuses. Call [`runtime::init`] once at process start to size the math thread pool.
//!
//! - **serve**: [`serve::Service`] answers classification requests with dynamic batching and
//!   hot model swaps; [`server`] puts it behind HTTP (TEI's API and catbert's `/v1`).
//!
//! Layers, arrows one way: `cli`, `server` (front ends) → `infer`, `train`, `track`, `serve`
//! (application) → `checkpoint`, `model`, `data`, `metrics`, `tokenize` → `kernels`,
//! `device`, `runtime`. Only front ends print.
#![warn(missing_docs)]

pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod data;
pub mod device;
pub mod error;
pub mod feedback;
pub mod fsutil;
pub mod infer;
pub mod kernels;
pub mod metrics;
pub mod model;
pub mod monitor;
pub mod report;
pub mod rng;
pub mod runtime;
pub mod serve;
pub mod server;
pub mod tokenize;
pub mod track;
pub mod train;

pub use error::{Error, ErrorKind, Result};
