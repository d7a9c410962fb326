//! `sendtime validate --online` through the real binary against the stand-in: a correct
//! account passes, and each kind of misconfiguration is reported by name with exit 1.

mod common;

use common::{Hook, TestConfig};
use sendtime::hubspot::standin::{DEFAULT_TOKEN, Fault, Injection, ListKind, Options, StandIn};

const APP_URL: &str = "https://hooks.example.com/actions/send-time";

fn validate_online(dir: &std::path::Path, connector: &str, portal_id: u64) -> (bool, String) {
    validate_online_without(dir, connector, portal_id, None)
}

/// [`validate_online`] with the variable `unset` left out of the environment.
fn validate_online_without(
    dir: &std::path::Path,
    connector: &str,
    portal_id: u64,
    unset: Option<&str>,
) -> (bool, String) {
    let config = TestConfig {
        env: "ONLINE",
        connector,
        hooks: &[
            &Hook {
                id: "nurture",
                kind: "NEXT_24_HOURS",
                target: "workflow_id = 101",
            },
            &Hook {
                id: "big-list",
                kind: "UPDATE_ONLY",
                target: "list_id = \"987\"",
            },
        ],
        tables: "[import]\nenabled = true",
        ..TestConfig::default()
    }
    .text()
    .replace("portal_id = 62515", &format!("portal_id = {portal_id}"))
        + "[[action]]\nid = \"send-time\"\n";
    let path = dir.join("webhooks.toml");
    std::fs::write(&path, config).unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_sendtime"));
    command
        .args(["validate", "--online"])
        .arg(&path)
        .env("ONLINE_SECRET", "s")
        .env("ONLINE_TOKEN", DEFAULT_TOKEN)
        .env("HUBSPOT_DEVELOPER_API_KEY", "developer-api-key");
    if let Some(name) = unset {
        command.env_remove(name);
    }
    let out = command.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A stand-in of an account the test config is right for (its list is MANUAL, its action
/// registered, past the first page of the app's 25 others), otherwise as `options` say.
fn correct_account(rt: &tokio::runtime::Runtime, options: Options) -> StandIn {
    let others = (1..=25).map(|i| format!("https://elsewhere.example.com/{i}"));
    rt.block_on(StandIn::start(Options {
        lists: vec![("987".into(), ListKind::Manual)],
        action_urls: others.chain([APP_URL.into()]).collect(),
        ..options
    }))
    .unwrap()
}

#[test]
fn a_correct_account_passes_and_each_misconfiguration_is_named() {
    let rt = common::runtime();
    let dir = tempfile::tempdir().unwrap();
    let good = correct_account(&rt, Options::default());
    let (ok, text) = validate_online(dir.path(), &format!("api_base = \"{}\"", good.url()), 62515);
    assert!(ok, "{text}");
    // Online, what `serve` refuses to start without is an error: the client secret too, which
    // a static token's checks never use (they passed, and `serve` then refused).
    let api_base = format!("api_base = \"{}\"", good.url());
    let (ok, no_secret) =
        validate_online_without(dir.path(), &api_base, 62515, Some("ONLINE_SECRET"));
    assert!(!ok, "{no_secret}");
    assert!(no_secret.contains("ONLINE_SECRET"), "{no_secret}");
    for line in [
        "ok   main account: the token works for portal 62515",
        "ok   main webhook nurture workflow 101: exists",
        "ok   main webhook big-list list 987: exists",
        "ok   main action send-time: registered for app",
        "ok   main email events: readable",
        "ok   main time zone: the account's zone is UTC; `time_zone` is not set (UTC)",
        "6 online checks passed",
    ] {
        assert!(text.contains(line), "{line}\n{text}");
    }
    // Action definitions are read on HubSpot's date-versioned path; where it refuses the
    // developer key, on the legacy path while that lasts; refused on both, the check fails
    // saying how to skip it.
    let definitions = |from: u64| -> Vec<String> {
        (good.log().into_iter())
            .filter(|e| e.seq >= from && e.path.contains("/actions/"))
            .map(|e| e.path)
            .collect()
    };
    let read = definitions(0);
    assert!(!read.is_empty(), "{read:?}");
    assert!(
        read.iter()
            .all(|p| p == "/automation/actions/2026-03/54321"),
        "{read:?}"
    );
    let refuse = |prefix: &str| {
        let message = "The API key provided is invalid.".to_string();
        good.inject(
            Injection::next(Fault::Status {
                status: 401,
                message,
            })
            .on(prefix),
        );
    };
    let seen = good.log().last().map_or(0, |e| e.seq + 1);
    refuse("/automation/actions/2026-03/");
    let (ok, text) = validate_online(dir.path(), &api_base, 62515);
    assert!(ok, "{text}");
    assert!(
        text.contains("ok   main action send-time: registered for app"),
        "{text}"
    );
    let read = definitions(seen);
    assert_eq!(read[0], "/automation/actions/2026-03/54321");
    assert!(read.len() > 1, "{read:?}");
    assert!(
        read[1..]
            .iter()
            .all(|p| p == "/automation/v4/actions/54321"),
        "{read:?}"
    );
    refuse("/automation/actions/2026-03/");
    refuse("/automation/v4/actions/");
    let (ok, text) = validate_online(dir.path(), &api_base, 62515);
    assert!(!ok, "{text}");
    for line in [
        "FAIL main action send-time: cannot list app 54321's actions: ",
        "on HubSpot's legacy path (v4, until 2027-03-30)",
        "unset HUBSPOT_DEVELOPER_API_KEY to skip this check)",
        "1 online check failed",
    ] {
        assert!(text.contains(line), "{line}\n{text}");
    }

    // An account in India: `time_zone` must be its zone (a link to it will do).
    let india = correct_account(
        &rt,
        Options {
            utc_offset_minutes: 330,
            ..Options::default()
        },
    );
    let api_base = format!("api_base = \"{}\"", india.url());
    let (ok, text) = validate_online(dir.path(), &api_base, 62515);
    assert!(!ok, "{text}");
    assert!(
        text.contains("FAIL main time zone: the account's zone is Asia/Calcutta, but `time_zone` is not set (UTC): set `time_zone = \"Asia/Calcutta\"`"),
        "{text}"
    );
    let zoned = format!("{api_base}\ntime_zone = \"Asia/Kolkata\"");
    let (ok, text) = validate_online(dir.path(), &zoned, 62515);
    assert!(ok, "{text}");
    assert!(
        text.contains(
            "ok   main time zone: the account's zone is Asia/Calcutta; `time_zone` is Asia/Kolkata"
        ),
        "{text}"
    );

    // A flow id pasted as the workflow id, a DYNAMIC list, a token without `content` and
    // `oauth` (account information's), an action registered elsewhere: every check still runs.
    let bad = rt
        .block_on(StandIn::start(Options {
            lists: vec![("987".into(), ListKind::Dynamic)],
            flow_ids: vec![(101, 5551)],
            scopes: Some(vec!["automation".into(), "crm.lists.read".into()]),
            action_urls: vec!["https://elsewhere.example.com/a".into()],
            ..Options::default()
        }))
        .unwrap();
    let (ok, text) = validate_online(dir.path(), &format!("api_base = \"{}\"", bad.url()), 62515);
    assert!(!ok, "{text}");
    for line in [
        "FAIL main webhook nurture workflow 101: 101 is a flow id",
        "set workflow_id = 5551",
        "FAIL main webhook big-list list 987: list 987 is DYNAMIC",
        "FAIL main action send-time: no action of app",
        "FAIL main email events: the token lacks the scope `content`",
        "FAIL main account: the token lacks the scope account information needs (`oauth`)",
        "5 online checks failed",
    ] {
        assert!(text.contains(line), "{line}\n{text}");
    }

    // A workflow that exists but is turned off: the one failure.
    let off = correct_account(
        &rt,
        Options {
            workflows_off: vec![101],
            ..Options::default()
        },
    );
    let (ok, text) = validate_online(dir.path(), &format!("api_base = \"{}\"", off.url()), 62515);
    assert!(!ok, "{text}");
    for line in [
        "FAIL main webhook nurture workflow 101: exists (Workflow 101) but is turned off in HubSpot",
        "1 online check failed",
    ] {
        assert!(text.contains(line), "{line}\n{text}");
    }

    // The action saved but not published: offered to no workflow, the one failure.
    let unpublished = correct_account(
        &rt,
        Options {
            actions_unpublished: true,
            ..Options::default()
        },
    );
    let (ok, text) = validate_online(
        dir.path(),
        &format!("api_base = \"{}\"", unpublished.url()),
        62515,
    );
    assert!(!ok, "{text}");
    for line in [
        "FAIL main action send-time: registered for app",
        "but not published",
        "1 online check failed",
    ] {
        assert!(text.contains(line), "{line}\n{text}");
    }

    // The token of another account.
    let (ok, text) = validate_online(dir.path(), &format!("api_base = \"{}\"", good.url()), 99999);
    assert!(!ok, "{text}");
    assert!(
        text.contains("the token belongs to portal 62515, not portal_id 99999"),
        "{text}"
    );
    // A stand-in of that account (one per account, to try a config of several).
    let other = correct_account(
        &rt,
        Options {
            portal_id: 99999,
            ..Options::default()
        },
    );
    let api_base = format!("api_base = \"{}\"", other.url());
    let (ok, text) = validate_online(dir.path(), &api_base, 99999);
    assert!(ok, "{text}");
    assert!(
        text.contains("ok   main account: the token works for portal 99999"),
        "{text}"
    );

    // HubSpot out of reach is not a refused token.
    // The discard port, where nothing listens (one bound and let go could be taken).
    let gone = "http://127.0.0.1:9";
    let (ok, text) = validate_online(dir.path(), &format!("api_base = \"{gone}\""), 62515);
    assert!(!ok, "{text}");
    assert!(
        text.contains(&format!(
            "FAIL main account: could not reach HubSpot at {gone}"
        )),
        "{text}"
    );
    assert!(!text.contains("refused the token"), "{text}");
}

/// An app with more action definitions than `validate` reads: one past them is neither
/// passed nor failed, and the line says how far it read.
#[test]
fn an_action_past_the_definitions_read_is_left_unjudged() {
    let rt = common::runtime();
    let dir = tempfile::tempdir().unwrap();
    // The stand-in's pages hold 10 (HubSpot's size is undocumented); 100 pages are read.
    let others = (1..=1000).map(|i| format!("https://elsewhere.example.com/{i}"));
    let many = rt
        .block_on(StandIn::start(Options {
            lists: vec![("987".into(), ListKind::Manual)],
            action_urls: others.chain([APP_URL.into()]).collect(),
            ..Options::default()
        }))
        .unwrap();
    let (ok, text) = validate_online(dir.path(), &format!("api_base = \"{}\"", many.url()), 62515);
    assert!(ok, "{text}");
    assert!(
        text.contains(
            "skip main action send-time: none of the first 1000 action definitions of app"
        ),
        "{text}"
    );
    assert!(!text.contains("FAIL"), "{text}");
}
