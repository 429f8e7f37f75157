//! The `Store` operations over MLflow's REST API: runs, batched logging, artifacts and the
//! model registry.

use super::*;

impl Store for MlflowStore {
    fn describe(&self) -> String {
        format!("MLflow at {}", self.base)
    }

    fn check(&self) -> Result<()> {
        self.api("GET", "experiments/search", json!({ "max_results": "1" }))
            .map(drop)
    }

    fn start_run(
        &self,
        experiment: &str,
        name: &str,
        tags: &[(String, String)],
    ) -> Result<RunHandle> {
        let experiment_id = self.experiment_id(experiment)?;
        let tags: Vec<Value> = tags
            .iter()
            .map(|(k, v)| json!({ "key": k, "value": v }))
            .collect();
        let v = self.api(
            "POST",
            "runs/create",
            json!({ "experiment_id": experiment_id, "run_name": name,
                    "start_time": crate::track::store::now_ms(), "tags": tags }),
        )?;
        Ok(RunHandle {
            run_id: str_at(&v, &["run", "info", "run_id"]),
            experiment_id,
            artifact_uri: str_at(&v, &["run", "info", "artifact_uri"]),
        })
    }

    fn log(&self, run: &RunHandle, batch: &Batch) -> Result<()> {
        let kv = |items: &[(String, String)]| -> Vec<Value> {
            items
                .iter()
                .map(|(k, v)| json!({ "key": k, "value": v }))
                .collect()
        };
        let (params, tags) = (kv(&batch.params), kv(&batch.tags));
        let metrics: Vec<Value> = batch
            .metrics
            .iter()
            .map(|m| json!({ "key": m.key, "value": m.value, "timestamp": m.timestamp, "step": m.step }))
            .collect();
        let mut small: Vec<(bool, Value)> = params.into_iter().map(|p| (true, p)).collect();
        small.extend(tags.into_iter().map(|t| (false, t)));
        let rounds =
            (small.len().div_ceil(MAX_PARAMS_AND_TAGS)).max(metrics.len().div_ceil(MAX_METRICS));
        let mut small = small.chunks(MAX_PARAMS_AND_TAGS);
        let mut metric_chunks = metrics.chunks(MAX_METRICS);
        for _ in 0..rounds {
            let s = small.next().unwrap_or(&[]);
            let m = metric_chunks.next().unwrap_or(&[]);
            let params: Vec<&Value> = s.iter().filter(|(p, _)| *p).map(|(_, v)| v).collect();
            let tags: Vec<&Value> = s.iter().filter(|(p, _)| !*p).map(|(_, v)| v).collect();
            self.api(
                "POST",
                "runs/log-batch",
                json!({ "run_id": run.run_id, "params": params, "tags": tags, "metrics": m }),
            )?;
        }
        Ok(())
    }

    fn log_artifacts(&self, run: &RunHandle, dir: &Path, path: &str) -> Result<()> {
        let root = self.proxy_path(&run.artifact_uri)?;
        for rel in list_files(dir)? {
            let target = [root.as_str(), path, rel.as_str()]
                .iter()
                .filter(|s| !s.is_empty())
                .copied()
                .collect::<Vec<_>>()
                .join("/");
            self.upload(&dir.join(&rel), &target)?;
        }
        Ok(())
    }

    fn log_artifact(&self, run: &RunHandle, file: &Path, path: &str) -> Result<()> {
        let root = self.proxy_path(&run.artifact_uri)?;
        let name = file.file_name().unwrap_or_default().to_string_lossy();
        let target = if path.is_empty() {
            format!("{root}/{name}")
        } else {
            format!("{root}/{path}/{name}")
        };
        self.upload(file, &target)
    }

    fn end_run(&self, run: &RunHandle, status: RunStatus) -> Result<()> {
        self.api(
            "POST",
            "runs/update",
            json!({ "run_id": run.run_id, "status": status.name(), "end_time": crate::track::store::now_ms() }),
        )
        .map(drop)
    }

    fn list_models(&self) -> Result<Vec<ModelInfo>> {
        let found = self.search_all("registered-models/search", json!({}), "registered_models")?;
        let mut names: Vec<String> = found.iter().map(|m| str_at(m, &["name"])).collect();
        names.sort();
        names.iter().map(|n| self.model(n)).collect()
    }

    fn model(&self, name: &str) -> Result<ModelInfo> {
        validate_name(name)?;
        let v = match self.call("GET", "registered-models/get", json!({ "name": name })) {
            Ok(v) => v,
            Err(f) if f.code == "RESOURCE_DOES_NOT_EXIST" => return Err(self.unknown_model(name)),
            Err(f) => return Err(self.error("registered-models/get", f)),
        };
        let m = &v["registered_model"];
        let mut info = ModelInfo {
            name: name.to_string(),
            created_at: int_at(m, "creation_timestamp"),
            tags: tags_of(m),
            ..ModelInfo::default()
        };
        for a in m
            .get("aliases")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let (Some(alias), Some(ver)) = (
                a["alias"].as_str(),
                a["version"].as_str().and_then(|s| s.parse().ok()),
            ) {
                info.aliases.insert(alias.to_string(), ver);
            }
        }
        let filter = format!("name='{}'", name.replace('\'', "\\'"));
        let found = self.search_all(
            "model-versions/search",
            json!({ "filter": filter }),
            "model_versions",
        )?;
        for mv in &found {
            info.versions.push(VersionInfo {
                version: mv["version"]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0),
                created_at: int_at(mv, "creation_timestamp"),
                run_id: mv["run_id"]
                    .as_str()
                    .filter(|s| !s.is_empty())
                    .map(String::from),
                source: mv["source"].as_str().unwrap_or_default().to_string(),
                tags: tags_of(mv),
            });
        }
        info.versions.sort_by_key(|v| v.version);
        Ok(info)
    }

    fn create_version(
        &self,
        name: &str,
        run: &RunHandle,
        path: &str,
        tags: &[(String, String)],
    ) -> Result<u64> {
        validate_name(name)?;
        match self.call("POST", "registered-models/create", json!({ "name": name })) {
            Ok(_) => {}
            Err(f) if f.code == "RESOURCE_ALREADY_EXISTS" => {}
            Err(f) => return Err(self.error("registered-models/create", f)),
        }
        let tags: Vec<Value> = tags
            .iter()
            .map(|(k, v)| json!({ "key": k, "value": v }))
            .collect();
        let source = format!("{}/{path}", run.artifact_uri.trim_end_matches('/'));
        let v = self.api(
            "POST",
            "model-versions/create",
            json!({ "name": name, "source": source, "run_id": run.run_id, "tags": tags }),
        )?;
        let version = v["model_version"]["version"]
            .as_str()
            .and_then(|s| s.parse().ok());
        version.ok_or_else(|| {
            Error::Tracking(format!(
                "MLflow at {}: model-versions/create answered no version",
                self.base
            ))
        })
    }

    fn set_alias(&self, name: &str, alias: &str, version: u64) -> Result<()> {
        self.api(
            "POST",
            "registered-models/alias",
            json!({ "name": name, "alias": alias, "version": version.to_string() }),
        )
        .map(drop)
    }

    fn delete_alias(&self, name: &str, alias: &str) -> Result<()> {
        self.api(
            "DELETE",
            "registered-models/alias",
            json!({ "name": name, "alias": alias }),
        )
        .map(drop)
    }

    fn set_model_tag(&self, name: &str, key: &str, value: &str) -> Result<()> {
        self.api(
            "POST",
            "registered-models/set-tag",
            json!({ "name": name, "key": key, "value": value }),
        )
        .map(drop)
    }

    fn set_version_tag(&self, name: &str, version: u64, key: &str, value: &str) -> Result<()> {
        self.api(
            "POST",
            "model-versions/set-tag",
            json!({ "name": name, "version": version.to_string(), "key": key, "value": value }),
        )
        .map(drop)
    }

    fn delete_version(&self, name: &str, version: u64) -> Result<()> {
        self.api(
            "DELETE",
            "model-versions/delete",
            json!({ "name": name, "version": version.to_string() }),
        )
        .map(drop)
    }

    fn fetch_version(&self, name: &str, info: &VersionInfo) -> Result<PathBuf> {
        if let Some(dir) = self.cache.get(name, info.version)? {
            return Ok(dir);
        }
        let source = self.proxy_path(&info.source)?;
        let files = self.list_artifacts(&format!("{source}/model"))?;
        if files.is_empty() {
            return Err(Error::Registry(format!(
                "version {} of {name:?} in MLflow at {} has no files under {}/model",
                info.version, self.base, info.source
            )));
        }
        let manifest = self
            .list_artifacts(&source)?
            .iter()
            .any(|(p, _)| p == crate::track::mlmodel::MANIFEST);
        self.cache.fill(name, info.version, |tmp| {
            for (rel, _) in &files {
                self.download(
                    &format!("{source}/model/{rel}"),
                    &tmp.join("model").join(rel),
                )?;
            }
            if manifest {
                self.download(
                    &format!("{source}/{}", crate::track::mlmodel::MANIFEST),
                    &tmp.join(crate::track::mlmodel::MANIFEST),
                )?;
            }
            Ok(files
                .iter()
                .map(|(p, s)| (format!("model/{p}"), *s))
                .collect::<BTreeMap<_, _>>())
        })
    }
}
