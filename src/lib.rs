//! catbert: fine-tune BERT-family text classifiers and run batched top-k inference, on Candle.
//!
//! Dependencies flow one way: `cli` → (`infer`, `checkpoint`, `data`, `device`) → `model` →
//! `config`. Only `cli` prints.

pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod data;
pub mod device;
pub mod error;
pub mod fsutil;
pub mod infer;
pub mod kernels;
pub mod metrics;
pub mod model;
pub mod rng;
pub mod tokenize;
pub mod train;

pub use error::{Error, Result};
