//! [`Predictor`]: model, tokenizer, labels, device, precision and limits in one shareable
//! object.

use crate::checkpoint::meta::RunMeta;
use crate::checkpoint::{Checkpoint, HubSettings, ModelRef, Resolver};
use crate::data::batch::TokenBatch;
use crate::device::{DeviceChoice, Precision};
use crate::error::{with_batch_size, CandleContext, Error, Result};
use crate::model::batched::{batch_logits, batch_top_k, predict_top_k, Progress, Quiet, TopK};
use crate::model::{BertClassifier, Quantize, INT8_RECHECK};
use crate::tokenize::TextEncoder;

/// How a [`Predictor`] runs.
#[derive(Debug, Clone)]
pub struct PredictOptions {
    /// Truncate texts to this many tokens; `None`: 128, capped by the model's positions (more
    /// than the model's positions is refused).
    pub max_len: Option<usize>,
    /// Rows per forward pass.
    pub batch_size: usize,
    /// Compute precision; `None` picks bf16 on a GPU of compute capability ≥ 8.0, else fp32.
    pub precision: Option<Precision>,
    /// How to reach the Hugging Face Hub for Hub ids; `None` reads the environment.
    pub hub: Option<HubSettings>,
    /// The model registry that resolves `models:/` references.
    pub registry: Option<Resolver>,
    /// int8 encoder layers (CPU, fp32 only); `Quantize::None` keeps f32.
    pub quantize: Quantize,
    /// With int8: rows whose top-1 probability leads the runner-up by less than this are
    /// computed again in f32 (0: never); default [`INT8_RECHECK`].
    pub int8_recheck: f32,
}

impl Default for PredictOptions {
    fn default() -> Self {
        Self {
            max_len: None,
            batch_size: 64,
            precision: None,
            hub: None,
            registry: None,
            quantize: Quantize::None,
            int8_recheck: INT8_RECHECK,
        }
    }
}

/// A fine-tuned classifier ready to predict: `Send + Sync`, so one instance behind an `Arc`
/// serves many threads or tasks.
pub struct Predictor {
    model: BertClassifier,
    encoder: TextEncoder,
    labels: Vec<String>,
    device_description: String,
    precision: Precision,
    quantize: Quantize,
    batch_size: usize,
    origin: String,
    meta: Option<RunMeta>,
    notices: Vec<String>,
}

impl Predictor {
    /// Load the classifier `model` (a folder or a Hub id) onto `device`.
    pub fn load(model: &ModelRef, device: DeviceChoice, options: PredictOptions) -> Result<Self> {
        let hub = options.hub.clone().unwrap_or_else(HubSettings::from_env);
        let folder = model.resolve_with(&hub, options.registry.as_ref().map(|r| &*r.0))?;
        let checkpoint = Checkpoint::open(&folder.dir)?;
        Self::from_checkpoint(checkpoint, &folder.origin, device, options)
    }

    /// Load an opened checkpoint (`origin` names it in logs). Opening is cheap (config and
    /// metadata), so a front end can read `catbert.json` and check its input first.
    pub fn from_checkpoint(
        checkpoint: Checkpoint,
        origin: &str,
        device: DeviceChoice,
        options: PredictOptions,
    ) -> Result<Self> {
        if options.batch_size == 0 {
            return Err(Error::Usage("`batch_size` must be at least 1".into()));
        }
        if !(0.0..=1.0).contains(&options.int8_recheck) {
            return Err(Error::Usage(format!(
                "--int8-recheck must be a probability between 0 and 1 (got {})",
                options.int8_recheck
            )));
        }
        let selected = crate::device::select(device)?;
        let precision = Precision::resolve(options.precision, &selected.device)?;
        let mut loaded = checkpoint.load_classifier(&selected.device, precision.dtype())?;
        let unavailable = loaded
            .model
            .prepare_cpu_inference(options.quantize, options.int8_recheck)
            .ctx("packing the weights for the CPU")?;
        if let (Quantize::Int8, Some(why)) = (options.quantize, unavailable) {
            return Err(Error::Usage(format!(
                "--quantize int8 runs on the CPU in fp32 only (this run: {}, {}, {why})",
                selected.describe(),
                precision.name(),
            )));
        }
        let encoder = checkpoint.text_encoder_for(options.max_len)?;
        let mut notices: Vec<String> = selected.notice.iter().cloned().collect();
        if !loaded.report.unexpected.is_empty() {
            notices.push(format!(
                "{} tensors in the checkpoint are not used by the classifier: {}",
                loaded.report.unexpected.len(),
                loaded.report.unexpected.join(", ")
            ));
        }
        Ok(Self {
            model: loaded.model,
            encoder,
            labels: loaded.labels,
            device_description: selected.describe(),
            precision,
            quantize: options.quantize,
            batch_size: options.batch_size,
            origin: origin.to_string(),
            meta: checkpoint.meta,
            notices,
        })
    }

    /// Class names in index order.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// The text column recorded when the model was fine-tuned, if any.
    pub fn text_column(&self) -> Option<&str> {
        self.meta.as_ref()?.text_column()
    }

    /// `catbert.json` of the checkpoint, when catbert wrote it.
    pub fn meta(&self) -> Option<&RunMeta> {
        self.meta.as_ref()
    }

    /// Where the model came from.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The device, in words (`cpu (2 threads)`, `cuda (NVIDIA H200, compute 9.0)`).
    pub fn device_description(&self) -> &str {
        &self.device_description
    }

    /// The compute precision.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// The token limit per text.
    pub fn max_len(&self) -> usize {
        self.encoder.max_len()
    }

    /// Whether the encoder runs in int8.
    pub fn quantize(&self) -> Quantize {
        self.quantize
    }

    /// Rows computed again in f32 so far because int8 was not sure of their top-1.
    pub fn int8_rechecked_rows(&self) -> usize {
        self.model.int8_rechecked_rows()
    }

    /// The precision as printed: `fp32`, `bf16`, or `int8` for quantised encoder layers.
    pub fn precision_name(&self) -> &'static str {
        match self.quantize {
            Quantize::Int8 => "int8",
            Quantize::None => self.precision.name(),
        }
    }

    /// Things the user should know that did not stop loading (a GPU fallback, unused tensors).
    pub fn notices(&self) -> &[String] {
        &self.notices
    }

    /// Token ids of `texts`, truncated to [`Predictor::max_len`].
    pub fn encode<S: AsRef<str> + Sync>(&self, texts: &[S]) -> Result<Vec<Vec<u32>>> {
        self.encoder.encode_all(texts)
    }

    /// The `k` best `(label, probability)` pairs of every text, best first, in input order
    /// (`k` is clamped to the number of classes).
    pub fn predict<S: AsRef<str> + Sync>(
        &self,
        texts: &[S],
        k: usize,
    ) -> Result<Vec<Vec<(String, f32)>>> {
        let top = self.predict_encoded(&self.encode(texts)?, k, &Quiet)?;
        Ok((0..top.rows())
            .map(|r| {
                top.row(r)
                    .map(|(c, p)| (self.labels[c as usize].clone(), p))
                    .collect()
            })
            .collect())
    }

    /// Top-k of already tokenised rows, in length-sorted batches of the configured size,
    /// reporting each batch to `progress`.
    pub fn predict_encoded(
        &self,
        encoded: &[Vec<u32>],
        k: usize,
        progress: &dyn Progress,
    ) -> Result<TopK> {
        predict_top_k(
            &self.model,
            encoded,
            self.encoder.pad_id(),
            self.batch_size,
            k,
            progress,
        )
    }

    /// Top-k of one batch as it is (no re-batching), rows in batch order.
    pub fn predict_batch(&self, batch: &TokenBatch, k: usize) -> Result<TopK> {
        with_batch_size(batch_top_k(&self.model, batch, k), batch.rows())
    }

    /// Id of the `[UNK]` token, when the vocabulary has one.
    pub fn unk_id(&self) -> Option<u32> {
        self.encoder.tokenizer().token_to_id("[UNK]")
    }

    /// Id of the padding token.
    pub fn pad_id(&self) -> u32 {
        self.encoder.pad_id()
    }

    /// Logits of one batch as it is, row-major (`labels().len()` per row), rows in batch order.
    pub fn logits_batch(&self, batch: &TokenBatch) -> Result<Vec<f32>> {
        with_batch_size(batch_logits(&self.model, batch), batch.rows())
    }

    /// Token ids of one text on the calling thread (no thread pool), and whether truncation to
    /// [`Predictor::max_len`] cut it.
    pub fn encode_one(&self, text: &str) -> Result<(Vec<u32>, bool)> {
        self.encoder.encode_one(text)
    }

    /// How many tokens `text` has before truncation (for messages).
    pub fn count_tokens(&self, text: &str) -> Result<usize> {
        self.encoder.count_tokens(text)
    }

    /// The batch of `encoded` rows, padded with this model's pad token where padding is needed.
    pub fn batch(&self, encoded: &[Vec<u32>]) -> TokenBatch {
        let rows: Vec<&[u32]> = encoded.iter().map(Vec::as_slice).collect();
        TokenBatch::new(&rows, self.encoder.pad_id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predictor_is_send_and_sync() {
        fn shareable<T: Send + Sync>() {}
        shareable::<Predictor>();
    }
}
