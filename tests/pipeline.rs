//! `catbert pipeline`: clients in parallel through the real binary and the local registry; a
//! broken client fails alone; re-runs are idempotent; a kill -9 in the middle of scoring and a
//! re-run give exactly the partitions and rows of an uninterrupted run.

mod common;

use std::path::{Path, PathBuf};

use catbert::data::Table;
use common::*;

const DATE: &str = "2026-12-01";

/// New rows for a day: `files` CSV files of `rows` rows each, with an id column.
fn new_rows(dir: &Path, files: usize, rows: usize) {
    let day = dir.join(DATE);
    std::fs::create_dir_all(&day).unwrap();
    let words = ["milk", "cheese", "cola", "juice", "soap", "towels"];
    for f in 0..files {
        let mut csv = String::from("id,text\n");
        for r in 0..rows {
            csv.push_str(&format!(
                "{f}-{r},{} {}\n",
                words[r % 6],
                words[(r + f) % 6]
            ));
        }
        std::fs::write(day.join(format!("batch{f}.csv")), csv).unwrap();
    }
}

/// A workspace: data for the clients and a clients.toml whose output is `output`.
fn workspace(dir: &Path, output: &str, clients: &str) -> PathBuf {
    let tiny = oracle().join("tiny");
    let data = dir.join("data");
    for id in ["acme", "beta"] {
        std::fs::create_dir_all(data.join(id)).unwrap();
    }
    synthetic(&data.join("acme"), "train.csv", 300);
    // beta's training rows come in two files, matched by a glob.
    synthetic(&data.join("beta"), "train-a.csv", 150);
    synthetic(&data.join("beta"), "train-b.csv", 150);
    new_rows(&data.join("acme/new"), 1, 40);
    new_rows(&data.join("beta/new"), 2, 30);
    let d = s(&data);
    let config = format!(
        "output = \"{out}\"\n[defaults]\nmodel = \"{model}\"\nepochs = 1\nlabel_col = \"label\"\n\
         [clients.acme]\ntrain = \"{d}/acme/train.csv\"\nscore = \"{d}/acme/new/{{date}}\"\n\
         [clients.beta]\ntrain = [\"{d}/beta/train-*.csv\"]\nscore = \"{d}/beta/new/{{date}}\"\n\
         promote_if = \"accuracy>=0.0\"\n{clients}",
        out = s(&dir.join(output)),
        model = s(&tiny),
    );
    write(dir, "clients.toml", config.as_bytes())
}

fn pipeline(config: &Path, home: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["pipeline", "--config", s(config), "--date", DATE];
    args.extend_from_slice(extra);
    catbert(&args, &[("CATBERT_HOME", s(home))])
}

/// Every partition under `root`: (client=…/date=… path, its rows as CSV text), sorted.
fn partitions(root: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for client in std::fs::read_dir(root).unwrap().flatten() {
        let name = client.file_name().to_string_lossy().into_owned();
        if !name.starts_with("client=") {
            continue;
        }
        for date in std::fs::read_dir(client.path()).unwrap().flatten() {
            let mut parts: Vec<PathBuf> = std::fs::read_dir(date.path())
                .unwrap()
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
                .collect();
            parts.sort();
            let mut text = String::new();
            for p in parts {
                let t = Table::read(&p, None).unwrap();
                text.push_str(&format!("{:?}\n", t.frame));
            }
            let key = format!("{name}/{}", date.file_name().to_string_lossy());
            out.push((key, text));
        }
    }
    out.sort();
    out
}

#[test]
fn a_broken_client_fails_alone_and_reruns_skip_finished_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let broken = write(
        dir.path(),
        "broken.csv",
        b"text,label\nmilk,dairy\n\"cola,drinks\nsoap,home\n",
    );
    std::fs::create_dir_all(dir.path().join("empty")).unwrap();
    let extra = format!(
        "[clients.broken]\ntrain = \"{}\"\nscore = \"{}\"\n\
         [clients.quiet]\ntrain = \"{}\"\nscore = \"{}\"\n\
         [clients.ghost]\nscore = \"{}/data/acme/new/{{date}}\"\n\
         [clients.lost]\ntrain = \"{}/nowhere.csv\"\n",
        s(&broken),
        s(&dir.path().join("data/acme/new/{date}")),
        s(&dir.path().join("data/acme/train.csv")),
        s(&dir.path().join("empty")),
        s(dir.path()),
        s(dir.path()),
    );
    let config = workspace(dir.path(), "predictions", &extra);
    let o = pipeline(&config, &home, &["--jobs", "2"]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(o.status.code(), Some(1), "{out}{}", stderr(&o));
    let line = |id: &str| {
        (out.lines())
            .find(|l| l.starts_with(&format!("{id} ")))
            .unwrap_or_else(|| panic!("no line for {id}: {out}"))
            .to_string()
    };
    assert!(line("acme").contains(" scored "), "{out}");
    assert!(line("acme").contains("trained (no champion yet)"), "{out}");
    assert!(line("beta").contains(" scored "), "{out}");
    assert!(line("quiet").contains(" skipped "), "{out}");
    assert!(line("quiet").contains("no new rows in"), "{out}");
    assert!(
        line("broken").contains(&format!("training failed: {}: line 3", s(&broken))),
        "{out}"
    );
    assert!(
        line("ghost").contains(
            "ghost_model has no champion yet and the client has no `train` data to make one"
        ),
        "{out}"
    );
    assert!(
        line("lost").contains(&format!(
            "`train`: {}/nowhere.csv: file not found",
            s(dir.path())
        )),
        "{out}"
    );
    assert!(
        stderr(&o).contains("3 of 6 clients succeeded"),
        "{}",
        stderr(&o)
    );

    // Long layout: the id carried, one row per rank (top 5 of 3 classes: 3) per input row;
    // the marker counts them.
    let root = dir.path().join("predictions");
    let acme = root.join(format!("client=acme/date={DATE}"));
    let t = Table::read(&acme.join("part-00000.parquet"), None).unwrap();
    assert_eq!(t.rows(), 40 * 3);
    let cols: Vec<String> = (t.frame.get_column_names().iter())
        .map(|c| c.to_string())
        .collect();
    assert_eq!(cols, ["id", "row_id", "rank", "category", "probability"]);
    let marker = read_json(&acme.join("_SUCCESS"));
    assert_eq!(marker["rows"], 40);
    assert_eq!(marker["output_rows"], 120);
    assert_eq!(marker["version"], 1);
    let beta = root.join(format!("client=beta/date={DATE}"));
    assert_eq!(read_json(&beta.join("_SUCCESS"))["rows"], 60);
    let status = read_json(&root.join(format!("_status/{DATE}.json")));
    assert_eq!(status["succeeded"], false);
    assert_eq!(status["clients"][2]["status"], "failed");

    // Both good clients are registered with a champion.
    let o = catbert(&["registry", "list"], &[("CATBERT_HOME", s(&home))]);
    let list = String::from_utf8_lossy(&o.stdout);
    assert!(
        list.contains("acme_model") && list.contains("beta_model"),
        "{list}"
    );

    // The same date again: finished partitions are skipped, nothing retrains.
    let before = partitions(&root);
    let o = pipeline(&config, &home, &["--client", "acme", "--client", "beta"]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{out}{}", stderr(&o));
    assert!(
        out.lines().filter(|l| l.contains("already scored")).count() == 2,
        "{out}"
    );
    assert_eq!(partitions(&root), before);

    // Verified rows arrive for acme: the next day retrains it on them before scoring.
    let verified = write(
        dir.path(),
        "verified.csv",
        b"text,label
milk soap,dairy
cola tea,drinks
",
    );
    let env = [("CATBERT_HOME", s(&home))];
    let o = catbert(
        &[
            "feedback",
            "add",
            s(&verified),
            "--label-col",
            "label",
            "--model",
            "models:/acme_model@champion",
        ],
        &env,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let next = dir.path().join("data/acme/new/2026-12-02");
    std::fs::create_dir_all(&next).unwrap();
    std::fs::write(
        next.join("rows.csv"),
        "id,text
1,milk
2,cola
",
    )
    .unwrap();
    let o = catbert(
        &[
            "pipeline",
            "--config",
            s(&config),
            "--date",
            "2026-12-02",
            "--client",
            "acme",
        ],
        &env,
    );
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{out}{}", stderr(&o));
    assert!(
        out.contains("trained (2 verified rows arrived since version 1 was registered)"),
        "{out}"
    );
    assert!(root.join("client=acme/date=2026-12-02/_SUCCESS").is_file());
}

#[test]
fn a_kill_in_the_middle_of_scoring_then_a_rerun_gives_an_uninterrupted_runs_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let config = workspace(dir.path(), "predictions", "");
    let o = catbert(
        &[
            "pipeline",
            "--config",
            s(&config),
            "--date",
            DATE,
            "--jobs",
            "1",
        ],
        &[
            ("CATBERT_HOME", s(&home)),
            ("CATBERT_TEST_CRASH", "pipeline-partition@beta"),
        ],
    );
    use std::os::unix::process::ExitStatusExt as _;
    assert_eq!(o.status.signal(), Some(9), "{}", stderr(&o));
    let root = dir.path().join("predictions");
    let beta = root.join("client=beta");
    // Killed after beta's first part file: no partition, only a temporary folder.
    assert!(!beta.join(format!("date={DATE}")).exists());
    let temps = std::fs::read_dir(&beta).unwrap().count();
    assert_eq!(temps, 1);

    let o = pipeline(&config, &home, &[]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{out}{}", stderr(&o));
    assert!(
        out.contains("already scored"),
        "acme was done before the kill: {out}"
    );
    assert_eq!(
        std::fs::read_dir(&beta).unwrap().count(),
        1,
        "temporary folder removed"
    );

    // An uninterrupted run with the same champions into a fresh output root.
    let fresh = workspace(dir.path(), "fresh", "");
    let o = pipeline(&fresh, &home, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let got = partitions(&root);
    assert_eq!(got.len(), 2);
    assert_eq!(got, partitions(&dir.path().join("fresh")));
}

#[test]
fn bad_configs_get_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = workspace(
        dir.path(),
        "p",
        "[clients.gamma]\ntrain = \"x.csv\"\ntrian = 2\n",
    );
    let o = pipeline(&config, &dir.path().join("home"), &[]);
    assert_error(
        &o,
        2,
        &format!(
            "error: {}: client gamma: unknown key `trian` (pipeline keys: train, score, promote_if, promote_if_better, key_cols, top_k, wide, retrain_on_feedback; or any catbert finetune setting)",
            config.display()
        ),
    );
    let o = pipeline(&config, &dir.path().join("home"), &["--client", "zeta"]);
    assert_eq!(o.status.code(), Some(2));
    let config = workspace(dir.path(), "p", "");
    let o = pipeline(&config, &dir.path().join("home"), &["--client", "zeta"]);
    assert_error(
        &o,
        2,
        &format!(
            "error: no client \"zeta\" in {} (clients: acme, beta)",
            config.display()
        ),
    );
}
