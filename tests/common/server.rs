//! A `catbert serve` child on a free port and the HTTP helpers the server tests share.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use super::*;

/// A running `catbert serve`, killed when dropped; its stderr lines are collected.
pub struct Server {
    pub child: Child,
    pub base: String,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut all = vec!["serve", "--port", "0", "--threads", "2"];
        all.extend_from_slice(args);
        let mut child = catbert_cmd(&all, env)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let err = child.stderr.take().unwrap();
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("listening on ") {
                    let addr = rest.split(": ").next().unwrap().to_string();
                    let _ = tx.send(addr);
                }
                lines.lock().unwrap().push(line);
            }
        });
        let base = match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(base) => base,
            Err(_) => panic!("server did not start: {:?}", log.lock().unwrap()),
        };
        Server { child, base, log }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn logged(&self, needle: &str) -> bool {
        self.log.lock().unwrap().iter().any(|l| l.contains(needle))
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: signalling the child this test started.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// (status, headers we look at, JSON body) of a POST.
pub fn post(
    agent: &ureq::Agent,
    url: &str,
    body: &Value,
    key: Option<&str>,
) -> (u16, String, Value) {
    let mut req = agent.post(url).set("Content-Type", "application/json");
    if let Some(k) = key {
        req = req.set("Authorization", &format!("Bearer {k}"));
    }
    answer(req.send_string(&body.to_string()))
}

pub fn get(url: &str) -> (u16, String, Value) {
    answer(ureq::get(url).call())
}

pub fn answer(r: Result<ureq::Response, ureq::Error>) -> (u16, String, Value) {
    let resp = match r {
        Ok(resp) => resp,
        Err(ureq::Error::Status(_, resp)) => resp,
        Err(e) => panic!("transport error: {e}"),
    };
    let status = resp.status();
    let version = resp.header("x-model-version").unwrap_or("").to_string();
    let text = resp.into_string().unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, version, body)
}

pub fn same_predictions(a: &Value, b: &Value) {
    let (a, b) = (a.as_array().unwrap(), b.as_array().unwrap());
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x["label"], y["label"], "{a:?} vs {b:?}");
        let d = x["score"].as_f64().unwrap() - y["score"].as_f64().unwrap();
        assert!(d.abs() < 1e-5, "{a:?} vs {b:?}");
    }
}

pub fn minilm_cls() -> PathBuf {
    oracle().join("minilm-cls")
}

pub fn queries() -> Vec<String> {
    let path = repo().join("datasets/products-sample/queries.csv");
    let mut reader = csv_rows(&path);
    reader.remove(0);
    reader.into_iter().map(|r| r[0].clone()).collect()
}

/// Rows of a CSV (quotes handled) — enough for the bundled files.
pub fn csv_rows(path: &Path) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut rows = Vec::new();
    let (mut row, mut field, mut quoted) = (Vec::new(), String::new(), false);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => row.push(std::mem::take(&mut field)),
            ('\n', false) => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            ('\r', false) => {}
            (c, _) => field.push(c),
        }
    }
    if !field.is_empty() || !row.is_empty() {
        row.push(field);
        rows.push(row);
    }
    rows
}
