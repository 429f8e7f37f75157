//! [`Registry`]: the same operations on either store — register a run's checkpoint as a new
//! version, move aliases (with a history, so `rollback` can undo a promotion), delete versions
//! no alias points at, and resolve `models:/` references to local folders.

use std::sync::Arc;

use super::store::{ModelInfo, Store, VersionInfo};
use crate::checkpoint::{ModelFolder, RegistryResolver, Resolver, Selector};
use crate::error::{Error, Result};

/// The alias that inference picks up by default.
pub const CHAMPION: &str = "champion";

/// The model tag that keeps the versions an alias pointed at, oldest first.
fn history_tag(alias: &str) -> String {
    format!("catbert.history.{alias}")
}

/// A model registry over a [`Store`].
#[derive(Clone)]
pub struct Registry {
    store: Arc<dyn Store>,
}

/// What a promotion did.
#[derive(Debug, Clone, PartialEq)]
pub struct Promotion {
    /// The model.
    pub name: String,
    /// The alias moved.
    pub alias: String,
    /// The version it points at now.
    pub version: u64,
    /// The version it pointed at before, if any.
    pub previous: Option<u64>,
}

impl Registry {
    /// A registry over `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// This registry as a resolver of `models:/` references, for `Predictor` and `Finetune`.
    pub fn resolver(&self) -> Resolver {
        Resolver(Arc::new(self.clone()))
    }

    /// The model `name`.
    pub fn model(&self, name: &str) -> Result<ModelInfo> {
        self.store.model(name)
    }

    /// The version a selector means, checked to exist.
    pub fn version(&self, model: &ModelInfo, selector: &Selector) -> Result<VersionInfo> {
        let name = &model.name;
        let where_ = self.store.describe();
        let number = match selector {
            Selector::Version(v) => *v,
            Selector::Latest => model
                .latest()
                .ok_or_else(|| Error::Registry(format!("{name:?} in {where_} has no versions")))?,
            Selector::Alias(alias) => *model.aliases.get(alias).ok_or_else(|| {
                let known: Vec<String> = model
                    .aliases
                    .iter()
                    .map(|(a, v)| format!("{a} → {v}"))
                    .collect();
                Error::Registry(format!(
                    "{name:?} in {where_} has no alias {alias:?} (aliases: {})",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ))
            })?,
        };
        match model.version(number) {
            Some(v) => Ok(v.clone()),
            None if matches!(selector, Selector::Alias(_)) => Err(Error::Registry(format!(
                "alias {} of {name:?} points at version {number}, which was deleted; promote another version (catbert registry promote {name} VERSION)",
                match selector { Selector::Alias(a) => a.as_str(), _ => "" }
            ))),
            None => Err(Error::Registry(format!(
                "{name:?} in {where_} has no version {number} (versions: {})",
                versions_list(model)
            ))),
        }
    }

    /// Point `alias` of `name` at `version` and record it in the alias's history.
    pub fn promote(&self, name: &str, version: u64, alias: &str) -> Result<Promotion> {
        let model = self.store.model(name)?;
        self.version(&model, &Selector::Version(version))?;
        let previous = model.aliases.get(alias).copied();
        let mut history = parse_history(model.tags.get(&history_tag(alias)));
        if previous.is_some() && history.last() != previous.as_ref() {
            history.extend(previous);
        }
        if history.last() != Some(&version) {
            history.push(version);
        }
        self.store.set_alias(name, alias, version)?;
        self.store
            .set_model_tag(name, &history_tag(alias), &format_history(&history))?;
        Ok(Promotion {
            name: name.to_string(),
            alias: alias.to_string(),
            version,
            previous,
        })
    }

    /// Point `alias` back at the version it pointed at before the current one (skipping
    /// versions deleted since).
    pub fn rollback(&self, name: &str, alias: &str) -> Result<Promotion> {
        let model = self.store.model(name)?;
        let current = model.aliases.get(alias).copied().ok_or_else(|| {
            Error::Registry(format!("{name:?} has no alias {alias:?} to roll back"))
        })?;
        let mut history = parse_history(model.tags.get(&history_tag(alias)));
        while history.last() == Some(&current) {
            history.pop();
        }
        while let Some(&v) = history.last() {
            if model.version(v).is_some() {
                break;
            }
            history.pop();
        }
        let Some(&back) = history.last() else {
            return Err(Error::Registry(format!(
                "{alias} of {name:?} has no earlier version to roll back to (it is version {current})"
            )));
        };
        self.store.set_alias(name, alias, back)?;
        self.store
            .set_model_tag(name, &history_tag(alias), &format_history(&history))?;
        Ok(Promotion {
            name: name.to_string(),
            alias: alias.to_string(),
            version: back,
            previous: Some(current),
        })
    }

    /// Delete a version no alias points at.
    pub fn delete(&self, name: &str, version: u64) -> Result<()> {
        let model = self.store.model(name)?;
        self.version(&model, &Selector::Version(version))?;
        let behind: Vec<&str> = model
            .aliases
            .iter()
            .filter(|(_, v)| **v == version)
            .map(|(a, _)| a.as_str())
            .collect();
        if !behind.is_empty() {
            return Err(Error::Registry(format!(
                "version {version} of {name:?} is behind alias {}; promote another version or roll back first",
                behind.join(", ")
            )));
        }
        self.store.delete_version(name, version)
    }
}

impl RegistryResolver for Registry {
    fn resolve(&self, name: &str, selector: &Selector) -> Result<ModelFolder> {
        let model = self.store.model(name)?;
        let info = self.version(&model, selector)?;
        let dir = self.store.fetch_version(name, &info)?;
        Ok(ModelFolder {
            dir,
            origin: format!("models:/{name}/{}", info.version),
        })
    }
}

fn versions_list(model: &ModelInfo) -> String {
    if model.versions.is_empty() {
        return "none".into();
    }
    let v: Vec<String> = model
        .versions
        .iter()
        .map(|v| v.version.to_string())
        .collect();
    v.join(", ")
}

fn parse_history(tag: Option<&String>) -> Vec<u64> {
    tag.map(|t| t.split(',').filter_map(|v| v.trim().parse().ok()).collect())
        .unwrap_or_default()
}

fn format_history(history: &[u64]) -> String {
    // Keep the tag short (MLflow limits tag values): the last 50 promotions.
    let start = history.len().saturating_sub(50);
    let v: Vec<String> = history[start..].iter().map(u64::to_string).collect();
    v.join(",")
}

#[cfg(test)]
mod tests;
