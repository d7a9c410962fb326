//! Pauses an operator sets (`sendtime pause ID`, `sendtime resume ID`) on a webhook, an action
//! or a connector: `{data_dir}/state/pauses.json`, written durably under a lock by the CLI,
//! read by the dispatcher on every tick (a paused endpoint's contacts are held in the queue,
//! receiving goes on) and shown on `/status` and in the metrics. A pause lasts until resumed,
//! across restarts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::config::{Config, Target};
use crate::store::{lock_file, write_durably};

/// What was paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Webhook,
    Action,
    Connector,
}

impl Kind {
    /// As stored, labelled in metrics and printed: `webhook`, `action`, `connector`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Webhook => "webhook",
            Kind::Action => "action",
            Kind::Connector => "connector",
        }
    }
}

/// One pause.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pause {
    pub kind: Kind,
    /// When it was set (epoch ms).
    pub since_ms: i64,
}

/// Every pause in force, by id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pauses {
    pub paused: BTreeMap<String, Pause>,
}

impl Pauses {
    /// Whether contacts of `webhook` (on `connector`) are held.
    pub fn holds(&self, webhook: &str, connector: &str) -> bool {
        let is =
            |id: &str, kinds: &[Kind]| self.paused.get(id).is_some_and(|p| kinds.contains(&p.kind));
        is(webhook, &[Kind::Webhook, Kind::Action]) || is(connector, &[Kind::Connector])
    }
}

fn path(data_dir: &Path) -> PathBuf {
    data_dir.join("state").join("pauses.json")
}

/// The pauses in force (none when the file does not exist).
pub fn read(data_dir: &Path) -> anyhow::Result<Pauses> {
    let path = path(data_dir);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is unreadable; fix or delete it", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Pauses::default()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// What `id` names in `config` (with `connector`, only a connector), if anything.
pub fn kind_of(config: &Config, id: &str, connector: bool) -> Option<Kind> {
    if connector {
        return config.connector(id).map(|_| Kind::Connector);
    }
    match config.webhook(id) {
        Some(w) if w.target == Target::Callback => Some(Kind::Action),
        Some(_) => Some(Kind::Webhook),
        None => config.connector(id).map(|_| Kind::Connector),
    }
}

/// Pause (`on`) or resume the webhook, action or connector `id` of `config`; what it is.
/// With `connector`, `id` names a connector even where a webhook has the same id.
pub fn set(
    config: &Config,
    id: &str,
    connector: bool,
    on: bool,
    now_ms: i64,
) -> anyhow::Result<Kind> {
    let kind = kind_of(config, id, connector).with_context(|| {
        let what = if connector {
            "connector"
        } else {
            "webhook, action or connector"
        };
        format!("no {what} {id:?} in {}", config.path.display())
    })?;
    let data_dir = &config.server.data_dir;
    let file = path(data_dir);
    let lock = lock_file(&file.with_extension("lock"))?;
    lock.lock()
        .with_context(|| format!("cannot lock {}", file.display()))?;
    let mut pauses = read(data_dir)?;
    if on {
        pauses.paused.entry(id.to_string()).or_insert(Pause {
            kind,
            since_ms: now_ms,
        });
    } else {
        pauses.paused.remove(id);
    }
    let bytes = serde_json::to_vec_pretty(&pauses).expect("pauses serialize");
    write_durably(&file, &bytes).with_context(|| format!("cannot write {}", file.display()))?;
    Ok(kind)
}
