//! `sendtime serve`: wires config, receiver and scheduler together and runs until a signal.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use arc_swap::ArcSwap;

use tokio::sync::watch;

use crate::admin::{self, AdminState};
use crate::clock::Clock;
use crate::config::{Config, EnvCheck, Overrides, Watcher};
use crate::datasets::inbox::Inbox;
use crate::dispatch::Dispatcher;
use crate::metrics::Metrics;
use crate::receiver::{self, AppState};
use crate::scheduler;

/// How `serve` runs: on its own, or as the demo's server.
#[derive(Debug, Default)]
pub struct Session {
    /// SIGHUP stops it, as it stops a program by default when its terminal closes, rather than
    /// reloading the config: the demo runs in a terminal, and ran on after it closed.
    pub hangup_stops: bool,
    /// A folder removed when a second signal stops the process at once (the demo's temporary
    /// one, left behind otherwise).
    pub scratch: Option<PathBuf>,
    /// Who handles the signals: the demo's early stop, until `serve` takes them.
    pub signals: Option<Arc<Handover>>,
}

/// The signals handed from the demo's early stop to `serve`: whichever comes first, a signal
/// or `serve` taking them, decides.
#[derive(Debug, Default)]
pub struct Handover(std::sync::atomic::AtomicU8);

impl Handover {
    const EARLY: u8 = 0;
    const TAKEN: u8 = 1;
    const STOPPED: u8 = 2;

    fn decide(&self, to: u8) -> bool {
        use std::sync::atomic::Ordering::SeqCst;
        (self.0.compare_exchange(Self::EARLY, to, SeqCst, SeqCst)).is_ok()
    }

    /// `serve` handles the signals from now on, unless a signal came before (false): then it
    /// must not start.
    pub fn take(&self) -> bool {
        self.decide(Self::TAKEN)
    }

    /// A signal came: whether before `serve` took the signals (true), so the demo stops.
    pub fn stop(&self) -> bool {
        self.decide(Self::STOPPED)
    }

    /// Whether a signal came before `serve` took the signals.
    pub fn stopping(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::SeqCst) == Self::STOPPED
    }
}

/// Run the server until SIGINT or SIGTERM. `clock` is the dispatcher's "now" (the system
/// clock but in tests).
pub fn run(
    config_path: PathBuf,
    overrides: Overrides,
    clock: Clock,
    session: Session,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    // The scheduled import runs on a runtime of its own, which its stop cancels.
    crate::hubspot::auth::refresh_on(runtime.handle().clone());
    let served = runtime.block_on(serve(config_path, overrides, clock, session));
    // What is left is blocking work of closed connections (a lookup on a hung disk): the
    // data is written and flushed by now, so it is not waited for beyond the grace.
    runtime.shutdown_timeout(SHUTDOWN_GRACE);
    served
}

async fn serve(
    config_path: PathBuf,
    overrides: Overrides,
    clock: Clock,
    session: Session,
) -> anyhow::Result<()> {
    let loaded = Config::load(&config_path, &overrides, EnvCheck::Require).map_err(|diags| {
        anyhow::anyhow!(
            "cannot start with config {}; fix these and start again:\n{diags}",
            config_path.display()
        )
    })?;
    let mut warnings = loaded.warnings;
    // A run every second at the demo's speed spans minutes of its clock.
    let fast = |d: &crate::config::Diagnostic| {
        clock.speed() > 1 && d.message.starts_with(crate::config::FAST_DISPATCH_WARNING)
    };
    warnings.items.retain(|d| !fast(d));
    for line in warnings.lines() {
        tracing::warn!("{line}");
    }
    let mut config = loaded.config;
    // SIGHUP reloads the config: taken now, or the default (ending the process) held while
    // the start reads the data folder (a review), until the watch takes the stream.
    let hup = (!session.hangup_stops)
        .then(|| tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()))
        .transpose()
        .context("cannot listen for SIGHUP")?;
    // Both listeners before anything else: a start that cannot listen must not have made a
    // call (a restart while the old process still holds the port), nor a data folder (an
    // audit found one made for a start that then failed).
    let listener = bind(config.server.listen, "").await?;
    let admin_listener = bind(config.server.admin_listen, " (server.admin_listen)").await?;
    crate::store::create_data_dir(&config.server.data_dir)?;
    config.server.data_dir = crate::store::physical(&config.server.data_dir);
    // A file import that died publishing left its parts hidden: shown before profiles load.
    // Not a reason to stay down (the next import tries again).
    let data = config.server.data_dir.clone();
    if let Err(e) =
        tokio::task::block_in_place(|| crate::datasets::events::recover_unless_busy(&data))
    {
        tracing::warn!(
            "cannot clear what an interrupted import left in the events (the next import tries again): {e:#}"
        );
    }
    tracing::info!(
        config = %config.identity,
        path = %config_path.display(),
        webhooks = (config.webhooks.iter())
            .filter(|w| w.target != crate::config::Target::Callback)
            .count(),
        actions = (config.webhooks.iter())
            .filter(|w| w.target == crate::config::Target::Callback)
            .count(),
        data_dir = %config.server.data_dir.display(),
        "config loaded"
    );
    let data_dir = config.server.data_dir.clone();
    let ratchet = Arc::new(receiver::ratchet::Ratchet::open(&data_dir)?);
    let metrics = Metrics::new();
    metrics.configured(&config);
    let handle = Arc::new(ArcSwap::from_pointee(config));
    let mut dispatcher =
        tokio::task::block_in_place(|| Dispatcher::open(&data_dir, metrics.clone(), clock.clone()))
            .with_context(|| {
                format!(
                    "cannot load the dispatcher's state from {}",
                    data_dir.display()
                )
            })?;
    // Held until the inbox writer is done, however the dispatcher ends.
    let locked = dispatcher.hold_lock()?;
    let (inbox, writer) = tokio::task::block_in_place(|| {
        Inbox::start(&data_dir, dispatcher.pending().clone(), metrics.clone())
    })
    .with_context(|| format!("cannot open the inbox in {}", data_dir.display()))?;
    // Removed while `serve` was down: said now, as a reload says it (it was said nowhere
    // until those contacts came due; an audit).
    for (id, n) in inbox.pending_by_webhook() {
        if handle.load().webhook(&id).is_none() {
            tracing::warn!(
                webhook = %id,
                pending = n,
                "not in the config: {}",
                crate::config::held_until_back(&id)
            );
        }
    }
    // Before anything starts: a missing admin token stops here.
    let (lookups_tx, lookups_rx) = tokio::sync::mpsc::channel(8);
    let admin_state = AdminState::new(
        handle.clone(),
        metrics.clone(),
        dispatcher.pending().clone(),
        clock.clone(),
        lookups_tx,
    )?;
    tracing::info!("listening on {}", listener.local_addr()?);
    tracing::info!(
        "admin surface (dashboard, /status, /metrics) on {}",
        admin_listener.local_addr()?
    );
    // Before the first task starts: a signal from now on stops serve in order.
    let mut signals = Signals::install(session.hangup_stops)?;
    if let Some(handover) = &session.signals
        && !handover.take()
    {
        anyhow::bail!("stopped before the demo was ready");
    }
    // After every step that can refuse the start: the watch's first look at the file, off
    // the workers, outlived a refused start and panicked in the runtime's shutdown (an audit).
    // Its SIGHUP was taken at the start, so a reload's signal meanwhile waits for it.
    let _watcher = Watcher::spawn(handle.clone(), config_path, overrides, metrics.clone(), hup)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let stop_rx_admin = stop_rx.clone();
    let imports = tokio::spawn(crate::import::scheduled::run(
        handle.clone(),
        metrics.clone(),
        clock.clone(),
        stop_rx.clone(),
    ));
    dispatcher.lookups = crate::dispatch::lookups::Lookups::new(lookups_rx);
    let scheduler = tokio::spawn(scheduler::run(
        handle.clone(),
        dispatcher,
        metrics.clone(),
        stop_rx,
    ));
    // A scheduler that ends on its own (a panic) would leave posts answered 200 and nothing
    // sent: serve stops instead, so that its supervisor starts it again.
    let scheduler_ended = Arc::new(tokio::sync::Notify::new());
    let scheduler = {
        let ended = scheduler_ended.clone();
        tokio::spawn(async move {
            let out = scheduler.await;
            ended.notify_one();
            out
        })
    };

    let state = AppState {
        config: handle,
        inbox,
        metrics,
        refusals: Default::default(),
        ratchet,
        warnings: Default::default(),
        bodies: receiver::body::budget(),
        clock,
        unsigned_taken: Arc::new(receiver::unsigned_rate()),
    };
    let mut admin_stop = stop_rx_admin;
    let admin = tokio::spawn(serve_http(
        admin_listener,
        admin::router(admin_state),
        ADMIN_CONNECTIONS,
        async move {
            let _ = admin_stop.changed().await;
        },
    ));
    let app = receiver::router(state);
    // A writer that ends while serving (a panic) would leave every post refused: serve stops,
    // so that its supervisor starts it again.
    let writer_ended = writer.ended();
    let served = serve_http(listener, app, connection_cap(), async move {
        tokio::select! {
            why = signals.next() => tracing::info!("{why}: shutting down"),
            _ = scheduler_ended.notified() => {}
            _ = writer_ended => tracing::error!("the inbox writer stopped: serve stops"),
        }
        let stopping = tokio::time::Instant::now();
        // Everything acknowledged is in the inbox log: a signal from now on stops at once, as
        // kill -9 would.
        tokio::spawn(async move {
            let why = signals.next_apart_from(stopping).await;
            tracing::error!("{why} again: stopping now; what was acknowledged is in the inbox log, replayed at the next start");
            // Writers still at work may add a file mid-walk: tried a few times.
            if let Some(dir) = &session.scratch
                && !(0..3).any(|_| std::fs::remove_dir_all(dir).is_ok() || !dir.exists())
            {
                tracing::error!("cannot remove the demo's folder {}", dir.display());
            }
            std::process::exit(1);
        });
        // The running tick finishes its calls in flight and records them; nothing new starts.
        let _ = stop_tx.send(true);
    })
    .await;
    if let Ok(Err(e)) = admin.await {
        tracing::error!("the admin surface failed: {e:#}");
    }
    // An import stops after its page; one waiting on HubSpot is left (its cursor is saved).
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, imports).await;
    let failed = match scheduler.await {
        Ok(Ok(Ok(dispatcher))) => {
            tokio::task::block_in_place(|| dispatcher.close());
            None
        }
        Ok(Ok(Err(e))) => Some(format!("{e:#}")),
        Ok(Err(e)) | Err(e) => Some(e.to_string()),
    };
    // The router and the dispatcher (and with them every Inbox handle) are gone: let the
    // writer flush, the folder still locked, whatever ended serving.
    let written = tokio::task::block_in_place(|| writer.shutdown());
    drop(locked);
    let failure = served.err().or_else(|| {
        failed.map(|e| {
            anyhow::anyhow!("the scheduler failed, so serve stopped (the inbox is on disk): {e}")
        })
    });
    if let Some(e) = failure {
        if let Err(w) = written {
            tracing::error!("{w:#}");
        }
        return Err(e);
    }
    written?;
    tracing::info!("stopped");
    Ok(())
}

/// Connections served at once: with [`MAX_HEADER_BYTES`] each, what bounds the memory that
/// clients who never finish their headers can hold.
pub const MAX_CONNECTIONS: usize = 2048;
/// The admin surface's (operators and a metrics scraper).
const ADMIN_CONNECTIONS: usize = 64;
/// Open files kept for all but the public listener's connections: the store's parts and log,
/// HubSpot calls, the admin surface.
const RESERVED_FILES: u64 = 512;

/// The largest request head (and read buffer) a connection may hold; a longer one is answered
/// 431. HubSpot's heads are a few KB.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// A client that has not sent its request headers by then is dropped (slowloris).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A client that reads nothing of its answers for this long is dropped (requests pipelined
/// behind a full send buffer held a connection for ever). HubSpot reads its answers at once.
const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// A signal this soon after the one that began the stop is that one sent twice.
const SAME_SIGNAL: Duration = Duration::from_millis(250);
/// How long shutdown waits for open connections (a request being answered) before closing
/// them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Raise the open-file soft limit to the hard one (many systems start at 1,024, fewer than
/// [`MAX_CONNECTIONS`]), and serve no more connections than leave [`RESERVED_FILES`] free:
/// strangers holding connections open must not leave the inbox unable to open its files.
fn connection_cap() -> usize {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => {
            let cap = limit
                .saturating_sub(RESERVED_FILES)
                .clamp(16, MAX_CONNECTIONS as u64);
            if cap < MAX_CONNECTIONS as u64 {
                tracing::warn!(
                    "the open-file limit is {limit}: serving at most {cap} connections at once (raise the hard limit, `ulimit -Hn`, for {MAX_CONNECTIONS})"
                );
            }
            cap as usize
        }
        Err(e) => {
            tracing::warn!("cannot read or raise the open-file limit: {e}");
            MAX_CONNECTIONS
        }
    }
}

/// A listener on `addr` (`which` names it in the error); one in use may be another `serve`'s
/// of this config, which now fails here rather than at the data folder's lock.
async fn bind(addr: std::net::SocketAddr, which: &str) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        let hint = match e.kind() {
            std::io::ErrorKind::AddrInUse => ": is another `serve` of this config running?",
            _ => "",
        };
        anyhow::Error::new(e).context(format!("cannot listen on {addr}{which}{hint}"))
    })
}

/// Serve `app` over HTTP/1.1 until `shutdown` resolves, then stop accepting and let open
/// connections finish, up to [`SHUTDOWN_GRACE`], then close them. Unlike `axum::serve`,
/// headers must arrive within [`HEADER_READ_TIMEOUT`] and answers be read within
/// [`WRITE_STALL_TIMEOUT`]; the body's own deadline is the receiver's.
async fn serve_http(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    max_connections: usize,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    use crate::write_deadline::WriteDeadline;
    use hyper_util::rt::{TokioIo, TokioTimer};
    use tower::ServiceExt as _;
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    let connections = Arc::new(tokio::sync::Semaphore::new(max_connections));
    let mut accept_errors = crate::throttle::Throttle::default();
    // Turned true after the grace: each connection still open is dropped with its request,
    // and with it the router's handles (the inbox's writer waits for the last one).
    let (close, closing) = watch::channel(false);
    loop {
        // At the cap, new connections wait in the kernel's backlog until one closes.
        let slot = tokio::select! {
            slot = connections.clone().acquire_owned() => slot.expect("never closed"),
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, say: wait rather than spin.
                    if let Some(suppressed) = accept_errors.due() {
                        tracing::warn!(suppressed, "cannot accept a connection: {e}");
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let router = app.clone();
        let service =
            hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                router.clone().oneshot(req.map(axum::body::Body::new))
            });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .max_buf_size(MAX_HEADER_BYTES)
            .serve_connection(
                TokioIo::new(WriteDeadline::new(stream, WRITE_STALL_TIMEOUT)),
                service,
            );
        let conn = graceful.watch(conn);
        let mut closing = closing.clone();
        tokio::spawn(async move {
            tokio::select! {
                served = conn => if let Err(e) = served {
                    tracing::debug!("connection closed: {e}");
                },
                _ = closing.wait_for(|close| *close) => {}
            }
            drop(slot);
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(SHUTDOWN_GRACE) => {
            tracing::warn!("connections still open {SHUTDOWN_GRACE:?} after shutdown began: closing them");
            let _ = close.send(true);
        }
    }
    Ok(())
}

/// Whether SIGHUP is ignored, as `nohup` leaves it (listening for it would undo that).
fn hangup_ignored() -> bool {
    // SAFETY: with a null new action, `sigaction` only reads the disposition into `old`.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(libc::SIGHUP, std::ptr::null(), &mut old) == 0
            && old.sa_sigaction == libc::SIG_IGN
    }
}

/// SIGINT and SIGTERM, listened for from before the first task starts to exit: a signal between two
/// waits for one is kept, not lost. One during start-up ends the process at once, as by
/// default (start-up is safe to kill: it reads, and finishes or clears what a kill left, each
/// step of which a kill leaves for the next start). A file import listens with it too.
pub(crate) struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    /// Only when a hangup stops the process: taken, it no longer ends it by default.
    hup: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    pub(crate) fn install(hangup: bool) -> anyhow::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            int: signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?,
            term: signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?,
            // Not when ignored (`nohup`): the terminal's closing must not stop it then.
            hup: (hangup && !hangup_ignored())
                .then(|| signal(SignalKind::hangup()).context("cannot listen for SIGHUP"))
                .transpose()?,
        })
    }

    /// The next signal that is not the one received at `first` sent again (`timeout` sends
    /// it to the process and to its group, within a moment): an operator's second.
    pub(crate) async fn next_apart_from(&mut self, first: tokio::time::Instant) -> &'static str {
        loop {
            let why = self.next().await;
            if first.elapsed() >= SAME_SIGNAL {
                return why;
            }
        }
    }

    /// The next signal's name.
    pub(crate) async fn next(&mut self) -> &'static str {
        let hup = async {
            match &mut self.hup {
                Some(hup) => hup.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = self.int.recv() => "SIGINT",
            _ = self.term.recv() => "SIGTERM",
            _ = hup => "SIGHUP",
        }
    }
}
