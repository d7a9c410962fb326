//! Live reload: the running server swaps in a new config when the file changes or on SIGHUP,
//! and keeps the one in force when the new one is invalid.
//!
//! The watch is on the config's *directory*: git checkouts and Kubernetes ConfigMaps replace the
//! file (rename-over, symlink swap), which leaves an inode watch looking at a file nobody uses.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use notify::RecursiveMode;
use tokio::sync::mpsc;

use super::{Config, Diagnostics, EnvCheck, Overrides, Severity, validation};
use crate::metrics::Metrics;

/// The config in force. Readers take a cheap snapshot with `load()`; a reload swaps it whole,
/// so a request never sees half of one config and half of another.
pub type ConfigHandle = Arc<ArcSwap<Config>>;

/// Quiet period after the last file event before reloading: editors and `git checkout` touch
/// the file several times in a burst.
const DEBOUNCE: Duration = Duration::from_millis(300);
/// The quiet period after a write to the file that no close has followed yet: a writer that
/// pauses mid-file (a slow copy, a template rendered in place) must not have a prefix that
/// parses loaded, which would drop the webhooks after it (404 to HubSpot, which does not
/// retry), or cut a number short (`workflow_id = 12` of `123456`). The close ends the wait.
/// Linux's watcher reports closes, so a writer may pause a minute there (it was 5 s, which a
/// template rendered from an API call can take); where none is reported (macOS), 5 s of quiet.
#[cfg(target_os = "linux")]
const WRITING_QUIET: Duration = Duration::from_secs(60);
#[cfg(not(target_os = "linux"))]
const WRITING_QUIET: Duration = Duration::from_secs(5);

/// How often the config's folder is looked at for a replacement (`mv conf.new conf`, a deploy
/// that clones afresh): the watch follows the folder it was set on, so edits in the new one
/// went unseen, and nothing said so.
const FOLDER_CHECK: Duration = Duration::from_secs(5);
/// How often the config's folders are read for changes where they cannot be watched.
const POLL: Duration = Duration::from_secs(2);
/// The quiet period after a change seen by polling, which sees no close: as where the watcher
/// reports none (a writer pausing mid-file longer is loaded half-written).
const POLLED_QUIET: Duration = Duration::from_secs(5);

/// What a file event says of the config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    /// Written to and not yet closed.
    Writing,
    /// Closed after writing, replaced, removed, renamed: whole as far as events tell.
    Settled,
}

/// What a reload did, for the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reload {
    /// Valid and swapped in.
    Loaded,
    /// Valid and the config in force already (a bad edit undone, a file touched).
    Current,
    /// Invalid: the config in force is kept.
    Rejected,
    /// The invalid content rejected last time, not reported again.
    RejectedAgain,
    /// Reloading failed unexpectedly (a bug): the config in force is kept.
    Failed,
}

impl Reload {
    /// Its `result` in `sendtime_config_reloads_total`.
    fn label(self) -> &'static str {
        match self {
            Reload::Loaded => "loaded",
            Reload::Rejected => "rejected",
            Reload::Current | Reload::RejectedAgain => "unchanged",
            Reload::Failed => "error",
        }
    }

    /// Whether the file may now hold content that is not in force.
    fn rejected(self) -> bool {
        matches!(
            self,
            Reload::Rejected | Reload::RejectedAgain | Reload::Failed
        )
    }
}

impl Change {
    fn of(kind: &notify::EventKind) -> Option<Change> {
        use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind};
        match kind {
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => Some(Change::Settled),
            EventKind::Access(_) => None,
            EventKind::Modify(ModifyKind::Data(_)) => Some(Change::Writing),
            _ => Some(Change::Settled),
        }
    }
}

/// Keeps the directory watch alive; dropping it stops watching.
pub struct Watcher {
    /// Owns the file watch, which ends with it.
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A relative `path` joined to the shell's working directory (`$PWD`, when it is the process's
/// own): a path names a folder replaced since (`mv conf.new conf`), while the process's
/// working directory stays on the folder it started in, so a replaced folder was never
/// followed for the default `--config webhooks.toml` run inside it.
fn from_shell(path: PathBuf) -> PathBuf {
    if path.is_absolute() {
        return path;
    }
    let shell = std::env::var_os("PWD").map(PathBuf::from).filter(|pwd| {
        pwd.is_absolute() && folder_id(pwd).is_some() && folder_id(pwd) == folder_id(Path::new("."))
    });
    match shell.or_else(|| std::env::current_dir().ok()) {
        Some(cwd) => cwd.join(path),
        None => path,
    }
}

impl Watcher {
    /// Watch `path`'s directory and reload on `hup` (SIGHUP, taken by the caller from the
    /// start, so one sent meanwhile is kept); reloads go into `handle` and are counted in
    /// `metrics`.
    pub fn spawn(
        handle: ConfigHandle,
        path: PathBuf,
        overrides: Overrides,
        metrics: Metrics,
        mut hup: Option<tokio::signal::unix::Signal>,
    ) -> anyhow::Result<Self> {
        let path = from_shell(path);
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let (tx, mut rx) = mpsc::unbounded_channel();
        // Only the config file itself (or, when it is a symlink, the file it points to), or a
        // ConfigMap's `..data` link swap, counts: other files in the folder (a log written
        // there, an editor's swap file) must not trigger reloads.
        // Read without a lock by the watch's thread, which `watch` and `unwatch` wait on.
        let followed = Arc::new(ArcSwap::from_pointee(Followed::of(&path, &dir)));
        let handler = |tx: mpsc::UnboundedSender<Change>| {
            let files = followed.clone();
            let ours = move |p: &PathBuf| {
                let (Some(folder), Some(name)) = (p.parent(), p.file_name()) else {
                    return false;
                };
                let data_link = name.to_string_lossy().starts_with("..data");
                let files = files.load();
                // By name first: most events in a shared folder are of other files.
                if !data_link && !files.files.iter().any(|(_, n)| n == name) {
                    return false;
                }
                // Then by folder: a file of the link's name beside its target is another file.
                let folder = std::fs::canonicalize(folder).unwrap_or_else(|_| folder.to_path_buf());
                files
                    .files
                    .iter()
                    .any(|(f, n)| *f == folder && (data_link || n == name))
            };
            let mut errors = crate::throttle::Throttle::default();
            move |res: notify::Result<notify::Event>| {
                if let Err(e) = &res
                    && let Some(suppressed) = errors.due()
                {
                    tracing::warn!(suppressed, "watching the config's folder: {e}");
                }
                if let Ok(event) = res
                    && let Some(change) = Change::of(&event.kind)
                    // Events were lost (the kernel's queue overflowed): one of them may have been
                    // the config's, and this one names no file.
                    && (event.need_rescan() || event.paths.iter().any(&ours))
                {
                    let _ = tx.send(change);
                }
            }
        };
        // Without inotify to spare (a container host's instances all taken), the folder is
        // polled: `serve` refused to start, for a convenience SIGHUP stands in for (an audit).
        let mut polled = false;
        let mut inner: Box<dyn notify::Watcher + Send> = match notify::recommended_watcher(handler(
            tx.clone(),
        )) {
            Ok(w) => Box::new(w),
            Err(e) => {
                polled = true;
                tracing::warn!(
                    "cannot watch the config's folder for changes ({e}): looking at it every {POLL:?} instead"
                );
                let config = notify::Config::default().with_poll_interval(POLL);
                Box::new(notify::PollWatcher::new(handler(tx), config)?)
            }
        };
        // A folder that cannot be watched (execute-only) is no reason not to start: its edits
        // wait for a SIGHUP, and the watch is tried again at each reload.
        let mut dir_watched = watch(&mut *inner, &dir)
            .inspect_err(|e| tracing::warn!("{e:#}: edits there are not seen until a SIGHUP"))
            .is_ok();
        let mut target_dir = None;
        follow(&mut *inner, &dir, &followed.load(), &mut target_dir);

        let task = tokio::spawn(async move {
            let mut rejected = None;
            let mut watched = folder_id(&dir);
            let mut check = tokio::time::interval(FOLDER_CHECK);
            check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            // A write between `serve`'s first load and the watch's start made no event: the
            // file is looked at once now (an audit), quietly when it is the config in force.
            let mut first = true;
            loop {
                let startup = std::mem::take(&mut first);
                let forced = if startup {
                    false
                } else {
                    tokio::select! {
                        got = rx.recv() => {
                            let Some(mut last) = got else { return };
                            // Let the burst settle, and a write in progress end.
                            loop {
                                let quiet = match last {
                                    _ if polled => POLLED_QUIET,
                                    Change::Writing => WRITING_QUIET,
                                    Change::Settled => DEBOUNCE,
                                };
                                match tokio::time::timeout(quiet, rx.recv()).await {
                                    Ok(Some(change)) => last = change,
                                    Ok(None) => return,
                                    Err(_) => break,
                                }
                            }
                            tracing::info!(path = %path.display(), "config file changed: reloading");
                            false
                        }
                        _ = async {
                            match &mut hup {
                                Some(hup) => hup.recv().await,
                                None => std::future::pending().await,
                            }
                        } => {
                            tracing::info!("SIGHUP: reloading config");
                            true
                        }
                        _ = check.tick() => {
                            // The config's folder replaced, or a symlink on the way to the
                            // file swapped (`current -> releases/2`), which no folder watched
                            // sees (an audit): one reload for both (a review).
                            let target = std::fs::canonicalize(&path).ok();
                            let moved = target.is_some() && target != followed.load().target;
                            let now = folder_id(&dir);
                            let mut rewatched = false;
                            if now.is_some() && now != watched {
                                let _ = inner.unwatch(&dir);
                                match watch(&mut *inner, &dir) {
                                    Ok(()) => (watched, dir_watched, rewatched) = (now, true, true),
                                    Err(e) => tracing::warn!("{e:#} (the config's folder was replaced; tried again in {FOLDER_CHECK:?})"),
                                }
                            }
                            match (rewatched, moved) {
                                (false, false) => continue,
                                (true, _) => tracing::info!(path = %path.display(), "the config's folder was replaced: watching the new one, reloading"),
                                (false, true) => tracing::info!(path = %path.display(), "the config's path leads to another file: reloading"),
                            }
                            false
                        }
                    }
                };
                // Reading and checking a large file takes a while: off the async workers, so
                // posts are not kept waiting meanwhile. A panic there (a bug) must not end
                // the watch: the config in force stays, as for an invalid file.
                let reloaded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    tokio::task::block_in_place(|| {
                        reload(&handle, &path, &overrides, forced, &mut rejected, &metrics)
                    })
                }));
                let outcome = reloaded.unwrap_or_else(|_| {
                    let why = "reloading the config failed unexpectedly (a bug): the config in force is kept; edit the file again or send SIGHUP to retry";
                    tracing::error!("{why}");
                    metrics.board.set_config_rejected(Some(why.into()));
                    Reload::Failed
                });
                if startup && outcome == Reload::Current {
                    continue;
                }
                metrics.config_reload(outcome.label()).inc();
                metrics.config_rejected.set(i64::from(outcome.rejected()));
                metrics.configured(&handle.load());
                // A symlink pointed elsewhere since: the file it now names is the one edited.
                // (One missing for now, deleted to be written again, keeps the one followed.)
                let now = Followed::of(&path, &dir);
                if now.target.is_some() && now.target != followed.load().target {
                    followed.store(Arc::new(now));
                }
                // Each reload, so a folder that could not be watched is tried again.
                if !dir_watched {
                    dir_watched = watch(&mut *inner, &dir).is_ok();
                }
                follow(&mut *inner, &dir, &followed.load(), &mut target_dir);
            }
        });
        Ok(Self { task })
    }
}

/// The file a config path names: the path itself or, when it is a symlink, the file it
/// points to, whose folder is watched too.
struct Followed {
    target: Option<PathBuf>,
    /// The files whose events count: (canonical folder, file name).
    files: Vec<(PathBuf, std::ffi::OsString)>,
}

impl Followed {
    /// `path` in its folder `dir`.
    fn of(path: &Path, dir: &Path) -> Followed {
        let target = std::fs::canonicalize(path).ok();
        let own = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
        let files = [
            path.file_name().map(|n| (own, n.to_os_string())),
            target
                .as_deref()
                .and_then(|t| Some((t.parent()?.to_path_buf(), t.file_name()?.to_os_string()))),
        ]
        .into_iter()
        .flatten()
        .collect();
        Followed { target, files }
    }
}

/// The folder `dir` names now (device, inode): another after a replacement.
fn folder_id(dir: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(dir).ok().map(|m| (m.dev(), m.ino()))
}

fn watch(inner: &mut dyn notify::Watcher, dir: &Path) -> anyhow::Result<()> {
    inner
        .watch(dir, RecursiveMode::NonRecursive)
        .map_err(|e| anyhow::anyhow!("cannot watch {} for config changes: {e}", dir.display()))
}

/// Watch the folder of the file `followed` names when it is not `dir` (a symlinked file, into
/// a checkout elsewhere, say, is edited where it lives), instead of `watching`'s.
fn follow(
    inner: &mut dyn notify::Watcher,
    dir: &Path,
    followed: &Followed,
    watching: &mut Option<PathBuf>,
) {
    let own = std::fs::canonicalize(dir).ok();
    let want = followed
        .target
        .as_deref()
        .and_then(Path::parent)
        .filter(|t| own.as_deref() != Some(*t))
        .map(Path::to_path_buf);
    if *watching == want {
        return;
    }
    if let Some(old) = watching.take() {
        let _ = inner.unwatch(&old);
    }
    if let Some(new) = want {
        match watch(inner, &new) {
            Ok(()) => *watching = Some(new),
            Err(e) => tracing::warn!("{e:#}: edits there are not seen until a SIGHUP"),
        }
    }
}

/// A setting that applies only on restart: changed in the file, it is logged and the running
/// value kept.
fn keep<T: PartialEq + Clone + std::fmt::Debug>(key: &str, new: &mut T, old: &T) {
    if new != old {
        tracing::warn!(
            key,
            old = ?old,
            new = ?new,
            "changed in the file; it applies on restart (the running value is kept until then)"
        );
        *new = old.clone();
    }
}

/// Say, at the reload, of each webhook or action of `old` that `new` removed or changed so
/// that what it took waits: until then it was said only as its contacts came due, up to a
/// week later (an audit).
fn warn_held(old: &Config, new: &Config) {
    use super::Target;
    for was in &old.webhooks {
        // What it took as it was: does the new config send that ([`Config::route`], the
        // dispatcher's own rule)?
        let enrolls = match was.target {
            Target::Workflow(_) => Some(true),
            Target::List(_) => Some(false),
            Target::Callback => None,
        };
        let portal = old.connector(&was.connector).map(|c| c.portal_id);
        let callback = was.target == Target::Callback;
        if new.route(&was.id, callback, enrolls, portal).is_some() {
            continue;
        }
        let why = match new.webhook(&was.id) {
            None => "removed: HubSpot's posts to it now get 404, which it does not retry",
            Some(_) => super::HELD_AS_CHANGED,
        };
        tracing::warn!(webhook = %was.id, "{why}: {}", super::held_until_back(&was.id));
    }
}

/// Load the file again and swap it in if it is valid and different (or `forced`). An invalid
/// file is reported once per content (`rejected` remembers the last one), unless `forced`.
fn reload(
    handle: &ConfigHandle,
    path: &Path,
    overrides: &Overrides,
    forced: bool,
    rejected: &mut Option<u64>,
    metrics: &Metrics,
) -> Reload {
    let current = handle.load();
    let content = super::read_head(path).ok().map(|bytes| {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        bytes.hash(&mut h);
        h.finish()
    });
    // The listener in use stays until a restart (below), so a connector taking unsigned posts
    // is checked against it: a file that moves `listen` to loopback does not make it private.
    let running = current.server.listen;
    let result = Config::load(path, overrides, EnvCheck::Reload).and_then(|loaded| {
        let exposed = loaded.config.connectors.iter().find_map(|c| {
            validation::exposed_unsigned("the running listener", running, c).map(|e| (c, e))
        });
        match exposed {
            // At its `allow_unsigned`, saying why a `listen` moved in the file does not
            // help (it was reported at 1:1, with advice the reload ignores; an audit).
            Some((c, error)) => {
                let text = std::fs::read_to_string(path).unwrap_or_default();
                let mut d = Diagnostics::new(path);
                let at = super::read::connector_value_position(&text, &c.id, "allow_unsigned");
                d.push(
                    Severity::Error,
                    at.unwrap_or((1, 1)),
                    format!("{error} (`listen` applies on restart: until then the running listener is the one in use)"),
                );
                Err(d)
            }
            None => Ok(loaded),
        }
    });
    match result {
        Ok(mut loaded) => {
            *rejected = None;
            metrics.board.set_config_rejected(None);
            if loaded.config.identity == current.identity && !forced {
                return Reload::Current;
            }
            for line in loaded.warnings.lines() {
                tracing::warn!("{line}");
            }
            // What the running process was started with stays until a restart: a data
            // folder half switched would split pauses, imports and the dispatcher's state.
            let (new, old) = (&mut loaded.config.server, &current.server);
            keep("server.listen", &mut new.listen, &old.listen);
            keep(
                "server.admin_listen",
                &mut new.admin_listen,
                &old.admin_listen,
            );
            // As serve holds it: the folder it names, a swapped symlink resolved.
            new.data_dir = crate::store::physical(&new.data_dir);
            keep("server.data_dir", &mut new.data_dir, &old.data_dir);
            // The token is read from it once, at start-up.
            keep(
                "server.admin_token_env",
                &mut new.admin_token_env,
                &old.admin_token_env,
            );
            // A dry run consumes what comes due (an action's contacts excepted): said, since
            // turning it on looks like a way to stop sending, and a pause is that.
            for c in &loaded.config.connectors {
                if c.dry_run && current.connector(&c.id).is_some_and(|o| !o.dry_run) {
                    tracing::warn!(
                        connector = %c.id,
                        "dry_run turned on: its webhooks' contacts that come due are recorded as dry runs, and not sent when it is turned off; to hold them instead, `sendtime pause {} --connector`",
                        c.id
                    );
                }
            }
            // So does moving a webhook to a connector of the same account already in dry run
            // (its contacts are not held, and nothing else says it; an audit). Another
            // account's holds them, and a connector just turned to dry run is said above.
            let new = &loaded.config;
            for w in &new.webhooks {
                let (Some(was), Some(to)) = (current.webhook(&w.id), new.connector(&w.connector))
                else {
                    continue;
                };
                let from = current.connector(&was.connector);
                if w.target != super::Target::Callback
                    && to.dry_run
                    && from
                        .is_some_and(|f| !f.dry_run && f.id != to.id && f.portal_id == to.portal_id)
                    && current.connector(&to.id).is_none_or(|c| c.dry_run)
                {
                    tracing::warn!(
                        webhook = %w.id,
                        "moved from connector `{}` to `{}`, which is in dry run: its contacts that come due are recorded as dry runs, and not sent when it moves back; to hold them instead, `sendtime pause {}`",
                        was.connector,
                        w.connector,
                        w.id
                    );
                }
            }
            // Signatures are over the URL HubSpot called: the old one's posts are refused from
            // now (an audit found it unsaid).
            if loaded.config.server.public_url != current.server.public_url {
                tracing::warn!(
                    "server.public_url changed from {} to {}: posts HubSpot signs for the old URL (its retries, workflows not yet pointed at the new one, actions whose actionUrl is not updated) are refused as signature_mismatch from now",
                    current.server.public_url,
                    loaded.config.server.public_url
                );
            }
            warn_held(&current, &loaded.config);
            // Counted as `serve`'s start counts them (it said every action a webhook).
            let actions = (loaded.config.webhooks.iter())
                .filter(|w| w.target == super::Target::Callback)
                .count();
            tracing::info!(
                config = %loaded.config.identity,
                previous = %current.identity,
                webhooks = loaded.config.webhooks.len() - actions,
                actions,
                "config loaded"
            );
            handle.store(Arc::new(loaded.config));
            Reload::Loaded
        }
        // Deleted, or mid-replace by a tool that deletes first: not a matter of where `serve`
        // was started (the reader's hint when no file is found).
        Err(_) if content.is_none() && !path.exists() => {
            let why = format!(
                "{} is gone (deleted, or being replaced): keeping the config in force until it is back",
                path.display()
            );
            tracing::error!(config = %current.identity, "{why}");
            metrics.board.set_config_rejected(Some(why));
            // A refused content back after this is said again (and shown for the gone file).
            *rejected = None;
            Reload::Rejected
        }
        Err(diags) => {
            if !forced && content.is_some() && *rejected == content {
                return Reload::RejectedAgain;
            }
            *rejected = content;
            tracing::error!(
                config = %current.identity,
                "new config rejected, keeping the one in force ({})",
                diags.tally()
            );
            for (d, line) in diags.items.iter().zip(diags.lines()) {
                match d.severity {
                    Severity::Error => tracing::error!("{line}"),
                    Severity::Warning => tracing::warn!("{line}"),
                }
            }
            // The first errors, as `validate` prints them (every one is in the log).
            let errors: Vec<String> = (diags.items.iter().zip(diags.lines()))
                .filter(|(d, _)| d.severity == Severity::Error)
                .map(|(_, line)| line.chars().take(1000).collect())
                .take(5)
                .collect();
            metrics.board.set_config_rejected(Some(format!(
                "{} ({}): {}",
                path.display(),
                diags.tally(),
                errors.join("; ")
            )));
            Reload::Rejected
        }
    }
}
