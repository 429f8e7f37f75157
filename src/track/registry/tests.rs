use super::*;
use crate::track::local::LocalStore;

/// A local registry with `n` versions of "shop", each registered from its own run.
fn registry_with(n: u64) -> (tempfile::TempDir, Registry) {
    let home = tempfile::tempdir().unwrap();
    let store = LocalStore::new(home.path());
    for i in 1..=n {
        let run = store.start_run("exp", &format!("run-{i}"), &[]).unwrap();
        let src = home.path().join(format!("ck{i}"));
        std::fs::create_dir_all(src.join("model")).unwrap();
        std::fs::write(src.join("model/config.json"), format!("{{\"v\": {i}}}")).unwrap();
        store.log_artifacts(&run, &src, "model").unwrap();
        assert_eq!(store.create_version("shop", &run, "model", &[]).unwrap(), i);
    }
    (home, Registry::new(Arc::new(store)))
}

fn alias(r: &Registry, a: &str) -> Option<u64> {
    r.model("shop").unwrap().aliases.get(a).copied()
}

fn message(e: Error) -> String {
    e.to_string()
}

#[test]
fn promote_and_rollback_walk_the_alias_history() {
    let (_home, r) = registry_with(3);
    let p = r.promote("shop", 1, CHAMPION).unwrap();
    assert_eq!(p.previous, None);
    r.promote("shop", 2, CHAMPION).unwrap();
    let p = r.promote("shop", 3, CHAMPION).unwrap();
    assert_eq!((p.version, p.previous), (3, Some(2)));
    // Promoting the current version again does not grow the history.
    r.promote("shop", 3, CHAMPION).unwrap();
    let back = r.rollback("shop", CHAMPION).unwrap();
    assert_eq!((back.version, back.previous), (2, Some(3)));
    assert_eq!(alias(&r, CHAMPION), Some(2));
    r.rollback("shop", CHAMPION).unwrap();
    assert_eq!(alias(&r, CHAMPION), Some(1));
    let e = message(r.rollback("shop", CHAMPION).unwrap_err());
    assert_eq!(
        e,
        "champion of \"shop\" has no earlier version to roll back to (it is version 1)"
    );
}

#[test]
fn rollback_skips_deleted_versions() {
    let (_home, r) = registry_with(3);
    for v in 1..=3 {
        r.promote("shop", v, CHAMPION).unwrap();
    }
    r.delete("shop", 2).unwrap();
    assert_eq!(r.rollback("shop", CHAMPION).unwrap().version, 1);
}

#[test]
fn selectors_resolve_and_name_what_exists() {
    let (_home, r) = registry_with(2);
    r.promote("shop", 1, CHAMPION).unwrap();
    let model = r.model("shop").unwrap();
    let v = |s: Selector| r.version(&model, &s).map(|v| v.version);
    assert_eq!(v(Selector::Latest).unwrap(), 2);
    assert_eq!(v(Selector::Alias(CHAMPION.into())).unwrap(), 1);
    assert_eq!(v(Selector::Version(2)).unwrap(), 2);
    let e = message(v(Selector::Version(7)).unwrap_err());
    assert!(e.ends_with("has no version 7 (versions: 1, 2)"), "{e}");
    let e = message(v(Selector::Alias("staging".into())).unwrap_err());
    assert!(
        e.ends_with("has no alias \"staging\" (aliases: champion → 1)"),
        "{e}"
    );
    // A resolved version is a folder holding the registered files.
    let folder = r
        .resolve("shop", &Selector::Alias(CHAMPION.into()))
        .unwrap();
    assert_eq!(folder.origin, "models:/shop/1");
    let config = std::fs::read_to_string(folder.dir.join("config.json")).unwrap();
    assert_eq!(config, "{\"v\": 1}");
}

#[test]
fn a_version_behind_an_alias_is_not_deleted() {
    let (_home, r) = registry_with(2);
    r.promote("shop", 2, CHAMPION).unwrap();
    let e = message(r.delete("shop", 2).unwrap_err());
    assert_eq!(
        e,
        "version 2 of \"shop\" is behind alias champion; promote another version or roll back first"
    );
    r.delete("shop", 1).unwrap();
    let versions: Vec<u64> = r
        .model("shop")
        .unwrap()
        .versions
        .iter()
        .map(|v| v.version)
        .collect();
    assert_eq!(versions, [2]);
}

#[test]
fn version_numbers_are_not_reused_after_a_delete() {
    let (home, r) = registry_with(2);
    r.delete("shop", 2).unwrap();
    let store = LocalStore::new(home.path());
    let run = store.start_run("exp", "again", &[]).unwrap();
    let src = home.path().join("ck1");
    store.log_artifacts(&run, &src, "model").unwrap();
    assert_eq!(store.create_version("shop", &run, "model", &[]).unwrap(), 3);
}

#[test]
fn history_keeps_the_last_fifty() {
    let h: Vec<u64> = (1..=60).collect();
    let s = format_history(&h);
    assert_eq!(parse_history(Some(&s)), (11..=60).collect::<Vec<_>>());
}
