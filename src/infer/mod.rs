//! Prediction as a library: [`Predictor`] loads a fine-tuned classifier once and predicts the
//! top-k classes of any number of texts; [`output`] lays predictions out as tables and
//! [`scoring`] scores rows that carry a verified label.

pub mod output;
mod predictor;
pub mod review;
pub mod scoring;
pub mod stream;

pub use crate::model::batched::{
    batch_top_k, predict_probs, predict_top_k, top_k, top_k_indices, Progress, Quiet, TopK,
};
pub use predictor::{PredictOptions, Predictor};
