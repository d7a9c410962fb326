//! Pauses an operator sets (`sendtime pause ID`, `sendtime resume ID`) on a webhook, an action
//! or a connector: `{data_dir}/state/pauses.json`, written durably under a lock by the CLI,
//! read by the dispatcher on every tick and before each call (a paused endpoint's contacts are
//! held in the queue, receiving goes on) and shown on `/status` and in the metrics. A pause
//! lasts until resumed, across restarts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::config::{Config, Named};
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

/// Every pause in force, by id: webhooks and actions share one id space, connectors have
/// their own (a connector may have a webhook's id).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pauses {
    /// Webhooks and actions.
    pub paused: BTreeMap<String, Pause>,
    #[serde(default)]
    pub connectors: BTreeMap<String, Pause>,
    /// The file could not be read: it may pause anything, so everything is held.
    #[serde(skip)]
    pub unreadable: bool,
}

impl Pauses {
    /// What an unreadable file stands for: every contact held.
    pub fn unreadable() -> Pauses {
        Pauses {
            unreadable: true,
            ..Pauses::default()
        }
    }

    /// Whether contacts of `webhook` (on `connector`) are held.
    pub fn holds(&self, webhook: &str, connector: &str) -> bool {
        self.unreadable
            || self.paused.contains_key(webhook)
            || self.connectors.contains_key(connector)
    }

    /// Every pause, endpoints first.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Pause)> {
        self.paused.iter().chain(&self.connectors)
    }

    pub fn is_empty(&self) -> bool {
        self.paused.is_empty() && self.connectors.is_empty()
    }

    /// The pauses of what `config` does not name (renamed or removed since): they hold
    /// nothing, so a renamed connector's or webhook's contacts go out unpaused.
    pub fn unmatched<'p>(&'p self, config: &Config) -> Vec<(Kind, &'p str)> {
        let endpoints = (self.paused.iter())
            .filter(|(id, _)| config.webhook(id).is_none())
            .map(|(id, p)| (p.kind, id.as_str()));
        let connectors = (self.connectors.keys())
            .filter(|id| config.connector(id).is_none())
            .map(|id| (Kind::Connector, id.as_str()));
        endpoints.chain(connectors).collect()
    }

    fn map_mut(&mut self, kind: Kind) -> &mut BTreeMap<String, Pause> {
        match kind {
            Kind::Connector => &mut self.connectors,
            Kind::Webhook | Kind::Action => &mut self.paused,
        }
    }
}

fn path(data_dir: &Path) -> PathBuf {
    crate::store::state_dir(data_dir).join("pauses.json")
}

/// The pauses in force (none when the file does not exist).
pub fn read(data_dir: &Path) -> anyhow::Result<Pauses> {
    parse(data_dir, &read_bytes(data_dir))
}

/// The file's bytes; none when it does not exist.
fn read_bytes(data_dir: &Path) -> std::io::Result<Option<Vec<u8>>> {
    match std::fs::read(path(data_dir)) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn parse(data_dir: &Path, read: &std::io::Result<Option<Vec<u8>>>) -> anyhow::Result<Pauses> {
    let path = path(data_dir);
    match read {
        Ok(Some(bytes)) => {
            let mut pauses: Pauses = serde_json::from_slice(bytes).map_err(|e| Unreadable {
                path,
                why: e.to_string(),
            })?;
            // Files from before connectors had their own map kept them with the endpoints.
            let (connectors, endpoints) = std::mem::take(&mut pauses.paused)
                .into_iter()
                .partition(|(_, p)| p.kind == Kind::Connector);
            pauses.paused = endpoints;
            pauses.connectors.extend::<BTreeMap<_, _>>(connectors);
            Ok(pauses)
        }
        Ok(None) => Ok(Pauses::default()),
        Err(e) => Err(Unreadable {
            path,
            why: e.to_string(),
        }
        .into()),
    }
}

/// The pauses in force for the dispatcher: an unreadable file holds every contact (logged)
/// rather than lifting the pauses it may hold.
pub fn read_or_hold(data_dir: &Path) -> Pauses {
    hold_if_unreadable(read(data_dir))
}

fn hold_if_unreadable(read: anyhow::Result<Pauses>) -> Pauses {
    read.unwrap_or_else(|e| {
        tracing::error!("{e:#}: every contact is held until it is fixed");
        Pauses::unreadable()
    })
}

/// The pauses as the file says now, parsed again only when its bytes changed: a running tick
/// asks before each call, so a pause set meanwhile holds what has not gone out yet. The file
/// is read each time (it is small): two pauses written within the file system's timestamp
/// granularity leave the same modification time.
pub struct Watch {
    data_dir: PathBuf,
    /// The bytes last read, and what they say.
    seen: Mutex<(Read, Arc<Pauses>)>,
}

/// The file as last read: its bytes (none: no file), or the kind of error reading it.
type Read = Result<Option<Vec<u8>>, std::io::ErrorKind>;

impl Watch {
    pub fn new(data_dir: &Path) -> Watch {
        let read = read_bytes(data_dir);
        let pauses = hold_if_unreadable(parse(data_dir, &read));
        Watch {
            data_dir: data_dir.to_path_buf(),
            seen: Mutex::new((read.map_err(|e| e.kind()), Arc::new(pauses))),
        }
    }

    /// The pauses in force now.
    pub fn current(&self) -> Arc<Pauses> {
        let read = read_bytes(&self.data_dir);
        let mut seen = self.seen.lock().unwrap();
        let key = read.as_ref().map(Clone::clone).map_err(|e| e.kind());
        if seen.0 != key {
            let pauses = hold_if_unreadable(parse(&self.data_dir, &read));
            *seen = (key, Arc::new(pauses));
        }
        seen.1.clone()
    }
}

/// What `id` names in the config (with `connector`, only a connector), if anything.
pub fn kind_of(named: &Named, id: &str, connector: bool) -> Option<Kind> {
    let has = |ids: &[String]| ids.iter().any(|i| i == id);
    if connector {
        has(&named.connectors).then_some(Kind::Connector)
    } else if has(&named.actions) {
        Some(Kind::Action)
    } else if has(&named.webhooks) {
        Some(Kind::Webhook)
    } else {
        has(&named.connectors).then_some(Kind::Connector)
    }
}

/// The pause file cannot be read (not JSON this build reads, or no readable file): every
/// contact is held until it is fixed, and no pause is set or lifted (the admin surface's 409).
#[derive(Debug, thiserror::Error)]
#[error("{} is unreadable; fix or delete it: {why}", path.display())]
pub struct Unreadable {
    path: PathBuf,
    why: String,
}

/// Nothing of that name to pause, nor a pause of it to lift: the admin surface's 404.
#[derive(Debug, thiserror::Error)]
#[error("no {what} {} in {}; {}", crate::text::quoted(.id), config.display(), self.choices())]
pub struct Unknown {
    what: &'static str,
    id: String,
    config: PathBuf,
    /// The ids that could have been meant.
    known: Vec<String>,
}

impl Unknown {
    /// The message without the config's path, for the admin surface.
    pub fn in_the_config(&self) -> String {
        format!(
            "no {} {:?} in the config; {}",
            self.what,
            self.id,
            self.choices()
        )
    }

    fn choices(&self) -> String {
        const SHOWN: usize = 20;
        // Ids are unique ignoring case, so this one is what was meant.
        if let Some(k) = self.known.iter().find(|k| k.eq_ignore_ascii_case(&self.id)) {
            return format!("did you mean {k:?}? (ids are matched as written)");
        }
        let mut list = self.known[..self.known.len().min(SHOWN)].join(", ");
        if self.known.len() > SHOWN {
            list.push_str(&format!(" and {} more", self.known.len() - SHOWN));
        }
        match list.as_str() {
            "" => "it declares none".into(),
            _ => format!("it has: {list}"),
        }
    }
}

/// Pause (`on`) or resume the webhook, action or connector `id` the config names: what it is,
/// and since when it was paused before, if it was. With `connector`, `id` names a connector
/// even where a webhook has the same id.
pub fn set(
    named: &Named,
    id: &str,
    connector: bool,
    on: bool,
    now_ms: i64,
) -> anyhow::Result<(Kind, Option<i64>)> {
    let data_dir = &named.data_dir;
    let file = path(data_dir);
    let named_kind = kind_of(named, id, connector);
    let unknown = || {
        let connectors = named.connectors.iter().cloned();
        let known = if connector {
            connectors.collect()
        } else {
            named
                .webhooks
                .iter()
                .chain(&named.actions)
                .cloned()
                .chain(connectors)
                .collect()
        };
        Unknown {
            what: if connector {
                "connector"
            } else {
                "webhook, action or connector"
            },
            id: id.to_string(),
            config: named.path.clone(),
            known,
        }
    };
    // Refused before the lock file is made when no pause of it can be there to lift (a typo
    // left `state/pauses.lock` behind; an audit).
    if named_kind.is_none() && (on || !crate::store::exists(&file)?) {
        return Err(unknown().into());
    }
    let lock = lock_file(&file.with_extension("lock"))?;
    lock.lock()
        .with_context(|| format!("cannot lock {}", file.display()))?;
    let mut pauses = read(data_dir)?;
    // A pause of something since removed from the config can still be lifted (before a
    // connector of the same id is taken for what `id` names).
    let map = if connector {
        &pauses.connectors
    } else {
        &pauses.paused
    };
    let stale = map.get(id).map(|p| p.kind).filter(|_| !on);
    let kind = match named_kind {
        Some(Kind::Connector) if !connector => stale.or(Some(Kind::Connector)),
        Some(k) => Some(k),
        None => stale,
    }
    .ok_or_else(unknown)?;
    let map = pauses.map_mut(kind);
    let was = map.get(id).map(|p| p.since_ms);
    if on {
        map.entry(id.to_string()).or_insert(Pause {
            kind,
            since_ms: now_ms,
        });
    } else {
        map.remove(id);
    }
    if was.is_some() != on {
        let bytes = serde_json::to_vec_pretty(&pauses).expect("pauses serialize");
        write_durably(&file, &bytes).with_context(|| format!("cannot write {}", file.display()))?;
    }
    Ok((kind, was))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EnvCheck;

    /// An id given in another case names the one it was meant for (ids are unique ignoring
    /// case): the list of every id left the operator to spot it.
    #[test]
    fn an_id_in_another_case_is_named() {
        let unknown = |id: &str| Unknown {
            what: "webhook or action",
            id: id.into(),
            config: "webhooks.toml".into(),
            known: vec!["nurture".into(), "win-back".into()],
        };
        assert!(
            unknown("WIN-BACK")
                .to_string()
                .ends_with("did you mean \"win-back\"? (ids are matched as written)")
        );
        assert!(
            unknown("winback")
                .to_string()
                .ends_with("it has: nurture, win-back")
        );
    }

    /// A pause written within the timestamp granularity of the one before (the same
    /// modification time) is seen: the watch compares the file's bytes. It compared the time.
    #[test]
    fn a_pause_with_the_same_modification_time_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let file = path(dir.path());
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        let write = |ids: &[&str]| {
            let mut pauses = Pauses::default();
            for id in ids {
                let pause = Pause {
                    kind: Kind::Webhook,
                    since_ms: 1,
                };
                pauses.paused.insert(id.to_string(), pause);
            }
            std::fs::write(&file, serde_json::to_vec(&pauses).unwrap()).unwrap();
        };
        write(&["a"]);
        let watch = Watch::new(dir.path());
        let modified = std::fs::metadata(&file).unwrap().modified().unwrap();
        assert!(watch.current().holds("a", "main"));
        // The same length too: only the bytes tell the two apart.
        write(&["b"]);
        let f = std::fs::File::options().write(true).open(&file).unwrap();
        f.set_modified(modified).unwrap();
        let now = watch.current();
        assert!(now.holds("b", "main") && !now.holds("a", "main"));
    }

    /// A connector with a webhook's id is paused and resumed on its own.
    #[test]
    fn a_connector_and_a_webhook_with_one_id_are_paused_apart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("webhooks.toml");
        std::fs::write(
            &path,
            format!(
                "version = 1\n[server]\npublic_url = \"https://h.example.com\"\ndata_dir = {:?}\n\
                 [[connector]]\nid = \"main\"\nportal_id = 1\napp_id = 1\n\
                 client_secret_env = \"S\"\naccess_token_env = \"T\"\n\
                 [[webhook]]\nid = \"main\"\ntype = \"NEXT_WEEK\"\nworkflow_id = 1\n",
                dir.path().join("data")
            ),
        )
        .unwrap();
        let load = |path| {
            let loaded = crate::config::Config::load(path, &Default::default(), EnvCheck::Warn);
            Named::of(&loaded.unwrap().config)
        };
        let config = load(&path);
        let data = &config.data_dir;
        // An id it does not name is refused before any file is made (the lock was left).
        let zzz = set(&config, "zzz", false, true, 1).unwrap_err();
        assert!(zzz.downcast_ref::<Unknown>().is_some());
        assert!(set(&config, "zzz", false, false, 1).is_err());
        assert!(!data.join("state").exists());
        assert_eq!(
            set(&config, "main", false, true, 1).unwrap(),
            (Kind::Webhook, None)
        );
        assert_eq!(
            set(&config, "main", true, true, 2).unwrap(),
            (Kind::Connector, None)
        );
        // Paused again: the first pause's time stays.
        assert_eq!(
            set(&config, "main", false, true, 7).unwrap(),
            (Kind::Webhook, Some(1))
        );
        let p = read(data).unwrap();
        assert!(p.paused.contains_key("main") && p.connectors.contains_key("main"));
        // Another webhook of the connector is held by the connector's pause.
        assert!(p.holds("other", "main"));
        set(&config, "main", true, false, 3).unwrap();
        let p = read(data).unwrap();
        assert!(!p.connectors.contains_key("main"));
        assert!(p.paused.contains_key("main"), "the webhook's pause stays");
        assert!(!p.holds("other", "main") && p.holds("main", "main"));
        // The webhook leaves the config: its pause can still be lifted, not set again.
        let text = std::fs::read_to_string(&path).unwrap();
        let without = text.replace("id = \"main\"\ntype", "id = \"other\"\ntype");
        std::fs::write(&path, without).unwrap();
        let config = load(&path);
        assert_eq!(
            set(&config, "main", false, false, 4).unwrap(),
            (Kind::Webhook, Some(1))
        );
        assert!(read(data).unwrap().paused.is_empty());
        assert!(set(&config, "main", false, true, 5).is_ok_and(|(k, _)| k == Kind::Connector));
    }

    /// A file written before connectors had their own map still reads.
    #[test]
    fn older_files_keep_their_connector_pauses() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("state")).unwrap();
        std::fs::write(
            path(dir.path()),
            r#"{"paused": {"main": {"kind": "connector", "since_ms": 1}, "w": {"kind": "webhook", "since_ms": 2}}}"#,
        )
        .unwrap();
        let p = read(dir.path()).unwrap();
        assert!(p.connectors.contains_key("main") && !p.paused.contains_key("main"));
        assert!(p.paused.contains_key("w"));
        assert!(p.holds("x", "main") && p.holds("w", "other"));
    }
}
