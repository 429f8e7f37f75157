//! BERT encoder, pooler and sequence-classification head with transformers' tensor names.
//!
//! One forward pass serves inference and training. `Mode::Eval` uses candle's fused
//! LayerNorm kernel (fast, but it records no backward op); `Mode::Train` uses differentiable
//! fused ops and applies dropout from a seeded generator so runs resume bit-for-bit.
//!
//! The forward pass takes a [`TokenBatch`]: texts back to back with their cumulative lengths.
//! On the CPU in f32 it runs *packed*, as one (tokens, hidden) matrix with attention per text
//! (`kernels::varlen_attention`), so padding costs no FLOPs whatever the length mix of a batch.
//! Elsewhere (GPU, bf16) it runs on the batch's padded view with an additive attention mask.

use candle_core::{DType, Module, Result, Tensor};

use crate::config::{BertConfig, HiddenAct};
use crate::data::batch::TokenBatch;
use crate::model::params::{Init, ParamStore};
use crate::rng::Rng;

/// Forward-pass mode: evaluation, or training with dropout drawn from `rng`.
pub enum Mode<'a> {
    /// No dropout; LayerNorm through candle's fused (non-differentiable) kernel.
    Eval,
    /// Dropout on, its masks drawn from `rng`; differentiable ops throughout.
    Train {
        /// The seeded generator of the dropout masks (saved with the run state).
        rng: &'a mut Rng,
    },
}

impl Mode<'_> {
    fn is_train(&self) -> bool {
        matches!(self, Mode::Train { .. })
    }

    /// Inverted-dropout factors (0 or 1/keep) for `n` values, or `None` in evaluation or
    /// when `p` is 0.
    fn dropout_factors(&mut self, n: usize, p: f64) -> Option<Vec<f32>> {
        let Mode::Train { rng } = self else {
            return None;
        };
        if p <= 0.0 {
            return None;
        }
        let keep = 1.0 - p as f32;
        let scale = 1.0 / keep;
        Some(
            (0..n)
                .map(|_| if rng.next_f32() < keep { scale } else { 0.0 })
                .collect(),
        )
    }

    /// Inverted dropout with probability `p` (identity in evaluation).
    fn dropout(&mut self, x: &Tensor, p: f64) -> Result<Tensor> {
        match self.dropout_factors(x.elem_count(), p) {
            None => Ok(x.clone()),
            Some(mask) => {
                let mask = Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?;
                x.mul(&mask)
            }
        }
    }

    fn softmax_last_dim(&self, x: &Tensor) -> Result<Tensor> {
        if self.is_train() {
            crate::kernels::softmax(x)
        } else {
            candle_nn::ops::softmax_last_dim(x)
        }
    }
}

/// `t` in `dtype` (a no-op when it already is): master weights in f32, compute in bf16.
fn cast(t: &Tensor, dtype: DType) -> Result<Tensor> {
    if t.dtype() == dtype {
        Ok(t.clone())
    } else {
        t.to_dtype(dtype)
    }
}

/// `y = x Wᵀ + b` over the last dimension; inputs are flattened to 2-D so one GEMM runs.
pub struct Linear {
    pub(super) weight: Tensor,
    pub(super) bias: Tensor,
    compute: DType,
}

impl Linear {
    fn load(
        store: &ParamStore,
        prefix: &str,
        in_dim: usize,
        out_dim: usize,
        std: f64,
    ) -> Result<Self> {
        Ok(Self {
            weight: store.get(
                &format!("{prefix}.weight"),
                &[out_dim, in_dim],
                Init::Normal { std },
            )?,
            bias: store.get(&format!("{prefix}.bias"), &[out_dim], Init::Zeros)?,
            compute: store.compute_dtype(),
        })
    }
}

/// Up to this many rows (one short text) a CPU linear layer computes (W·xᵀ)ᵀ instead of
/// x·Wᵀ: 8.8 → 7.6 ms for one 8-token text through MiniLM; slower from about 16 rows.
const SMALL_ROWS: usize = 12;

impl Linear {
    /// `x Wᵀ` without the bias, for callers that fuse the bias into the next op.
    fn forward_no_bias(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let in_dim = dims[dims.len() - 1];
        let rows = x.elem_count() / in_dim;
        let x = x.reshape((rows, in_dim))?;
        let w = cast(&self.weight, self.compute)?;
        // Few rows (one short text): gemm would repack all of Wᵀ for a handful of rows, which
        // cost more than the product; W·xᵀ packs only x.
        let y = if rows <= SMALL_ROWS && x.device().is_cpu() {
            w.matmul(&x.t()?)?.t()?.contiguous()?
        } else {
            x.matmul(&w.t()?)?
        };
        let mut out_dims = dims;
        *out_dims.last_mut().expect("non-empty") = self.weight.dim(0)?;
        y.reshape(out_dims)
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        crate::kernels::bias_add(&self.forward_no_bias(x)?, &cast(&self.bias, self.compute)?)
    }
}

pub struct LayerNorm {
    pub(super) weight: Tensor,
    pub(super) bias: Tensor,
    pub(super) eps: f64,
    compute: DType,
}

impl LayerNorm {
    fn load(store: &ParamStore, prefix: &str, dim: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: store.get(&format!("{prefix}.weight"), &[dim], Init::Ones)?,
            bias: store.get(&format!("{prefix}.bias"), &[dim], Init::Zeros)?,
            eps,
            compute: store.compute_dtype(),
        })
    }

    fn forward(&self, x: &Tensor, mode: &Mode) -> Result<Tensor> {
        let (weight, bias) = (
            cast(&self.weight, self.compute)?,
            cast(&self.bias, self.compute)?,
        );
        if !mode.is_train() {
            return candle_nn::ops::layer_norm(x, &weight, &bias, self.eps as f32);
        }
        // Differentiable (candle's fused kernel above records no backward op).
        crate::kernels::layer_norm(x, &weight, &bias, self.eps)
    }
}

pub(super) struct Embeddings {
    pub(super) word: Tensor,
    pub(super) position: Tensor,
    pub(super) token_type: Tensor,
    pub(super) norm: LayerNorm,
    dropout: f64,
    /// The word table's gradient kept across training steps, when turned on.
    pub(super) grad: super::word_grad::WordGrad,
}

impl Embeddings {
    fn load(store: &ParamStore, c: &BertConfig, std: f64) -> Result<Self> {
        let p = "bert.embeddings";
        let normal = Init::Normal { std };
        Ok(Self {
            word: store.get(
                &format!("{p}.word_embeddings.weight"),
                &[c.vocab_size, c.hidden_size],
                normal,
            )?,
            position: store.get(
                &format!("{p}.position_embeddings.weight"),
                &[c.max_position_embeddings, c.hidden_size],
                normal,
            )?,
            token_type: store.get(
                &format!("{p}.token_type_embeddings.weight"),
                &[c.type_vocab_size, c.hidden_size],
                normal,
            )?,
            norm: LayerNorm::load(
                store,
                &format!("{p}.LayerNorm"),
                c.hidden_size,
                c.layer_norm_eps,
            )?,
            dropout: c.hidden_dropout_prob,
            grad: Default::default(),
        })
    }

    /// Single-segment input: token type 0 for every token, as transformers does when no
    /// `token_type_ids` are passed. `ids` and `positions` are u32 of the same shape; the result
    /// has that shape plus `hidden`.
    fn forward(&self, ids: &Tensor, positions: &Tensor, mode: &mut Mode) -> Result<Tensor> {
        let hidden = self.word.dim(1)?;
        let mut shape = ids.dims().to_vec();
        shape.push(hidden);
        let words = self
            .grad
            .lookup(&self.word, &ids.flatten_all()?, mode.is_train())?;
        let places = self.position.index_select(&positions.flatten_all()?, 0)?;
        let compute = self.norm.compute;
        let x = (cast(&words, compute)? + cast(&places, compute)?)?
            .broadcast_add(&cast(&self.token_type.narrow(0, 0, 1)?, compute)?)?
            .reshape(shape)?;
        let x = self.norm.forward(&x, mode)?;
        mode.dropout(&x, self.dropout)
    }
}

/// How a batch's tokens are laid out for attention.
enum Batch {
    /// (batch, len, hidden), every row padded to the longest; `mask_bias` (batch, 1, 1, len) is
    /// 0 for tokens and a large negative for padding.
    Padded { mask_bias: Tensor },
    /// (tokens, hidden), sequences back to back without padding; sequence `s` is rows
    /// `starts[s]..starts[s + 1]` (see `kernels::varlen_attention`).
    Packed { starts: Vec<usize> },
}

pub(super) struct Layer {
    pub(super) query: Linear,
    pub(super) key: Linear,
    pub(super) value: Linear,
    pub(super) attn_out: Linear,
    pub(super) attn_norm: LayerNorm,
    pub(super) intermediate: Linear,
    pub(super) output: Linear,
    pub(super) out_norm: LayerNorm,
    pub(super) heads: usize,
    pub(super) act: HiddenAct,
    hidden_dropout: f64,
    attn_dropout: f64,
}

impl Layer {
    fn load(store: &ParamStore, c: &BertConfig, i: usize, std: f64) -> Result<Self> {
        let p = format!("bert.encoder.layer.{i}");
        let h = c.hidden_size;
        let eps = c.layer_norm_eps;
        Ok(Self {
            query: Linear::load(store, &format!("{p}.attention.self.query"), h, h, std)?,
            key: Linear::load(store, &format!("{p}.attention.self.key"), h, h, std)?,
            value: Linear::load(store, &format!("{p}.attention.self.value"), h, h, std)?,
            attn_out: Linear::load(store, &format!("{p}.attention.output.dense"), h, h, std)?,
            attn_norm: LayerNorm::load(store, &format!("{p}.attention.output.LayerNorm"), h, eps)?,
            intermediate: Linear::load(
                store,
                &format!("{p}.intermediate.dense"),
                h,
                c.intermediate_size,
                std,
            )?,
            output: Linear::load(
                store,
                &format!("{p}.output.dense"),
                c.intermediate_size,
                h,
                std,
            )?,
            out_norm: LayerNorm::load(store, &format!("{p}.output.LayerNorm"), h, eps)?,
            heads: c.num_attention_heads,
            act: c.hidden_act,
            hidden_dropout: c.hidden_dropout_prob,
            attn_dropout: c.attention_probs_dropout_prob,
        })
    }

    /// `x` is (batch, len, hidden) or (tokens, hidden) as `batch` says.
    fn forward(&self, x: &Tensor, batch: &Batch, mode: &mut Mode) -> Result<Tensor> {
        let (q, k, v) = (
            self.query.forward(x)?,
            self.key.forward(x)?,
            self.value.forward(x)?,
        );
        let context = match batch {
            Batch::Packed { starts } => {
                let n = crate::kernels::varlen_attention_keep_len(self.heads, starts);
                let keep = mode.dropout_factors(n, self.attn_dropout);
                crate::kernels::varlen_attention(&q, &k, &v, starts, self.heads, keep)?
            }
            Batch::Padded { mask_bias } => {
                let (rows, len, hidden) = x.dims3()?;
                let head_dim = hidden / self.heads;
                let split = |t: Tensor| -> Result<Tensor> {
                    t.reshape((rows, len, self.heads, head_dim))?
                        .transpose(1, 2)?
                        .contiguous()
                };
                let (q, k, v) = (split(q)?, split(k)?, split(v)?);
                let scores = (q.matmul(&k.t()?)? * (1.0 / (head_dim as f64).sqrt()))?;
                let scores = scores.broadcast_add(mask_bias)?;
                let probs = mode.softmax_last_dim(&scores)?;
                let probs = mode.dropout(&probs, self.attn_dropout)?;
                probs
                    .matmul(&v)?
                    .transpose(1, 2)?
                    .reshape((rows, len, hidden))?
            }
        };
        let attn = mode.dropout(&self.attn_out.forward(&context)?, self.hidden_dropout)?;
        let x = self.attn_norm.forward(&(attn + x)?, mode)?;

        let inner = match self.act {
            // Bias and GELU in one fused pass (kernels::bias_gelu).
            HiddenAct::Gelu => crate::kernels::bias_gelu(
                &self.intermediate.forward_no_bias(&x)?,
                &cast(&self.intermediate.bias, self.intermediate.compute)?,
            )?,
            HiddenAct::GeluNew => self.intermediate.forward(&x)?.gelu()?,
            HiddenAct::Relu => self.intermediate.forward(&x)?.relu()?,
        };
        let out = mode.dropout(&self.output.forward(&inner)?, self.hidden_dropout)?;
        self.out_norm.forward(&(out + x)?, mode)
    }
}

/// `BertForSequenceClassification`: encoder, pooler (tanh of a dense layer on `[CLS]`),
/// dropout, and a linear classifier.
pub struct BertClassifier {
    pub(super) embeddings: Embeddings,
    pub(super) layers: Vec<Layer>,
    pub(super) pooler: Linear,
    pub(super) classifier: Linear,
    classifier_dropout: f64,
    num_labels: usize,
    /// Pack right-padded batches into unpadded sequences where the kernels allow it.
    packing: bool,
    /// The packed CPU forward pass for evaluation, once prepared.
    engine: Option<super::cpu_engine::CpuEngine>,
}

impl BertClassifier {
    /// Build the model from `store`; tensors the store lacks are initialised as transformers
    /// would (normal with `initializer_range`, zero biases, unit LayerNorm weights).
    pub fn load(store: &ParamStore, config: &BertConfig, num_labels: usize) -> Result<Self> {
        let std = config.initializer_range.unwrap_or(0.02);
        let embeddings = Embeddings::load(store, config, std)?;
        let layers = (0..config.num_hidden_layers)
            .map(|i| Layer::load(store, config, i, std))
            .collect::<Result<Vec<_>>>()?;
        let h = config.hidden_size;
        let pooler = Linear::load(store, "bert.pooler.dense", h, h, std)?;
        let classifier = Linear::load(store, "classifier", h, num_labels, std)?;
        Ok(Self {
            embeddings,
            layers,
            pooler,
            classifier,
            classifier_dropout: config.classifier_dropout(),
            num_labels,
            packing: true,
            engine: None,
        })
    }

    /// Whether the weights live in host memory (the CPU backend).
    pub fn on_cpu(&self) -> bool {
        self.embeddings.word.device().is_cpu()
    }

    /// Number of classes the classification head outputs.
    pub fn num_labels(&self) -> usize {
        self.num_labels
    }

    /// Whether batches may run packed (the default, where supported): padding costs no FLOPs.
    /// `false` forces the padded matmul path everywhere, for comparisons.
    pub fn set_packing(&mut self, on: bool) {
        self.packing = on;
    }

    /// Prepare the packed CPU engine for evaluation forward passes (weights packed once, Q/K/V
    /// as one product, no allocation per batch); in f32 its results equal candle's forward
    /// pass within float rounding; `Quantize::Int8` trades a little accuracy for speed.
    /// With int8, rows whose top-1 probability leads the runner-up by less than `recheck` are
    /// computed again in f32 (0: never). Returns why it cannot run, if it cannot (see
    /// [`Self::cpu_engine_unavailable`]). Weights changed later (training) are not seen until
    /// it is prepared again.
    pub fn prepare_cpu_inference(
        &mut self,
        quantize: super::Quantize,
        recheck: f32,
    ) -> Result<Option<&'static str>> {
        self.engine = None;
        if let Some(why) = self.cpu_engine_unavailable() {
            return Ok(Some(why));
        }
        self.engine = Some(super::cpu_engine::CpuEngine::new(self, quantize, recheck)?);
        Ok(None)
    }

    /// Rows the int8 engine has computed again in f32 (see [`Self::prepare_cpu_inference`]).
    pub fn int8_rechecked_rows(&self) -> usize {
        self.engine.as_ref().map_or(0, |e| e.rechecked_rows())
    }

    /// Why the CPU engine cannot run this model: it needs the CPU, f32 compute, packing on, and
    /// `CATBERT_CPU_ENGINE` not set to 0.
    fn cpu_engine_unavailable(&self) -> Option<&'static str> {
        if std::env::var("CATBERT_CPU_ENGINE").is_ok_and(|v| v == "0") {
            Some("CATBERT_CPU_ENGINE=0")
        } else if !self.on_cpu() {
            Some("not on the CPU")
        } else if self.embeddings.norm.compute != DType::F32 {
            Some("not fp32")
        } else if !self.packing {
            Some("packing off")
        } else {
            None
        }
    }

    /// Whether `batch` can run packed (no padding): packing on, f32 compute, a device with
    /// the varlen attention kernel, and no empty text.
    fn runs_packed(&self, batch: &TokenBatch) -> bool {
        self.packing
            && self.embeddings.norm.compute == DType::F32
            && crate::kernels::varlen_attention_supported(&self.embeddings.word)
            && batch.no_empty_rows()
    }

    /// The encoder's `[CLS]` hidden state and the pooled vector, both (batch, hidden).
    pub fn encode(&self, batch: &TokenBatch, mode: &mut Mode) -> Result<(Tensor, Tensor)> {
        let dtype = self.embeddings.norm.compute;
        let rows = batch.rows();
        let dev = self.embeddings.word.device().clone();
        let dev = &dev;
        let (mut x, layout) = if self.runs_packed(batch) {
            let total = batch.tokens();
            let x = self.embeddings.forward(
                &Tensor::from_slice(batch.ids(), total, dev)?,
                &Tensor::from_vec(batch.positions(), total, dev)?,
                mode,
            )?;
            let starts = batch.starts().to_vec();
            (x, Batch::Packed { starts })
        } else {
            let (input_ids, attention_mask) = batch.padded(dev)?;
            let len = batch.max_len();
            // 0 where attended, the dtype's most negative value where padded
            // (transformers' rule).
            let min = match dtype {
                DType::BF16 => -3.389_531_4e38,
                DType::F16 => -65504.0,
                _ => f32::MIN as f64,
            };
            let mask_bias = ((attention_mask.to_dtype(DType::F32)?.affine(-1.0, 1.0)? * min)?)
                .to_dtype(dtype)?
                .reshape((rows, 1, 1, len))?;
            let positions = Tensor::arange(0u32, len as u32, dev)?
                .unsqueeze(0)?
                .broadcast_as((rows, len))?
                .contiguous()?;
            let x = self.embeddings.forward(&input_ids, &positions, mode)?;
            (x, Batch::Padded { mask_bias })
        };
        for layer in &self.layers {
            x = layer.forward(&x, &layout, mode)?;
        }
        let cls = match &layout {
            Batch::Packed { starts } => {
                let firsts: Vec<u32> = starts[..rows].iter().map(|&s| s as u32).collect();
                x.index_select(&Tensor::from_vec(firsts, rows, dev)?, 0)?
            }
            Batch::Padded { .. } => x.narrow(1, 0, 1)?.squeeze(1)?,
        };
        let pooled = self.pooler.forward(&cls)?.tanh()?;
        Ok((cls, pooled))
    }

    /// Class logits (batch, num_labels) on the model's device.
    pub fn forward(&self, batch: &TokenBatch, mode: &mut Mode) -> Result<Tensor> {
        if let (Mode::Eval, Some(engine)) = (&*mode, &self.engine) {
            if self.packing && batch.no_empty_rows() {
                let logits = engine.logits(batch, true)?;
                let dev = self.embeddings.word.device();
                return Tensor::from_vec(logits, (batch.rows(), self.num_labels), dev);
            }
        }
        let (_, pooled) = self.encode(batch, mode)?;
        let pooled = mode.dropout(&pooled, self.classifier_dropout)?;
        self.classifier.forward(&pooled)
    }
}
