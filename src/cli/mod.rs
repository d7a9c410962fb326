//! The `sendtime` command line. Each subcommand is a thin shell over the library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

use crate::config::{Config, EnvCheck, Overrides, Target};
use crate::import::csv::Columns;
use crate::model::commands as model;
use crate::time::{parse_flag, parse_past_flag, parse_plan_flag};

mod args;

use args::DEFAULT_CONFIG;
pub use args::{
    Cli, Command, FileImportArgs, HubspotCommand, HubspotImportArgs, ImportSource, ReportCommand,
    StandinArgs,
};

/// Entry point for the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runs = matches!(
        cli.command,
        Command::Serve { .. }
            | Command::Demo { .. }
            | Command::Tick { .. }
            | Command::Import { .. }
            | Command::HubspotStandin(_)
    );
    if !runs {
        quiet_on_closed_stdout();
    }
    // Commands that only read still say what they find wrong (a damaged part moved to
    // quarantine, stored profiles rebuilt), on stderr beside their answer.
    init_logging(if runs { "info" } else { "warn" });
    let overrides = Overrides {
        data_dir: cli.data_dir.clone(),
        ..Overrides::default()
    };
    // Commands of no config and no data folder refuse them rather than ignore them.
    let given = (cli.config.is_some(), cli.data_dir.is_some());
    let refusal = match &cli.command {
        Command::Demo { .. } if given != (false, false) => Some(
            "demo makes its own config and data in a temporary folder, removed when it stops: drop --config and --data (`sendtime serve` runs on yours)",
        ),
        Command::Schema if given != (false, false) => Some(
            "schema prints the JSON Schema of every config, whatever the file: drop --config and --data",
        ),
        Command::HubspotStandin(_) if given != (false, false) => Some(
            "hubspot-standin stands in for HubSpot and reads no config or data folder: drop --config and --data",
        ),
        Command::Gen { .. } if given.0 => Some("gen reads no config: drop --config"),
        // clap refuses `validate FILE --config PATH`, not `--config PATH validate FILE`
        // (global arguments join the subcommand after its conflicts are checked).
        Command::Validate { file: Some(_), .. } if given.0 => {
            Some("validate takes the config file as CONFIG or with --config, not both: drop one")
        }
        _ => None,
    };
    if let Some(refusal) = refusal {
        say_error(refusal);
        return ExitCode::from(2);
    }
    let config = cli
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
    match cli.command {
        Command::Validate { file, online } => validate(file.unwrap_or(config), &overrides, online),
        Command::Serve {
            listen,
            admin_listen,
            clock_file,
        } => {
            let overrides = Overrides {
                listen,
                admin_listen,
                ..overrides
            };
            let clock = clock_file.map_or(crate::clock::Clock::System, crate::clock::Clock::File);
            // On stderr whatever `RUST_LOG` filters, as every command's failure.
            report(crate::serve::run(
                config,
                overrides,
                clock,
                Default::default(),
            ))
        }
        Command::Tick { now } => report(tick(&config, &overrides, now.as_deref())),
        Command::Import { source } => report(import(&config, &overrides, source)),
        Command::Demo {
            speed,
            listen,
            admin_listen,
        } => report(crate::demo::run(speed, listen, admin_listen)),
        Command::Schema => {
            let schema = crate::config::schema::schema();
            println!(
                "{}",
                serde_json::to_string_pretty(&schema).expect("values serialize")
            );
            ExitCode::SUCCESS
        }
        Command::Erase {
            contacts,
            only,
            dry_run,
        } => report(erase(&config, &overrides, &contacts, only, dry_run)),
        Command::Discard { webhook, dry_run } => report(
            load_config_with_data(&config, &overrides)
                .and_then(|c| crate::discard::run(&c, webhook.as_deref(), dry_run))
                .map(|discarded| print_run(dry_run.then_some("moved"), discarded)),
        ),
        Command::Pause { id, connector } => report(pause(&config, &overrides, id, connector, true)),
        Command::Resume { id, connector } => {
            report(pause(&config, &overrides, Some(id), connector, false))
        }
        Command::HubspotStandin(args) => {
            let options = crate::hubspot::standin::Options {
                token: args.token,
                limit_per_10s: args.limit_per_10s,
                daily_limit: args.daily_limit,
                utc_offset_minutes: args.utc_offset_minutes,
                portal_id: args.portal_id,
                // It learns of no execution: a completion of any callback is taken.
                any_callback: true,
                // Nothing reads its log: a few requests, not days of them.
                log_limit: 10_000,
                ..Default::default()
            };
            report(crate::hubspot::standin::run_until_ctrl_c(
                args.listen,
                args.events.as_deref(),
                args.contacts.as_deref(),
                options,
            ))
        }
        Command::Hubspot {
            what: HubspotCommand::ActionDefinition { action },
        } => report(
            load_config(&config, &overrides).and_then(|c| action_definition(&c, action.as_deref())),
        ),
        model_command => report(model(model_command, &config, &overrides)),
    }
}

/// The model's commands: times are parsed here, so the library takes instants.
fn model(command: Command, path: &std::path::Path, overrides: &Overrides) -> anyhow::Result<()> {
    match command {
        Command::Explain { contact, at } => {
            let at = at.map(|t| parse_plan_flag("--at", &t)).transpose()?;
            model::explain(&load_config_with_data(path, overrides)?, &contact, at)
        }
        Command::Predict { as_of, out } => {
            let as_of = parse_plan_flag("--as-of", &as_of)?;
            model::predict(&load_config_with_data(path, overrides)?, as_of, &out)
        }
        Command::Backtest {
            split,
            events,
            contact,
            time,
            kind,
            kind_default,
            tune,
            validation_days,
            fixed_hour,
            relearn,
            json,
        } => {
            let split_ms = parse_plan_flag("--split", &split)?;
            // Flags that shape what they go with are not taken alone (clap's `requires` takes a
            // default for presence): they were ignored.
            anyhow::ensure!(
                events.is_some()
                    || (contact.is_none()
                        && time.is_none()
                        && kind.is_none()
                        && kind_default.is_none()),
                "--contact, --time, --kind and --kind-default name the columns of --events: they go with it"
            );
            anyhow::ensure!(
                tune || validation_days.is_none(),
                "--validation-days is the length of --tune's validation split: it goes with --tune"
            );
            let (contact, time) = (
                contact.unwrap_or_else(|| "user_id".into()),
                time.unwrap_or_else(|| "opened".into()),
            );
            let validation_days = validation_days.unwrap_or(180);
            // A file of events needs no data directory, nor a config when there is none (the
            // `[model]` defaults serve).
            let (knobs, events) = match events {
                Some(file) => {
                    let columns =
                        Columns::new(&contact, &time, kind.as_deref(), kind_default.as_deref())?;
                    let knobs = if !path.exists() && path == Path::new(DEFAULT_CONFIG) {
                        crate::model::ModelConfig::default()
                    } else {
                        load_config(path, overrides)?.model
                    };
                    (knobs, model::Events::Csv(file, columns))
                }
                None => {
                    let config = load_config_with_data(path, overrides)?;
                    let data_dir = config.server.data_dir;
                    (config.model, model::Events::Dataset(data_dir))
                }
            };
            let options = model::BacktestOptions {
                tune,
                validation_days,
                fixed_hour,
                relearn_days: relearn,
                json,
            };
            model::backtest(knobs, events, split_ms, options)
        }
        Command::Report {
            what:
                ReportCommand::Lift {
                    since,
                    webhook,
                    as_of,
                    json,
                    clock_file,
                },
        } => {
            let config = load_config_with_data(path, overrides)?;
            let now = clock_file.map_or(crate::clock::Clock::System, crate::clock::Clock::File);
            let now = now.now_ms();
            let mut options = crate::lift::report::default_as_of(&config, now);
            options.since_ms = (since.map(|t| parse_past_flag("--since", &t, now))).transpose()?;
            options.webhook = webhook;
            // A connector never imported is still said to be (an earlier version dropped it
            // with --as-of); a year's typo is refused. No engagement is known after now: the
            // windows ending past it, the optimized sends' more often (they go later), counted
            // as not engaged (an audit).
            if let Some(t) = as_of {
                let at = parse_past_flag("--as-of", &t, now)?;
                if config.import.enabled && at > options.as_of_ms {
                    tracing::warn!(
                        "--as-of {} is past what the scheduled import has read ({}, less the hours HubSpot may record an event late): engagement after it counts as none",
                        crate::time::format_minute(at),
                        crate::time::format_minute(options.as_of_ms)
                    );
                }
                (options.as_of_ms, options.up_to_newest_event) = (at, false);
            }
            // Before reading anything; the report checks it again against the as-of in
            // force, which the newest event may set.
            crate::lift::report::since_before(options.since_ms, options.as_of_ms, false)?;
            let lift = crate::lift::report::lift(&config.server.data_dir, &options)?;
            // One removed from the config since is reported from its receipts; a name that
            // has neither is a typo.
            if let Some(w) = options
                .webhook
                .as_ref()
                .filter(|w| config.webhook(w).is_none())
            {
                anyhow::ensure!(
                    lift.optimized_receipts + lift.holdout_receipts > 0,
                    "no webhook or action {} in {}, and no receipts of one in the data while it held some out (a webhook removed from the config is reported from those)",
                    crate::text::quoted(w),
                    config.path.display()
                );
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&lift)?);
            } else {
                print!("{}", lift.text());
            }
            Ok(())
        }
        Command::Profiles { rebuild, dry_run } => {
            model::profiles(&load_config_with_data(path, overrides)?, rebuild, dry_run)
        }
        Command::Gen {
            contacts,
            events,
            seed,
            out,
            end,
            respond,
            flat,
            since,
            draw,
            no_habits,
        } => {
            // The same folder however written (`./g`, `g/`).
            let same = |d: &PathBuf| match (std::path::absolute(d), std::path::absolute(&out)) {
                (Ok(a), Ok(b)) => a == b,
                _ => *d == out,
            };
            anyhow::ensure!(
                overrides.data_dir.as_ref().is_none_or(same),
                "gen writes into the folder given by --out, not --data: drop --data"
            );
            crate::model::synth::check_sizes(contacts, events)?;
            // (clap's `requires` takes a default for presence.)
            anyhow::ensure!(
                respond || (!flat && since.is_none() && draw.is_none()),
                "--flat, --since and --draw shape the responses to sends: they go with --respond"
            );
            let end = end.map(|t| parse_flag("--end", &t)).transpose()?;
            // A year of events before it must be dates people read email on.
            const YEAR_2001_MS: i64 = 978_307_200_000;
            const YEAR_2200_MS: i64 = 7_258_118_400_000;
            if let Some(end) = end {
                anyhow::ensure!(
                    (YEAR_2001_MS..YEAR_2200_MS).contains(&end),
                    "--end {} is not between 2001 and 2200",
                    crate::time::format_minute(end)
                );
            }
            if respond {
                // Reading an empty plan would make its folder in whatever folder `--out` named.
                let plan = out.join(crate::datasets::plan::NAME);
                anyhow::ensure!(
                    plan.is_dir(),
                    "no sends recorded at {}: --respond answers the sends recorded there; give --out the folder `serve` ran on",
                    plan.display()
                );
                let since = since.map(|t| parse_flag("--since", &t)).transpose()?;
                let response = match (flat, no_habits) {
                    (true, _) => crate::model::synth::Response::Flat,
                    (false, true) => crate::model::synth::Response::Population,
                    (false, false) => crate::model::synth::Response::Habit,
                };
                let draw = draw.unwrap_or(0);
                return model::respond(contacts, seed, end, &out, since, response, draw);
            }
            crate::store::create_data_dir(&out)?;
            model::generate(
                contacts,
                events.unwrap_or_default(),
                seed,
                &out,
                end,
                !no_habits,
            )
        }
        Command::Validate { .. }
        | Command::Serve { .. }
        | Command::Tick { .. }
        | Command::Import { .. }
        | Command::Schema
        | Command::Erase { .. }
        | Command::Discard { .. }
        | Command::Demo { .. }
        | Command::Pause { .. }
        | Command::Resume { .. }
        | Command::Hubspot { .. }
        | Command::HubspotStandin(_) => unreachable!("handled by main"),
    }
}

/// What a command that rewrites the data folder did, under a line saying nothing was
/// (`dry_run`: what it would have done, "deleted" or "moved").
fn print_run(dry_run: Option<&str>, done: impl std::fmt::Display) {
    if let Some(what) = dry_run {
        println!("dry run, nothing {what}");
    }
    print!("{done}");
}

/// The config's ids and data folder, and the config when it validates; from the TOML alone when
/// it does not (`pause`, `erase`), with a warning ending in `how` (the config's own error when
/// it is not even TOML).
fn config_or_toml(
    path: &std::path::Path,
    overrides: &Overrides,
    how: impl FnOnce(&crate::config::Named) -> String,
) -> anyhow::Result<(crate::config::Named, Option<crate::config::Config>)> {
    match load_config(path, overrides) {
        Ok(config) => Ok((crate::config::Named::of(&config), Some(config))),
        Err(invalid) => {
            // Not even TOML: said with what to do, as the README promised pauses on a bad
            // edit (an audit found a syntax slip refused without a way on).
            let named = match crate::config::Named::read(path, overrides) {
                Ok(named) => named,
                Err(e) if e.is::<toml::de::Error>() => {
                    return Err(anyhow::anyhow!(
                        "{invalid:#}\nits ids and data folder cannot be read from a file that is not TOML: fix the syntax, or pass --config a copy that reads (such as its last version in git)"
                    ));
                }
                Err(e) => {
                    return Err(anyhow::anyhow!(
                        "{invalid:#}\nits ids and data folder cannot be read from it either: {e:#}"
                    ));
                }
            };
            tracing::warn!(
                "config {} does not pass validation (`sendtime validate` lists why): {}",
                path.display(),
                how(&named)
            );
            Ok((named, None))
        }
    }
}

/// `sendtime erase`: with a config that does not validate too (an erasure request should not
/// wait for a webhook's fix), the data folder read from its TOML alone, as `pause` reads it.
fn erase(
    path: &std::path::Path,
    overrides: &Overrides,
    contacts: &[String],
    only: bool,
    dry_run: bool,
) -> anyhow::Result<()> {
    let (named, config) = config_or_toml(path, overrides, |named| {
        format!(
            "erasing from {}, the data folder read from the TOML alone; the stored profiles are deleted, not rebuilt",
            named.data_dir.display()
        )
    })?;
    let (data_dir, model) = (named.data_dir, config.map(|c| c.model));
    require_sendtime_data(&data_dir, path)?;
    let erased = crate::erase::run(&data_dir, model, contacts, only, dry_run)?;
    print_run(dry_run.then_some("deleted"), erased);
    Ok(())
}

/// `sendtime pause [ID]` and `sendtime resume ID`.
fn pause(
    path: &std::path::Path,
    overrides: &Overrides,
    id: Option<String>,
    connector: bool,
    on: bool,
) -> anyhow::Result<()> {
    // A bad edit `serve` refused (it keeps the config before it) is when a pause may be needed
    // most: the ids and the data folder are read from the TOML alone.
    let (named, config) = config_or_toml(path, overrides, |_| {
        "its ids are read from the TOML alone".to_string()
    })?;
    // Some other folder (a mistyped --data) is refused: a pause written there held nothing,
    // and a resume said "not paused" of what `serve` still held (an audit). A folder with
    // only pauses in it yet (`state/`) is sendtime's, and an empty one may take a pause
    // before `serve` first starts.
    require_data_dir(&named.data_dir, &named.path)?;
    let empty =
        || -> anyhow::Result<bool> { Ok(std::fs::read_dir(&named.data_dir)?.next().is_none()) };
    let pausing = on && id.is_some();
    let has_state = crate::store::is_dir(&crate::store::state_dir(&named.data_dir))?;
    if !(has_state || pausing && empty()?) {
        require_sendtime_data(&named.data_dir, &named.path)?;
    }
    // The command that lifts a pause, with the flags this one was given (pasted as written
    // elsewhere, it found no config; a first-user audit; the default config is named only
    // when another was given).
    let mut flags = String::new();
    if path != std::path::Path::new(DEFAULT_CONFIG) {
        flags.push_str(&format!(" --config {}", shell_path(path)));
    }
    if let Some(dir) = &overrides.data_dir {
        flags.push_str(&format!(" --data {}", shell_path(dir)));
    }
    let resume_of = |id: &str, connector: bool| {
        let connector = if connector { " --connector" } else { "" };
        format!("sendtime resume{flags} {id}{connector}")
    };
    let Some(id) = id else {
        let pauses = crate::pauses::read(&named.data_dir)?;
        if pauses.is_empty() {
            println!("nothing is paused");
        }
        for (id, p) in pauses.iter() {
            let connector = p.kind == crate::pauses::Kind::Connector;
            // Gone, or its id now names something else.
            let gone = crate::pauses::kind_of(&named, id, connector) != Some(p.kind);
            println!(
                "{id} ({}) paused since {}{}",
                p.kind.as_str(),
                crate::time::format_minute(p.since_ms),
                if gone {
                    format!(
                        ", not in the config now (`{}` lifts it)",
                        resume_of(id, connector)
                    )
                } else {
                    String::new()
                }
            );
        }
        return Ok(());
    };
    let (kind, was) = crate::pauses::set(&named, &id, connector, on, crate::time::now_ms())?;
    // A `serve` started before `server.data_dir` changed in the file keeps its folder, and
    // reads its pauses there: said, rather than "held" while its contacts go out.
    if !crate::dispatch::locks::dispatching_now(&named.data_dir) {
        // (With --data, the file's `data_dir` is not the folder asked about.)
        let moved = match overrides.data_dir {
            Some(_) => "; a `serve` started with another --data reads its pauses there".into(),
            None => format!(
                "; a `serve` started before `server.data_dir` was changed in {} reads its pauses from its own folder (run this again with --data that folder)",
                named.path.display()
            ),
        };
        eprintln!(
            "note: no `serve` is dispatching from {} now: the change holds from its next start{moved}",
            named.data_dir.display(),
        );
    }
    let what = kind.as_str();
    // The command that lifts it: a connector may share its id with a webhook.
    let resume = resume_of(&id, kind == crate::pauses::Kind::Connector);
    // HubSpot holds an action's contact only so long, then moves it on by itself: said of a
    // connector's actions too (it was said of an action's pause alone; an audit). Without a
    // valid config, any action may be on the connector.
    let has_actions = |c: &str| match &config {
        Some(config) => {
            (config.webhooks.iter()).any(|w| w.target == Target::Callback && w.connector == c)
        }
        None => !named.actions.is_empty(),
    };
    let hold = "at most until HubSpot's hold on each ends, the action's delivery window and a day: HubSpot then moves the contact on, and it is recorded failed then, without a call";
    let bound = match kind {
        crate::pauses::Kind::Action => format!(" ({hold})"),
        crate::pauses::Kind::Connector if on && has_actions(&id) => {
            format!(" (its actions' contacts {hold})")
        }
        _ => String::new(),
    };
    match (on, was) {
        (true, None) => {
            println!("{what} {id} paused: its contacts are held until `{resume}`{bound}")
        }
        (true, Some(since)) => println!(
            "{what} {id} was already paused, since {}: its contacts are held until `{resume}`{bound}",
            crate::time::format_minute(since)
        ),
        (false, Some(_)) => println!("{what} {id} resumed"),
        (false, None) => {
            let pauses = crate::pauses::read(&named.data_dir)?;
            let hint =
                if kind != crate::pauses::Kind::Connector && pauses.connectors.contains_key(&id) {
                    format!(" (connector {id} is paused: `{}`)", resume_of(&id, true))
                } else {
                    String::new()
                };
            println!("{what} {id} was not paused: nothing to resume{hint}")
        }
    }
    Ok(())
}

/// `path` as a shell reads it from any folder: absolute, and quoted unless plain (a path
/// that is not UTF-8 is shown with its bad bytes replaced).
fn shell_path(path: &Path) -> String {
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let text = path.to_string_lossy();
    // (Only a NUL byte cannot be quoted, and no path holds one.)
    shlex::try_quote(&text).map_or_else(|_| text.to_string(), |q| q.into_owned())
}

/// `sendtime hubspot action-definition`: the definition's JSON, then how to register it.
fn action_definition(config: &Config, id: Option<&str>) -> anyhow::Result<()> {
    let actions: Vec<_> = config
        .webhooks
        .iter()
        .filter(|w| w.target == Target::Callback)
        .collect();
    let action = match (id, actions.as_slice()) {
        (Some(id), _) => actions
            .iter()
            .find(|a| a.id == id)
            .copied()
            .with_context(|| {
                let webhook = config.webhook(id).map_or(String::new(), |_| {
                    format!(" ({id:?} is a [[webhook]]: HubSpot posts to it from a \"Send a webhook\" step, with no action definition)")
                });
                format!(
                    "no [[action]] {id:?} in {}{webhook}; it has: {}",
                    config.path.display(),
                    actions
                        .iter()
                        .map(|a| a.id.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?,
        (None, [one]) => one,
        (None, []) => anyhow::bail!(
            "{} declares no [[action]]; add one (see the README, \"Wiring the workflow action\")",
            config.path.display()
        ),
        (None, many) => anyhow::bail!(
            "{} has several actions: name one of {}",
            config.path.display(),
            many.iter()
                .map(|a| a.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let connector = config
        .connector(&action.connector)
        .expect("validated: webhook connectors exist");
    let body = crate::hubspot::action::definition(config, action);
    println!("{}", serde_json::to_string_pretty(&body)?);
    eprintln!(
        "\nSave the JSON above as action.json and register it for app {app}:\n  \
         curl -X POST \"{base}{dated}?hapikey=$HUBSPOT_DEVELOPER_API_KEY\" \\\n    \
         -H 'Content-Type: application/json' -d @action.json\n\
         (with the developer account's API key; if HubSpot refuses it there, its legacy path \
         {legacy} takes it until 2027-03-30; for an app on HubSpot's developer platform, \
         declare the same fields in the project's workflow-action file)",
        dated = crate::hubspot::paths::action_definitions(connector.app_id),
        legacy = crate::hubspot::paths::legacy_action_definitions(connector.app_id),
        app = connector.app_id,
        base = connector.api_base,
    );
    // Taken for testing on this machine; HubSpot could never call it (a first-user audit:
    // it was printed for registration without a word).
    if !crate::config::is_https(&config.server.public_url) {
        eprintln!(
            "warning: its actionUrl is http, which HubSpot never calls (https only): register it with `public_url` set to the https address HubSpot will call"
        );
    }
    Ok(())
}

/// Say that an import made `data_dir` (`made`): a mistyped `--data` would otherwise start a
/// second store without a word (a first-user audit).
fn say_new_data_dir(made: bool, data_dir: &Path) {
    if made {
        eprintln!(
            "note: {} did not exist: importing into it as a new data folder (if you meant an existing one, check --data or `server.data_dir`)",
            data_dir.display()
        );
    }
}

/// A command whose reader goes away (`sendtime report lift | head`) ends quietly, as Unix tools
/// do: Rust ignores SIGPIPE, so `println!` would panic. Commands that receive, send or import
/// keep ignoring it: a closed log pipe must not stop them half way.
fn quiet_on_closed_stdout() {
    // SAFETY: called before any thread starts; it restores the signal's default action.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Print an error chain for a person and turn it into the exit status.
fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            say_error(format!("{e:#}"));
            ExitCode::FAILURE
        }
    }
}

/// `error: ...` on stderr, whatever `RUST_LOG` filters; not with `eprintln!`, which panics
/// once stderr is gone (a closed terminal, `| tee`).
fn say_error(error: impl std::fmt::Display) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "error: {error}");
}

/// Load the config for a command that works on the data directory (secrets only warned about).
fn require_config_file(path: &std::path::Path) -> anyhow::Result<()> {
    anyhow::ensure!(
        path.exists(),
        "no config file at {}: {}",
        path.display(),
        crate::config::NO_CONFIG_HINT
    );
    Ok(())
}

fn load_config(path: &std::path::Path, overrides: &Overrides) -> anyhow::Result<Config> {
    require_config_file(path)?;
    let loaded = Config::load(path, overrides, EnvCheck::Warn)
        .map_err(|d| anyhow::anyhow!("config {} is invalid:\n{d}", path.display()))?;
    Ok(loaded.config)
}

/// Load the config for a command that reads (or pauses) what `serve` or `import` stored: a
/// mistyped `--data` must not read an empty folder made on the spot and report nothing.
/// A folder that exists but holds none of sendtime's datasets (some other folder) is refused
/// too: it was read as an empty store, answered "a new contact", and filled with folders.
fn load_config_with_data(path: &std::path::Path, overrides: &Overrides) -> anyhow::Result<Config> {
    let config = load_config(path, overrides)?;
    require_sendtime_data(&config.server.data_dir, &config.path)?;
    Ok(config)
}

/// `dir` exists and holds some of sendtime's datasets: a mistyped `--data` naming another
/// folder is refused, not read as an empty store (and filled with dataset folders).
fn require_sendtime_data(dir: &std::path::Path, config: &std::path::Path) -> anyhow::Result<()> {
    use crate::datasets::{events, inbox, outcomes, plan};
    require_data_dir(dir, config)?;
    let known = [events::NAME, inbox::NAME, plan::NAME, outcomes::NAME];
    anyhow::ensure!(
        known.iter().any(|d| dir.join(d).is_dir()),
        "{} holds none of sendtime's data ({}/): check --data or server.data_dir in {} (`serve` and `import` fill it)",
        dir.display(),
        known.join("/, "),
        config.display()
    );
    Ok(())
}

/// `dir` (the data folder `config` names) exists.
fn require_data_dir(dir: &std::path::Path, config: &std::path::Path) -> anyhow::Result<()> {
    anyhow::ensure!(
        dir.is_dir() || !dir.exists(),
        "{} is a file, not a data folder: check --data or server.data_dir in {}",
        dir.display(),
        config.display()
    );
    anyhow::ensure!(
        dir.is_dir(),
        "no data directory at {}: check --data or server.data_dir in {} (`serve` and `import` create it)",
        dir.display(),
        config.display()
    );
    Ok(())
}

fn tick(path: &std::path::Path, overrides: &Overrides, now: Option<&str>) -> anyhow::Result<()> {
    let now = now.map(|t| parse_plan_flag("--now", t)).transpose()?;
    require_config_file(path)?;
    let loaded = Config::load(path, overrides, EnvCheck::RequireTokens).map_err(|d| {
        // From a shell without `serve`'s variables, beside it: the lock is what to say first.
        let beside = Config::load(path, overrides, EnvCheck::Warn)
            .ok()
            .map(|l| l.config.server.data_dir)
            .filter(|dir| crate::dispatch::locks::dispatching_now(dir));
        match beside {
            Some(dir) => anyhow::anyhow!(
                "{}\nNor would config {} run from this shell:\n{d}",
                crate::dispatch::locks::held(&dir, "a tick does not run beside it"),
                path.display()
            ),
            None => anyhow::anyhow!("cannot run with config {}:\n{d}", path.display()),
        }
    })?;
    for line in loaded.warnings.lines() {
        tracing::warn!("{line}");
    }
    require_sendtime_data(&loaded.config.server.data_dir, &loaded.config.path)?;
    let (report, stopped) = crate::dispatch::run_once(&loaded.config, now)?;
    println!("tick finished: {report}");
    let failed: Vec<String> = [
        report.write_error.map(|e| {
            format!(
                "outcome rows could not be written (fix the cause: the next tick looks again at the contacts they were for): {e}"
            )
        }),
        report.planning_error.map(|e| {
            format!(
                "new receipts could not be planned (the due contacts were sent, and any action's contact in its hold's last hour): {e}"
            )
        }),
        stopped.map(|why| {
            format!(
                "stopped by {why}: the calls in flight were recorded; what was due and not called waits for the next run"
            )
        }),
    ]
    .into_iter()
    .flatten()
    .collect();
    anyhow::ensure!(failed.is_empty(), "{}", failed.join("\n"));
    Ok(())
}

fn import(
    path: &std::path::Path,
    overrides: &Overrides,
    source: ImportSource,
) -> anyhow::Result<()> {
    let config = load_config(path, overrides)?;
    let csv = matches!(source, ImportSource::Csv(_));
    match source {
        ImportSource::Hubspot(args) => {
            let request = crate::import::hubspot::Request {
                connector: args.connector,
                since_ms: args.since.map(|t| parse_flag("--since", &t)).transpose()?,
                until_ms: args.until.map(|t| parse_flag("--until", &t)).transpose()?,
                page_size: args.page_size,
                dedup_budget: megabytes_to_bytes(args.dedup_memory),
            };
            let created = crate::store::create_data_dir(&config.server.data_dir)?;
            say_new_data_dir(created.is_some(), &config.server.data_dir);
            let result = crate::import::hubspot::run(&config, &request).map(|_| ());
            // Kept only holding something: a failed or empty import leaves no folder (readers
            // took a bare one for data; an audit).
            if let Some(created) = created {
                crate::store::remove_if_unused(&created);
            }
            result
        }
        ImportSource::Csv(args) | ImportSource::Parquet(args) => {
            let columns = Columns::new(
                &args.contact,
                &args.time,
                args.kind.as_deref(),
                args.kind_default.as_deref(),
            )?;
            let options = crate::import::Options {
                dry_run: args.dry_run,
                part_rows: args.part_rows,
                dedup_budget: megabytes_to_bytes(args.dedup_memory),
            };
            // A dry run writes nothing: with no data directory yet, it checks the file against
            // an empty one of its own, removed after.
            let scratch = (args.dry_run && !config.server.data_dir.exists()).then(|| {
                std::env::temp_dir().join(format!("sendtime-dry-run-{}", ulid::Ulid::generate()))
            });
            let data_dir = scratch.as_ref().unwrap_or(&config.server.data_dir);
            if scratch.is_some() {
                eprintln!(
                    "note: {} does not exist: the file is checked against an empty store (an import would make it)",
                    config.server.data_dir.display()
                );
            }
            let created = crate::store::create_data_dir(data_dir)?;
            say_new_data_dir(created.is_some() && scratch.is_none(), data_dir);
            // A dry run's own folder goes on a second Ctrl-C too (it was left in the temporary
            // folder: an audit).
            let gone = scratch.clone();
            stop_import_on_signals(move || {
                if let Some(dir) = gone {
                    let _ = std::fs::remove_dir_all(dir);
                }
            })?;
            let result = if csv {
                let open = |path: &Path| crate::import::csv::CsvReader::open(path, &columns);
                crate::import::run(data_dir, &args.file, open, options)
            } else {
                let open = |path: &Path| crate::import::parquet::ParquetFile::open(path, &columns);
                crate::import::run(data_dir, &args.file, open, options)
            };
            if let Some(dir) = scratch {
                let _ = std::fs::remove_dir_all(dir);
            } else if let Some(created) = created {
                crate::store::remove_if_unused(&created);
            }
            result
        }
    }
}

/// Ctrl-C or SIGTERM during a file import: it stops at its next batch and says nothing was
/// imported (it ended without a word, its staging folder left for the next import to remove);
/// a second one ends the process at once (an import waiting for `events.lock` reads no batch),
/// after `on_exit`.
fn stop_import_on_signals(on_exit: impl FnOnce() + Send + 'static) -> anyhow::Result<()> {
    let (ready, installed) = std::sync::mpsc::channel::<anyhow::Result<()>>();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            let runtime = match runtime {
                Ok(runtime) => runtime,
                Err(e) => return drop(ready.send(Err(e.into()))),
            };
            runtime.block_on(async move {
                let mut signals = match crate::serve::Signals::install(false) {
                    Ok(signals) => signals,
                    Err(e) => return drop(ready.send(Err(e))),
                };
                let _ = ready.send(Ok(()));
                signals.next().await;
                crate::import::stop();
                eprintln!("stopping: nothing will be imported, unless its events are already being published (Ctrl-C again to quit at once)");
                signals.next().await;
                on_exit();
                std::process::exit(130);
            });
        })?;
    installed
        .recv()?
        .context("cannot listen for Ctrl-C and SIGTERM")
}

fn megabytes_to_bytes(mb: f64) -> usize {
    (mb * crate::import::stored::MB as f64) as usize
}

/// Log to stderr from `default_level`, unless `RUST_LOG` says otherwise.
fn init_logging(default_level: &str) {
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    // The config watcher's file events, unless asked for by name: at trace, a log file beside
    // the config would log its own writes, without end.
    if !std::env::var("RUST_LOG").is_ok_and(|v| v.contains("notify")) {
        filter = filter.add_directive("notify=info".parse().expect("a valid directive"));
    }
    // A log pipe that closes (a shipper that died) must not take the server down with it.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .log_internal_errors(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn validate(path: PathBuf, overrides: &Overrides, online: bool) -> ExitCode {
    // Online, the environment is the one `serve` will have: what it refuses to start
    // without is an error here too (a static token's connector passed with no client
    // secret, which `serve` then refused, an audit found).
    let env = if online {
        EnvCheck::Require
    } else {
        EnvCheck::Warn
    };
    // Read from the environment by `serve` and `tick`, which refuse to start on a value that
    // is no timeout: judged as the unset variables are (it passed unseen).
    if let Err(e) = crate::hubspot::policy::request_timeout() {
        if online {
            eprintln!("{}: invalid: {e:#}", path.display());
            return ExitCode::FAILURE;
        }
        eprintln!("warning: {e:#} (`serve` and `tick` refuse to start with it)");
    }
    let loaded = match Config::load(&path, overrides, env) {
        Ok(loaded) => loaded,
        Err(diags) => {
            eprintln!("{diags}");
            eprintln!("{}: invalid: {}", path.display(), diags.tally());
            return ExitCode::FAILURE;
        }
    };
    if !loaded.warnings.is_empty() {
        eprintln!("{}", loaded.warnings);
    }
    // The folder every command reads and writes (`--data` or `data_dir`): a file there
    // passed, and the first import failed (a first-user audit).
    let data_dir = &loaded.config.server.data_dir;
    if data_dir.is_file() {
        eprintln!(
            "{}: invalid: the data folder {} is a file: point `data_dir` (or --data) at a folder, made if missing",
            path.display(),
            data_dir.display()
        );
        return ExitCode::FAILURE;
    }
    print!("{}", details(&loaded.config));
    if !online {
        return ExitCode::SUCCESS;
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let checks = rt.block_on(crate::hubspot::online::check(&loaded.config));
    println!("\nonline checks:");
    for c in &checks {
        println!("{c}");
    }
    let failed = checks.iter().filter(|c| c.failed()).count();
    if failed > 0 {
        eprintln!(
            "{}: {failed} online check{} failed",
            path.display(),
            if failed == 1 { "" } else { "s" }
        );
        return ExitCode::FAILURE;
    }
    let skipped = checks.iter().filter(|c| c.skipped()).count();
    let passed = checks.len() - skipped;
    println!(
        "{}: {passed} online check{} passed{}",
        path.display(),
        if passed == 1 { "" } else { "s" },
        match skipped {
            0 => String::new(),
            n => format!(", {n} skipped"),
        }
    );
    ExitCode::SUCCESS
}

/// What a marketer pastes into each workflow's "Send a webhook" step.
pub fn details(config: &Config) -> String {
    use std::fmt::Write;
    let count = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
    let webhooks = config
        .webhooks
        .iter()
        .filter(|w| w.target != Target::Callback)
        .count();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}: valid (config {}, {}, {}, {})",
        config.path.display(),
        config.identity,
        count(config.connectors.len(), "connector"),
        count(webhooks, "webhook"),
        count(config.webhooks.len() - webhooks, "action"),
    );
    for w in &config.webhooks {
        let c = config
            .connector(&w.connector)
            .expect("validated: webhook connectors exist");
        let _ = writeln!(out);
        match &w.name {
            Some(name) => {
                let _ = writeln!(out, "{} ({name})", w.id);
            }
            None => {
                let _ = writeln!(out, "{}", w.id);
            }
        }
        let webhook_lines = |out: &mut String| {
            let _ = writeln!(out, "  Webhook URL:  {}", config.webhook_url(w));
            let _ = writeln!(out, "  Method:       POST");
            let _ = writeln!(
                out,
                "  App ID:       {} (Use authentication -> Request signature)",
                c.app_id
            );
            let _ = writeln!(out, "  Type:         {}", w.kind);
        };
        let (portal, id) = (c.portal_id, &c.id);
        let _ = match &w.target {
            Target::Callback => writeln!(
                out,
                "  Action URL:   {} (the workflow action's actionUrl)\n  \
                 App ID:       {} (its app; HubSpot signs executions with its client secret)\n  \
                 Type:         {} unless the workflow chooses another delivery type\n  \
                 Releases:     the contact in its workflow (connector {id}, portal {portal})",
                config.action_url(w),
                c.app_id,
                w.kind,
            ),
            Target::Workflow(wf) => {
                webhook_lines(&mut out);
                writeln!(
                    out,
                    "  Enrolls into: workflow {wf} (connector {id}, portal {portal})"
                )
            }
            Target::List(list) => {
                webhook_lines(&mut out);
                writeln!(
                    out,
                    "  Adds to list: {list} (connector {id}, portal {portal})"
                )
            }
        };
        // The window in force, the type's default too (only a set one was shown; an
        // action's default follows the delivery type each execution picks).
        let window = match (w.window, &w.target) {
            (Some(window), _) => Some((window, "")),
            (None, Target::Callback) => None,
            (None, _) => crate::model::plan::longest_wait(w.kind, None)
                .map(|window| (window, " (the type's default)")),
        };
        if let Some((window, default)) = window {
            // Active and evaluating contacts keep to a day of it (`plan::window`).
            let fading = match w.kind {
                crate::config::WebhookType::NextWeekFrequencyOptimized => format!(
                    " for passive and inactive contacts, {} for the others",
                    crate::time::format_span(window.min(crate::time::DAY_MS))
                ),
                _ => String::new(),
            };
            let _ = writeln!(
                out,
                "  Window:       {} after receipt{default}{fading}",
                crate::time::format_span(window)
            );
        }
        if let Some(quiet) = w.quiet_hours {
            let zone = c
                .time_zone
                .map_or("UTC".to_string(), |z| z.name().to_string());
            let _ = writeln!(
                out,
                "  Quiet hours:  {quiet} in the contact's zone (`{}`; else {zone})",
                c.time_zone_property
            );
        }
        if w.holdout > 0.0 {
            let _ = writeln!(
                out,
                "  Holdout:      {}% of receipts sent at receipt, to measure lift (sendtime report lift)",
                // 0.4%, not "0%" (it read as no holdout).
                (w.holdout * 10_000.0).round() / 100.0
            );
        }
        if c.dry_run {
            let _ = writeln!(
                out,
                "  Dry run:      yes (records what it would call; calls nothing)"
            );
        }
    }
    out
}
