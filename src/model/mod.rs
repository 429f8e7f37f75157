//! The BERT sequence classifier. Model code knows tensors and names, never files or flags.

pub mod batched;
mod bert;
mod cpu_engine;
pub mod params;
mod word_grad;

pub use bert::{BertClassifier, Mode};
pub use cpu_engine::{Quantize, INT8_RECHECK};
pub use params::{
    canonical_name, Init, LoadReport, ModelParams, NamedParam, ParamStore, ShapeIssue,
};
