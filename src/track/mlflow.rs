//! A small typed client of MLflow's REST API 2.0: tracking (experiments, runs, batched
//! logging), artifacts through the server's proxy (`mlflow-artifacts:`), and the model
//! registry (registered models, versions, aliases, tags). Authenticates with
//! `MLFLOW_TRACKING_TOKEN` (bearer) or `MLFLOW_TRACKING_USERNAME`/`PASSWORD` (basic).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use super::cache::VersionCache;
use super::store::{Batch, ModelInfo, RunHandle, RunStatus, Store, VersionInfo};
use super::{list_files, validate_name};
use crate::error::{Error, Result};

mod store_impl;

/// MLflow's limits per `runs/log-batch` call.
const MAX_METRICS: usize = 1000;
const MAX_PARAMS_AND_TAGS: usize = 100;

/// An MLflow tracking server.
pub struct MlflowStore {
    base: String,
    agent: ureq::Agent,
    auth: Option<String>,
    cache: VersionCache,
}

/// A failed request: the HTTP status (none when the server was not reached), MLflow's
/// `error_code` and message.
#[derive(Debug)]
struct Fail {
    status: Option<u16>,
    code: String,
    message: String,
}

impl MlflowStore {
    /// A client of the server at `uri` (`http(s)://host:port[/prefix]`), with credentials
    /// from the environment; downloaded versions are cached under `cache_root`.
    pub fn new(uri: &str, cache_root: &Path) -> Result<Self> {
        if !(uri.starts_with("http://") || uri.starts_with("https://")) {
            return Err(Error::Usage(format!(
                "`tracking_uri` {uri:?} is not an http(s):// URL of an MLflow server"
            )));
        }
        let base = uri.trim_end_matches('/').to_string();
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let auth = match (
            var("MLFLOW_TRACKING_TOKEN"),
            var("MLFLOW_TRACKING_USERNAME"),
            var("MLFLOW_TRACKING_PASSWORD"),
        ) {
            (Some(token), _, _) => Some(format!("Bearer {token}")),
            (None, Some(user), pass) => Some(format!(
                "Basic {}",
                base64(format!("{user}:{}", pass.unwrap_or_default()).as_bytes())
            )),
            _ => None,
        };
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(5))
            .timeout(Duration::from_secs(300))
            .build();
        let server_key: String = base
            .split_once("://")
            .map_or(base.as_str(), |(_, rest)| rest)
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        Ok(Self {
            cache: VersionCache::new(&cache_root.join("cache").join("mlflow").join(server_key)),
            base,
            agent,
            auth,
        })
    }

    /// The server's URI.
    pub fn uri(&self) -> &str {
        &self.base
    }

    fn request(&self, method: &str, path: &str) -> ureq::Request {
        let mut req = self.agent.request(method, &format!("{}{path}", self.base));
        if let Some(auth) = &self.auth {
            req = req.set("Authorization", auth);
        }
        req
    }

    fn finish(
        &self,
        result: std::result::Result<ureq::Response, ureq::Error>,
    ) -> std::result::Result<ureq::Response, Fail> {
        match result {
            Ok(r) => Ok(r),
            Err(ureq::Error::Status(status, r)) => {
                let text = r.into_string().unwrap_or_default();
                let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                let field = |k: &str| body.get(k).and_then(Value::as_str).map(String::from);
                Err(Fail {
                    status: Some(status),
                    code: field("error_code").unwrap_or_default(),
                    message: field("message")
                        .unwrap_or_else(|| text.trim().chars().take(200).collect()),
                })
            }
            Err(ureq::Error::Transport(t)) => Err(Fail {
                status: None,
                code: String::new(),
                message: t.to_string(),
            }),
        }
    }

    /// Call `endpoint` (under `/api/2.0/mlflow/`) with a JSON body (POST, PATCH, DELETE) or
    /// query parameters (GET).
    fn call(&self, method: &str, endpoint: &str, body: Value) -> std::result::Result<Value, Fail> {
        let path = format!("/api/2.0/mlflow/{endpoint}");
        let result = if method == "GET" {
            let mut req = self.request(method, &path);
            if let Value::Object(map) = &body {
                for (k, v) in map {
                    let v = v.as_str().map_or_else(|| v.to_string(), String::from);
                    req = req.query(k, &v);
                }
            }
            req.call()
        } else {
            self.request(method, &path).send_json(body)
        };
        let resp = self.finish(result)?;
        let text = resp.into_string().map_err(|e| Fail {
            status: None,
            code: String::new(),
            message: e.to_string(),
        })?;
        Ok(if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::Null)
        })
    }

    /// The error a failed call becomes.
    fn error(&self, what: &str, f: Fail) -> Error {
        match f.status {
            None => Error::Tracking(format!(
                "MLflow tracking server {} is unreachable ({what}): {}",
                self.base, f.message
            )),
            Some(s @ (401 | 403)) => {
                let set = if self.auth.is_some() {
                    "the credentials in MLFLOW_TRACKING_TOKEN or MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD were refused; check them"
                } else {
                    "set MLFLOW_TRACKING_TOKEN, or MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
                };
                let why = if s == 401 {
                    "401 Unauthorized"
                } else {
                    "403 Forbidden"
                };
                Error::TrackingAuth(format!(
                    "MLflow at {} answered {why} ({what}); {set}",
                    self.base
                ))
            }
            Some(s) => Error::Tracking(format!(
                "MLflow at {} failed ({what}): HTTP {s}{}{}",
                self.base,
                if f.code.is_empty() {
                    String::new()
                } else {
                    format!(" {}", f.code)
                },
                if f.message.is_empty() {
                    String::new()
                } else {
                    format!(": {}", f.message)
                }
            )),
        }
    }

    fn api(&self, method: &str, endpoint: &str, body: Value) -> Result<Value> {
        self.call(method, endpoint, body)
            .map_err(|f| self.error(endpoint, f))
    }

    fn experiment_id(&self, name: &str) -> Result<String> {
        match self.call(
            "GET",
            "experiments/get-by-name",
            json!({ "experiment_name": name }),
        ) {
            Ok(v) => Ok(str_at(&v, &["experiment", "experiment_id"])),
            Err(f) if f.code == "RESOURCE_DOES_NOT_EXIST" => {
                match self.call("POST", "experiments/create", json!({ "name": name })) {
                    Ok(v) => Ok(str_at(&v, &["experiment_id"])),
                    // Created by someone else in between.
                    Err(f) if f.code == "RESOURCE_ALREADY_EXISTS" => {
                        let v = self.api(
                            "GET",
                            "experiments/get-by-name",
                            json!({ "experiment_name": name }),
                        )?;
                        Ok(str_at(&v, &["experiment", "experiment_id"]))
                    }
                    Err(f) => Err(self.error("experiments/create", f)),
                }
            }
            Err(f) => Err(self.error("experiments/get-by-name", f)),
        }
    }

    /// The proxy path of an `mlflow-artifacts:` URI (`mlflow-artifacts:/1/<run>/artifacts` or
    /// `mlflow-artifacts://host:port/1/<run>/artifacts`).
    fn proxy_path(&self, uri: &str) -> Result<String> {
        let rest = uri.strip_prefix("mlflow-artifacts:").ok_or_else(|| {
            Error::Tracking(format!(
                "MLflow at {} stores artifacts at {uri}, which catbert cannot reach; start the server with its artifact proxy (the default, `--serve-artifacts`)",
                self.base
            ))
        })?;
        let rest = match rest.strip_prefix("//") {
            Some(with_host) => with_host.split_once('/').map_or("", |(_, p)| p),
            None => rest.trim_start_matches('/'),
        };
        Ok(rest.trim_end_matches('/').to_string())
    }

    fn upload(&self, file: &Path, proxy_path: &str) -> Result<()> {
        let f = std::fs::File::open(file).map_err(|source| Error::Io {
            path: file.to_path_buf(),
            source,
        })?;
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let url = format!(
            "/api/2.0/mlflow-artifacts/artifacts/{}",
            encode_path(proxy_path)
        );
        let result = self
            .request("PUT", &url)
            .set("Content-Type", "application/octet-stream")
            .set("Content-Length", &len.to_string())
            .send(f);
        self.finish(result)
            .map(drop)
            .map_err(|f| self.error("artifact upload", f))
    }

    /// Files under an artifact folder: (path relative to it, size).
    fn list_artifacts(&self, proxy_path: &str) -> Result<Vec<(String, u64)>> {
        let mut out = Vec::new();
        let mut stack = vec![String::new()];
        while let Some(rel) = stack.pop() {
            let full = if rel.is_empty() {
                proxy_path.to_string()
            } else {
                format!("{proxy_path}/{rel}")
            };
            let result = self
                .request("GET", "/api/2.0/mlflow-artifacts/artifacts")
                .query("path", &full)
                .call();
            let resp = self
                .finish(result)
                .map_err(|f| self.error("artifact listing", f))?;
            let v: Value = resp.into_json().map_err(|e| {
                Error::Tracking(format!(
                    "MLflow at {}: bad artifact listing: {e}",
                    self.base
                ))
            })?;
            for f in v
                .get("files")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let name = f.get("path").and_then(Value::as_str).unwrap_or_default();
                let name = name.rsplit('/').next().unwrap_or(name);
                let path = if rel.is_empty() {
                    name.to_string()
                } else {
                    format!("{rel}/{name}")
                };
                if f.get("is_dir").and_then(Value::as_bool).unwrap_or(false) {
                    stack.push(path);
                } else {
                    let size = f
                        .get("file_size")
                        .and_then(|s| s.as_u64().or_else(|| s.as_str()?.parse().ok()));
                    out.push((path, size.unwrap_or(0)));
                }
            }
        }
        out.sort();
        Ok(out)
    }

    fn download(&self, proxy_path: &str, to: &Path) -> Result<()> {
        let url = format!(
            "/api/2.0/mlflow-artifacts/artifacts/{}",
            encode_path(proxy_path)
        );
        let resp = self
            .finish(self.request("GET", &url).call())
            .map_err(|f| self.error("artifact download", f))?;
        if let Some(dir) = to.parent() {
            std::fs::create_dir_all(dir).map_err(|source| Error::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let mut file = std::fs::File::create(to).map_err(|source| Error::Io {
            path: to.to_path_buf(),
            source,
        })?;
        std::io::copy(&mut resp.into_reader(), &mut file).map_err(|e| {
            Error::Tracking(format!(
                "MLflow at {}: download of {proxy_path} broke off: {e}",
                self.base
            ))
        })?;
        Ok(())
    }

    /// Every item under `key` of a paged search (`max_results` 1000 a page).
    fn search_all(&self, endpoint: &str, mut query: Value, key: &str) -> Result<Vec<Value>> {
        let mut items = Vec::new();
        query["max_results"] = json!("1000");
        loop {
            let page = self.api("GET", endpoint, query.clone())?;
            if let Some(found) = page.get(key).and_then(Value::as_array) {
                items.extend(found.iter().cloned());
            }
            match page.get("next_page_token").and_then(Value::as_str) {
                Some(token) if !token.is_empty() => query["page_token"] = json!(token),
                _ => return Ok(items),
            }
        }
    }

    fn unknown_model(&self, name: &str) -> Error {
        let names: Vec<String> = self
            .list_models()
            .map(|ms| ms.into_iter().map(|m| m.name).collect())
            .unwrap_or_default();
        Error::Registry(format!(
            "no registered model {name:?} in MLflow at {} (models: {})",
            self.base,
            if names.is_empty() {
                "none yet".into()
            } else {
                names.join(", ")
            }
        ))
    }
}

fn str_at(v: &Value, keys: &[&str]) -> String {
    let mut cur = v;
    for k in keys {
        cur = &cur[*k];
    }
    cur.as_str().unwrap_or_default().to_string()
}

fn int_at(v: &Value, key: &str) -> i64 {
    v[key]
        .as_i64()
        .or_else(|| v[key].as_str()?.parse().ok())
        .unwrap_or(0)
}

fn tags_of(v: &Value) -> BTreeMap<String, String> {
    v.get("tags")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| {
            Some((
                t["key"].as_str()?.to_string(),
                t["value"].as_str().unwrap_or_default().to_string(),
            ))
        })
        .collect()
}

/// Percent-encode each segment of an artifact path.
fn encode_path(path: &str) -> String {
    path.split('/')
        .map(|seg| {
            seg.bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                        (b as char).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Standard base64 with padding (for HTTP basic auth).
fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_and_paths() {
        assert_eq!(base64(b"user:pass"), "dXNlcjpwYXNz");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"a"), "YQ==");
        assert_eq!(encode_path("1/x y/f.json"), "1/x%20y/f.json");
        let s = MlflowStore::new("http://127.0.0.1:5000/", Path::new("/tmp")).unwrap();
        assert_eq!(
            s.proxy_path("mlflow-artifacts:/1/abc/artifacts").unwrap(),
            "1/abc/artifacts"
        );
        assert_eq!(
            s.proxy_path("mlflow-artifacts://h:1/1/abc/artifacts/")
                .unwrap(),
            "1/abc/artifacts"
        );
        assert!(s.proxy_path("s3://bucket/x").is_err());
        assert!(MlflowStore::new("file:///tmp/x", Path::new("/tmp")).is_err());
    }
}
