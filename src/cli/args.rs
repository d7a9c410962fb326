//! The command line's flags and subcommands, as clap reads them: what `--help` says.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "sendtime",
    version,
    about = "Send-time optimizer for HubSpot workflows",
    long_about = "Send-time optimizer for HubSpot workflows.\n\n\
        A HubSpot workflow hands sendtime a contact, through sendtime's custom workflow action or a \
        \"Send a webhook\" step; sendtime stores it, works out from the contact's past email \
        engagement when it is most likely to read email, and at that moment releases it from the \
        action, enrolls it into a HubSpot workflow, or adds it to a list. Everything is declared in \
        one file, webhooks.toml."
)]
pub struct Cli {
    /// The config file [default: webhooks.toml]. Relative paths inside it resolve against
    /// its folder.
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Data directory; overrides `server.data_dir` from the config.
    #[arg(long = "data", global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

/// The config file read when `--config` is not given.
pub(super) const DEFAULT_CONFIG: &str = "webhooks.toml";

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a config file and print what to paste into each HubSpot workflow.
    ///
    /// Exit status 0 when the file is valid, 1 when it is not. Every problem is printed on
    /// stderr as PATH:LINE:COLUMN: message. Unset environment variables are only warnings
    /// here, so the config repository's CI can run this without secrets.
    Validate {
        /// The config file to check (same as --config).
        #[arg(value_name = "CONFIG", conflicts_with = "config")]
        file: Option<PathBuf>,
        /// Also check the config against each connector's live HubSpot account (needs its
        /// credentials): the token works for `portal_id`, each workflow id exists (a flow id
        /// from the workflow editor names the id to paste), each list accepts membership
        /// changes, the token has the scopes these reads need (one only a write needs shows
        /// at the first send), each action is registered (with HUBSPOT_DEVELOPER_API_KEY).
        /// One line per check; exit 1 on any failure.
        #[arg(long)]
        online: bool,
    },
    /// Run the server: receive webhooks and action executions and, every tick, release, enroll
    /// or list the contacts that are due.
    ///
    /// Reloads the config when its file changes or on SIGHUP (an invalid new config is logged
    /// and the running one stays in force); `server.listen`, `admin_listen`, `data_dir` and
    /// `admin_token_env` apply on restart only (a change is logged). Stops cleanly on SIGINT
    /// or SIGTERM. Log level follows RUST_LOG (default: info).
    Serve {
        /// Address to listen on; overrides `server.listen`.
        #[arg(long, value_name = "ADDR", value_parser = socket_addr)]
        listen: Option<SocketAddr>,
        /// Address of the admin surface (the dashboard, `/status`, `/metrics`); overrides
        /// `server.admin_listen`.
        #[arg(long, value_name = "ADDR", value_parser = socket_addr)]
        admin_listen: Option<SocketAddr>,
        /// Read the dispatcher's "now" from this file (a TIME as for --now; the system clock
        /// while it is absent). For tests that jump hours ahead.
        #[arg(long, value_name = "FILE", env = "SENDTIME_CLOCK_FILE", hide = true)]
        clock_file: Option<PathBuf>,
    },
    /// See it work with no HubSpot account and no setup: `serve` on a temporary data folder
    /// with synthetic engagement, an in-process HubSpot stand-in, a simulated workflow posting
    /// signed contacts of every type and executing the action, and a faster clock. Prints the
    /// dashboard's URL (and `/status`'s and `/metrics`'); stops on Ctrl-C.
    ///
    /// It makes its own config and data folder: --config and --data, listed below as for
    /// every command, are refused here.
    Demo {
        /// How many times faster than real time the dispatcher's clock runs (1 to 100000).
        #[arg(long, default_value_t = 720,
            value_parser = clap::value_parser!(u32).range(1..=100_000))]
        speed: u32,
        /// Address to listen on (default 127.0.0.1:8080).
        #[arg(long, value_name = "ADDR", value_parser = socket_addr)]
        listen: Option<SocketAddr>,
        /// Address of the admin surface (default 127.0.0.1:8081).
        #[arg(long, value_name = "ADDR", value_parser = socket_addr)]
        admin_listen: Option<SocketAddr>,
    },
    /// Run the dispatcher once and exit: plan new contacts, enroll (or list) what is due.
    ///
    /// For a data folder no `serve` is using (e.g. with `serve` stopped, or receipts copied
    /// from elsewhere): `serve` always dispatches, and this refuses to run beside it.
    Tick {
        /// Pretend it is this time instead of now, from 2000 to a year from now: a date
        /// (YYYY-MM-DD, midnight UTC), RFC 3339 (YYYY-MM-DDT09:30:00Z), "YYYY-MM-DD HH:MM:SS"
        /// (UTC), or epoch seconds or ms. A testing knob, for a copy of the data folder: what
        /// is due by then is really sent (unless `dry_run`). Archiving keeps to the real clock:
        /// a future TIME does not end the replay protection of receipts just received.
        #[arg(long, value_name = "TIME")]
        now: Option<String>,
    },
    /// Pause a webhook, action or connector: its contacts are held (not lost) until `resume`,
    /// across restarts, while receiving goes on. Without ID, list what is paused.
    ///
    /// Works beside a running `serve` (it reads the pause every tick).
    Pause {
        /// The webhook, action or connector id.
        id: Option<String>,
        /// ID names a connector (where a webhook has the same id).
        #[arg(long, requires = "id")]
        connector: bool,
    },
    /// Lift a pause set with `sendtime pause`: the held contacts go at their planned times, or,
    /// if those are past, spread over the minutes the connector can send.
    Resume {
        /// The webhook, action or connector id.
        id: String,
        /// ID names a connector (where a webhook has the same id).
        #[arg(long)]
        connector: bool,
    },
    /// Give up the contacts held for a webhook or action removed from the config (or made
    /// the other kind, or moved to another account's connector), which are otherwise held,
    /// unsent, until it returns as it was; or, without an id, finish a discard that was cut
    /// short.
    ///
    /// Their receipts' inbox, plan and outcome rows move to `discarded/` under the data
    /// folder, kept: moved back (each part file with its checksum), they are held, or sent,
    /// again. A workflow action's contacts are never released: HubSpot moves each on when its
    /// hold ends. Stop `serve` first (its memory holds the same receipts); a dry run may run
    /// beside it, counting the rows it has written. Refused for a webhook in
    /// the config whose contacts are sent (`sendtime pause` holds those). A discard cut
    /// short stops `serve` and `tick` from starting: run `discard` again, with no id, to
    /// finish it.
    Discard {
        /// The webhook or action id, as it was in the config; without it, finish a discard
        /// that was cut short.
        #[arg(value_name = "ID")]
        webhook: Option<String>,
        /// Count what would be discarded; move no one's rows (what a crashed writer left is
        /// finished, as a start would: the inbox's log written into parts, a compaction cut
        /// short completed).
        #[arg(long)]
        dry_run: bool,
    },
    /// Delete what the data folder holds about a person (an erasure request): their receipts'
    /// inbox, plan and outcome rows, live, archived and discarded, their email events, their
    /// contact dictionary entry (left blank), and their stored profile (the profiles are
    /// rebuilt; deleted, for the next build, when the config does not validate: the data
    /// folder is then read from its TOML alone).
    ///
    /// Give each email address and HubSpot contact id the person is known by: when their
    /// rows name others (a receipt carries both), it says which and deletes nothing (see
    /// --only). Stop `serve` first (its memory holds the same rows, and it refuses to start
    /// while an erase is cut short: run `erase` again, with no contact, to finish one); a dry
    /// run may run beside it. Imports skip their events afterwards (the emails and ids are
    /// kept as keyed hashes in state/erased.json); logs, backups and `quarantine/` are not
    /// searched.
    Erase {
        /// Email addresses and HubSpot contact ids.
        #[arg(value_name = "CONTACT")]
        contacts: Vec<String>,
        /// Erase only the rows of the emails and ids given, though their rows name others
        /// (without it, that is refused, naming them).
        #[arg(long)]
        only: bool,
        /// Count what would be deleted, and name the emails and ids their rows link to;
        /// delete no one's rows (what a crashed writer left is finished, as a start would).
        #[arg(long)]
        dry_run: bool,
    },
    /// Print the JSON Schema of webhooks.toml (the repository ships it as webhooks.schema.json;
    /// name it on the config's first line, `#:schema ./webhooks.schema.json`, and editors with
    /// Taplo / Even Better TOML complete and check the file as you type).
    ///
    /// The same for every config: --config and --data, listed below as for every command, are
    /// refused here.
    Schema,
    /// Load engagement events (opens, clicks, sends, ...) into the events dataset.
    Import {
        #[command(subcommand)]
        source: ImportSource,
    },
    /// Show what the model knows about one contact and when each webhook would send it.
    ///
    /// Prints the engagement class, a 7x24 heat map of the hours the contact reads email (UTC),
    /// the due time and reason for every webhook type if the contact were posted now (in the
    /// type's default window, without quiet hours), the same for every configured webhook and
    /// action as planning places a receipt alone (its `window`, quiet hours in the contact's
    /// zone as its latest receipt posted; not other contacts' use of capacity, nor a holdout
    /// draw; whether it is paused or in dry run), and the contact's planned receipts.
    Explain {
        /// The contact: an email address or a HubSpot contact id.
        contact: String,
        /// Pretend it is this time instead of now (a TIME as for `tick --now`, from 2000 to a
        /// year from now).
        #[arg(long, value_name = "TIME")]
        at: Option<String>,
    },
    /// Write every contact's score for each of the 168 hour-of-week slots, for evaluation
    /// outside sendtime.
    ///
    /// Long format `contact_id,slot,score`, slot 0 = Monday 00:00-00:59 UTC; the classes go to
    /// FILE's sibling `<name>.classes.csv`. Only events before --as-of are used.
    Predict {
        /// Use only events before this time (any TIME form, e.g. 2026-01-01 or RFC 3339; UTC;
        /// from 2000 to a year from now).
        #[arg(long, value_name = "TIME")]
        as_of: String,
        /// Where to write the scores; the classes go beside it.
        #[arg(long, value_name = "FILE.csv")]
        out: PathBuf,
    },
    /// Evaluate the model on history: learn from events before --split, score the opens after.
    ///
    /// Reports hit@1, hit@3 and mean negative log-likelihood over hour-of-day and hour-of-week
    /// slots against baselines, for warm contacts (at least `evaluating_below` opens and clicks
    /// before the split), evaluating ones (fewer) and cold ones (none), with 95% intervals for
    /// the model's gain over each baseline.
    Backtest {
        /// Train on events before this time, test on the ones after it (from 2000 to a year
        /// from now).
        #[arg(long, value_name = "TIME")]
        split: String,
        /// Read events from this CSV instead of the events dataset.
        #[arg(long, value_name = "FILE")]
        events: Option<PathBuf>,
        /// Contact column of --events [default: user_id].
        #[arg(long, value_name = "COL")]
        contact: Option<String>,
        /// Time column of --events [default: opened].
        #[arg(long, value_name = "COL")]
        time: Option<String>,
        /// Event kind column of --events (OPEN, CLICK, SENT, ...); the model learns from opens
        /// and clicks only.
        #[arg(long, value_name = "COL", conflicts_with = "kind_default")]
        kind: Option<String>,
        /// Kind of every row of --events when it has no kind column: OPEN, CLICK, SENT, ...
        /// [default: OPEN; a file with a column named like kind, type, event_type or event
        /// needs --kind or this].
        #[arg(long, value_name = "KIND", value_parser = event_kind)]
        kind_default: Option<String>,
        /// Tune the model's half-life, prior strength and hour bandwidth on a validation split
        /// inside the training period first (day_pooling is kept: chosen on hour-of-week loss,
        /// it learns the weekdays mail was sent on). The tuned values are scored as they are,
        /// without the fit to the account that `"auto"` keys make (the tuning chose them).
        #[arg(long)]
        tune: bool,
        /// With --tune: length of that validation split, in days before --split, cut into 4
        /// windows of at least 7 days each (so at least 28 days) [default: 180].
        #[arg(long, value_name = "DAYS", value_parser = clap::value_parser!(i64).range(28..=3650))]
        validation_days: Option<i64>,
        /// The hour (UTC) of the fixed-hour baseline, 0 to 23.
        #[arg(long, value_name = "HOUR", default_value_t = 9,
              value_parser = clap::value_parser!(u8).range(0..=23))]
        fixed_hour: u8,
        /// Learn again every DAYS days of the test period, as `serve` does when it imports
        /// events: each step is scored by profiles (and baselines) rebuilt from every event
        /// before the step, the knobs fitted again (each step costs a profile build). Without it
        /// the profiles are built once, at the split. Contacts keep the group of their history
        /// before the split.
        #[arg(long, value_name = "DAYS", value_parser = clap::value_parser!(u32).range(1..=3650))]
        relearn: Option<u32>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Bring the stored profiles up to date with the events dataset (only new event parts are
    /// read), and print what changed.
    Profiles {
        /// Recompute from every event instead of updating.
        #[arg(long)]
        rebuild: bool,
        /// Build from every event in memory and report; store nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Generate synthetic, realistic engagement data (seeded) into a data directory.
    ///
    /// It reads no config, and writes to --out: --config, listed below as for every command, is
    /// refused here, and --data, if given, must name the --out folder.
    Gen {
        /// How many contacts.
        #[arg(long, value_name = "N")]
        contacts: usize,
        /// About how many events in all (spread by each contact's activity). Required, but
        /// not taken with --respond.
        #[arg(
            long,
            value_name = "M",
            required_unless_present = "respond",
            conflicts_with = "respond"
        )]
        events: Option<usize>,
        /// The seed: the same seed gives the same files.
        #[arg(long, value_name = "S", default_value_t = 1)]
        seed: u64,
        /// Data directory to write `events/` and `contacts/` into (must hold no contacts yet).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// The generated year ends at this time (default 2026-01-01).
        #[arg(long, value_name = "TIME")]
        end: Option<String>,
        /// Instead of a year of history, draw the responses of the contacts generated with the
        /// same --contacts, --seed and --end to the sends recorded in --out (by sendtime serve
        /// or tick) and store them as events: an open soon after the send, likelier the more
        /// the contact reads at that local time, so lift can be measured where the truth is
        /// known.
        #[arg(long)]
        respond: bool,
        /// With --respond: the chance of an open does not depend on when the mail arrives.
        #[arg(long)]
        flat: bool,
        /// Contacts have no habits of their own: every open's hour is drawn from the whole
        /// population's (a data set where personal history predicts nothing). With
        /// --respond, for a world generated so: the chance of an open follows the whole
        /// population's reading at the mail's time, whoever gets it.
        #[arg(long, conflicts_with = "flat")]
        no_habits: bool,
        /// With --respond: only sends at or after this time.
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        /// With --respond: which independent draw of the responses (the same number gives the
        /// same responses to the same sends) [default: 0].
        #[arg(long, value_name = "N")]
        draw: Option<u64>,
    },
    /// Reports on what sendtime did.
    Report {
        #[command(subcommand)]
        what: ReportCommand,
    },
    /// What to register in HubSpot.
    Hubspot {
        #[command(subcommand)]
        what: HubspotCommand,
    },
    /// Run a local HubSpot stand-in (for trying sendtime without a HubSpot account): the
    /// APIs sendtime calls, with HubSpot's shapes, errors and limits.
    ///
    /// It reads no config or data folder: --config and --data, listed below as for every
    /// command, are refused here.
    #[command(name = "hubspot-standin")]
    HubspotStandin(StandinArgs),
}

#[derive(Debug, Subcommand)]
pub enum ReportCommand {
    /// Did sending at the planned time help? Optimized sends against held-out ones (a
    /// webhook's or action's `holdout` share, sent at receipt as without sendtime): the share
    /// opened and clicked within 24 and 72 hours of the send, from the email events imported
    /// since, with the difference, a bootstrap 95% interval and the sample sizes. A verdict
    /// is given only when the interval excludes zero.
    Lift {
        /// Only receipts received at or after this time (both groups alike; from 2000 to now).
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        /// Only this webhook or action.
        #[arg(long, value_name = "ID")]
        webhook: Option<String>,
        /// Engagement is known up to this time (from 2000 to now): a receipt counts once its
        /// windows ended before it. Default: where `serve` imports from HubSpot, until when
        /// every connector's events are imported, less the three hours HubSpot may record an
        /// event late; else the newest event imported. After `import csv`, give the export's
        /// end.
        #[arg(long, value_name = "TIME")]
        as_of: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Read "now" from this file, as `serve --clock-file` does. For tests of a simulated
        /// time.
        #[arg(long, value_name = "FILE", env = "SENDTIME_CLOCK_FILE", hide = true)]
        clock_file: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum HubspotCommand {
    /// Print the JSON definition of a workflow action (`[[action]]`) for HubSpot's
    /// create-action-definition API, and the curl line that registers it.
    ///
    /// The definition names the action's URL (from `public_url`), its delivery-type input
    /// field and the output fields a workflow can branch on. Run it after `validate`; register
    /// once per app, again when `public_url` changes.
    ActionDefinition {
        /// The action's id (may be left out when the config has one action).
        #[arg(value_name = "ACTION_ID")]
        action: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ImportSource {
    /// Pull email opens and clicks (the events the model learns from) from HubSpot's email
    /// events API, resuming where the last run stopped.
    Hubspot(HubspotImportArgs),
    /// Read events from a CSV file, streaming: memory grows with the file's contacts (about
    /// 205 bytes each new to the store, 135 for numeric ids; those stored cost too), not with
    /// its size.
    Csv(FileImportArgs),
    /// Read events from a Parquet file (a warehouse export), streaming, as a CSV file.
    Parquet(FileImportArgs),
}

#[derive(Debug, clap::Args)]
pub struct HubspotImportArgs {
    /// Connector to import for (may be left out when there is one).
    #[arg(long, value_name = "ID")]
    pub connector: Option<String>,
    /// Only events at or after this time (any TIME form; e.g. 2026-01-01T00:00:00Z). On the
    /// connector's first run it marks the history before it imported (as from a file), so no
    /// later run reads it: leave it out to import the account's whole history.
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Only events up to this time (as --since; default: now).
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// Events per API page (HubSpot allows at most 1000).
    #[arg(long, value_name = "N", default_value_t = crate::hubspot::wire::MAX_EVENTS_PAGE, hide = true)]
    pub page_size: u32,
    /// Memory for the ids of the window's events already stored or met, in MB (64 hold about
    /// 2.8M): a window with more is checked a time slice at a time, read back from the store.
    #[arg(long, value_name = "MB", default_value_t = crate::import::seen::BUDGET_MB as f64,
          value_parser = megabytes)]
    pub dedup_memory: f64,
}

#[derive(Debug, clap::Args)]
pub struct FileImportArgs {
    /// The file: for `import csv`, CSV with a header row; for `import parquet`, Parquet.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Column holding the contact: an email address or a HubSpot contact id.
    #[arg(long, value_name = "COL")]
    pub contact: String,
    /// Column holding the event time: RFC 3339, "YYYY-MM-DD HH:MM:SS[.ffffff][ UTC]" or with an
    /// offset ("+00", " -0800"), or a number of epoch seconds (up to 10 digits) or
    /// milliseconds; in Parquet also a timestamp. A date without a time of day is refused.
    /// A time without an offset or zone (a Parquet timestamp without one too) is taken as UTC:
    /// export local times with their offset, or the hours the model learns are shifted.
    #[arg(long, value_name = "COL")]
    pub time: String,
    /// Column holding the event kind (OPEN, CLICK, SENT, ...).
    #[arg(long, value_name = "COL", conflicts_with = "kind_default")]
    pub kind: Option<String>,
    /// Kind for every row when the file has no kind column: OPEN, CLICK, SENT, DELIVERED, ...
    /// [default: OPEN; a file with a column named like kind, type, event_type or event needs
    /// --kind or this].
    #[arg(long, value_name = "KIND", value_parser = event_kind)]
    pub kind_default: Option<String>,
    /// Check the file and show what would be imported; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Rows per events part written. Larger parts import more slowly but make a full profile
    /// build over an export whose contacts are spread through it faster (4000000: about
    /// 1.3× faster for 100M rows). At most 10000000: a part's rows are held in memory (and
    /// sorted) while it is written, so larger parts would break the import's memory bound.
    #[arg(long, value_name = "N", default_value_t = crate::import::PART_ROWS,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=10_000_000))]
    pub part_rows: usize,
    /// Memory for checking rows against the events already stored, in MB (8 bytes per stored
    /// event without a source id): a store with more is checked in several passes over FILE.
    #[arg(long, value_name = "MB", default_value_t = crate::import::stored::BUDGET_MB as f64,
          value_parser = megabytes)]
    pub dedup_memory: f64,
}

/// `sendtime hubspot-standin`: run the stand-in by hand.
#[derive(Debug, clap::Args)]
pub struct StandinArgs {
    /// Address to listen on (port 0: any free port; the address is printed).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0", value_parser = socket_addr)]
    pub listen: SocketAddr,
    /// Email events to serve: a JSON array of HubSpot events, or `{"events": [...]}`. Their
    /// recipients become the account's contacts.
    #[arg(long, value_name = "FILE.json")]
    pub events: Option<PathBuf>,
    /// More contacts the account holds, so that enrolling them by email works (HubSpot answers
    /// 404 for an unknown email): one `email` or `email,id` per line.
    #[arg(long, value_name = "FILE")]
    pub contacts: Option<PathBuf>,
    /// Rolling 10-second request limit (at least 1).
    #[arg(long, value_name = "N", default_value_t = crate::hubspot::standin::DEFAULT_LIMIT_PER_10S,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub limit_per_10s: u32,
    /// Requests per day before HubSpot's DAILY 429 (at least 1); resets at the account's
    /// midnight.
    #[arg(long, value_name = "N", default_value_t = crate::hubspot::standin::DEFAULT_DAILY_LIMIT,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub daily_limit: u32,
    /// The account's time zone as minutes east of UTC (e.g. -300 for UTC-05:00), -720 to 840
    /// as the world's zones are.
    #[arg(
        long,
        value_name = "MINUTES",
        default_value_t = 0,
        allow_hyphen_values = true,
        value_parser = clap::value_parser!(i32).range(-720..=840)
    )]
    pub utc_offset_minutes: i32,
    /// The account's portal id (HubSpot's Hub ID), as its account details name it: one per
    /// stand-in, to try a config of several accounts.
    #[arg(long, value_name = "ID", default_value_t = crate::hubspot::standin::DEFAULT_PORTAL_ID)]
    pub portal_id: u64,
    /// Bearer token to accept (not empty).
    #[arg(long, value_name = "TOKEN", env = "HUBSPOT_STANDIN_TOKEN", default_value = crate::hubspot::standin::DEFAULT_TOKEN, hide_env_values = true,
          value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub token: String,
}

/// An address to listen on: `IP:PORT`, or a host name this machine resolves (`localhost:8080`).
fn socket_addr(text: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    match text.to_socket_addrs().map(preferred) {
        Ok(Some(addr)) => Ok(addr),
        _ => Err(format!(
            "{} is not an address to listen on: give IP:PORT (127.0.0.1:8080, [::1]:8080) or HOST:PORT (localhost:8080)",
            crate::text::quoted(text)
        )),
    }
}

/// Of the addresses a name resolves to, the first IPv4 one, else the first: `localhost` is
/// `::1` first where `/etc/hosts` says so, and listening there alone refused a proxy sent to
/// `127.0.0.1` (an audit).
fn preferred(mut addrs: impl Iterator<Item = SocketAddr>) -> Option<SocketAddr> {
    let first = addrs.next()?;
    Some(match first.is_ipv4() {
        true => first,
        false => addrs.find(SocketAddr::is_ipv4).unwrap_or(first),
    })
}

/// An event kind as `--kind-default` names one (refused here: a usage error, exit 2).
fn event_kind(text: &str) -> Result<String, String> {
    use crate::datasets::events::Kind;
    match Kind::parse(text) {
        Some(_) => Ok(text.to_string()),
        None => Err(format!(
            "{} is not an event kind; use one of: {}",
            crate::text::quoted(text),
            Kind::ALL.map(Kind::as_str).join(", ")
        )),
    }
}

/// A memory size in MB, more than 0 (a fraction is fine).
fn megabytes(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(mb) if mb > 0.0 && mb.is_finite() => Ok(mb),
        _ => Err(format!(
            "{} is not a number of megabytes above 0, e.g. 384 or 0.5",
            crate::text::quoted(text)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_listens_on_its_ipv4_address_first() {
        let [v6, v4, v4b]: [SocketAddr; 3] =
            ["[::1]:8080", "127.0.0.1:8080", "127.0.0.2:8080"].map(|a| a.parse().unwrap());
        assert_eq!(preferred([v6, v4, v4b].into_iter()), Some(v4));
        assert_eq!(preferred([v4b, v4].into_iter()), Some(v4b));
        assert_eq!(preferred([v6].into_iter()), Some(v6));
        assert_eq!(preferred(std::iter::empty()), None);
    }
}
