//! BERT encoder, pooler and sequence-classification head with transformers' tensor names.
//!
//! One forward pass serves inference and training. `Dropout::Eval` uses candle's fused
//! softmax / LayerNorm kernels (fast, but they record no backward op); `Dropout::Train` uses
//! differentiable compositions and applies dropout from a seeded generator so runs resume
//! bit-for-bit.

use candle_core::{DType, Module, Result, Tensor};

use crate::config::{BertConfig, HiddenAct};
use crate::model::params::{Init, ParamStore};
use crate::rng::Rng;

/// Forward-pass mode: evaluation, or training with dropout drawn from `rng`.
pub enum Mode<'a> {
    Eval,
    Train { rng: &'a mut Rng },
}

impl Mode<'_> {
    fn is_train(&self) -> bool {
        matches!(self, Mode::Train { .. })
    }

    /// Inverted dropout with probability `p` (identity in evaluation).
    fn dropout(&mut self, x: &Tensor, p: f64) -> Result<Tensor> {
        let Mode::Train { rng } = self else {
            return Ok(x.clone());
        };
        if p <= 0.0 {
            return Ok(x.clone());
        }
        let keep = 1.0 - p as f32;
        let scale = 1.0 / keep;
        let mask: Vec<f32> = (0..x.elem_count())
            .map(|_| if rng.next_f32() < keep { scale } else { 0.0 })
            .collect();
        let mask = Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?;
        x.mul(&mask)
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
    weight: Tensor,
    bias: Tensor,
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

impl Linear {
    /// `x Wᵀ` without the bias, for callers that fuse the bias into the next op.
    fn forward_no_bias(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let in_dim = dims[dims.len() - 1];
        let rows = x.elem_count() / in_dim;
        let y = x
            .reshape((rows, in_dim))?
            .matmul(&cast(&self.weight, self.compute)?.t()?)?;
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
    weight: Tensor,
    bias: Tensor,
    eps: f64,
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

struct Embeddings {
    word: Tensor,
    position: Tensor,
    token_type: Tensor,
    norm: LayerNorm,
    dropout: f64,
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
        })
    }

    /// Single-segment input: positions 0..L and token type 0 for every token, as transformers
    /// does when no `token_type_ids` are passed.
    fn forward(&self, input_ids: &Tensor, mode: &mut Mode) -> Result<Tensor> {
        let (batch, len) = input_ids.dims2()?;
        let hidden = self.word.dim(1)?;
        let words = self
            .word
            .index_select(&input_ids.flatten_all()?, 0)?
            .reshape((batch, len, hidden))?;
        let extra = (self.position.narrow(0, 0, len)?
            + self
                .token_type
                .narrow(0, 0, 1)?
                .broadcast_as((len, hidden))?)?;
        let compute = self.norm.compute;
        let x = cast(&words, compute)?.broadcast_add(&cast(&extra, compute)?)?;
        let x = self.norm.forward(&x, mode)?;
        mode.dropout(&x, self.dropout)
    }
}

struct Layer {
    query: Linear,
    key: Linear,
    value: Linear,
    attn_out: Linear,
    attn_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    out_norm: LayerNorm,
    heads: usize,
    act: HiddenAct,
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

    /// `mask_bias` is (batch, 1, 1, len): 0 for real tokens, a large negative for padding.
    fn forward(&self, x: &Tensor, mask_bias: &Tensor, mode: &mut Mode) -> Result<Tensor> {
        let (batch, len, hidden) = x.dims3()?;
        let head_dim = hidden / self.heads;
        let (q, k, v) = (
            self.query.forward(x)?,
            self.key.forward(x)?,
            self.value.forward(x)?,
        );
        let fused = if mode.is_train() {
            None
        } else {
            crate::kernels::attention_inference(&q, &k, &v, mask_bias, self.heads)?
        };
        let context = match fused {
            Some(context) => context,
            None => {
                let split = |t: Tensor| -> Result<Tensor> {
                    t.reshape((batch, len, self.heads, head_dim))?
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
                    .reshape((batch, len, hidden))?
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
    embeddings: Embeddings,
    layers: Vec<Layer>,
    pooler: Linear,
    classifier: Linear,
    classifier_dropout: f64,
    num_labels: usize,
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
        })
    }

    pub fn num_labels(&self) -> usize {
        self.num_labels
    }

    /// The encoder's last hidden state (batch, len, hidden) and the pooled `[CLS]` vector.
    pub fn encode(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
        mode: &mut Mode,
    ) -> Result<(Tensor, Tensor)> {
        let dtype = self.embeddings.norm.compute;
        let (batch, len) = input_ids.dims2()?;
        // 0 where attended, the dtype's most negative value where padded (transformers' rule).
        let min = match dtype {
            DType::BF16 => -3.389_531_4e38,
            DType::F16 => -65504.0,
            _ => f32::MIN as f64,
        };
        let mask_bias = ((attention_mask.to_dtype(DType::F32)?.affine(-1.0, 1.0)? * min)?)
            .to_dtype(dtype)?
            .reshape((batch, 1, 1, len))?;
        let mut x = self.embeddings.forward(input_ids, mode)?;
        for layer in &self.layers {
            x = layer.forward(&x, &mask_bias, mode)?;
        }
        let cls = x.narrow(1, 0, 1)?.squeeze(1)?;
        let pooled = self.pooler.forward(&cls)?.tanh()?;
        Ok((x, pooled))
    }

    /// Class logits (batch, num_labels). `input_ids` are u32, `attention_mask` holds 1/0.
    pub fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
        mode: &mut Mode,
    ) -> Result<Tensor> {
        let (_, pooled) = self.encode(input_ids, attention_mask, mode)?;
        let pooled = mode.dropout(&pooled, self.classifier_dropout)?;
        self.classifier.forward(&pooled)
    }
}
