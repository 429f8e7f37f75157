//! The folder a registered version holds, laid out as MLflow's `transformers` flavor saves a
//! text-classification pipeline, so that `mlflow.pyfunc.load_model` and
//! `mlflow.transformers.load_model` in Python load what catbert registered:
//!
//! ```text
//! MLmodel                    flavors python_function + transformers (task text-classification)
//! model/                     the checkpoint in Hugging Face layout (catbert loads this folder)
//! components/tokenizer/      the tokenizer files, where MLflow's loader looks for them
//! requirements.txt, python_env.yaml
//! catbert-manifest.json      sha256 of every file above, checked after a download
//! ```

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::{link_or_copy, list_files};
use crate::error::{Error, Result};
use crate::fsutil::write_bytes_atomic;

/// The manifest's file name.
pub const MANIFEST: &str = "catbert-manifest.json";

const TOKENIZER_FILES: &[&str] = &[
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
];

/// Lay out `checkpoint` (a catbert output folder) as an MLmodel folder at `dest` (which must
/// not exist). The checkpoint's files are hard-linked when they can be, else copied; the run
/// state (`run/`) is left out.
pub fn stage(checkpoint: &Path, dest: &Path, base_model: &str) -> Result<()> {
    let model = dest.join("model");
    for rel in list_files(checkpoint)? {
        if rel.starts_with("run/") {
            continue;
        }
        link_or_copy(&checkpoint.join(&rel), &model.join(&rel))?;
    }
    let tokenizer = dest.join("components").join("tokenizer");
    for file in TOKENIZER_FILES {
        let from = checkpoint.join(file);
        if from.is_file() {
            link_or_copy(&from, &tokenizer.join(file))?;
        }
    }
    let size: u64 = list_files(&model)?
        .iter()
        .map(|r| std::fs::metadata(model.join(r)).map_or(0, |m| m.len()))
        .sum();
    let mlmodel = format!(
        "flavors:
  python_function:
    env:
      virtualenv: python_env.yaml
    loader_module: mlflow.transformers
    python_version: 3.11.0
  transformers:
    code: null
    components:
    - tokenizer
    framework: pt
    instance_type: TextClassificationPipeline
    model_binary: model
    pipeline_model_type: AutoModelForSequenceClassification
    source_model_name: {}
    task: text-classification
    tokenizer_type: AutoTokenizer
    torch_dtype: torch.float32
    transformers_version: 4.46.0
model_size_bytes: {size}
signature:
  inputs: '[{{\"type\": \"string\", \"required\": true}}]'
  outputs: '[{{\"type\": \"string\", \"name\": \"label\", \"required\": true}}, {{\"type\": \"double\", \"name\": \"score\", \"required\": true}}]'
  params: null
saved_by: catbert {}
",
        yaml_string(base_model),
        env!("CARGO_PKG_VERSION")
    );
    write_bytes_atomic(&dest.join("MLmodel"), mlmodel.as_bytes())?;
    write_bytes_atomic(
        &dest.join("requirements.txt"),
        b"mlflow\ntorch\ntransformers>=4.46\n",
    )?;
    write_bytes_atomic(
        &dest.join("python_env.yaml"),
        b"python: 3.11.0\nbuild_dependencies:\n- pip\ndependencies:\n- -r requirements.txt\n",
    )?;
    write_manifest(dest)
}

/// A YAML double-quoted string.
fn yaml_string(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialise")
}

fn write_manifest(dir: &Path) -> Result<()> {
    let mut files = BTreeMap::new();
    for rel in list_files(dir)? {
        if rel != MANIFEST {
            files.insert(rel.clone(), sha256_file(&dir.join(&rel))?);
        }
    }
    let text = serde_json::to_vec_pretty(&serde_json::json!({ "sha256": files }))
        .expect("manifest serialises");
    write_bytes_atomic(&dir.join(MANIFEST), &text)
}

/// The files a manifest lists, with their sha256.
pub fn read_manifest(path: &Path) -> Result<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::BadConfig {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    Ok(v["sha256"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
        .collect())
}

/// The sha256 of a file, as lowercase hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}
