//! `catbert registry`: list, show, promote, rollback and delete registered models, the same
//! for the local registry and an MLflow server.

use clap::{Args, Subcommand};

use super::progress::Ui;
use super::tracking::StoreArgs;
use crate::track::registry::CHAMPION;
use crate::track::store::format_time;
use crate::track::{ModelInfo, Registry};

#[derive(Debug, Args)]
pub struct RegistryArgs {
    #[command(subcommand)]
    pub action: Action,
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Debug, Subcommand)]
pub enum Action {
    /// Every registered model: versions, aliases, newest version.
    List,
    /// One model: each version with its metrics, source run, creation time and aliases.
    Show {
        /// The registered model.
        name: String,
    },
    /// Point an alias (default champion) at a version.
    Promote {
        /// The registered model.
        name: String,
        /// The version.
        version: u64,
        /// The alias to move.
        #[arg(long, default_value = CHAMPION)]
        alias: String,
    },
    /// Point an alias (default champion) back at the version it pointed at before.
    Rollback {
        /// The registered model.
        name: String,
        /// The alias to move back.
        #[arg(long, default_value = CHAMPION)]
        alias: String,
    },
    /// Delete a version (refused while an alias points at it).
    Delete {
        /// The registered model.
        name: String,
        /// The version.
        version: u64,
    },
}

fn aliases_of(model: &ModelInfo, version: u64) -> String {
    let a: Vec<&str> = (model.aliases.iter())
        .filter(|(_, v)| **v == version)
        .map(|(a, _)| a.as_str())
        .collect();
    a.join(",")
}

pub fn run(args: RegistryArgs, ui: &Ui) -> anyhow::Result<()> {
    let registry = Registry::new(args.store.open()?);
    let store = registry.store().describe();
    match args.action {
        Action::List => {
            let models = registry.store().list_models()?;
            if models.is_empty() {
                ui.result(&format!("no registered models in {store}"));
            }
            println!("{:<32} {:>8} {:>7}  aliases", "name", "versions", "latest");
            for m in &models {
                let aliases: Vec<String> =
                    m.aliases.iter().map(|(a, v)| format!("{a}→{v}")).collect();
                println!(
                    "{:<32} {:>8} {:>7}  {}",
                    m.name,
                    m.versions.len(),
                    m.latest().map_or("-".into(), |v| v.to_string()),
                    aliases.join(" ")
                );
            }
        }
        Action::Show { name } => {
            let m = registry.model(&name)?;
            println!(
                "{} ({store}), created {}",
                m.name,
                format_time(m.created_at)
            );
            println!(
                "{:>7}  {:<23}  {:<12}  {:>8} {:>11} {:>8}  run",
                "version", "created", "aliases", "f1_min", "f1_weighted", "accuracy"
            );
            for v in &m.versions {
                let metrics = v.metrics();
                let num = |k: &str| metrics.get(k).map_or("-".into(), |x| format!("{x:.4}"));
                println!(
                    "{:>7}  {:<23}  {:<12}  {:>8} {:>11} {:>8}  {}",
                    v.version,
                    format_time(v.created_at),
                    aliases_of(&m, v.version),
                    num("f1_min"),
                    num("f1_weighted"),
                    num("accuracy"),
                    v.run_id.as_deref().unwrap_or("-")
                );
            }
            for (alias, version) in &m.aliases {
                if m.version(*version).is_none() {
                    ui.notice(&format!(
                        "alias {alias} points at version {version}, which was deleted"
                    ));
                }
            }
        }
        Action::Promote {
            name,
            version,
            alias,
        } => {
            let p = registry.promote(&name, version, &alias)?;
            let was = p
                .previous
                .map_or("unset".into(), |v| format!("version {v}"));
            ui.result(&format!(
                "{name}@{alias} → version {} (was {was})",
                p.version
            ));
        }
        Action::Rollback { name, alias } => {
            let p = registry.rollback(&name, &alias)?;
            ui.result(&format!(
                "{name}@{alias} rolled back to version {} (was version {})",
                p.version,
                p.previous.unwrap_or(0)
            ));
        }
        Action::Delete { name, version } => {
            registry.delete(&name, version)?;
            ui.result(&format!("deleted {name} version {version} from {store}"));
        }
    }
    Ok(())
}
