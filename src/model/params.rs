//! Named parameters: where the model gets its tensors from, and what loading found.
//!
//! The model asks for each tensor by its transformers name and shape; the store hands back the
//! loaded tensor, or a freshly initialised one (a base model has no `classifier.*`), and keeps a
//! record so the caller can report missing, unexpected and mis-shaped tensors by name. In
//! training mode every parameter is a candle `Var`, so gradients reach all of them.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};

use candle_core::{DType, Device, Result, Tensor, Var};

use crate::rng::Rng;

/// How a tensor that the checkpoint lacks is initialised (transformers' `_init_weights`).
#[derive(Debug, Clone, Copy)]
pub enum Init {
    /// Normal distribution with mean zero.
    Normal {
        /// Standard deviation.
        std: f64,
    },
    /// All zeros, as for biases.
    Zeros,
    /// All ones, as for LayerNorm weights.
    Ones,
}

/// A tensor whose shape in the checkpoint differs from what the config implies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeIssue {
    /// The parameter's transformers name.
    pub name: String,
    /// Shape in the checkpoint.
    pub found: Vec<usize>,
    /// Shape the config implies.
    pub expected: Vec<usize>,
}

/// What loading found, by tensor name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Asked for by the model, absent from the checkpoint: initialised fresh.
    pub missing: Vec<String>,
    /// In the checkpoint, never asked for (e.g. a pre-training head).
    pub unexpected: Vec<String>,
    /// In the checkpoint with the wrong shape: initialised fresh.
    pub mismatched: Vec<ShapeIssue>,
}

/// One trainable or frozen parameter, with its transformers name.
#[derive(Debug, Clone)]
pub struct NamedParam {
    /// The transformers name, e.g. `bert.pooler.dense.weight`.
    pub name: String,
    /// The variable holding the parameter's values.
    pub var: Var,
}

/// Hands tensors to the model by name and records what happened.
pub struct ParamStore {
    loaded: HashMap<String, Tensor>,
    device: Device,
    dtype: DType,
    /// The dtype the forward pass computes in (bf16 over f32 master weights, for instance).
    compute: DType,
    trainable: bool,
    init_rng: RefCell<Rng>,
    asked: RefCell<Vec<(String, Tensor)>>,
    vars: RefCell<Vec<NamedParam>>,
    missing: RefCell<Vec<String>>,
    mismatched: RefCell<Vec<ShapeIssue>>,
}

/// Buffers transformers keeps in state dicts that are not parameters.
const IGNORED_BUFFERS: &[&str] = &["position_ids"];

/// Map a checkpoint tensor name to the `BertForSequenceClassification` name: base checkpoints
/// (`BertModel`) have bare names, and old TF-converted ones call LayerNorm's parameters
/// `gamma`/`beta`. Returns `None` for buffers that are not parameters.
pub fn canonical_name(name: &str) -> Option<String> {
    if IGNORED_BUFFERS.iter().any(|b| name.ends_with(b)) {
        return None;
    }
    let mut name = if ["embeddings.", "encoder.", "pooler."]
        .iter()
        .any(|p| name.starts_with(p))
    {
        format!("bert.{name}")
    } else {
        name.to_string()
    };
    if name.contains("LayerNorm.") {
        if let Some(stem) = name.strip_suffix(".gamma") {
            name = format!("{stem}.weight");
        } else if let Some(stem) = name.strip_suffix(".beta") {
            name = format!("{stem}.bias");
        }
    }
    Some(name)
}

impl ParamStore {
    /// `tensors` are keyed by checkpoint names; they are canonicalised here.
    /// `seed` drives the initialisation of tensors the checkpoint lacks.
    pub fn new(
        tensors: HashMap<String, Tensor>,
        device: &Device,
        dtype: DType,
        trainable: bool,
        seed: u64,
    ) -> Self {
        let loaded = tensors
            .into_iter()
            .filter_map(|(k, v)| canonical_name(&k).map(|k| (k, v)))
            .collect();
        Self {
            loaded,
            device: device.clone(),
            dtype,
            compute: dtype,
            trainable,
            init_rng: RefCell::new(Rng::new(seed)),
            asked: RefCell::new(Vec::new()),
            vars: RefCell::new(Vec::new()),
            missing: RefCell::new(Vec::new()),
            mismatched: RefCell::new(Vec::new()),
        }
    }

    /// Compute in `dtype` while parameters stay in the store's dtype (mixed precision).
    pub fn with_compute_dtype(mut self, dtype: DType) -> Self {
        self.compute = dtype;
        self
    }

    /// The dtype the forward pass computes in.
    pub fn compute_dtype(&self) -> DType {
        self.compute
    }

    /// The tensor called `name` with `shape`, loaded or initialised.
    pub fn get(&self, name: &str, shape: &[usize], init: Init) -> Result<Tensor> {
        let tensor = match self.loaded.get(name) {
            Some(t) if t.dims() == shape => t.to_device(&self.device)?.to_dtype(self.dtype)?,
            Some(t) => {
                self.mismatched.borrow_mut().push(ShapeIssue {
                    name: name.to_string(),
                    found: t.dims().to_vec(),
                    expected: shape.to_vec(),
                });
                self.init(shape, init)?
            }
            None => {
                self.missing.borrow_mut().push(name.to_string());
                self.init(shape, init)?
            }
        };
        let tensor = if self.trainable {
            let var = Var::from_tensor(&tensor)?;
            let t = var.as_tensor().clone();
            self.vars.borrow_mut().push(NamedParam {
                name: name.to_string(),
                var,
            });
            t
        } else {
            tensor
        };
        self.asked
            .borrow_mut()
            .push((name.to_string(), tensor.clone()));
        Ok(tensor)
    }

    fn init(&self, shape: &[usize], init: Init) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        let values: Vec<f32> = match init {
            Init::Zeros => vec![0.0; n],
            Init::Ones => vec![1.0; n],
            Init::Normal { std } => {
                let mut rng = self.init_rng.borrow_mut();
                (0..n).map(|_| (rng.normal() * std) as f32).collect()
            }
        };
        Tensor::from_vec(values, shape, &self.device)?.to_dtype(self.dtype)
    }

    /// Everything the model asked for, in order, plus the load report.
    pub fn finish(self) -> (ModelParams, LoadReport) {
        let asked = self.asked.into_inner();
        let asked_names: BTreeSet<&str> = asked.iter().map(|(n, _)| n.as_str()).collect();
        let mut unexpected: Vec<String> = self
            .loaded
            .keys()
            .filter(|k| !asked_names.contains(k.as_str()))
            .cloned()
            .collect();
        unexpected.sort();
        let report = LoadReport {
            missing: self.missing.into_inner(),
            unexpected,
            mismatched: self.mismatched.into_inner(),
        };
        let params = ModelParams {
            tensors: asked,
            vars: self.vars.into_inner(),
        };
        (params, report)
    }
}

/// The model's parameters by name: tensors for saving, `Var`s for the optimizer (training only).
#[derive(Debug, Clone, Default)]
pub struct ModelParams {
    /// Every tensor the model asked for, by name, in the order asked.
    pub tensors: Vec<(String, Tensor)>,
    /// The trainable variables, for the optimizer; empty unless the store was trainable.
    pub vars: Vec<NamedParam>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_names() {
        assert_eq!(
            canonical_name("embeddings.LayerNorm.gamma").as_deref(),
            Some("bert.embeddings.LayerNorm.weight")
        );
        assert_eq!(
            canonical_name("bert.encoder.layer.0.output.dense.bias").as_deref(),
            Some("bert.encoder.layer.0.output.dense.bias")
        );
        assert_eq!(
            canonical_name("classifier.weight").as_deref(),
            Some("classifier.weight")
        );
        assert_eq!(canonical_name("embeddings.position_ids"), None);
        assert_eq!(
            canonical_name("cls.predictions.bias").as_deref(),
            Some("cls.predictions.bias")
        );
    }

    #[test]
    fn reports_missing_unexpected_and_mismatched() -> Result<()> {
        let dev = Device::Cpu;
        let mut file = HashMap::new();
        file.insert(
            "pooler.dense.weight".to_string(),
            Tensor::zeros((4, 4), DType::F32, &dev)?,
        );
        file.insert(
            "pooler.dense.bias".to_string(),
            Tensor::zeros(3, DType::F32, &dev)?,
        );
        file.insert(
            "cls.seq_relationship.weight".to_string(),
            Tensor::zeros(2, DType::F32, &dev)?,
        );
        let store = ParamStore::new(file, &dev, DType::F32, true, 0);
        store.get("bert.pooler.dense.weight", &[4, 4], Init::Zeros)?;
        store.get("bert.pooler.dense.bias", &[4], Init::Zeros)?;
        let w = store.get("classifier.weight", &[2, 4], Init::Normal { std: 0.02 })?;
        assert!(w.abs()?.sum_all()?.to_scalar::<f32>()? > 0.0);
        let (params, report) = store.finish();
        assert_eq!(report.missing, vec!["classifier.weight"]);
        assert_eq!(report.unexpected, vec!["cls.seq_relationship.weight"]);
        assert_eq!(
            report.mismatched,
            vec![ShapeIssue {
                name: "bert.pooler.dense.bias".into(),
                found: vec![3],
                expected: vec![4]
            }]
        );
        assert_eq!(params.vars.len(), 3);
        Ok(())
    }
}
