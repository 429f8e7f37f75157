//! The model being served and how it is replaced without downtime: [`ModelSlot`] holds the
//! current [`LoadedModel`] behind an `Arc`; requests keep the `Arc` they were tokenised with,
//! so a swap never mixes tokenizers and the old model is freed when its last request is done.
//! [`ModelSource`] knows where the model comes from and whether a newer one is there.

use std::sync::{Arc, RwLock};

use crate::checkpoint::{Checkpoint, HubSettings, ModelRef, Selector};
use crate::device::DeviceChoice;
use crate::error::Result;
use crate::infer::{PredictOptions, Predictor};
use crate::monitor::Profile;
use crate::track::store::now_ms;
use crate::track::Registry;

/// A model ready to answer.
pub struct LoadedModel {
    /// The classifier.
    pub predictor: Predictor,
    /// What was asked for: `models:/shop@champion`, a folder, a Hub id.
    pub reference: String,
    /// The registry version, when it came from the registry.
    pub version: Option<u64>,
    /// When it was loaded (ms since the epoch).
    pub loaded_at: i64,
    /// Its reference profile (from training), when the checkpoint has one.
    pub profile: Option<Profile>,
}

impl LoadedModel {
    /// The version as shown in headers and `/info`: the number, else the origin.
    pub fn version_label(&self) -> String {
        match self.version {
            Some(v) => v.to_string(),
            None => self.predictor.origin().to_string(),
        }
    }
}

/// The model currently answering.
pub struct ModelSlot {
    current: RwLock<Arc<LoadedModel>>,
}

impl ModelSlot {
    /// A slot holding `model`.
    pub fn new(model: LoadedModel) -> Self {
        Self {
            current: RwLock::new(Arc::new(model)),
        }
    }

    /// The model answering now.
    pub fn current(&self) -> Arc<LoadedModel> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Make `model` the one answering; returns the one it replaced.
    pub fn swap(&self, model: LoadedModel) -> Arc<LoadedModel> {
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        std::mem::replace(&mut *current, Arc::new(model))
    }
}

/// Where the served model comes from.
pub struct ModelSource {
    reference: ModelRef,
    registry: Registry,
    device: DeviceChoice,
    options: PredictOptions,
}

impl ModelSource {
    /// `reference` loaded onto `device` with `options`; `models:/` references resolve in
    /// `registry`.
    pub fn new(
        reference: ModelRef,
        registry: Registry,
        device: DeviceChoice,
        mut options: PredictOptions,
    ) -> Self {
        options.registry = Some(registry.resolver());
        Self {
            reference,
            registry,
            device,
            options,
        }
    }

    /// The reference as the user wrote it.
    pub fn reference(&self) -> String {
        self.reference.to_string()
    }

    /// Whether the reference can move (an alias or `@latest`), so polling makes sense.
    pub fn follows(&self) -> bool {
        matches!(
            self.reference,
            ModelRef::Registry {
                selector: Selector::Alias(_) | Selector::Latest,
                ..
            }
        )
    }

    /// The registry version the reference points at now (`None` outside the registry).
    pub fn current_version(&self) -> Result<Option<u64>> {
        let ModelRef::Registry { name, selector } = &self.reference else {
            return Ok(None);
        };
        let model = self.registry.model(name)?;
        Ok(Some(self.registry.version(&model, selector)?.version))
    }

    /// Load what the reference points at now, pinned to that version.
    pub fn load(&self) -> Result<LoadedModel> {
        let version = self.current_version()?;
        let pinned = match (&self.reference, version) {
            (ModelRef::Registry { name, .. }, Some(v)) => ModelRef::Registry {
                name: name.clone(),
                selector: Selector::Version(v),
            },
            (other, _) => other.clone(),
        };
        let hub = (self.options.hub.clone()).unwrap_or_else(HubSettings::from_env);
        let registry = self.options.registry.as_ref().map(|r| &*r.0);
        let folder = pinned.resolve_with(&hub, registry)?;
        let profile = Profile::load(&folder.dir)?;
        let checkpoint = Checkpoint::open(&folder.dir)?;
        let predictor = Predictor::from_checkpoint(
            checkpoint,
            &folder.origin,
            self.device,
            self.options.clone(),
        )?;
        Ok(LoadedModel {
            predictor,
            reference: self.reference(),
            version,
            loaded_at: now_ms(),
            profile,
        })
    }
}
