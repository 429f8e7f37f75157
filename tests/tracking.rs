//! Run tracking and the model registry against a real MLflow server (3.17.2 from the oracle
//! venv, started here on 127.0.0.1 and a free port, SQLite store, artifact proxy) read back
//! through MLflow's own Python client, and against the local registry.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A real MLflow server, stopped (with its workers) when dropped.
struct Mlflow {
    child: Child,
    uri: String,
    _dir: tempfile::TempDir,
}

impl Mlflow {
    fn start(auth_password: Option<&str>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut cmd = Command::new(oracle_python());
        cmd.args([
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
        ])
        .arg("--backend-store-uri")
        .arg(format!(
            "sqlite:///{}",
            dir.path().join("mlflow.db").display()
        ))
        .arg("--artifacts-destination")
        .arg(dir.path().join("artifacts"))
        .args(["--workers", "1"])
        // No GenAI job runner: its worker processes would only take CPU from the tests.
        .env("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("server.log")).unwrap())
        .process_group(0);
        if let Some(pw) = auth_password {
            cmd.args(["--app-name", "basic-auth"])
                .env("MLFLOW_AUTH_ADMIN_PASSWORD", pw)
                .env("MLFLOW_FLASK_SERVER_SECRET_KEY", "catbert-tests");
        }
        let child = cmd
            .spawn()
            .expect("start mlflow (scripts/py-oracle.sh installs it)");
        let uri = format!("http://127.0.0.1:{port}");
        let server = Mlflow {
            child,
            uri,
            _dir: dir,
        };
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "mlflow did not start: {}",
                std::fs::read_to_string(server._dir.path().join("server.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        server
    }

    fn stop(&mut self) {
        // SAFETY: signalling the process group this test started.
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        let _ = self.child.wait();
    }

    /// Run a Python snippet with `client = MlflowClient(uri)` defined; its stdout as JSON.
    fn query(&self, code: &str) -> serde_json::Value {
        let script = format!(
            "import json, mlflow\nfrom mlflow import MlflowClient\nmlflow.set_tracking_uri({uri:?})\nclient = MlflowClient({uri:?})\n{code}",
            uri = self.uri
        );
        let o = Command::new(oracle_python())
            .arg("-c")
            .arg(script)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let text = String::from_utf8_lossy(&o.stdout);
        serde_json::from_str(text.lines().last().unwrap_or("null")).unwrap()
    }
}

impl Drop for Mlflow {
    fn drop(&mut self) {
        self.stop();
    }
}

fn tiny() -> PathBuf {
    oracle().join("tiny")
}

fn finetune(dir: &Path, out: &str, extra: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let train = synthetic(dir, "train.csv", 120);
    let model = tiny();
    let mut args = vec!["finetune", "--train", s(&train)];
    if !extra.contains(&"--model") {
        args.extend(["--model", s(&model)]);
    }
    args.extend(["--epochs", "2", "--batch-size", "16", "--out"]);
    let out = dir.join(out);
    args.push(s(&out));
    args.extend_from_slice(extra);
    catbert(&args, env)
}

#[test]
fn a_run_against_mlflow_is_tracked_registered_promoted_and_served() {
    let server = Mlflow::start(None);
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let env = [
        ("MLFLOW_TRACKING_URI", server.uri.as_str()),
        ("CATBERT_HOME", s(&home)),
    ];
    let eval = synthetic(dir.path(), "eval.csv", 30);
    let o = finetune(
        dir.path(),
        "ck",
        &[
            "--eval",
            s(&eval),
            "--client",
            "acme",
            "--promote-if",
            "f1_min>=0.0",
            "--log-every",
            "2",
        ],
        &env,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("registered acme_model version 1 in MLflow at"),
        "{err}"
    );
    assert!(
        err.contains("acme_model version 1 promoted: f1_min "),
        "{err}"
    );

    let got = server.query(
        r#"
exp = client.get_experiment_by_name("acme")
run = client.search_runs([exp.experiment_id])[0]
hist = {k: [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, k)]
        for k in ["f1_min", "eval.f1_min", "accuracy", "f1.dairy", "train_loss", "train_loss_epoch"]}
arts = [f.path for f in client.list_artifacts(run.info.run_id)]
model_arts = sorted(f.path for f in client.list_artifacts(run.info.run_id, "model"))
mv = client.get_model_version_by_alias("acme_model", "champion")
print(json.dumps({"status": run.info.status, "params": run.data.params, "tags": run.data.tags,
  "hist": hist, "arts": arts, "model_arts": model_arts, "version": mv.version,
  "source": mv.source, "run_id": mv.run_id, "this_run": run.info.run_id, "vtags": mv.tags}))
"#,
    );
    assert_eq!(got["status"], "FINISHED");
    let params = &got["params"];
    for (k, v) in [
        ("epochs", "2"),
        ("batch_size", "16"),
        ("lr", "0.00005"),
        ("metric", "f1_min"),
        ("class_weights", "balanced"),
    ] {
        assert_eq!(params[k], v, "param {k}: {params}");
    }
    assert!(params["class_weight.dairy"]
        .as_str()
        .unwrap()
        .parse::<f64>()
        .is_ok());
    let tags = &got["tags"];
    assert_eq!(tags["catbert.version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(tags["data.train.rows"], "120");
    assert_eq!(tags["data.eval.rows"], "30");
    assert_eq!(tags["data.train.sha256"].as_str().unwrap().len(), 64);
    assert_eq!(tags["catbert.registered"], "acme_model/1");
    assert!(tags["host"].as_str().is_some() && tags["catbert.device"].as_str().is_some());
    let steps = |k: &str| -> Vec<i64> {
        got["hist"][k]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p[0].as_i64().unwrap())
            .collect()
    };
    for k in [
        "f1_min",
        "eval.f1_min",
        "accuracy",
        "f1.dairy",
        "train_loss_epoch",
    ] {
        assert_eq!(steps(k), vec![1, 2], "{k}");
    }
    assert!(
        steps("train_loss").len() >= 4,
        "every 2 steps: {:?}",
        steps("train_loss")
    );
    assert!(got["arts"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a == "metrics.json"));
    let model_arts: Vec<&str> = got["model_arts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    for want in [
        "model/MLmodel",
        "model/model",
        "model/components",
        "model/catbert-manifest.json",
    ] {
        assert!(model_arts.contains(&want), "{model_arts:?}");
    }
    assert_eq!(got["version"], "1");
    assert_eq!(got["run_id"], got["this_run"]);
    assert!(got["vtags"]["metric.f1_min"].as_str().is_some());

    // Inference through the registry: downloaded once, then from the cache.
    let rows = synthetic(dir.path(), "rows.csv", 12);
    for _ in 0..2 {
        let o = infer_to(
            "models:/acme_model@champion",
            &rows,
            &dir.path().join("p.csv"),
            &env,
        );
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(
            stderr(&o).contains("model models:/acme_model/1 "),
            "{}",
            stderr(&o)
        );
    }
    // A cached file that lost bytes is never loaded: the version is fetched again.
    let cached = std::fs::read_dir(home.join("cache/mlflow"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let weights = cached.join("acme_model/1/model/model.safetensors");
    let len = std::fs::metadata(&weights).unwrap().len();
    std::fs::write(&weights, b"truncated").unwrap();
    let o = infer_to(
        "models:/acme_model/1",
        &rows,
        &dir.path().join("p.csv"),
        &env,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::metadata(&weights).unwrap().len(), len);

    // A second version that is not better than the champion on the same rows stays out.
    let o = finetune(
        dir.path(),
        "ck2",
        &[
            "--eval",
            s(&eval),
            "--client",
            "acme",
            "--promote-if-better",
            "--lr",
            "1e-9",
        ],
        &env,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let line = stderr(&o).lines().last().unwrap().to_string();
    assert!(line.starts_with("acme_model version 2 "), "{line}");
    assert!(
        line.contains(" vs champion version 1 ") && line.contains(" on 30 rows"),
        "{line}"
    );

    // Registry commands against MLflow.
    let o = catbert(&["registry", "promote", "acme_model", "2"], &env);
    assert_eq!(
        stderr(&o).trim(),
        "acme_model@champion → version 2 (was version 1)"
    );
    let o = catbert(&["registry", "delete", "acme_model", "2"], &env);
    assert_error(&o, 2, "error: version 2 of \"acme_model\" is behind alias champion; promote another version or roll back first");
    let o = catbert(&["registry", "rollback", "acme_model"], &env);
    assert_eq!(
        stderr(&o).trim(),
        "acme_model@champion rolled back to version 1 (was version 2)"
    );
    let alias = server.query(
        r#"print(json.dumps(client.get_model_version_by_alias("acme_model", "champion").version))"#,
    );
    assert_eq!(alias, "1");
    let o = catbert(&["registry", "delete", "acme_model", "2"], &env);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = catbert(
        &[
            "infer",
            "--model",
            "models:/acme_model/2",
            "--file",
            s(&rows),
        ],
        &env,
    );
    assert_error(
        &o,
        2,
        &format!(
            "error: \"acme_model\" in MLflow at {} has no version 2 (versions: 1)",
            server.uri
        ),
    );
}

#[test]
fn python_mlflow_loads_the_registered_version_and_agrees_with_catbert() {
    let server = Mlflow::start(None);
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let env = [
        ("MLFLOW_TRACKING_URI", server.uri.as_str()),
        ("CATBERT_HOME", s(&home)),
    ];
    // A real classifier: the transformers-made MiniLM classifier, fine-tuned briefly.
    let sample =
        std::fs::read_to_string(repo().join("datasets/products-sample/train.csv")).unwrap();
    let head: Vec<&str> = sample.lines().take(301).collect();
    let train = write(dir.path(), "train.csv", (head.join("\n") + "\n").as_bytes());
    let o = catbert(
        &[
            "finetune",
            "--train",
            s(&train),
            "--text-col",
            "product_description",
            "--model",
            s(&oracle().join("minilm-cls")),
            "--epochs",
            "1",
            "--lr",
            "1e-6",
            "--out",
            s(&dir.path().join("ck")),
            "--register",
            "shop",
            "--promote-if",
            "accuracy>=0",
        ],
        &env,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    // The bundled queries, all 600.
    let queries = repo().join("datasets/products-sample/queries.csv");
    let pred = dir.path().join("pred.csv");
    let o = catbert(
        &[
            "infer",
            "--model",
            "models:/shop@champion",
            "--file",
            s(&queries),
            "--text-col",
            "product_description",
            "--out",
            s(&pred),
        ],
        &env,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let got = server.query(&format!(
        r#"
import pandas as pd
texts = pd.read_csv({q:?})["product_description"].astype(str).tolist()
py = mlflow.pyfunc.load_model("models:/shop@champion").predict(texts)
tf = mlflow.transformers.load_model("models:/shop@champion")(texts[:5])
ours = pd.read_csv({p:?})
print(json.dumps({{"py": list(py["label"]), "tf": [r["label"] for r in tf],
  "ours": list(ours["category_1"]), "p1": list(ours["probability_1"]), "p2": list(ours["probability_2"])}}))
"#,
        q = s(&queries),
        p = s(&pred)
    ));
    let py: Vec<&str> = got["py"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let ours: Vec<&str> = got["ours"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(py.len(), 600);
    for (i, (a, b)) in py.iter().zip(&ours).enumerate() {
        let margin = got["p1"][i].as_f64().unwrap() - got["p2"][i].as_f64().unwrap();
        assert!(a == b || margin < 1e-4, "row {i}: mlflow {a}, catbert {b}");
    }
    let tf: Vec<&str> = got["tf"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(tf, ours[..5].to_vec());
}

#[test]
fn tracking_faults_cost_no_training_result() {
    let dir = tempfile::tempdir().unwrap();
    let dead = format!("http://127.0.0.1:{}", free_port());
    let home = dir.path().join("home");
    let env = [
        ("MLFLOW_TRACKING_URI", dead.as_str()),
        ("CATBERT_HOME", s(&home)),
    ];
    // Unreachable at start: refused before training, naming the URI.
    let o = finetune(dir.path(), "ck", &[], &env);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let line = stderr(&o).trim().to_string();
    assert!(
        line.starts_with(&format!(
            "error: MLflow tracking server {dead} is unreachable (experiments/search): "
        )),
        "{line}"
    );
    assert!(!dir.path().join("ck").exists());
    // --tracking-optional: trains, warns once, keeps what should have been logged.
    let o = finetune(dir.path(), "ck", &["--tracking-optional"], &env);
    assert!(o.status.success(), "{}", stderr(&o));
    let warnings: Vec<String> = stderr(&o)
        .lines()
        .filter(|l| l.starts_with("warning:"))
        .map(String::from)
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    let buffer = dir.path().join("ck/tracking-unsent.jsonl");
    assert!(
        warnings[0].ends_with(&format!(
            "what should have been logged is kept in {}",
            buffer.display()
        )),
        "{warnings:?}"
    );
    let ops: Vec<String> = std::fs::read_to_string(&buffer)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["op"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(ops.first().map(String::as_str), Some("start"));
    assert_eq!(ops.last().map(String::as_str), Some("end"));
    assert!(ops.iter().filter(|o| *o == "log").count() >= 3);
    assert!(dir.path().join("ck/model.safetensors").is_file());

    // 401: the variable to set is named.
    let server = Mlflow::start(Some("catbert-Test-pw-123"));
    let home = dir.path().join("home");
    let env = [
        ("MLFLOW_TRACKING_URI", server.uri.as_str()),
        ("CATBERT_HOME", s(&home)),
    ];
    let o = finetune(dir.path(), "ck2", &[], &env);
    assert_error(&o, 2, &format!("error: MLflow at {} answered 401 Unauthorized (experiments/search); set MLFLOW_TRACKING_TOKEN, or MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD", server.uri));
    let mut env = env.to_vec();
    env.extend([
        ("MLFLOW_TRACKING_USERNAME", "admin"),
        ("MLFLOW_TRACKING_PASSWORD", "catbert-Test-pw-123"),
    ]);
    let o = finetune(dir.path(), "ck2", &["--register", "m"], &env);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn losing_the_server_mid_run_buffers_the_rest_and_keeps_training() {
    let mut server = Mlflow::start(None);
    let dir = tempfile::tempdir().unwrap();
    let train = synthetic(dir.path(), "train.csv", 600);
    let out = dir.path().join("ck");
    let mut child = catbert_cmd(
        &[
            "finetune",
            "--train",
            s(&train),
            "--model",
            s(&tiny()),
            "--epochs",
            "6",
            "--batch-size",
            "4",
            "--out",
            s(&out),
            "--log-every",
            "5",
        ],
        &[
            ("MLFLOW_TRACKING_URI", server.uri.as_str()),
            ("CATBERT_HOME", s(&dir.path().join("home"))),
            ("CATBERT_TRACKING_RETRIES", "0.1,0.2"),
        ],
    )
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let tracking_started = line.starts_with("tracking: run ");
        seen.push(line);
        if tracking_started {
            server.stop();
            break;
        }
    }
    seen.extend(lines.map(|l| l.unwrap()));
    assert!(child.wait().unwrap().success(), "{seen:#?}");
    let lost: Vec<&String> = seen
        .iter()
        .filter(|l| l.starts_with("warning: tracking lost while "))
        .collect();
    assert_eq!(lost.len(), 1, "{seen:#?}");
    assert!(lost[0].ends_with(&format!(
        "kept in {}",
        out.join("tracking-unsent.jsonl").display()
    )));
    assert!(seen.iter().any(|l| l.starts_with("best epoch ")));
    assert!(out.join("model.safetensors").is_file() && out.join("tracking-unsent.jsonl").is_file());
}

#[test]
fn local_registry_versions_aliases_and_bad_references() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let env = [("CATBERT_HOME", s(&home))];
    for out in ["a", "b"] {
        let o = finetune(
            dir.path(),
            out,
            &["--register", "shop", "--promote-if", "accuracy>=0"],
            &env,
        );
        assert!(o.status.success(), "{}", stderr(&o));
    }
    // Layout a user can read without catbert.
    let run_dirs: Vec<PathBuf> = std::fs::read_dir(home.join("runs/shop"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(run_dirs.len(), 2);
    let run = read_json(&run_dirs[0].join("run.json"));
    assert_eq!(run["status"], "FINISHED");
    assert_eq!(run["params"]["epochs"], "2");
    let metrics = std::fs::read_to_string(run_dirs[0].join("metrics.jsonl")).unwrap();
    assert!(metrics
        .lines()
        .any(|l| l.contains("\"key\":\"f1_min\"") && l.contains("\"step\":2")));
    assert_eq!(
        read_json(&home.join("models/shop/model.json"))["aliases"]["champion"],
        2
    );
    assert!(
        home.join("models/shop/2/MLmodel").is_file()
            && home.join("models/shop/2/model/config.json").is_file()
    );

    let rows = synthetic(dir.path(), "rows.csv", 9);
    let infer = |model: &str| infer_to(model, &rows, &dir.path().join("p.csv"), &env);
    assert!(infer("models:/shop@champion").status.success());
    assert!(infer("models:/shop@latest").status.success());
    let local = format!("the local registry at {}", home.display());
    assert_error(
        &infer("models:/nope@champion"),
        2,
        &format!("error: no registered model \"nope\" in {local} (models: shop)"),
    );
    assert_error(
        &infer("models:/shop/9"),
        2,
        &format!("error: \"shop\" in {local} has no version 9 (versions: 1, 2)"),
    );
    assert_error(
        &infer("models:/shop@staging"),
        2,
        &format!("error: \"shop\" in {local} has no alias \"staging\" (aliases: champion → 2)"),
    );
    assert_error(&infer("models:/shop"), 2, "error: --model \"models:/shop\": no version or alias (write models:/NAME/VERSION, models:/NAME@ALIAS or models:/NAME@latest)");
    // An alias whose version was deleted behind catbert's back.
    std::fs::rename(home.join("models/shop/2"), dir.path().join("gone")).unwrap();
    assert_error(&infer("models:/shop@champion"), 2, "error: alias champion of \"shop\" points at version 2, which was deleted; promote another version (catbert registry promote shop VERSION)");
    let o = catbert(&["registry", "rollback", "shop"], &env);
    assert_eq!(
        stderr(&o).trim(),
        "shop@champion rolled back to version 1 (was version 2)"
    );
    // Retraining the champion: a registry reference as the base model.
    let o = finetune(dir.path(), "c", &["--model", "models:/shop@champion"], &env);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("models:/shop/1"), "{}", stderr(&o));

    // A writer holding the registry lock too long.
    let mut holder = Command::new("flock")
        .arg(home.join("registry.lock"))
        .args(["sleep", "30"])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let o = catbert(
        &["registry", "promote", "shop", "1"],
        &[("CATBERT_HOME", s(&home)), ("CATBERT_LOCK_TIMEOUT", "0.5")],
    );
    let _ = holder.kill();
    let _ = holder.wait();
    assert_error(&o, 1, &format!("error: {}: registry lock held for more than 0.5s; another catbert is writing the registry (wait for it, or raise CATBERT_LOCK_TIMEOUT)", home.join("registry.lock").display()));
}

#[test]
fn a_killed_run_is_marked_killed() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let train = synthetic(dir.path(), "train.csv", 3000);
    let mut child = catbert_cmd(
        &[
            "finetune",
            "--train",
            s(&train),
            "--model",
            s(&tiny()),
            "--epochs",
            "50",
            "--batch-size",
            "2",
            "--out",
            s(&dir.path().join("ck")),
        ],
        &[("CATBERT_HOME", s(&home))],
    )
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    // Read stderr to the end on another thread (a closed pipe would fail the child's prints).
    let (started, seen) = std::sync::mpsc::channel();
    let err = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            if line.starts_with("tracking: run ") {
                let _ = started.send(());
            }
        }
    });
    seen.recv_timeout(Duration::from_secs(60))
        .expect("the run starts");
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: signalling the child this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(child.wait().unwrap().code(), Some(128 + libc::SIGTERM));
    let runs: Vec<PathBuf> = std::fs::read_dir(home.join("runs/tiny"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(read_json(&runs[0].join("run.json"))["status"], "KILLED");
}
