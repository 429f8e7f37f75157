//! Tokenizer loading and encoding.
//!
//! `tokenizer.json` is used as it is (minus its own padding and truncation settings, which are
//! ours to choose). Older BERT repositories ship only `vocab.txt` + `tokenizer_config.json`;
//! for those we build the WordPiece pipeline transformers' `BertTokenizer` runs.

use std::path::{Path, PathBuf};

use serde_json::Value;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::{
    AddedToken, Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy,
};

use crate::error::{Error, Result};

/// A tokenizer configured for our use: no padding, truncation at `max_len` tokens.
pub struct TextEncoder {
    tokenizer: Tokenizer,
    /// The same without truncation, made when a message needs a text's full length.
    untruncated: std::sync::OnceLock<Tokenizer>,
    max_len: usize,
    pad_id: u32,
    source: PathBuf,
}

/// Where the tokenizer comes from.
#[derive(Debug, Clone)]
pub enum TokenizerFiles {
    /// A `tokenizer.json` (the fast-tokenizer serialisation).
    Json(PathBuf),
    /// `vocab.txt` plus, when present, `tokenizer_config.json`.
    Vocab {
        /// The `vocab.txt` file.
        vocab: PathBuf,
        /// The `tokenizer_config.json` file, if the folder has one.
        config: Option<PathBuf>,
    },
}

impl TokenizerFiles {
    /// Pick the tokenizer files of a model folder, preferring `tokenizer.json`.
    pub fn in_folder(dir: &Path) -> Option<Self> {
        let json = dir.join("tokenizer.json");
        if json.is_file() {
            return Some(Self::Json(json));
        }
        let vocab = dir.join("vocab.txt");
        if vocab.is_file() {
            let config = Some(dir.join("tokenizer_config.json")).filter(|p| p.is_file());
            return Some(Self::Vocab { vocab, config });
        }
        None
    }

    /// The file to name in messages.
    pub fn main_path(&self) -> &Path {
        match self {
            Self::Json(p) => p,
            Self::Vocab { vocab, .. } => vocab,
        }
    }
}

impl TextEncoder {
    /// Load the tokenizer and check it fits a model with `model_vocab_size` embeddings.
    pub fn load(files: &TokenizerFiles, max_len: usize, model_vocab_size: usize) -> Result<Self> {
        let source = files.main_path().to_path_buf();
        let err = |reason: String| Error::Tokenizer {
            path: source.clone(),
            reason,
        };
        let mut tokenizer = match files {
            TokenizerFiles::Json(path) => Tokenizer::from_file(path)
                .map_err(|e| err(format!("cannot load tokenizer: {e}")))?,
            TokenizerFiles::Vocab { vocab, config } => {
                wordpiece_from_vocab(vocab, config.as_deref()).map_err(err)?
            }
        };
        let vocab_size = tokenizer.get_vocab_size(true);
        if vocab_size > model_vocab_size {
            return Err(err(format!(
                "tokenizer has {vocab_size} tokens but the model's embedding has {model_vocab_size} rows: the tokenizer does not belong to this model"
            )));
        }
        if max_len < 2 {
            return Err(Error::Usage(format!(
                "`max_len` {max_len} is too small: [CLS] and [SEP] alone take 2 tokens"
            )));
        }
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                direction: TruncationDirection::Right,
                max_length: max_len,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
            }))
            .map_err(|e| err(format!("cannot set truncation: {e}")))?;
        let pad_id = tokenizer
            .get_padding()
            .map(|p| p.pad_id)
            .or_else(|| tokenizer.token_to_id("[PAD]"))
            .unwrap_or(0);
        Ok(Self {
            tokenizer,
            untruncated: std::sync::OnceLock::new(),
            max_len,
            pad_id,
            source,
        })
    }

    /// The most tokens an encoded text may have, `[CLS]` and `[SEP]` included.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Id of the padding token: `[PAD]`'s id, or 0 if the vocabulary has none.
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// Token ids of each text, with `[CLS]`/`[SEP]`, truncated, unpadded; in parallel.
    pub fn encode_all<S: AsRef<str> + Sync>(&self, texts: &[S]) -> Result<Vec<Vec<u32>>> {
        let inputs: Vec<&str> = texts.iter().map(AsRef::as_ref).collect();
        let encodings = self
            .tokenizer
            .encode_batch_fast(inputs, true)
            .map_err(|e| Error::Tokenizer {
                path: self.source.clone(),
                reason: format!("encoding failed: {e}"),
            })?;
        Ok(encodings
            .into_iter()
            .map(|e| e.get_ids().to_vec())
            .collect())
    }

    /// Token ids of one text, truncated, on the calling thread; and whether it was cut.
    pub fn encode_one(&self, text: &str) -> Result<(Vec<u32>, bool)> {
        let encoding = self
            .tokenizer
            .encode_fast(text, true)
            .map_err(|e| Error::Tokenizer {
                path: self.source.clone(),
                reason: format!("encoding failed: {e}"),
            })?;
        let truncated = !encoding.get_overflowing().is_empty();
        Ok((encoding.get_ids().to_vec(), truncated))
    }

    /// How many tokens `text` has untruncated (special tokens included), for messages about
    /// over-long texts; the untruncated tokenizer is made on first use.
    pub fn count_tokens(&self, text: &str) -> Result<usize> {
        let err = |e: tokenizers::Error| Error::Tokenizer {
            path: self.source.clone(),
            reason: format!("encoding failed: {e}"),
        };
        let untruncated = match self.untruncated.get() {
            Some(t) => t,
            None => {
                let mut t = self.tokenizer.clone();
                t.with_truncation(None).map_err(err)?;
                self.untruncated.get_or_init(|| t)
            }
        };
        Ok(untruncated.encode_fast(text, true).map_err(err)?.len())
    }

    /// The underlying tokenizer, e.g. to save it as `tokenizer.json` in a checkpoint.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }
}

/// transformers' `BertTokenizer` as a fast pipeline: BERT normalisation (lower-casing and
/// accent stripping as `tokenizer_config.json` says), BERT pre-tokenisation, WordPiece, and
/// `[CLS] … [SEP]`.
fn wordpiece_from_vocab(
    vocab: &Path,
    config: Option<&Path>,
) -> std::result::Result<Tokenizer, String> {
    let cfg: Value = match config {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| format!("cannot read {}: {e}", p.display()))?;
            serde_json::from_str(&text)
                .map_err(|e| format!("{}: invalid JSON: {e}", p.display()))?
        }
        None => Value::Null,
    };
    let flag = |key: &str| cfg.get(key).and_then(Value::as_bool);
    let token = |key: &str, default: &str| {
        cfg.get(key)
            .and_then(|v| {
                v.as_str()
                    .or_else(|| v.get("content").and_then(Value::as_str))
            })
            .unwrap_or(default)
            .to_string()
    };
    let lowercase = flag("do_lower_case").unwrap_or(true);
    let strip_accents = flag("strip_accents");
    let chinese = flag("tokenize_chinese_chars").unwrap_or(true);
    let (unk, cls, sep, pad, mask) = (
        token("unk_token", "[UNK]"),
        token("cls_token", "[CLS]"),
        token("sep_token", "[SEP]"),
        token("pad_token", "[PAD]"),
        token("mask_token", "[MASK]"),
    );

    let vocab_str = vocab.to_str().ok_or("vocab path is not UTF-8")?;
    let model = WordPiece::from_file(vocab_str)
        .unk_token(unk.clone())
        .build()
        .map_err(|e| format!("cannot read WordPiece vocabulary: {e}"))?;
    let id = |t: &str| -> std::result::Result<u32, String> {
        tokenizers::Model::token_to_id(&model, t)
            .ok_or_else(|| format!("special token {t:?} is not in the vocabulary"))
    };
    let (cls_id, sep_id) = (id(&cls)?, id(&sep)?);
    id(&unk)?;

    let mut tokenizer = Tokenizer::new(model);
    tokenizer
        .with_normalizer(Some(BertNormalizer::new(
            true,
            chinese,
            strip_accents,
            lowercase,
        )))
        .map_err(|e| format!("cannot set up normalisation: {e}"))?;
    tokenizer.with_pre_tokenizer(Some(BertPreTokenizer));
    tokenizer.with_post_processor(Some(BertProcessing::new(
        (sep.clone(), sep_id),
        (cls.clone(), cls_id),
    )));
    let specials: Vec<AddedToken> = [pad, unk, cls, sep, mask]
        .into_iter()
        .filter(|t| tokenizer.token_to_id(t).is_some())
        .map(|t| AddedToken::from(t, true))
        .collect();
    tokenizer
        .add_special_tokens(specials)
        .map_err(|e| format!("cannot add special tokens: {e}"))?;
    Ok(tokenizer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny_vocab(dir: &Path) -> TokenizerFiles {
        let words = [
            "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "creme", "brulee", "choc", "##olate",
            "milk", "!",
        ];
        std::fs::write(dir.join("vocab.txt"), words.join("\n")).unwrap();
        TokenizerFiles::Vocab {
            vocab: dir.join("vocab.txt"),
            config: None,
        }
    }

    #[test]
    fn vocab_only_tokenizer_lowercases_strips_accents_and_wraps() {
        let dir = tempfile::tempdir().unwrap();
        let enc = TextEncoder::load(&tiny_vocab(dir.path()), 16, 11).unwrap();
        let ids = enc
            .encode_all(&["Crème BRÛLÉE", "Chocolate milk!", "zzz", ""])
            .unwrap();
        assert_eq!(ids[0], vec![2, 5, 6, 3]);
        assert_eq!(ids[1], vec![2, 7, 8, 9, 10, 3]);
        assert_eq!(ids[2], vec![2, 1, 3]);
        assert_eq!(ids[3], vec![2, 3]);
        assert_eq!(enc.pad_id(), 0);
    }

    #[test]
    fn truncates_to_max_len_keeping_sep() {
        let dir = tempfile::tempdir().unwrap();
        let enc = TextEncoder::load(&tiny_vocab(dir.path()), 4, 11).unwrap();
        let ids = enc.encode_all(&["milk milk milk milk milk"]).unwrap();
        assert_eq!(ids[0], vec![2, 9, 9, 3]);
    }

    #[test]
    fn rejects_a_vocabulary_larger_than_the_model() {
        let dir = tempfile::tempdir().unwrap();
        let err = TextEncoder::load(&tiny_vocab(dir.path()), 16, 8)
            .err()
            .unwrap();
        assert!(
            err.to_string().ends_with("tokenizer has 11 tokens but the model's embedding has 8 rows: the tokenizer does not belong to this model"),
            "{err}"
        );
    }
}
