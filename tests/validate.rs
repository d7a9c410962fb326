//! `sendtime validate` through the real binary: the shipped example passes and prints the
//! HubSpot details; every file in `tests/configs/broken/` is rejected at the line, column and
//! with the message its trailing `# expect:` comments name.

use std::path::{Path, PathBuf};
use std::process::Command;

fn sendtime() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sendtime"));
    // Unset-env-var warnings are not what these tests are about.
    cmd.env("HUBSPOT_CLIENT_SECRET", "s")
        .env("HUBSPOT_ACCESS_TOKEN", "t")
        .env("EU_SECRET", "s")
        .env("EU_TOKEN", "t");
    cmd
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn shipped_example_is_valid_and_prints_details() {
    let out = sendtime()
        .arg("validate")
        .arg(repo().join("webhooks.toml"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stderr: {stderr}");
    assert!(stdout.contains("valid (config "), "{stdout}");
    assert!(
        stdout.contains("Webhook URL:  https://hooks.example.com/hooks/nurture-step-2"),
        "{stdout}"
    );
    assert!(stdout.contains("App ID:       54321"), "{stdout}");
    assert!(stdout.contains("Type:         UPDATE_ONLY"), "{stdout}");
    assert!(stdout.contains("Adds to list: 987"), "{stdout}");
    assert!(
        stdout.contains("Enrolls into: workflow 1234567"),
        "{stdout}"
    );
    for kind in [
        "NEXT_24_HOURS",
        "NEXT_WEEK_FREQUENCY_OPTIMIZED",
        "NEXT_WEEK",
        "IMMEDIATE",
        "UPDATE_ONLY",
    ] {
        assert!(
            stdout.contains(&format!("Type:         {kind}\n")),
            "{kind}"
        );
    }
    // The window in force, set or the type's (only a set one was shown), and the day the
    // frequency-optimized type keeps active contacts to.
    for window in [
        "Window:       24h after receipt\n",
        "Window:       7d after receipt (the type's default) for passive and inactive contacts, 24h for the others\n",
        "Window:       7d after receipt (the type's default)\n",
    ] {
        assert!(stdout.contains(window), "{window}: {stdout}");
    }
}

/// The first line `validate` prints: the file it read and that file's identity.
fn validated(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout.lines().next().unwrap_or_default().to_string()
}

/// What `validate` says of a valid `path` (as named) holding `bytes`, up to its counts.
fn valid_line(path: &str, bytes: &[u8]) -> String {
    format!(
        "{path}: valid (config {}, ",
        sendtime::config::identity_of(bytes)
    )
}

#[test]
fn config_flag_and_default_path_work_too() {
    let shipped = std::fs::read(repo().join("webhooks.toml")).unwrap();
    // Another valid file (a comment makes it another config), so a flag that is ignored for
    // the default shows.
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other.toml");
    let other_bytes = [shipped.as_slice(), b"\n# another file\n"].concat();
    std::fs::write(&other, &other_bytes).unwrap();
    let other_name = other.to_str().unwrap();

    // No path: ./webhooks.toml.
    let out = sendtime()
        .current_dir(repo())
        .arg("validate")
        .output()
        .unwrap();
    let line = validated(&out);
    assert!(
        line.starts_with(&valid_line("webhooks.toml", &shipped)),
        "{line}"
    );
    // `--config`, and a path after `validate`: the file named, not the default.
    for args in [
        &["--config", other_name, "validate"][..],
        &["validate", other_name],
    ] {
        let out = sendtime().args(args).current_dir(repo()).output().unwrap();
        let line = validated(&out);
        assert!(
            line.starts_with(&valid_line(other_name, &other_bytes)),
            "{args:?}: {line}"
        );
    }
    let out = sendtime()
        .args(["--config", "webhooks.toml", "validate"])
        .current_dir(repo())
        .output()
        .unwrap();
    let line = validated(&out);
    assert!(
        line.starts_with(&valid_line("webhooks.toml", &shipped)),
        "{line}"
    );
    // Two different files named at once is a mistake, not a choice of one.
    let out = sendtime()
        .args(["validate", "webhooks.toml", "--config", "other.toml"])
        .current_dir(repo())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot be used with '--config <PATH>'"));
    // In the other order too: clap checks the conflict before the global argument joins the
    // subcommand, and the file won, unsaid (an audit).
    let out = sendtime()
        .args(["--config", "other.toml", "validate", "webhooks.toml"])
        .current_dir(repo())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not both"));
    // A data folder that is a file (`--data` here) fails: the first import failed on it.
    let out = sendtime()
        .args(["--data", "webhooks.toml", "validate", other_name])
        .current_dir(repo())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the data folder") && err.contains("is a file"),
        "{err}"
    );
}

/// A command's failure reaches stderr whatever `RUST_LOG` filters: `serve`'s, the demo's and
/// the refusals of arguments a command does not take were logged, so `RUST_LOG=off` (or a
/// filter naming another module) left an exit status and no word. And a flag that means
/// nothing without its argument is refused: `pause --connector` listed every pause.
#[test]
fn failures_are_said_whatever_rust_log_filters() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.toml");
    for (args, code) in [
        (vec!["--config", missing.to_str().unwrap(), "serve"], 1),
        (vec!["--data", "x", "schema"], 2),
    ] {
        let out = sendtime()
            .args(&args)
            .env("RUST_LOG", "off")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(code), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.starts_with("error: "), "{args:?}: {stderr:?}");
    }
    let out = sendtime()
        .args([
            "--data",
            dir.path().to_str().unwrap(),
            "pause",
            "--connector",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn unset_env_vars_are_warnings_with_their_position() {
    // `validate` on `path` with the connector's secret and token unset: its stderr.
    let unset = |path: &Path| {
        let out = Command::new(env!("CARGO_BIN_EXE_sendtime"))
            .arg("validate")
            .arg(path)
            .env_remove("HUBSPOT_CLIENT_SECRET")
            .env_remove("HUBSPOT_ACCESS_TOKEN")
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let stderr = unset(&repo().join("webhooks.toml"));
    let secret_line = line_of(&repo().join("webhooks.toml"), "client_secret_env =");
    assert!(
        stderr.contains(&format!(
            "webhooks.toml:{secret_line}:21: warning: environment variable HUBSPOT_CLIENT_SECRET (`client_secret_env` of connector `main`) is not set: posts to its webhooks are refused (503) until it holds the secret"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("HUBSPOT_ACCESS_TOKEN (`access_token_env` of connector `main`) is not set (not needed while `dry_run` is on)"), "{stderr}");

    // Calling HubSpot for real, the same config is one `serve` would refuse: the warning says so.
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("webhooks.toml");
    let text = std::fs::read_to_string(repo().join("webhooks.toml")).unwrap();
    assert!(text.contains("\ndry_run = true\n") && text.contains("\nallow_unsigned = false\n"));
    std::fs::write(
        &live,
        text.replace("\ndry_run = true\n", "\ndry_run = false\n"),
    )
    .unwrap();
    let stderr = unset(&live);
    assert!(stderr.contains("HUBSPOT_CLIENT_SECRET (`client_secret_env` of connector `main`) is not set: `serve` refuses to start without it"), "{stderr}");
    assert!(stderr.contains("HUBSPOT_ACCESS_TOKEN (`access_token_env` of connector `main`) is not set: `serve` and `tick` refuse to start without it"), "{stderr}");

    // Accepting unsigned posts, a dry-run connector takes them without the secret.
    std::fs::write(
        &live,
        text.replace("\nallow_unsigned = false\n", "\nallow_unsigned = true\n"),
    )
    .unwrap();
    let stderr = unset(&live);
    assert!(stderr.contains("is not set: signed posts to its webhooks are refused (503) until it holds the secret (unsigned ones are accepted: `allow_unsigned`)"), "{stderr}");

    // Set to blanks, it is said to be blank, not unset (which sent people looking for an
    // export that was there).
    let out = Command::new(env!("CARGO_BIN_EXE_sendtime"))
        .arg("validate")
        .arg(repo().join("webhooks.toml"))
        .env("HUBSPOT_CLIENT_SECRET", "  \n")
        .env_remove("HUBSPOT_ACCESS_TOKEN")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "HUBSPOT_CLIENT_SECRET (`client_secret_env` of connector `main`) is set but blank"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("HUBSPOT_ACCESS_TOKEN (`access_token_env` of connector `main`) is not set"),
        "{stderr}"
    );
}

/// A token with a character no header may carry (a line break inside it, pasted over two lines)
/// is reported where it is named: a warning of `validate`, and `serve` refuses to start.
/// `serve` started, and each call failed before it left, tick after tick.
#[test]
fn a_token_no_header_can_carry_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("webhooks.toml");
    let text = std::fs::read_to_string(repo().join("webhooks.toml")).unwrap();
    std::fs::write(
        &live,
        text.replace("\ndry_run = true\n", "\ndry_run = false\n"),
    )
    .unwrap();
    let said = "environment variable HUBSPOT_ACCESS_TOKEN (`access_token_env` of connector `main`) holds a character no HTTP header may carry";
    let out = sendtime()
        .arg("validate")
        .arg(&live)
        .env("HUBSPOT_ACCESS_TOKEN", "pat-na1-\ntoken")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains(&format!("warning: {said}")), "{stderr}");
    let out = sendtime()
        .arg("--config")
        .arg(&live)
        .arg("--data")
        .arg(dir.path().join("data"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .env("HUBSPOT_ACCESS_TOKEN", "pat-na1-\ntoken")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(said), "{stderr}");
}

/// `validate`'s stderr for the corpus' two-listener config with its admin surface moved to
/// another port and `edits` (from, to) made; the config must stay valid.
fn warnings_of(edits: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("webhooks.toml");
    let mut text = std::fs::read_to_string(
        repo().join("tests/configs/broken/admin-listen-same-as-listen.toml"),
    )
    .unwrap()
    .replace(
        "admin_listen = \"127.0.0.1:8080\"",
        "admin_listen = \"127.0.0.1:8081\"",
    );
    for (from, to) in edits {
        text = text.replace(from, to);
    }
    std::fs::write(&path, text).unwrap();
    let out = sendtime().arg("validate").arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    stderr
}

/// An `api_base` whose scheme is in capitals is https, and a listener or `public_url` on an
/// IPv4-mapped loopback address is loopback: each was refused (an audit).
#[test]
fn a_capital_scheme_and_a_mapped_loopback_address_are_taken() {
    warnings_of(&[
        (
            "public_url = \"https://hooks.example.com\"",
            "public_url = \"http://[::ffff:127.0.0.1]:8080\"",
        ),
        (
            "listen = \"127.0.0.1:8080\"\n",
            "listen = \"[::ffff:127.0.0.1]:8080\"\n",
        ),
        (
            "access_token_env = \"HUBSPOT_ACCESS_TOKEN\"",
            "access_token_env = \"HUBSPOT_ACCESS_TOKEN\"\napi_base = \"HTTPS://api.hubapi.com\"\nallow_unsigned = true",
        ),
    ]);
}

/// An admin token variable that is not set is a warning: `serve` would refuse to start.
#[test]
fn an_unset_admin_token_variable_is_a_warning() {
    let stderr = warnings_of(&[(
        "admin_listen = \"127.0.0.1:8081\"",
        "admin_listen = \"127.0.0.1:8081\"\nadmin_token_env = \"SENDTIME_TEST_UNSET_TOKEN\"",
    )]);
    assert!(
        stderr.contains(":7:19: warning: environment variable SENDTIME_TEST_UNSET_TOKEN (`admin_token_env`) is not set"),
        "{stderr}"
    );
}

/// `validate --online` checks what `serve` needs: an admin token it would refuse to start with
/// is an error there (a warning, it let the config pass; an audit).
#[test]
fn validate_online_refuses_an_admin_token_serve_would_refuse() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("webhooks.toml");
    let text = std::fs::read_to_string(
        repo().join("tests/configs/broken/admin-listen-same-as-listen.toml"),
    )
    .unwrap()
    .replace(
        "admin_listen = \"127.0.0.1:8080\"",
        "admin_listen = \"127.0.0.1:8081\"\nadmin_token_env = \"SHORT_ADMIN\"",
    )
    // No call to HubSpot is checked (no token to read with): the environment alone decides.
    .replace("app_id = 54321", "app_id = 54321\ndry_run = true");
    std::fs::write(&path, text).unwrap();
    let validate = |token: &str| {
        let out = sendtime()
            .args(["validate", "--online"])
            .arg(&path)
            .env_remove("HUBSPOT_ACCESS_TOKEN")
            .env("SHORT_ADMIN", token)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stderr) = validate("short");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(":7:19: environment variable SHORT_ADMIN (`admin_token_env`) holds fewer than 16 characters"),
        "{stderr}"
    );
    let (code, stderr) = validate("a-long-enough-admin-token");
    assert_eq!(code, Some(0), "{stderr}");
}

/// A holdout where both groups go at receipt measures nothing: a warning.
#[test]
fn a_holdout_on_a_type_sent_at_receipt_is_a_warning() {
    let stderr = warnings_of(&[(
        "type = \"NEXT_24_HOURS\"",
        "type = \"IMMEDIATE\"\nholdout = 0.1",
    )]);
    assert!(
        stderr.contains(":18:11: warning: [[webhook]] #1: `holdout` on IMMEDIATE compares two groups sent at receipt alike"),
        "{stderr}"
    );
}

/// A dispatcher running more than once a minute is warned about: each run sends its own
/// list and callback batches, which capacity books once a minute (every 10 s made six calls
/// per booked one, past `daily_budget`); once a minute says nothing.
#[test]
fn a_dispatcher_running_more_than_once_a_minute_is_a_warning() {
    let every = |cron: &str| {
        warnings_of(&[(
            "[[connector]]",
            &format!("[scheduler]\ncron = \"{cron}\"\n\n[[connector]]"),
        )])
    };
    let fast = every("*/10 * * * * *");
    assert!(
        fast.contains(":9:8: warning: the dispatcher runs more than once a minute: each run sends its own list adds and callback batches"),
        "{fast}"
    );
    assert!(!every("0 * * * * *").contains("more than once a minute"));
}

/// A body limit too small for real contacts, and quiet hours that leave minutes a day, pass
/// but are warned about where they are set: `serve` would refuse contacts (413, which HubSpot
/// does not retry), or crowd every timed one into those minutes.
#[test]
fn a_small_body_limit_and_quiet_hours_that_leave_minutes_are_warnings() {
    let stderr = warnings_of(&[
        (
            "listen = \"127.0.0.1:8080\"",
            "listen = \"127.0.0.1:8080\"\nmax_body_bytes = 4096",
        ),
        (
            "workflow_id = 1234567",
            "workflow_id = 1234567\nquiet_hours = \"00:30-00:00\"",
        ),
    ]);
    assert!(
        stderr.contains(":6:18: warning: `max_body_bytes` in [server] is 4096"),
        "{stderr}"
    );
    assert!(
        stderr
            .contains(":20:15: warning: `quiet_hours` in [[webhook]] #1 leave 30 minute(s) a day"),
        "{stderr}"
    );
    // An evening's quiet hours say nothing, once the account's zone is set.
    let evening = (
        "workflow_id = 1234567",
        "workflow_id = 1234567\nquiet_hours = \"21:00-08:00\"",
    );
    let quiet = warnings_of(&[evening]);
    assert!(
        quiet.contains(":9:6: warning: connector `main` has webhooks with quiet hours (theirs or its own) but no `time_zone`: a contact whose zone is not in its `hs_timezone` property keeps them in UTC"),
        "{quiet}"
    );
    let zoned = (
        "access_token_env = \"HUBSPOT_ACCESS_TOKEN\"",
        "access_token_env = \"HUBSPOT_ACCESS_TOKEN\"\ntime_zone = \"Europe/Brussels\"",
    );
    let quiet = warnings_of(&[evening, zoned]);
    assert!(!quiet.contains("warning"), "{quiet}");
}

/// A `time_zone` that parses but likely is not the account's (POSIX's inverted sign, a fixed
/// offset without daylight saving) is a warning; a city's is not.
#[test]
fn a_fixed_offset_time_zone_is_a_warning() {
    let zone = |name: &str| {
        warnings_of(&[(
            "access_token_env = \"HUBSPOT_ACCESS_TOKEN\"",
            &format!("access_token_env = \"HUBSPOT_ACCESS_TOKEN\"\ntime_zone = \"{name}\""),
        )])
    };
    let stderr = zone("Etc/GMT+2");
    assert!(
        stderr.contains(":14:13: warning: `time_zone` \"Etc/GMT+2\" is a fixed offset whose sign is inverted (\"Etc/GMT+2\" is UTC-2)"),
        "{stderr}"
    );
    let stderr = zone("EST");
    assert!(
        stderr.contains(
            ":14:13: warning: `time_zone` \"EST\" is a fixed offset that keeps no daylight saving"
        ),
        "{stderr}"
    );
    // Arizona's and Hawaii's offsets are right where they are used.
    for fine in ["Europe/Brussels", "Etc/GMT", "UTC", "MST", "HST"] {
        let stderr = zone(fine);
        assert!(!stderr.contains("warning"), "{fine}: {stderr}");
    }
}

/// An archive that deletes a held-out webhook's receipts before `report lift` can count them
/// (72 hours after the webhook's longest wait, imported) is a warning saying how long to keep
/// them; one that keeps them long enough, or no holdout, says nothing.
#[test]
fn an_archive_too_short_for_the_lift_report_is_a_warning() {
    let run = |days: u32, holdout: &str| {
        warnings_of(&[
            (
                "listen = \"127.0.0.1:8080\"",
                &format!("listen = \"127.0.0.1:8080\"\narchive_days = {days}"),
            ),
            (
                "workflow_id = 1234567",
                &format!("workflow_id = 1234567\n{holdout}"),
            ),
        ])
    };
    let stderr = run(2, "holdout = 0.5");
    assert!(
        stderr.contains(":16:1: warning: `archive_days = 2` deletes the receipts of `nurture` (holdout 0.5) before `report lift` can count them: it counts a receipt once the 72 hours after its longest wait (24 h) have ended and been imported; keep them at least 6 days"),
        "{stderr}"
    );
    assert!(!run(6, "holdout = 0.5").contains("warning"));
    assert!(!run(2, "").contains("warning"));
}

/// HubSpot signs custom action requests v2: an action behind a connector that requires v3
/// is a warning, since its executions may all be refused.
#[test]
fn an_action_behind_a_v3_only_connector_is_a_warning() {
    let action = "[[action]]\nid = \"send-time\"\n\n[[webhook]]";
    let stderr = warnings_of(&[
        (
            "access_token_env = \"HUBSPOT_ACCESS_TOKEN\"",
            "access_token_env = \"HUBSPOT_ACCESS_TOKEN\"\nmin_signature_version = \"v3\"",
        ),
        ("[[webhook]]", action),
    ]);
    assert!(
        stderr.contains(":16:1: warning: [[action]] #1 goes through connector `main`, whose `min_signature_version` is \"v3\""),
        "{stderr}"
    );
    let stderr = warnings_of(&[("[[webhook]]", action)]);
    assert!(!stderr.contains("min_signature_version"), "{stderr}");
}

/// A daily budget counted in UTC days straddles two of a US account's: a warning, until the
/// account's zone is set.
#[test]
fn a_daily_budget_without_the_account_zone_is_a_warning() {
    let budget = "access_token_env = \"HUBSPOT_ACCESS_TOKEN\"\ndaily_budget = 1000";
    let stderr = warnings_of(&[("access_token_env = \"HUBSPOT_ACCESS_TOKEN\"", budget)]);
    assert!(
        stderr.contains(
            ":14:16: warning: `daily_budget` counts days in UTC, as `time_zone` is not set"
        ),
        "{stderr}"
    );
    let zoned = format!("{budget}\ntime_zone = \"America/New_York\"");
    let stderr = warnings_of(&[("access_token_env = \"HUBSPOT_ACCESS_TOKEN\"", &zoned)]);
    assert!(!stderr.contains("daily_budget"), "{stderr}");
}

/// The warnings of the base config with a second connector `other` of `portal_id` whose token
/// is read from `token` (`extra`: more of its lines, and `main_extra` more of main's), the
/// webhook sent through `main`.
fn with_other_connector(portal_id: u64, token: &str, extra: &str, main_extra: &str) -> String {
    let other = format!(
        "[[connector]]\nid = \"other\"\nportal_id = {portal_id}\napp_id = 54321\n\
         client_secret_env = \"HUBSPOT_CLIENT_SECRET\"\n\
         access_token_env = \"{token}\"{extra}\n\n[[webhook]]"
    );
    let main = format!("access_token_env = \"HUBSPOT_ACCESS_TOKEN\"{main_extra}");
    warnings_of(&[
        ("[[webhook]]", &other),
        (
            "access_token_env = \"HUBSPOT_ACCESS_TOKEN\"\n\n",
            &format!("{main}\n\n"),
        ),
        ("type = ", "connector = \"main\"\ntype = "),
    ])
}

/// Two connectors calling one account each pace and budget on their own: a warning, unless
/// one of them is in dry run (it calls nothing).
#[test]
fn two_connectors_of_one_account_are_a_warning() {
    let run = |extra: &str| with_other_connector(62515, "HUBSPOT_ACCESS_TOKEN", extra, "");
    let stderr = run("");
    assert!(
        stderr.contains(":16:6: warning: connectors `main` and `other` both call portal 62515"),
        "{stderr}"
    );
    let stderr = run("\ndry_run = true");
    assert!(!stderr.contains("both call portal"), "{stderr}");
}

/// Connectors of two accounts sharing one account's token, or an app's client secret while
/// posts may name no portal: warnings, each naming what to change.
#[test]
fn two_accounts_sharing_a_token_or_an_unchecked_secret_are_warnings() {
    let stderr = with_other_connector(777, "HUBSPOT_ACCESS_TOKEN", "", "");
    assert!(
        stderr.contains(
            ":16:6: warning: connectors `main` and `other` call portals 62515 and 777 with the token in one variable, HUBSPOT_ACCESS_TOKEN"
        ),
        "{stderr}"
    );
    let secret = "warning: connectors `main` and `other` (portals 62515 and 777) check signatures with one client secret, HUBSPOT_CLIENT_SECRET";
    assert!(stderr.contains(secret), "{stderr}");
    let required = "\nrequire_portal_id = true";
    let apart = with_other_connector(777, "OTHER_TOKEN", required, "");
    assert!(
        apart.contains(secret),
        "main still takes posts naming no portal: {apart}"
    );
    // Each its own token, and the portal required of the posts of the one with webhooks
    // (`other` has none; an action's execution names its portal): nothing to say.
    let apart = with_other_connector(777, "OTHER_TOKEN", "", required);
    assert!(!apart.contains("connectors `main` and `other`"), "{apart}");
}

/// One app installed in many accounts shares its client secret (and here a token variable)
/// across their connectors: one warning of each kind per connector, naming the first before
/// it, not one per pair (30 connectors gave 435 of each).
#[test]
fn a_secret_shared_by_many_accounts_is_one_warning_per_connector() {
    let mut text =
        String::from("version = 1\n\n[server]\npublic_url = \"https://hooks.example.com\"\n\n");
    for i in 0..30 {
        text.push_str(&format!(
            "[[connector]]\nid = \"c{i}\"\nportal_id = {}\napp_id = 54321\n\
             client_secret_env = \"HUBSPOT_CLIENT_SECRET\"\n\
             access_token_env = \"HUBSPOT_ACCESS_TOKEN\"\n\n\
             [[webhook]]\nid = \"w{i}\"\nconnector = \"c{i}\"\ntype = \"IMMEDIATE\"\n\
             workflow_id = 1\n\n",
            1000 + i
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("webhooks.toml");
    std::fs::write(&path, text).unwrap();
    let out = sendtime().arg("validate").arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let count = |what: &str| stderr.lines().filter(|l| l.contains(what)).count();
    assert_eq!(
        count("check signatures with one client secret"),
        29,
        "{stderr}"
    );
    assert_eq!(count("with the token in one variable"), 29, "{stderr}");
    assert!(
        stderr.contains("connectors `c0` and `c29` (portals 1000 and 1029) check signatures"),
        "{stderr}"
    );
}

#[test]
fn missing_file_is_a_clear_error() {
    let out = sendtime()
        .args(["validate", "/nonexistent/webhooks.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("/nonexistent/webhooks.toml:1:1: cannot read config:"),
        "{stderr}"
    );
    assert!(
        stderr.contains("or give its path (--config PATH)"),
        "{stderr}"
    );
}

#[test]
fn every_broken_config_is_rejected_where_it_is_broken() {
    let dir = repo().join("tests/configs/broken");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    assert!(files.len() >= 30, "the corpus has {} files", files.len());
    let mut failures = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let expected: Vec<String> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# expect: "))
            .map(|l| format!("{}:{l}", file.display()))
            .collect();
        assert!(
            !expected.is_empty(),
            "{} has no `# expect:` lines",
            file.display()
        );
        let out = sendtime().arg("validate").arg(file).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let mut got: Vec<String> = stderr.lines().map(str::to_string).collect();
        let summary = got.pop().unwrap_or_default();
        let warnings = expected
            .iter()
            .filter(|l| l.contains(": warning: "))
            .count();
        let errors = expected.len() - warnings;
        let count = |n: usize, what: &str| {
            (n > 0).then(|| format!("{n} {what}{}", if n == 1 { "" } else { "s" }))
        };
        let tally: Vec<String> = [count(errors, "error"), count(warnings, "warning")]
            .into_iter()
            .flatten()
            .collect();
        if out.status.code() != Some(1)
            || got != expected
            || summary != format!("{}: invalid: {}", file.display(), tally.join(", "))
        {
            failures.push(format!(
                "{}\n  expected:\n    {}\n  got (exit {:?}):\n    {}",
                file.display(),
                expected.join("\n    "),
                out.status.code(),
                stderr.lines().collect::<Vec<_>>().join("\n    ")
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn line_of(path: &Path, needle: &str) -> usize {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .position(|l| l.starts_with(needle))
        .unwrap()
        + 1
}

/// Twenty thousand webhooks with an error each are all reported (diagnostics are linear, not
/// quadratic: this took 14 s in a debug build before), and a file over 4 MiB is refused.
#[test]
fn many_errors_are_all_reported_and_a_huge_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::from(
        "version = 1\n[server]\npublic_url = \"https://hooks.example.com\"\n[[connector]]\nid = \"main\"\nportal_id = 1\napp_id = 1\nclient_secret_env = \"S\"\naccess_token_env = \"T\"\n",
    );
    for i in 0..20_000 {
        text.push_str(&format!(
            "[[webhook]]\nid = \"w{i}\"\ntype = \"NEXT_24_HOURS\"\nworkflow_id = -1\n"
        ));
    }
    let path = dir.path().join("many.toml");
    std::fs::write(&path, &text).unwrap();
    let out = sendtime().arg("validate").arg(&path).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors = stderr
        .lines()
        .filter(|l| l.contains("must be between 1 and"))
        .count();
    assert_eq!(errors, 20_000);
    // The last webhook's error is on line 9 + 4 × 19,999 + 4.
    assert!(
        stderr.contains("many.toml:80009:15: `workflow_id`"),
        "{}",
        &stderr[..300]
    );

    let huge = dir.path().join("huge.toml");
    let mut padding = text.clone();
    while padding.len() <= 4 * 1024 * 1024 {
        padding.push_str("# padding\n");
    }
    std::fs::write(&huge, padding).unwrap();
    let out = sendtime().arg("validate").arg(&huge).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("at most 4194304 are read"), "{stderr}");
}

/// Found where they are: a scheduler that leaves more than an hour without a run is a
/// warning at its cron, an admin token too short for `serve` at its variable (`validate`
/// said nothing and `serve` refused to start), and a byte that is not UTF-8 is an error at its
/// line (it was reported at 1:1).
#[test]
fn a_sparse_scheduler_a_short_admin_token_and_a_bad_byte_are_reported_where_they_are() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("webhooks.toml");
    let text = "version = 1\n[server]\npublic_url = \"https://hooks.example.com\"\n\
        admin_token_env = \"SHORT_ADMIN\"\n[scheduler]\ncron = \"0 0 */2 * * *\"\n\
        [[connector]]\nid = \"main\"\nportal_id = 62515\napp_id = 54321\n\
        client_secret_env = \"HUBSPOT_CLIENT_SECRET\"\naccess_token_env = \"HUBSPOT_ACCESS_TOKEN\"\n\
        [[webhook]]\nid = \"nurture\"\ntype = \"NEXT_24_HOURS\"\nworkflow_id = 1234567\n";
    std::fs::write(&path, text).unwrap();
    let out = sendtime()
        .arg("validate")
        .arg(&path)
        .env("SHORT_ADMIN", "short")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let at = |line_col: &str| format!("{}:{line_col}: warning: ", path.display());
    assert!(
        stderr.contains(&format!("{}the scheduler goes up to", at("6:8"))),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "{}environment variable SHORT_ADMIN (`admin_token_env`) holds fewer than 16 characters",
            at("4:19")
        )),
        "{stderr}"
    );

    let mut bytes = text.as_bytes().to_vec();
    let id = text.find("nurture").unwrap();
    bytes[id + 3] = 0xff;
    std::fs::write(&path, bytes).unwrap();
    let out = sendtime().arg("validate").arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with(&format!(
            "{}:14:10: config is not valid UTF-8 here",
            path.display()
        )),
        "{stderr}"
    );
}

/// A request timeout in the environment that is no timeout is named: `serve` and `tick`
/// refuse to start with it, and it passed `validate` unseen (a warning here, an error
/// online, as an unset variable is).
#[test]
fn a_request_timeout_that_is_no_timeout_is_named() {
    for (online, code) in [(false, 0), (true, 1)] {
        let mut cmd = sendtime();
        cmd.arg("validate");
        if online {
            cmd.arg("--online");
        }
        let out = cmd
            .arg(repo().join("webhooks.toml"))
            .env(sendtime::hubspot::policy::TIMEOUT_ENV, "30s")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{stderr}");
        assert!(
            stderr.contains(&format!(
                "{}=\"30s\" is not a timeout",
                sendtime::hubspot::policy::TIMEOUT_ENV
            )),
            "{stderr}"
        );
    }
}

/// Two connectors whose client id and refresh token variables differ by name but hold the same
/// values are one installation to `serve`, which shares its credentials: different secret
/// lists are refused as they are for the same names (they passed, and whichever connector was
/// built last set the secrets for both; an audit). The values are not printed.
#[test]
fn one_installation_under_two_names_needs_one_secret_list() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("webhooks.toml");
    let broken = repo().join("tests/configs/broken/oauth-installation-with-two-secret-lists.toml");
    let text = std::fs::read_to_string(broken).unwrap();
    let (first, second) = text.split_once("id = \"second\"").unwrap();
    let second = second
        .replace("HUBSPOT_CLIENT_ID", "OTHER_CLIENT_ID")
        .replace("HUBSPOT_REFRESH_TOKEN", "OTHER_REFRESH_TOKEN");
    std::fs::write(&file, format!("{first}id = \"second\"{second}")).unwrap();
    let validate = |other_refresh: &str| {
        sendtime()
            .arg("validate")
            .arg(&file)
            .env("HUBSPOT_CLIENT_ID", "app-client-id")
            .env("HUBSPOT_REFRESH_TOKEN", "the-refresh-token")
            .env("OTHER_CLIENT_ID", "app-client-id")
            .env("OTHER_REFRESH_TOKEN", other_refresh)
            .output()
            .unwrap()
    };
    let out = validate("the-refresh-token");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("refresh one installation's token (HUBSPOT_CLIENT_ID and HUBSPOT_REFRESH_TOKEN; OTHER_CLIENT_ID and OTHER_REFRESH_TOKEN, which hold the same)"),
        "{stderr}"
    );
    assert!(!stderr.contains("the-refresh-token"), "{stderr}");
    // Another installation (another refresh token): its own secrets.
    let out = validate("another-refresh-token");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // One installation's secrets named apart, holding the same: one list.
    let text = std::fs::read_to_string(&file).unwrap();
    let apart = text.replacen(
        "client_secret_env = \"HUBSPOT_CLIENT_SECRET\"",
        "client_secret_env = [\"OTHER_SECRET\", \"OTHER_EU\"]",
        1,
    );
    assert_ne!(apart, text);
    std::fs::write(&file, apart).unwrap();
    let out = sendtime()
        .arg("validate")
        .arg(&file)
        .env("HUBSPOT_CLIENT_ID", "app-client-id")
        .env("HUBSPOT_REFRESH_TOKEN", "the-refresh-token")
        .env("OTHER_CLIENT_ID", "app-client-id")
        .env("OTHER_REFRESH_TOKEN", "the-refresh-token")
        .env("OTHER_SECRET", "s")
        .env("OTHER_EU", "s")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
