//! `--model`: a local folder in Hugging Face layout, or a Hub id resolved through hf-hub into
//! the standard cache. `HF_HUB_OFFLINE=1` means the cache only; `HF_TOKEN` authenticates.

use std::path::{Path, PathBuf};

use hf_hub::api::sync::ApiBuilder;
use hf_hub::{Cache, Repo, RepoType};

use crate::error::{Error, Result};

/// Files a model folder may hold, in the order we look for them. Only `config.json` and one
/// weights file and one tokenizer are required.
const REQUIRED: &[&str] = &["config.json"];
const WEIGHTS: &[&str] = &["model.safetensors", "model.safetensors.index.json"];
const TOKENIZERS: &[&str] = &["tokenizer.json", "vocab.txt"];
const OPTIONAL: &[&str] = &[
    "tokenizer_config.json",
    "special_tokens_map.json",
    "catbert.json",
];

/// How the Hub is reached, read from the environment a user sets for `huggingface_hub`.
#[derive(Debug, Clone)]
pub struct HubSettings {
    /// The Hugging Face cache folder.
    pub cache_dir: PathBuf,
    /// Use the cache only, never the network.
    pub offline: bool,
    /// Access token for private or gated models.
    pub token: Option<String>,
    /// Another Hub endpoint (a mirror).
    pub endpoint: Option<String>,
}

impl HubSettings {
    /// `HF_HUB_CACHE`, else `HF_HOME/hub`, else `~/.cache/huggingface/hub`; `HF_HUB_OFFLINE`;
    /// `HF_TOKEN` (else the token file hf-hub knows); `HF_ENDPOINT`.
    pub fn from_env() -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let cache_dir = var("HF_HUB_CACHE")
            .map(PathBuf::from)
            .or_else(|| var("HF_HOME").map(|h| PathBuf::from(h).join("hub")))
            .unwrap_or_else(|| Cache::default().path().clone());
        let offline = var("HF_HUB_OFFLINE").is_some_and(|v| {
            matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on")
        });
        Self {
            cache_dir,
            offline,
            token: var("HF_TOKEN"),
            endpoint: var("HF_ENDPOINT"),
        }
    }
}

/// A model folder on disk, and where it came from (for logs and `catbert.json`).
#[derive(Debug, Clone)]
pub struct ModelFolder {
    /// The folder.
    pub dir: PathBuf,
    /// The reference as written (a path, or `hf://org/name@revision`).
    pub origin: String,
}

/// Where a model comes from. Parsed once from what the user wrote (`--model`, a config file,
/// an API call): an existing folder, else a Hub id `org/name[@revision]`, else a folder that
/// does not exist (reported as such when resolved). Non-exhaustive: a model registry adds its
/// own references.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ModelRef {
    /// A folder in Hugging Face layout.
    Folder(PathBuf),
    /// A Hugging Face Hub model at a revision (`main` unless given).
    Hub {
        /// `org/name` or `name`.
        id: String,
        /// Branch, tag or commit.
        revision: String,
    },
    /// A version of a registered model: `models:/NAME/3`, `models:/NAME@champion`,
    /// `models:/NAME@latest`; resolved through a [`RegistryResolver`].
    Registry {
        /// The registered model.
        name: String,
        /// Which version.
        selector: Selector,
    },
}

/// A shared [`RegistryResolver`], for options structs that are `Clone + Debug`.
#[derive(Clone)]
pub struct Resolver(pub std::sync::Arc<dyn RegistryResolver>);

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Resolver")
    }
}

/// Which version of a registered model a `models:/` reference means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// `models:/NAME/3`.
    Version(u64),
    /// `models:/NAME@alias`.
    Alias(String),
    /// `models:/NAME@latest`: the newest version.
    Latest,
}

/// Resolves `models:/` references: implemented by the model registry, which lives above this
/// module.
pub trait RegistryResolver: Send + Sync {
    /// The local folder of `name` at `selector` (downloaded if needed), its origin the
    /// version it resolved to.
    fn resolve(&self, name: &str, selector: &Selector) -> Result<ModelFolder>;
}

impl ModelRef {
    /// Read `spec`: `models:/…` is a registry reference; otherwise an existing folder wins
    /// over a Hub id of the same spelling. A malformed `models:/` reference is an error.
    pub fn try_parse(spec: &str) -> Result<Self> {
        let Some(rest) = spec.strip_prefix("models:/") else {
            return Ok(Self::parse(spec));
        };
        let bad = |why: &str| {
            Error::Usage(format!(
                "`model` {spec:?}: {why} (write models:/NAME/VERSION, models:/NAME@ALIAS or models:/NAME@latest)"
            ))
        };
        let (name, selector) = if let Some((name, alias)) = rest.split_once('@') {
            let selector = match alias {
                "" => return Err(bad("no alias after @")),
                "latest" => Selector::Latest,
                a => Selector::Alias(a.to_string()),
            };
            (name, selector)
        } else if let Some((name, version)) = rest.split_once('/') {
            let v = version
                .parse::<u64>()
                .ok()
                .filter(|v| *v > 0)
                .ok_or_else(|| bad(&format!("version {version:?} is not a number from 1")))?;
            (name, Selector::Version(v))
        } else {
            return Err(bad("no version or alias"));
        };
        if name.is_empty() {
            return Err(bad("no model name"));
        }
        Ok(ModelRef::Registry {
            name: name.to_string(),
            selector,
        })
    }

    /// Read `spec` as a folder or Hub id (see [`ModelRef::try_parse`] for `models:/`).
    pub fn parse(spec: &str) -> Self {
        if spec.starts_with("models:/") {
            if let Ok(r) = Self::try_parse(spec) {
                return r;
            }
        }
        let path = Path::new(spec);
        if path.is_dir() || !looks_like_hub_id(spec) {
            return ModelRef::Folder(path.to_path_buf());
        }
        let (id, revision) = spec.split_once('@').unwrap_or((spec, "main"));
        ModelRef::Hub {
            id: id.to_string(),
            revision: revision.to_string(),
        }
    }

    /// The local folder holding the model, downloading from the Hub into its cache if needed.
    /// A `models:/` reference needs [`ModelRef::resolve_with`].
    pub fn resolve(&self, hub: &HubSettings) -> Result<ModelFolder> {
        self.resolve_with(hub, None)
    }

    /// As [`ModelRef::resolve`], with a registry for `models:/` references.
    pub fn resolve_with(
        &self,
        hub: &HubSettings,
        registry: Option<&dyn RegistryResolver>,
    ) -> Result<ModelFolder> {
        match self {
            ModelRef::Registry { name, selector } => match registry {
                Some(r) => r.resolve(name, selector),
                None => Err(Error::Registry(format!(
                    "{self} is a registry reference, but no model registry is configured (library: set PredictOptions.registry, or call Finetune::with_registry, with track::Registry::resolver())"
                ))),
            },
            ModelRef::Folder(dir) if dir.is_dir() => Ok(ModelFolder {
                dir: dir.clone(),
                origin: dir.display().to_string(),
            }),
            ModelRef::Folder(dir) => Err(Error::FileNotFound { path: dir.clone() }),
            ModelRef::Hub { id, revision } => {
                let repo = Repo::with_revision(id.clone(), RepoType::Model, revision.clone());
                let dir = if hub.offline {
                    from_cache(id, revision, &repo, hub)?
                } else {
                    download(id, &repo, hub)?
                };
                Ok(ModelFolder {
                    dir,
                    origin: format!("hf://{id}@{revision}"),
                })
            }
        }
    }
}

impl std::fmt::Display for ModelRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ModelRef::Folder(dir) => write!(f, "{}", dir.display()),
            ModelRef::Hub { id, revision } => write!(f, "{id}@{revision}"),
            ModelRef::Registry { name, selector } => match selector {
                Selector::Version(v) => write!(f, "models:/{name}/{v}"),
                Selector::Alias(a) => write!(f, "models:/{name}@{a}"),
                Selector::Latest => write!(f, "models:/{name}@latest"),
            },
        }
    }
}

impl std::str::FromStr for ModelRef {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        Self::try_parse(s).map_err(|e| e.to_string())
    }
}

/// `name` or `org/name`, optionally `@revision`: no path separators beyond one slash, and not
/// something that is obviously a path.
fn looks_like_hub_id(spec: &str) -> bool {
    let id = spec.split('@').next().unwrap_or("");
    !id.is_empty()
        && id.matches('/').count() <= 1
        && !id.starts_with(['.', '/', '~'])
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
}

fn from_cache(id: &str, revision: &str, repo: &Repo, hub: &HubSettings) -> Result<PathBuf> {
    let cached = Cache::new(hub.cache_dir.clone()).repo(repo.clone());
    let not_cached = || Error::NotInCacheOffline {
        id: id.to_string(),
        revision: revision.to_string(),
        cache: hub.cache_dir.clone(),
    };
    let config = cached.get("config.json").ok_or_else(not_cached)?;
    // Everything of one revision sits in one snapshot folder.
    let dir = config.parent().ok_or_else(not_cached)?.to_path_buf();
    Ok(dir)
}

fn download(id: &str, repo: &Repo, hub: &HubSettings) -> Result<PathBuf> {
    let hub_err = |reason: String| Error::Hub {
        id: id.to_string(),
        reason,
    };
    let mut builder =
        ApiBuilder::from_cache(Cache::new(hub.cache_dir.clone())).with_progress(false);
    if let Some(token) = &hub.token {
        builder = builder.with_token(Some(token.clone()));
    }
    if let Some(endpoint) = &hub.endpoint {
        builder = builder.with_endpoint(endpoint.clone());
    }
    let api = builder.build().map_err(|e| hub_err(e.to_string()))?;
    let api = api.repo(repo.clone());
    // hf-hub answers from the cache when the file is there and only downloads what is missing.
    let mut dir = None;
    for file in REQUIRED {
        let p = api
            .get(file)
            .map_err(|e| hub_err(format!("cannot get {file}: {e}")))?;
        dir = p.parent().map(Path::to_path_buf);
    }
    let first_of = |files: &[&str], what: &str| -> Result<()> {
        let mut last_err = String::new();
        for file in files {
            match api.get(file) {
                Ok(_) => return Ok(()),
                Err(e) => last_err = e.to_string(),
            }
        }
        Err(hub_err(format!(
            "no {what} ({}): {last_err}",
            files.join(" or ")
        )))
    };
    first_of(WEIGHTS, "weights")?;
    if api.get(WEIGHTS[0]).is_err() {
        // Sharded weights: fetch every shard the index names.
        let index = api.get(WEIGHTS[1]).map_err(|e| hub_err(e.to_string()))?;
        for shard in shard_files(&index)? {
            api.get(&shard)
                .map_err(|e| hub_err(format!("cannot get {shard}: {e}")))?;
        }
    }
    first_of(TOKENIZERS, "tokenizer")?;
    for file in OPTIONAL {
        let _ = api.get(file);
    }
    dir.ok_or_else(|| hub_err("empty repository".into()))
}

/// The shard file names listed by a `model.safetensors.index.json`.
pub fn shard_files(index: &Path) -> Result<Vec<String>> {
    let bad = |reason: String| Error::CorruptWeights {
        path: index.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(index).map_err(|source| Error::Io {
        path: index.to_path_buf(),
        source,
    })?;
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| bad("no weight_map".into()))?;
    let mut files: Vec<String> = map
        .values()
        .filter_map(|v| v.as_str().map(String::from))
        .collect();
    files.sort();
    files.dedup();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_ids_and_paths() {
        assert!(looks_like_hub_id("sentence-transformers/all-MiniLM-L6-v2"));
        assert!(looks_like_hub_id("bert-base-uncased@v1.0"));
        assert!(!looks_like_hub_id("./models/x"));
        assert!(!looks_like_hub_id("/abs/path"));
        assert!(!looks_like_hub_id("a/b/c"));
        assert_eq!(
            ModelRef::parse("org/name@v2"),
            ModelRef::Hub {
                id: "org/name".into(),
                revision: "v2".into()
            }
        );
        assert_eq!(
            ModelRef::parse("./x"),
            ModelRef::Folder(PathBuf::from("./x"))
        );
    }

    fn offline_hub() -> HubSettings {
        HubSettings {
            cache_dir: "/nonexistent".into(),
            offline: true,
            token: None,
            endpoint: None,
        }
    }

    #[test]
    fn registry_references() {
        let r = |s: &str| ModelRef::try_parse(s).map(|m| m.to_string());
        assert_eq!(
            r("models:/shop_model@champion").unwrap(),
            "models:/shop_model@champion"
        );
        assert_eq!(r("models:/shop_model/3").unwrap(), "models:/shop_model/3");
        assert_eq!(
            ModelRef::try_parse("models:/m@latest").unwrap(),
            ModelRef::Registry {
                name: "m".into(),
                selector: Selector::Latest
            }
        );
        assert_eq!(
            r("models:/m/x").unwrap_err().to_string(),
            "`model` \"models:/m/x\": version \"x\" is not a number from 1 (write models:/NAME/VERSION, models:/NAME@ALIAS or models:/NAME@latest)"
        );
        assert!(r("models:/m").is_err() && r("models:/@a").is_err());
        let hub = offline_hub();
        let err = ModelRef::parse("models:/m@champion")
            .resolve(&hub)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "models:/m@champion is a registry reference, but no model registry is configured (library: set PredictOptions.registry, or call Finetune::with_registry, with track::Registry::resolver())"
        );
    }

    #[test]
    fn missing_local_path_is_file_not_found() {
        let hub = offline_hub();
        let err = ModelRef::parse("./no/such/folder")
            .resolve(&hub)
            .unwrap_err()
            .to_string();
        assert_eq!(err, "./no/such/folder: file not found");
        let err = ModelRef::parse("org/missing")
            .resolve(&hub)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "model \"org/missing\" (revision main) is not in the Hugging Face cache at /nonexistent and HF_HUB_OFFLINE=1 forbids downloading it"
        );
    }
}
