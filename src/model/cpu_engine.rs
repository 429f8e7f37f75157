//! The CPU inference engine: `BertClassifier`'s evaluation forward pass in f32 over packed
//! sequences, on plain buffers. Weights are packed once (Q, K and V as one 3H-wide product);
//! each thread keeps its scratch buffers from batch to batch, so a forward pass allocates
//! nothing but its logits; residual + LayerNorm and bias + activation are single passes. The
//! candle forward pass stays the oracle (tests below) and the path for training, the GPU and
//! bf16.

use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};

use candle_core::{Result, Tensor};

use super::bert::{BertClassifier, LayerNorm, Linear};
use crate::config::HiddenAct;
use crate::data::batch::TokenBatch;
use crate::kernels::cpu_ops;
use crate::kernels::gemm::PackedLinear;
use crate::kernels::gemm_i8::QuantizedLinear;

fn values(t: &Tensor) -> Result<Vec<f32>> {
    t.to_dtype(candle_core::DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()
}

/// Weight and bias of one or more linear layers with the same input, stacked by output.
fn stacked(linears: &[&Linear]) -> Result<(Vec<f32>, Vec<f32>, usize)> {
    let (mut w, mut b) = (Vec::new(), Vec::new());
    let k = linears[0].weight.dim(1)?;
    for l in linears {
        w.extend(values(&l.weight)?);
        b.extend(values(&l.bias)?);
    }
    Ok((w, b, k))
}

/// The default recheck margin of int8 inference: rows whose int8 top-1 probability leads the
/// runner-up by less than this are computed again in f32.
pub const INT8_RECHECK: f32 = 0.02;

/// How the engine stores the encoder's linear layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Quantize {
    /// f32 weights and products.
    #[default]
    None,
    /// int8 weights (per output channel) and int8 activations (per row, quantised on the
    /// fly) in the encoder's linear layers; embeddings, LayerNorm, attention, pooler and
    /// classifier stay f32.
    Int8,
}

/// A linear layer, f32 or int8.
enum Lin {
    F32(PackedLinear),
    I8(QuantizedLinear),
}

impl Lin {
    fn new(linears: &[&Linear], quantize: Quantize) -> Result<Self> {
        let (w, b, k) = stacked(linears)?;
        Ok(match quantize {
            Quantize::None => Lin::F32(PackedLinear::new(&w, &b, b.len(), k)),
            Quantize::Int8 => Lin::I8(QuantizedLinear::new(&w, &b, b.len(), k)),
        })
    }

    fn forward(&self, a: &[f32], c: &mut [f32], parallel: bool) {
        match self {
            Lin::F32(l) => l.forward(a, c, parallel),
            Lin::I8(l) => l.forward(a, c, parallel),
        }
    }

    fn out_dim(&self) -> usize {
        match self {
            Lin::F32(l) => l.out_dim(),
            Lin::I8(l) => l.out_dim(),
        }
    }
}

struct Norm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
    eps: f32,
}

impl Norm {
    fn new(n: &LayerNorm) -> Result<Self> {
        Ok(Self {
            gamma: values(&n.weight)?,
            beta: values(&n.bias)?,
            eps: n.eps as f32,
        })
    }

    fn apply(&self, x: &mut [f32], residual: &[f32]) {
        cpu_ops::add_layer_norm(x, residual, &self.gamma, &self.beta, self.eps);
    }
}

struct EngineLayer {
    qkv: Lin,
    attn_out: Lin,
    attn_norm: Norm,
    intermediate: Lin,
    output: Lin,
    out_norm: Norm,
}

/// Per-thread buffers, grown to the largest batch seen and reused.
#[derive(Default)]
struct Scratch {
    x: Vec<f32>,
    qkv: Vec<f32>,
    context: Vec<f32>,
    projected: Vec<f32>,
    inner: Vec<f32>,
    scores: Vec<f32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

fn sized(buf: &mut Vec<f32>, n: usize) -> &mut [f32] {
    if buf.len() < n {
        buf.resize(n, 0.0);
    }
    &mut buf[..n]
}

/// The packed f32 forward pass of one classifier (see the module docs).
pub(super) struct CpuEngine {
    hidden: usize,
    heads: usize,
    act: HiddenAct,
    /// The word embeddings stay in the model's tensor (no second copy of the largest table).
    word: Tensor,
    position: Vec<f32>,
    token_type: Vec<f32>,
    embed_norm: Norm,
    layers: Vec<EngineLayer>,
    /// Pooler and classifier: f32 whatever `quantize` says (a sliver of the FLOPs).
    pooler: Lin,
    classifier: Lin,
    /// int8 only: the f32 twin that recomputes close calls (see [`Recheck`]).
    recheck: Option<Recheck>,
}

/// Rows whose top-1 probability leads the runner-up by less than `margin` under int8 are
/// computed again in f32 and take the f32 result: quantisation then cannot flip a decision
/// it was not sure of (a flip needs the int8 error to exceed the lead).
struct Recheck {
    exact: Box<CpuEngine>,
    margin: f32,
    rows: AtomicUsize,
}

/// Rows of `logits` (`classes` per row) whose top-1 probability leads the second by less than
/// `margin`.
fn close_calls(logits: &[f32], classes: usize, margin: f32) -> Vec<usize> {
    if classes < 2 || margin <= 0.0 {
        return Vec::new();
    }
    let mut close = Vec::new();
    for (i, row) in logits.chunks_exact(classes).enumerate() {
        let (mut first, mut second) = (f32::NEG_INFINITY, f32::NEG_INFINITY);
        for &v in row {
            if v > first {
                (first, second) = (v, first);
            } else if v > second {
                second = v;
            }
        }
        let sum: f32 = row.iter().map(|&v| (v - first).exp()).sum();
        let lead = (1.0 - (second - first).exp()) / sum;
        // NaN logits count as close (the f32 pass decides).
        if lead.is_nan() || lead < margin {
            close.push(i);
        }
    }
    close
}

impl CpuEngine {
    /// Pack `model`'s weights (f32, on the CPU), the encoder's linear layers as `quantize` says;
    /// with int8, rows whose top-1 probability leads by less than `recheck` are computed again
    /// in f32 (0 turns that off).
    pub(super) fn new(model: &BertClassifier, quantize: Quantize, recheck: f32) -> Result<Self> {
        let recheck = match quantize {
            Quantize::Int8 if recheck > 0.0 => Some(Recheck {
                exact: Box::new(Self::new(model, Quantize::None, 0.0)?),
                margin: recheck,
                rows: AtomicUsize::new(0),
            }),
            _ => None,
        };
        let e = &model.embeddings;
        let hidden = e.word.dim(1)?;
        let layers = model
            .layers
            .iter()
            .map(|l| {
                Ok(EngineLayer {
                    qkv: Lin::new(&[&l.query, &l.key, &l.value], quantize)?,
                    attn_out: Lin::new(&[&l.attn_out], quantize)?,
                    attn_norm: Norm::new(&l.attn_norm)?,
                    intermediate: Lin::new(&[&l.intermediate], quantize)?,
                    output: Lin::new(&[&l.output], quantize)?,
                    out_norm: Norm::new(&l.out_norm)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let first = model.layers.first();
        Ok(Self {
            hidden,
            heads: first.map_or(1, |l| l.heads),
            act: first.map_or(HiddenAct::Gelu, |l| l.act),
            word: e.word.to_dtype(candle_core::DType::F32)?,
            position: values(&e.position)?,
            token_type: values(&e.token_type.narrow(0, 0, 1)?)?,
            embed_norm: Norm::new(&e.norm)?,
            layers,
            pooler: Lin::new(&[&model.pooler], Quantize::None)?,
            classifier: Lin::new(&[&model.classifier], Quantize::None)?,
            recheck,
        })
    }

    /// Logits (rows × classes, row-major) of a batch without empty rows; `parallel` lets the
    /// products use rayon's threads.
    pub(super) fn logits(&self, batch: &TokenBatch, parallel: bool) -> Result<Vec<f32>> {
        // The scratch is taken out while the batch runs: a thread that waits inside a parallel
        // product may steal another batch's forward pass, which then starts from empty buffers
        // instead of finding these borrowed.
        let mut scratch = SCRATCH.with(|s| s.take());
        let logits = self.run(&mut scratch, batch, parallel);
        SCRATCH.with(|s| s.replace(scratch));
        let mut logits = logits?;
        if let Some(r) = &self.recheck {
            let classes = self.classifier.out_dim();
            let close = close_calls(&logits, classes, r.margin);
            if !close.is_empty() {
                let (ids, starts) = (batch.ids(), batch.starts());
                let rows: Vec<&[u32]> = close
                    .iter()
                    .map(|&i| &ids[starts[i]..starts[i + 1]])
                    .collect();
                let exact = r.exact.logits(&TokenBatch::new(&rows, 0), parallel)?;
                for (&i, row) in close.iter().zip(exact.chunks_exact(classes)) {
                    logits[i * classes..(i + 1) * classes].copy_from_slice(row);
                }
                r.rows.fetch_add(close.len(), Ordering::Relaxed);
            }
        }
        Ok(logits)
    }

    /// Rows computed again in f32 so far (int8 with a recheck margin; else 0).
    pub(super) fn rechecked_rows(&self) -> usize {
        self.recheck
            .as_ref()
            .map_or(0, |r| r.rows.load(Ordering::Relaxed))
    }

    fn run(&self, s: &mut Scratch, batch: &TokenBatch, parallel: bool) -> Result<Vec<f32>> {
        let h = self.hidden;
        let tokens = batch.tokens();
        let starts = batch.starts();
        self.embed(batch, sized(&mut s.x, tokens * h))?;
        let rows = batch.rows();
        let Some((last, inner_layers)) = self.layers.split_last() else {
            Self::keep_first_tokens(&mut s.x, starts, rows, h);
            return self.head(&s.x[..rows * h]);
        };
        for layer in inner_layers {
            let qkv = sized(&mut s.qkv, tokens * 3 * h);
            layer.qkv.forward(&s.x[..tokens * h], qkv, parallel);
            let context = sized(&mut s.context, tokens * h);
            cpu_ops::packed_attention(qkv, starts, self.heads, context, &mut s.scores, false);
            self.finish_layer(layer, s, tokens, parallel);
        }
        // Only the first token feeds the pooler: in the last layer the other tokens give
        // their keys and values and nothing else (the same result, ~1/7 fewer FLOPs on MiniLM).
        let qkv = sized(&mut s.qkv, tokens * 3 * h);
        last.qkv.forward(&s.x[..tokens * h], qkv, parallel);
        let context = sized(&mut s.context, rows * h);
        cpu_ops::packed_attention(qkv, starts, self.heads, context, &mut s.scores, true);
        Self::keep_first_tokens(&mut s.x, starts, rows, h);
        self.finish_layer(last, s, rows, parallel);
        self.head(&s.x[..rows * h])
    }

    /// Move each sequence's first-token row to the front of `x`, row `i` for sequence `i`
    /// (in place: sequence `i` starts at row `i` or later).
    fn keep_first_tokens(x: &mut [f32], starts: &[usize], rows: usize, h: usize) {
        for (i, &start) in starts[..rows].iter().enumerate() {
            x.copy_within(start * h..(start + 1) * h, i * h);
        }
    }

    /// The rest of a layer once attention has filled `s.context` for `n` rows of `s.x`:
    /// output projection, residual + LayerNorm, feed-forward, residual + LayerNorm.
    fn finish_layer(&self, layer: &EngineLayer, s: &mut Scratch, n: usize, parallel: bool) {
        let h = self.hidden;
        let (x, context) = (&mut s.x[..n * h], &s.context[..n * h]);
        let projected = sized(&mut s.projected, n * h);
        layer.attn_out.forward(context, projected, parallel);
        layer.attn_norm.apply(x, projected);
        let inner = sized(&mut s.inner, n * layer.intermediate.out_dim());
        layer.intermediate.forward(x, inner, parallel);
        match self.act {
            HiddenAct::Gelu => cpu_ops::gelu_erf(inner),
            HiddenAct::GeluNew => cpu_ops::gelu_tanh(inner),
            HiddenAct::Relu => cpu_ops::relu(inner),
        }
        layer.output.forward(inner, projected, parallel);
        layer.out_norm.apply(x, projected);
    }

    /// Pooler (tanh) and classifier on the first tokens' rows.
    fn head(&self, cls: &[f32]) -> Result<Vec<f32>> {
        let h = self.hidden;
        let rows = cls.len() / h;
        let mut pooled = vec![0f32; rows * h];
        self.pooler.forward(cls, &mut pooled, false);
        pooled.iter_mut().for_each(|v| *v = v.tanh());
        let mut logits = vec![0f32; rows * self.classifier.out_dim()];
        self.classifier.forward(&pooled, &mut logits, false);
        Ok(logits)
    }

    /// Word + position + token-type-0 embeddings, then LayerNorm, into `x`.
    fn embed(&self, batch: &TokenBatch, x: &mut [f32]) -> Result<()> {
        let h = self.hidden;
        let (storage, layout) = self.word.storage_and_layout();
        let candle_core::Storage::Cpu(cpu) = &*storage else {
            candle_core::bail!("the CPU engine needs the word embeddings in host memory")
        };
        let word = crate::kernels::f32_slice(cpu, layout, "word embeddings")?;
        let (vocab, places) = (word.len() / h, self.position.len() / h);
        if let Some(&id) = batch.ids().iter().find(|&&id| id as usize >= vocab) {
            candle_core::bail!("token id {id} is outside the vocabulary ({vocab} tokens)")
        }
        for w in batch.starts().windows(2) {
            if w[1] - w[0] > places {
                candle_core::bail!("{} tokens exceed the {places} positions", w[1] - w[0])
            }
            for (pos, t) in (w[0]..w[1]).enumerate() {
                let id = batch.ids()[t] as usize;
                let out = &mut x[t * h..(t + 1) * h];
                let (wv, pv) = (
                    &word[id * h..(id + 1) * h],
                    &self.position[pos * h..(pos + 1) * h],
                );
                for (((o, a), b), c) in out.iter_mut().zip(wv).zip(pv).zip(&self.token_type) {
                    *o = a + b + c;
                }
            }
        }
        self.embed_norm.apply(x, &[]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Mode, ParamStore};
    use candle_core::{DType, Device};

    fn tiny(act: &str) -> BertClassifier {
        tiny_with(act, 0.4)
    }

    /// A random tiny BERT; `std` is its initializer range (large values make a chaotic model).
    fn tiny_with(act: &str, std: f64) -> BertClassifier {
        let json = format!(
            r#"{{"model_type": "bert", "vocab_size": 60, "hidden_size": 40,
                "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 72,
                "hidden_act": "{act}", "max_position_embeddings": 24, "type_vocab_size": 2,
                "initializer_range": {std}, "layer_norm_eps": 1e-12}}"#
        );
        let (config, _) = crate::config::BertConfig::from_json(&json, "t".as_ref()).unwrap();
        let store = ParamStore::new(Default::default(), &Device::Cpu, DType::F32, false, 3);
        BertClassifier::load(&store, &config, 7).unwrap()
    }

    #[test]
    fn engine_matches_the_candle_forward_pass() {
        // Lengths 1 to 23 (one under the positions), ragged batches.
        let rows: Vec<Vec<u32>> = (1..24u32)
            .map(|n| (0..n).map(|i| (i * 7 + n) % 60).collect())
            .collect();
        for act in ["gelu", "gelu_new", "relu"] {
            let model = tiny(act);
            let engine = CpuEngine::new(&model, Quantize::None, 0.0).unwrap();
            for chunk in rows.chunks(9) {
                let refs: Vec<&[u32]> = chunk.iter().map(Vec::as_slice).collect();
                let batch = TokenBatch::new(&refs, 0);
                let want = model.forward(&batch, &mut Mode::Eval).unwrap();
                let want = want.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                for parallel in [false, true] {
                    let got = engine.logits(&batch, parallel).unwrap();
                    let worst = got
                        .iter()
                        .zip(&want)
                        .map(|(a, b)| (a - b).abs())
                        .fold(0f32, f32::max);
                    assert!(worst < 1e-4, "{act}: off by {worst}");
                    assert!(want.iter().any(|v| v.abs() > 0.1), "{act}: degenerate");
                }
            }
        }
    }

    #[test]
    fn int8_engine_stays_close_to_f32() {
        let rows: Vec<Vec<u32>> = (2..24u32)
            .map(|n| (0..n).map(|i| (i * 11 + 3 * n) % 60).collect())
            .collect();
        let refs: Vec<&[u32]> = rows.iter().map(Vec::as_slice).collect();
        let batch = TokenBatch::new(&refs, 0);
        for act in ["gelu", "gelu_new", "relu"] {
            let model = tiny_with(act, 0.1);
            let exact = CpuEngine::new(&model, Quantize::None, 0.0).unwrap();
            let int8 = CpuEngine::new(&model, Quantize::Int8, 0.0).unwrap();
            let want = exact.logits(&batch, false).unwrap();
            let got = int8.logits(&batch, true).unwrap();
            let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
            let worst = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            // Two layers of int8 products: logits within 2 % of their range.
            eprintln!("{act}: int8 off by {worst} on logits up to {scale}");
            assert!(
                worst < 0.02 * scale,
                "{act}: off by {worst} on logits up to {scale}"
            );
            assert_ne!(got, want, "{act}: int8 path not taken");
        }
    }

    #[test]
    fn close_calls_are_leads_under_the_margin() {
        // Leads: [2, 0] → 0.76; [0.01, 0] → 0.0025; three-way tie → 0; NaN → close.
        let logits = [2.0, 0.0, 0.01, 0.0, 1.0, 1.0, f32::NAN, 0.0];
        assert_eq!(close_calls(&logits, 2, 0.02), vec![1, 2, 3]);
        assert_eq!(close_calls(&logits, 2, 0.0), Vec::<usize>::new());
        assert_eq!(close_calls(&[3.0, 3.0, 0.0], 3, 0.02), vec![0]);
        assert_eq!(close_calls(&[5.0], 1, 0.5), Vec::<usize>::new());
    }

    #[test]
    fn int8_recheck_of_every_row_is_the_f32_result() {
        let rows: Vec<Vec<u32>> = (2..12u32)
            .map(|n| (0..n).map(|i| (i * 5 + n) % 60).collect())
            .collect();
        let refs: Vec<&[u32]> = rows.iter().map(Vec::as_slice).collect();
        let batch = TokenBatch::new(&refs, 0);
        let model = tiny_with("gelu", 0.1);
        let exact = CpuEngine::new(&model, Quantize::None, 0.0).unwrap();
        let all = CpuEngine::new(&model, Quantize::Int8, 1.0).unwrap();
        assert_eq!(
            all.logits(&batch, false).unwrap(),
            exact.logits(&batch, false).unwrap()
        );
        assert_eq!(all.rechecked_rows(), rows.len());
    }

    #[test]
    fn out_of_range_tokens_are_errors_not_panics() {
        let engine = CpuEngine::new(&tiny("gelu"), Quantize::None, 0.0).unwrap();
        let err = engine.logits(&TokenBatch::new(&[&[1, 60]], 0), false);
        assert!(format!("{}", err.unwrap_err()).contains("token id 60"));
        let long = vec![1u32; 25];
        let err = engine.logits(&TokenBatch::new(&[&long], 0), false);
        assert!(format!("{}", err.unwrap_err()).contains("exceed the 24 positions"));
    }
}
