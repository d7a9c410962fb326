//! OAuth connectors through the real binary and the stand-in: access tokens that live a few
//! seconds are refreshed before they expire (HubSpot's live 30 minutes), the refresh token
//! HubSpot rotates is followed, and no contact's outcome ever sees a 401.

mod common;

use std::time::Duration;

use common::{Hook, Server, TestConfig, contact_body, eventually, post_signed, runtime};
use sendtime::datasets::outcomes::{self, Status};
use sendtime::hubspot::auth::TOKEN_PATH;
use sendtime::hubspot::standin::{Fault, Injection, LogEntry, OAuthApp, Options, StandIn};

const SECRET: &str = "oauth-app-secret";

/// A stand-in with the OAuth app installed: access tokens live `lifetime`; `rotate` hands out
/// a new refresh token with each.
fn oauth_standin(rt: &tokio::runtime::Runtime, lifetime: Duration, rotate: bool) -> StandIn {
    rt.block_on(StandIn::start(Options {
        oauth: Some(OAuthApp {
            client_id: "app-client-id".into(),
            client_secret: SECRET.into(),
            refresh_token: "first-refresh-token".into(),
            lifetime,
            rotate,
            says_expires_in: true,
        }),
        ..Options::default()
    }))
    .unwrap()
}

const EVERY_SECOND: &str = "[scheduler]\ncron = \"* * * * * *\"";

/// The config of an OAuth connector calling `standin`, with one IMMEDIATE webhook `now` and
/// `tables` (`[scheduler]`, `[import]`).
fn oauth_config(standin: &StandIn, tables: &str) -> String {
    TestConfig {
        env: "OAUTH",
        tables,
        connector: &oauth_keys(standin),
        hooks: &[&Hook {
            id: "now",
            kind: "IMMEDIATE",
            target: "workflow_id = 101",
        }],
        ..TestConfig::default()
    }
    .text()
    .replace("access_token_env = \"OAUTH_TOKEN\"\n", "")
}

/// A connector's keys for the stand-in's OAuth app, read from the variables [`serve`] sets.
fn oauth_keys(standin: &StandIn) -> String {
    format!(
        "api_base = \"{}\"\nauth = \"oauth\"\nclient_id_env = \"OAUTH_CLIENT_ID\"\nrefresh_token_env = \"OAUTH_REFRESH\"",
        standin.url()
    )
}

/// `config` written as `dir/webhooks.toml`, and `serve` on it with the app's secret, client
/// id and first refresh token.
fn serve(dir: &std::path::Path, data: &std::path::Path, config: &str) -> Server {
    let path = dir.join("webhooks.toml");
    std::fs::write(&path, config).unwrap();
    Server::start(
        &path,
        data,
        &[
            ("OAUTH_SECRET", SECRET),
            ("OAUTH_CLIENT_ID", "app-client-id"),
            ("OAUTH_REFRESH", "first-refresh-token"),
        ],
    )
}

/// Post contact `vid`, `{prefix}{vid}@example.com` (known to the stand-in), to webhook `now`.
fn post_contact(standin: &StandIn, server: &Server, prefix: &str, vid: u64) {
    post_contact_to(standin, server, "/hooks/now", prefix, vid);
}

/// [`post_contact`] to the webhook at `hook`.
fn post_contact_to(standin: &StandIn, server: &Server, hook: &str, prefix: &str, vid: u64) {
    let email = format!("{prefix}{vid}@example.com");
    standin.add_contact(&email, vid);
    let client = common::http();
    let body = contact_body(vid, &email);
    assert_eq!(post_signed(&client, server, SECRET, hook, body), 200);
}

/// Wait until `n` contacts are enrolled; the outcome rows then.
fn all_enrolled(server: &Server, data: &std::path::Path, n: usize) -> Vec<outcomes::OutcomeRow> {
    eventually(Duration::from_secs(30), || {
        let rows = outcomes::read(&outcomes::dataset(data).unwrap()).unwrap();
        let enrolled = rows.iter().filter(|r| r.status == Status::Enrolled).count();
        (enrolled == n).then_some(rows)
    })
    .unwrap_or_else(|| panic!("not everyone enrolled; logs:\n{}", server.logs()))
}

/// Access tokens HubSpot handed out, by the stand-in's log.
fn refreshes(log: &[LogEntry]) -> usize {
    log.iter()
        .filter(|e| e.path == TOKEN_PATH && e.status == Some(200))
        .count()
}

/// What HubSpot refused: a token (401) or a refresh (400).
fn refused(log: &[LogEntry]) -> Vec<&LogEntry> {
    log.iter()
        .filter(|e| matches!(e.status, Some(400 | 401)))
        .collect()
}

#[test]
fn a_run_of_several_token_lifetimes_enrolls_everyone_without_a_401() {
    let rt = runtime();
    let standin = oauth_standin(&rt, Duration::from_secs(3), true);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = serve(dir.path(), &data, &oauth_config(&standin, EVERY_SECOND));
    // HubSpot refuses one call's token (revoked, clocks apart): one refresh, one retry.
    standin.inject(
        Injection::next(Fault::Status {
            status: 401,
            message: "The OAuth token used to make this call expired 0 second(s) ago.".into(),
        })
        .on("/automation"),
    );
    // Posts over about 12 s: four token lifetimes.
    for round in 0..12 {
        for i in 0..3 {
            post_contact(&standin, &server, "o", 100 + round * 3 + i);
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let rows = all_enrolled(&server, &data, 36);
    assert!(
        rows.iter().all(|r| r.http_status != Some(401)),
        "a 401 reached an outcome: {rows:?}"
    );
    let log = standin.log();
    let refreshes = refreshes(&log);
    assert!(refreshes >= 4, "{refreshes} refreshes in {log:?}");
    // Refreshed before expiry, with the rotated refresh token: the only 401 is the injected one.
    let refused = refused(&log);
    assert_eq!(refused.len(), 1, "{refused:?}");
    let logs = server.stop();
    assert!(!logs.contains("oauth-access-"), "a token was logged");
    assert!(
        !logs.contains("oauth-refresh-"),
        "a refresh token was logged"
    );
}

/// A secret rotated in HubSpot while `serve` runs: both secrets are in its environment, the
/// config names only the old one (refreshing with it is refused), then is changed to name the
/// new one first. The reload must reach the dispatcher's token refresh, not only the
/// signature check: an earlier version kept the old client until a restart.
#[test]
fn a_reload_that_puts_the_new_client_secret_first_refreshes_with_it() {
    let rt = runtime();
    let standin = oauth_standin(&rt, Duration::from_secs(600), false);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config_path = dir.path().join("webhooks.toml");
    let config = |secrets: &str| {
        oauth_config(&standin, EVERY_SECOND)
            .replace("client_secret_env = \"OAUTH_SECRET\"", secrets)
    };
    std::fs::write(&config_path, config("client_secret_env = \"OAUTH_OLD\"")).unwrap();
    let server = Server::start(
        &config_path,
        &data,
        &[
            ("OAUTH_OLD", "the-secret-before-rotation"),
            ("OAUTH_NEW", SECRET),
            ("OAUTH_CLIENT_ID", "app-client-id"),
            ("OAUTH_REFRESH", "first-refresh-token"),
        ],
    );
    let client = common::http();
    standin.add_contact("rotated@example.com", 700);
    let body = contact_body(700, "rotated@example.com");
    assert_eq!(
        post_signed(
            &client,
            &server,
            "the-secret-before-rotation",
            "/hooks/now",
            body
        ),
        200
    );
    let refused = || {
        standin
            .log()
            .iter()
            .filter(|e| e.path == TOKEN_PATH && e.status == Some(400))
            .count()
    };
    eventually(Duration::from_secs(20), || (refused() > 0).then_some(()))
        .unwrap_or_else(|| panic!("no refresh with the old secret; logs:\n{}", server.logs()));
    std::fs::write(
        &config_path,
        config("client_secret_env = [\"OAUTH_NEW\", \"OAUTH_OLD\"]"),
    )
    .unwrap();
    let enrolled = eventually(Duration::from_secs(30), || {
        let rows = outcomes::read(&outcomes::dataset(&data).unwrap()).unwrap();
        rows.iter()
            .any(|r| r.status == Status::Enrolled)
            .then_some(())
    });
    assert!(
        enrolled.is_some(),
        "not enrolled after the reload; logs:\n{}",
        server.logs()
    );
    let log = standin.log();
    assert!(
        log.iter()
            .any(|e| e.path == TOKEN_PATH && e.status == Some(200)),
        "{log:?}"
    );
}

/// The README's rotation, step 1: the new secret is named first before HubSpot takes it. The
/// refresh HubSpot refuses with it is made again with the next secret, so contacts go on. The
/// connector was paused (`refused_token`) until the secret was rotated in HubSpot.
#[test]
fn a_new_client_secret_named_before_hubspot_takes_it_does_not_stop_sending() {
    let rt = runtime();
    let standin = oauth_standin(&rt, Duration::from_secs(600), false);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config_path = dir.path().join("webhooks.toml");
    let config = oauth_config(&standin, EVERY_SECOND).replace(
        "client_secret_env = \"OAUTH_SECRET\"",
        "client_secret_env = [\"OAUTH_NEW\", \"OAUTH_SECRET\"]",
    );
    std::fs::write(&config_path, config).unwrap();
    let server = Server::start(
        &config_path,
        &data,
        &[
            ("OAUTH_NEW", "the-secret-after-rotation"),
            ("OAUTH_SECRET", SECRET),
            ("OAUTH_CLIENT_ID", "app-client-id"),
            ("OAUTH_REFRESH", "first-refresh-token"),
        ],
    );
    post_contact(&standin, &server, "r", 710);
    all_enrolled(&server, &data, 1);
    server.stop();
    let answers: Vec<Option<u16>> = standin
        .log()
        .iter()
        .filter(|e| e.path == TOKEN_PATH)
        .map(|e| e.status)
        .collect();
    assert_eq!(answers, [Some(400), Some(200)]);
}

/// The scheduled import and the dispatcher refresh with one set of credentials: HubSpot's
/// rotated refresh token is the one both use. Built apart, the second to refresh would send
/// the token the first had spent, be refused, and pause the connector.
#[test]
fn the_scheduled_import_and_the_dispatcher_follow_one_rotated_refresh_token() {
    let rt = runtime();
    let standin = oauth_standin(&rt, Duration::from_secs(2), true);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let tables = format!("{EVERY_SECOND}\n[import]\ncron = \"*/2 * * * * *\"");
    let server = serve(dir.path(), &data, &oauth_config(&standin, &tables));
    for vid in 300..310 {
        post_contact(&standin, &server, "i", vid);
        std::thread::sleep(Duration::from_secs(1));
    }
    all_enrolled(&server, &data, 10);
    let log = standin.log();
    let imports = log
        .iter()
        .filter(|e| e.path.starts_with("/email/") && e.status == Some(200))
        .count();
    assert!(imports >= 3, "{imports} import pages in {log:?}");
    let refreshes = refreshes(&log);
    assert!(refreshes >= 3, "{refreshes} refreshes in {log:?}");
    let refused = refused(&log);
    assert!(refused.is_empty(), "{refused:?}");
}

/// Two connectors of one portal installed by one app (its client id and refresh token), as
/// validation allows, refresh with one set of credentials: HubSpot's rotated refresh token is
/// the one both use. Kept per connector, the second to refresh sent the token the first had
/// spent, was refused, and its contacts waited under a `refused_token` pause (an audit).
#[test]
fn two_connectors_of_one_installation_follow_one_rotated_refresh_token() {
    let rt = runtime();
    let standin = oauth_standin(&rt, Duration::from_secs(2), true);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut config = oauth_config(&standin, EVERY_SECOND).replace(
        "workflow_id = 101\n",
        "workflow_id = 101\nconnector = \"main\"\n",
    );
    config.push_str(&format!(
        "[[webhook]]\nid = \"also\"\ntype = \"IMMEDIATE\"\nworkflow_id = 102\nconnector = \"second\"\n\
         [[connector]]\nid = \"second\"\nportal_id = {}\napp_id = {}\n\
         client_secret_env = \"OAUTH_SECRET\"\n{}\n",
        common::PORTAL_ID,
        common::APP_ID,
        oauth_keys(&standin)
    ));
    let server = serve(dir.path(), &data, &config);
    for vid in 500..510 {
        let hook = ["/hooks/now", "/hooks/also"][vid as usize % 2];
        post_contact_to(&standin, &server, hook, "both", vid);
        std::thread::sleep(Duration::from_secs(1));
    }
    let rows = all_enrolled(&server, &data, 10);
    let by_second = rows
        .iter()
        .filter(|r| r.status == Status::Enrolled && r.connector == "second")
        .count();
    assert_eq!(by_second, 5);
    let log = standin.log();
    let refreshes = refreshes(&log);
    assert!(refreshes >= 3, "{refreshes} refreshes in {log:?}");
    let refused = refused(&log);
    assert!(refused.is_empty(), "{refused:?}");
}

/// A client secret rotated while an account's import round runs: the next connector's import
/// takes the secrets in force at its turn. Its client, built from the config the round began
/// with, put back the secrets the rotation had replaced: HubSpot refused the next refresh, its
/// run failed and the connectors paused (an audit).
#[test]
fn a_secret_rotated_during_an_import_round_holds_for_the_rest_of_it() {
    use sendtime::hubspot::wire::EmailEvent;
    let rt = runtime();
    let now = chrono::Utc::now().timestamp_millis();
    let events = (0..4000)
        .map(|i| EmailEvent {
            id: format!("ev-{i:05}"),
            created: now - 3_600_000 - i64::from(i) * 60_000,
            kind: "OPEN".into(),
            recipient: Some(format!("person{}@example.com", i % 300)),
            email_campaign_id: Some(7),
            filtered_event: false,
            extra: Default::default(),
        })
        .collect();
    let standin = rt
        .block_on(StandIn::start(Options {
            oauth: Some(OAuthApp {
                client_id: "app-client-id".into(),
                client_secret: SECRET.into(),
                refresh_token: "first-refresh-token".into(),
                lifetime: Duration::from_secs(2),
                rotate: false,
                says_expires_in: true,
            }),
            events,
            ..Options::default()
        }))
        .unwrap();
    // The first connector's pages, 2 s each: its run lasts past the rotation.
    standin.inject(
        Injection::next(Fault::Slow(Duration::from_secs(2)))
            .times(u64::MAX)
            .on("/email/public/v1/events"),
    );
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let tables = format!("{EVERY_SECOND}\n[import]\ncron = \"*/2 * * * * *\"");
    let mut config = oauth_config(&standin, &tables).replace(
        "workflow_id = 101\n",
        "workflow_id = 101\nconnector = \"main\"\n",
    );
    config.push_str(&format!(
        "[[connector]]\nid = \"second\"\nportal_id = {}\napp_id = {}\n\
         client_secret_env = \"OAUTH_SECRET\"\n{}\n",
        common::PORTAL_ID,
        common::APP_ID,
        oauth_keys(&standin)
    ));
    let path = dir.path().join("webhooks.toml");
    std::fs::write(&path, &config).unwrap();
    let server = Server::start(
        &path,
        &data,
        &[
            ("OAUTH_SECRET", SECRET),
            ("OAUTH_NEW", "the-secret-after-rotation"),
            ("OAUTH_CLIENT_ID", "app-client-id"),
            ("OAUTH_REFRESH", "first-refresh-token"),
        ],
    );
    eventually(Duration::from_secs(30), || {
        let log = standin.log();
        log.iter()
            .any(|e| e.path.starts_with("/email/"))
            .then_some(())
    })
    .unwrap_or_else(|| panic!("no import began:\n{}", server.logs()));
    // The README's rotation: the new secret named first, then rotated in HubSpot.
    let rotated = config.replace(
        "client_secret_env = \"OAUTH_SECRET\"",
        "client_secret_env = [\"OAUTH_NEW\", \"OAUTH_SECRET\"]",
    );
    assert_ne!(rotated, config);
    std::fs::write(&path, rotated).unwrap();
    eventually(Duration::from_secs(30), || {
        (common::metric(&server, "sendtime_config_reloads_total{result=\"loaded\"}") == 1)
            .then_some(())
    })
    .unwrap_or_else(|| panic!("no reload:\n{}", server.logs()));
    standin.set_client_secret("the-secret-after-rotation");
    let runs = |c: &str, result: &str| {
        let series = format!("sendtime_import_runs_total{{connector=\"{c}\",result=\"{result}\"}}");
        common::metric(&server, &series)
    };
    eventually(Duration::from_secs(90), || {
        (runs("second", "ok") + runs("second", "error") >= 1).then_some(())
    })
    .unwrap_or_else(|| panic!("the second connector never imported:\n{}", server.logs()));
    let failed = (runs("main", "error"), runs("second", "error"));
    assert_eq!(failed, (0, 0), "{}", server.logs());
    server.stop();
}

/// A refresh token HubSpot refuses (400 with its JSON) pauses the connector as a refused
/// token, telling the operator to fix it, and no row records a call: the refresh is tried
/// before a call's `attempting` row is written.
#[test]
fn a_refused_refresh_token_pauses_as_refused_and_records_no_call() {
    let rt = runtime();
    let standin = oauth_standin(&rt, Duration::from_secs(600), false);
    let refused = Fault::Status {
        status: 400,
        message: "missing or invalid refresh token".into(),
    };
    standin.inject(Injection::next(refused).on(TOKEN_PATH).times(u64::MAX));
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = serve(dir.path(), &data, &oauth_config(&standin, EVERY_SECOND));
    post_contact(&standin, &server, "t", 400);
    let paused = eventually(Duration::from_secs(20), || {
        let status: serde_json::Value =
            common::get(server.admin_url("/status")).ok()?.json().ok()?;
        status["connectors"][0]["paused"]
            .as_str()
            .map(str::to_string)
    });
    server.stop();
    assert_eq!(paused.as_deref(), Some("refused_token"));
    let rows = outcomes::read(&outcomes::dataset(&data).unwrap()).unwrap();
    assert!(rows.is_empty(), "{rows:?}");
}

/// HubSpot's token endpoint fails (a 502, a 429, an edge's HTML 403 page): the calls waiting
/// for a token share the one attempt, the connector is paused (`no_access_token`), and no
/// contact is failed or in doubt; past the pause a token is had and everyone goes. Each
/// waiting call had refreshed on its own, each failure counted against its contact as if its
/// own call had failed, and the page was taken for HubSpot refusing the credentials.
#[test]
fn a_token_endpoint_outage_pauses_the_connector_and_fails_no_one() {
    use sendtime::hubspot::RatePolicy;
    let faults = [
        Fault::Status {
            status: 502,
            message: "Bad gateway".into(),
        },
        Fault::RateLimited {
            policy: RatePolicy::TenSecondly,
            retry_after: None,
        },
        Fault::Html(403),
    ];
    for fault in faults {
        let rt = runtime();
        let standin = oauth_standin(&rt, Duration::from_secs(600), false);
        standin.inject(Injection::next(fault.clone()).on(TOKEN_PATH));
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let clock = dir.path().join("clock");
        // Far past every receipt's window: all are due.
        let now = common::now_ms() + 30 * 86_400_000;
        common::set_clock(&clock, now);
        let path = dir.path().join("webhooks.toml");
        std::fs::write(&path, oauth_config(&standin, EVERY_SECOND)).unwrap();
        let server = Server::start(
            &path,
            &data,
            &[
                ("OAUTH_SECRET", SECRET),
                ("OAUTH_CLIENT_ID", "app-client-id"),
                ("OAUTH_REFRESH", "first-refresh-token"),
                ("SENDTIME_CLOCK_FILE", clock.to_str().unwrap()),
            ],
        );
        for vid in 0..10 {
            post_contact(&standin, &server, "t", 300 + vid);
        }
        let paused = eventually(Duration::from_secs(20), || {
            let status: serde_json::Value =
                common::get(server.admin_url("/status")).ok()?.json().ok()?;
            (status["connectors"][0]["paused"] == "no_access_token").then_some(())
        });
        assert!(
            paused.is_some(),
            "{fault:?}: not paused; logs:\n{}",
            server.logs()
        );
        // Ticks go on during the pause; none asks for a token.
        std::thread::sleep(Duration::from_secs(2));
        let asked = |log: &[LogEntry]| log.iter().filter(|e| e.path == TOKEN_PATH).count();
        assert_eq!(asked(&standin.log()), 1, "{fault:?}: {:?}", standin.log());
        common::set_clock(&clock, now + 2 * 60_000);
        let rows = all_enrolled(&server, &data, 10);
        server.stop();
        assert_eq!(asked(&standin.log()), 2, "{fault:?}");
        assert!(
            rows.iter()
                .all(|r| r.status != Status::Failed && !r.in_doubt),
            "{fault:?}: {rows:?}"
        );
        // No row records a call that was never made: a restart would count it against the
        // contact's tries and the day's budget.
        let attempts = rows.iter().filter(|r| r.status == Status::Attempting);
        assert_eq!(attempts.count(), 10, "{fault:?}: {rows:?}");
        assert!(
            rows.iter().all(|r| r.status != Status::Retrying),
            "{fault:?}: {rows:?}"
        );
    }
}
