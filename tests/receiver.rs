//! The webhook receiver end to end: the real binary on an ephemeral port, real signed HTTP
//! posts, and the inbox read back from its Parquet files with Polars.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use common::{Hook, PUBLIC_URL, Server, TestConfig, eventually, now_ms};
use polars::prelude::*;
use sendtime::receiver::signature::{sign_v1, sign_v2, sign_v3};

const SECRET: &str = "test-client-secret";

const HOOKS: &[&Hook] = &[
    &Hook {
        id: "nurture",
        kind: "NEXT_24_HOURS",
        target: "workflow_id = 1",
    },
    &Hook {
        id: "big-list",
        kind: "UPDATE_ONLY",
        target: "list_id = \"987\"",
    },
];

fn config(dir: &Path, extra_connector: &str) -> std::path::PathBuf {
    TestConfig {
        env: "TEST",
        server: "max_body_bytes = 65536",
        connector: &format!("dry_run = true\n{extra_connector}"),
        hooks: HOOKS,
        ..TestConfig::default()
    }
    .write(dir)
}

/// The text of a config of [`HOOKS`] on a connector in dry run, to edit before it is written.
fn dry_run_text() -> String {
    TestConfig {
        env: "TEST",
        connector: "dry_run = true",
        hooks: HOOKS,
        ..TestConfig::default()
    }
    .text()
}

fn start(dir: &Path) -> Server {
    Server::start(
        &config(dir, ""),
        &dir.join("data"),
        &[("TEST_SECRET", SECRET)],
    )
}

fn contact_body(vid: i64, email: &str) -> Vec<u8> {
    let template = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/hubspot/contact-webhook.json"
    ))
    .unwrap();
    template
        .replace("9153674", &vid.to_string())
        .replace("ada@example.com", email)
        .into_bytes()
}

enum Sig {
    V1,
    V2,
    V3,
    V3At(i64),
    None,
    Raw(&'static str, &'static str),
}

fn post(server: &Server, webhook: &str, body: &[u8], sig: Sig) -> (u16, serde_json::Value) {
    let path = format!("/hooks/{webhook}");
    let called = format!("{PUBLIC_URL}{path}");
    let mut req = common::http().post(server.url(&path)).body(body.to_vec());
    req = match sig {
        Sig::V1 => req
            .header("X-HubSpot-Signature", sign_v1(SECRET.as_bytes(), body))
            .header("X-HubSpot-Signature-Version", "v1"),
        Sig::V2 => req
            .header(
                "X-HubSpot-Signature",
                sign_v2(SECRET.as_bytes(), "POST", &called, body),
            )
            .header("X-HubSpot-Signature-Version", "v2"),
        Sig::V3 | Sig::V3At(_) => {
            let ts = match sig {
                Sig::V3At(ts) => ts,
                _ => now_ms(),
            };
            req.header(
                "X-HubSpot-Signature-v3",
                sign_v3(SECRET.as_bytes(), "POST", &called, body, ts),
            )
            .header("X-HubSpot-Request-Timestamp", ts.to_string())
        }
        Sig::None => req,
        Sig::Raw(name, value) => req.header(name, value),
    };
    let resp = req.send().unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}

/// A deal-based workflow's post to a list's webhook is refused (400, counted), not taken for
/// the contact whose id is the deal's.
#[test]
fn a_deals_body_is_refused_not_taken_for_a_contact() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let deal = br#"{"portalId": 62515, "dealId": 9153674, "isDeleted": false,
        "properties": {"dealname": {"value": "Big"}, "hs_object_id": {"value": "9153674"}}}"#;
    let (status, answer) = post(&server, "big-list", deal, Sig::V3);
    assert_eq!(
        (status, answer["reason"].as_str()),
        (400, Some("not_a_contact")),
        "{answer}"
    );
    let metrics = common::get(server.admin_url("/metrics"))
        .unwrap()
        .text()
        .unwrap();
    server.stop();
    let line = "sendtime_webhooks_rejected_total{reason=\"not_a_contact\"} 1";
    assert!(metrics.lines().any(|l| l == line), "{metrics}");
    assert_eq!(inbox(dir.path()).height(), 0);
}

/// With a path in `public_url`, posts are taken whether the proxy in front strips it or
/// passes it on (both signed over `public_url`'s URL, as HubSpot calls it); a post to any
/// other path, or by another method, is refused as JSON and counted (axum's own 404 and 405
/// were neither, and HubSpot does not retry them: a proxy set up the other way lost every
/// contact without a trace).
#[test]
fn a_public_url_with_a_path_takes_posts_with_or_without_it_and_counts_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let public = format!("{PUBLIC_URL}/sendtime");
    let text = dry_run_text().replace(
        &format!("public_url = \"{PUBLIC_URL}\""),
        &format!("public_url = \"{public}\""),
    );
    assert!(text.contains(&public));
    let config = dir.path().join("webhooks.toml");
    std::fs::write(&config, text).unwrap();
    let server = Server::start(
        &config,
        &dir.path().join("data"),
        &[("TEST_SECRET", SECRET)],
    );
    let http = common::http();
    let send = |path: &str, vid: i64| {
        let body = contact_body(vid, &format!("p{vid}@example.com"));
        let ts = now_ms();
        let signed = format!("{public}/hooks/nurture");
        let r = http
            .post(server.url(path))
            .header(
                "X-HubSpot-Signature-v3",
                sign_v3(SECRET.as_bytes(), "POST", &signed, &body, ts),
            )
            .header("X-HubSpot-Request-Timestamp", ts.to_string())
            .body(body)
            .send()
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json::<serde_json::Value>().unwrap())
    };
    assert_eq!(send("/sendtime/hooks/nurture", 1).0, 200, "passed on");
    assert_eq!(send("/hooks/nurture", 2).0, 200, "stripped");
    // Refused and counted, under the prefix too (a trailing slash, no id).
    for (path, vid) in [
        ("/elsewhere/hooks/nurture", 3),
        ("/sendtime/hooks/nurture/", 4),
    ] {
        let (status, answer) = send(path, vid);
        assert_eq!(
            (status, answer["reason"].as_str()),
            (404, Some("unknown_path")),
            "{path}"
        );
    }
    // A scanner's request is answered, not counted; a proxy's health check under the prefix
    // is taken.
    assert_eq!(
        http.get(server.url("/wp-login.php"))
            .send()
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        http.get(server.url("/sendtime/healthz"))
            .send()
            .unwrap()
            .status(),
        200
    );
    let got = http
        .get(server.url("/sendtime/hooks/nurture"))
        .send()
        .unwrap();
    assert_eq!(got.status().as_u16(), 405);
    assert_eq!(got.headers()["allow"], "POST");
    let answer: serde_json::Value = got.json().unwrap();
    assert_eq!(answer["reason"], "wrong_method");
    let metrics = common::get(server.admin_url("/metrics"))
        .unwrap()
        .text()
        .unwrap();
    // On the row of the webhook the path names (a workflow set up with GET), not an unknown
    // id's.
    let status: serde_json::Value = common::get(server.admin_url("/status"))
        .unwrap()
        .json()
        .unwrap();
    server.stop();
    let nurture = (status["webhooks"].as_array().unwrap().iter())
        .find(|w| w["id"] == "nurture")
        .unwrap();
    assert_eq!(nurture["counts"]["refused"]["wrong_method"], 1, "{status}");
    assert_eq!(status["unknown"], serde_json::json!({"unknown_path": 2}));
    for (reason, n) in [("unknown_path", 2), ("wrong_method", 1)] {
        let line = format!("sendtime_webhooks_rejected_total{{reason=\"{reason}\"}} {n}");
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }
    let rows = inbox(dir.path());
    let mut emails = strings(&rows, "email");
    emails.sort();
    assert_eq!(emails, ["p1@example.com", "p2@example.com"]);
}

/// The inbox as Polars sees it, after the server flushed on SIGTERM.
fn inbox(dir: &Path) -> DataFrame {
    // As readers list them: a merge's sources stay a while, unlisted.
    let inbox = sendtime::store::Dataset::open(&dir.join("data"), "inbox").unwrap();
    let mut frames = Vec::new();
    for path in inbox.parts().unwrap() {
        frames.push(
            ParquetReader::new(std::fs::File::open(&path).unwrap())
                .finish()
                .unwrap(),
        );
    }
    let mut iter = frames.into_iter();
    let Some(mut df) = iter.next() else {
        return DataFrame::empty();
    };
    for f in iter {
        df.vstack_mut_owned(f).unwrap();
    }
    df
}

/// The inbox's contact ids, in storage order.
fn contact_ids(dir: &Path) -> Vec<i64> {
    inbox(dir)
        .column("contact_id")
        .unwrap()
        .i64()
        .unwrap()
        .into_no_null_iter()
        .collect()
}

fn strings(df: &DataFrame, col: &str) -> Vec<String> {
    df.column(col)
        .unwrap()
        .str()
        .unwrap()
        .iter()
        .map(|v| v.unwrap_or("").to_string())
        .collect()
}

#[test]
fn signed_posts_v1_v2_v3_are_stored_and_read_back_with_polars() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let mut receipts = HashMap::new();
    for (i, sig) in [Sig::V1, Sig::V2, Sig::V3].into_iter().enumerate() {
        let vid = 100 + i as i64;
        let (status, body) = post(
            &server,
            "nurture",
            &contact_body(vid, &format!("c{vid}@example.com")),
            sig,
        );
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["status"], "accepted");
        receipts.insert(body["receipt_id"].as_str().unwrap().to_string(), vid);
    }
    // A flat custom body, on the UPDATE_ONLY webhook.
    let (status, body) = post(
        &server,
        "big-list",
        br#"{"objectId": 555, "email": "flat@example.com"}"#,
        Sig::V3,
    );
    assert_eq!(status, 200, "{body}");
    receipts.insert(body["receipt_id"].as_str().unwrap().to_string(), 555);

    let identity: serde_json::Value = common::get(server.admin_url("/status"))
        .unwrap()
        .json()
        .unwrap();
    let identity = identity["config"].as_str().unwrap().to_string();
    server.stop();

    let df = inbox(dir.path());
    assert_eq!(df.height(), 4);
    let ids = strings(&df, "receipt_id");
    let sigs = strings(&df, "signature");
    let types = strings(&df, "webhook_type");
    let emails = strings(&df, "email");
    let configs = strings(&df, "config");
    let contacts: Vec<Option<i64>> = df
        .column("contact_id")
        .unwrap()
        .i64()
        .unwrap()
        .iter()
        .collect();
    let portals: Vec<Option<i64>> = df
        .column("portal_id")
        .unwrap()
        .i64()
        .unwrap()
        .iter()
        .collect();
    assert!(matches!(
        df.column("received_at").unwrap().dtype(),
        DataType::Datetime(TimeUnit::Milliseconds, _)
    ));
    let mut seen_sigs = Vec::new();
    for i in 0..df.height() {
        let vid = receipts[&ids[i]];
        assert_eq!(contacts[i], Some(vid));
        assert_eq!(configs[i], identity);
        // Every receipt names the account it was taken for: the flat body names none, so
        // its connector's.
        assert_eq!(portals[i], Some(62515));
        if vid == 555 {
            assert_eq!(
                (types[i].as_str(), emails[i].as_str()),
                ("UPDATE_ONLY", "flat@example.com")
            );
        } else {
            assert_eq!(types[i], "NEXT_24_HOURS");
            assert_eq!(emails[i], format!("c{vid}@example.com"));
            seen_sigs.push(sigs[i].clone());
        }
    }
    seen_sigs.sort();
    assert_eq!(seen_sigs, ["v1", "v2", "v3"]);
}

/// Optional fields of an unexpected type count as absent: the contact is taken and stored
/// (HubSpot does not send a refused post again). An earlier version refused these with 400.
#[test]
fn optional_fields_of_an_unexpected_type_count_as_absent() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let odd = [
        r#"{"email": "odd1@example.com", "identity-profiles": {}}"#,
        r#"{"email": "odd2@example.com", "vid": 18446744073709551615}"#,
        r#"{"email": "odd3@example.com", "properties": []}"#,
        r#"{"email": "odd4@example.com", "properties": "none"}"#,
        r#"{"vid": 3, "identity-profiles": [{"identities": [{"type": "EMAIL", "value": "x@example.com", "is-primary": "true"}]}], "email": "odd5@example.com"}"#,
    ];
    for body in odd {
        let (status, answer) = post(&server, "nurture", body.as_bytes(), Sig::V2);
        assert_eq!(status, 200, "{body}: {answer}");
    }
    server.stop();
    let mut emails = strings(&inbox(dir.path()), "email");
    emails.sort();
    let expected: Vec<String> = (1..=5).map(|i| format!("odd{i}@example.com")).collect();
    assert_eq!(emails, expected);
}

#[test]
fn every_rejection_has_its_status_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let good = contact_body(7, "seven@example.com");

    assert_eq!(post(&server, "no-such-hook", &good, Sig::V2).0, 404);
    // An id that does not decode is refused as unknown too, in JSON, counted (axum's
    // plain-text 400 was not).
    let (status, body) = post(&server, "%FF", &good, Sig::V2);
    assert_eq!(
        (status, body["reason"].as_str()),
        (404, Some("unknown_webhook")),
        "{body}"
    );
    let get = common::get(server.url("/hooks/nurture")).unwrap();
    assert_eq!(get.status().as_u16(), 405);

    let big = format!(r#"{{"vid": 1, "padding": "{}"}}"#, "x".repeat(70_000)).into_bytes();
    assert_eq!(post(&server, "nurture", &big, Sig::V2).0, 413);

    let (status, body) = post(&server, "nurture", &good, Sig::None);
    assert_eq!(status, 503);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("missing signature"),
        "{body}"
    );
    let (status, body) = post(
        &server,
        "nurture",
        &good,
        Sig::Raw("X-HubSpot-Signature", "deadbeef"),
    );
    // A signature that does not match, or minutes off, may be ours to fix (public_url, the
    // secret, the clock): 503, which HubSpot retries for three days (a 401 it never retries).
    assert_eq!(status, 503);
    assert_eq!(body["message"], "signature does not match");
    assert_eq!(body["reason"], "signature_mismatch");
    // A workflow that puts an API key in the query (named or bare): refused, and the key
    // never logged.
    let keyed = common::http()
        .post(server.url("/hooks/big-list?api_key=sk-live-123&x=1&sk-bare-456"))
        .header("X-HubSpot-Signature", "deadbeef")
        .body(good.clone())
        .send()
        .unwrap();
    assert_eq!(keyed.status().as_u16(), 503);
    // Back in a minute, not in seconds: it lasts until someone fixes it.
    assert_eq!(keyed.headers()["retry-after"], "60000", "milliseconds");
    // The body never echoes a secret or the expected digest.
    let expected = sign_v1(SECRET.as_bytes(), &good);
    assert!(!body.to_string().contains(&expected) && !body.to_string().contains(SECRET));
    assert_eq!(
        post(&server, "nurture", &good, Sig::V3At(now_ms() - 6 * 60_000)).0,
        503
    );
    assert_eq!(
        post(&server, "nurture", &good, Sig::V3At(now_ms() + 6 * 60_000)).0,
        503
    );

    let (status, body) = post(&server, "nurture", b"this is not json", Sig::V2);
    assert_eq!(status, 400);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("body is not a JSON object"),
        "{body}"
    );
    let (status, body) = post(
        &server,
        "nurture",
        br#"{"properties": {"firstname": {"value": "Ada"}}}"#,
        Sig::V2,
    );
    assert_eq!(status, 400);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("neither a contact id"),
        "{body}"
    );

    // A body without what the webhook's type needs: an email to enroll, a record id for a
    // list.
    let (status, body) = post(&server, "nurture", br#"{"vid": 12}"#, Sig::V2);
    assert_eq!(
        (status, body["reason"].as_str()),
        (400, Some("no_email")),
        "{body}"
    );
    let (status, body) = post(
        &server,
        "big-list",
        br#"{"email": "x@example.com"}"#,
        Sig::V2,
    );
    assert_eq!(
        (status, body["reason"].as_str()),
        (400, Some("no_record_id")),
        "{body}"
    );

    let other_portal = String::from_utf8(good.clone())
        .unwrap()
        .replace("62515", "99999");
    assert_eq!(
        post(&server, "nurture", other_portal.as_bytes(), Sig::V2).0,
        401
    );

    let metrics = common::get(server.admin_url("/metrics"))
        .unwrap()
        .text()
        .unwrap();
    for reason in [
        "unknown_webhook",
        "too_large",
        "signature_missing",
        "signature_mismatch",
        "signature_stale",
        "bad_json",
        "no_contact",
        "no_email",
        "no_record_id",
        "wrong_portal",
    ] {
        assert!(
            metrics.contains(&format!(
                "sendtime_webhooks_rejected_total{{reason=\"{reason}\"}}"
            )),
            "{reason} missing in\n{metrics}"
        );
    }
    assert!(
        metrics.contains("sendtime_webhooks_accepted_total 0"),
        "{metrics}"
    );
    // Each configured webhook's series is there, at 0, before it has had a contact.
    assert!(
        metrics.contains("sendtime_pending_contacts{webhook=\"big-list\"} 0"),
        "{metrics}"
    );
    let logs = server.stop();
    assert_eq!(inbox(dir.path()).height(), 0);
    // Each refusal is logged with its webhook and reason; a bad signature with the URL it was
    // checked against. The two stale v3 posts make one line: at most one a minute per reason.
    let refused: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("refused a post"))
        .collect();
    for want in [
        "webhook=\"(unknown)\" reason=\"unknown_webhook\" status=404",
        "webhook=\"nurture\" reason=\"too_large\" status=413",
        "webhook=\"nurture\" reason=\"signature_missing\" status=503",
        "webhook=\"nurture\" reason=\"bad_json\" status=400",
        "webhook=\"nurture\" reason=\"wrong_portal\" status=401",
    ] {
        assert!(refused.iter().any(|l| l.contains(want)), "{want}:\n{logs}");
    }
    let mismatch = refused
        .iter()
        .find(|l| l.contains("signature_mismatch"))
        .unwrap();
    assert!(
        mismatch.contains("checked as POST https://hooks.example.com/hooks/nurture"),
        "{mismatch}"
    );
    assert!(
        !logs.contains("sk-live-123") && !logs.contains("sk-bare-456"),
        "{logs}"
    );
    assert!(
        logs.contains("checked as POST https://hooks.example.com/hooks/big-list?api_key=…&x=…&…"),
        "{logs}"
    );
    assert_eq!(
        refused
            .iter()
            .filter(|l| l.contains("signature_stale"))
            .count(),
        1,
        "{logs}"
    );
    assert!(!logs.contains(SECRET));
}

#[test]
fn duplicates_answer_200_and_store_nothing_even_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let body = contact_body(42, "dup@example.com");
    let (s1, b1) = post(&server, "nurture", &body, Sig::V2);
    let (s2, b2) = post(&server, "nurture", &body, Sig::V3);
    assert_eq!((s1, s2), (200, 200));
    assert_eq!(b1["status"], "accepted");
    assert_eq!(b2["status"], "duplicate");
    assert_eq!(b1["receipt_id"], b2["receipt_id"]);
    // The same contact on another webhook is its own receipt.
    let (_, b3) = post(&server, "big-list", &body, Sig::V3);
    assert_eq!(b3["status"], "accepted");
    let metrics = common::get(server.admin_url("/metrics"))
        .unwrap()
        .text()
        .unwrap();
    // Whole lines: a count of 10 or 20 contains 1 or 2.
    let line = |l: &str| metrics.lines().any(|m| m == l);
    assert!(line("sendtime_webhooks_duplicate_total 1"), "{metrics}");
    assert!(
        line("sendtime_pending_contacts{webhook=\"nurture\"} 1"),
        "{metrics}"
    );
    // Two commits: the repeat wrote nothing, so it is none.
    assert!(line("sendtime_store_commit_seconds_count 2"), "{metrics}");
    server.stop();

    let server = start(dir.path());
    let (_, b4) = post(&server, "nurture", &body, Sig::V3);
    assert_eq!(b4["status"], "duplicate");
    assert_eq!(b4["receipt_id"], b1["receipt_id"]);
    server.stop();
    assert_eq!(inbox(dir.path()).height(), 2);
}

/// HubSpot merges contacts: a post of the merged contact names the ones merged into it
/// (`merged-vids`). One of them still waiting on the same webhook is the same person, so the
/// post is a duplicate of that receipt, also after a restart (it was taken and sent twice).
#[test]
fn a_merged_contact_is_a_duplicate_of_a_receipt_of_a_contact_merged_into_it() {
    let dir = tempfile::tempdir().unwrap();
    let merged = |vid: i64, email: &str, ids: &str| {
        let body = String::from_utf8(contact_body(vid, email)).unwrap();
        assert!(body.contains(r#""merged-vids": []"#), "the fixture changed");
        body.replace(r#""merged-vids": []"#, &format!(r#""merged-vids": {ids}"#))
            .into_bytes()
    };
    let server = start(dir.path());
    let (_, first) = post(
        &server,
        "nurture",
        &contact_body(102, "bob@example.com"),
        Sig::V3,
    );
    assert_eq!(first["status"], "accepted");
    let after_merge = merged(101, "ada@example.com", "[102]");
    let (status, again) = post(&server, "nurture", &after_merge, Sig::V3);
    assert_eq!((status, again["status"].as_str()), (200, Some("duplicate")));
    assert_eq!(again["receipt_id"], first["receipt_id"]);
    // Another contact's merges, or another webhook, are new receipts.
    let (_, other) = post(
        &server,
        "nurture",
        &merged(103, "cy@example.com", "[104]"),
        Sig::V3,
    );
    assert_eq!(other["status"], "accepted");
    let (_, elsewhere) = post(&server, "big-list", &after_merge, Sig::V3);
    assert_eq!(elsewhere["status"], "accepted");
    server.stop();

    let server = start(dir.path());
    let replay_free = merged(101, "ada@example.com", r#"[102, "105"]"#);
    let (_, later) = post(&server, "nurture", &replay_free, Sig::V3);
    assert_eq!(later["status"], "duplicate");
    assert_eq!(later["receipt_id"], first["receipt_id"]);
    server.stop();
    assert_eq!(inbox(dir.path()).height(), 3);
}

/// A post answered `duplicate` while its contact's first receipt waits (here a merged
/// contact's) stays one when HubSpot retries it after that receipt is sent: it was taken and
/// sent again.
#[test]
fn a_post_answered_duplicate_stays_one_once_the_first_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let config = TestConfig {
        env: "TEST",
        server: "max_body_bytes = 65536",
        tables: "[scheduler]\ncron = \"*/5 * * * * *\"",
        connector: "dry_run = true",
        hooks: &[&Hook {
            id: "now",
            kind: "IMMEDIATE",
            target: "workflow_id = 1",
        }],
    }
    .write(dir.path());
    let server = Server::start(
        &config,
        &dir.path().join("data"),
        &[("TEST_SECRET", SECRET)],
    );
    let body = String::from_utf8(contact_body(101, "ada@example.com")).unwrap();
    let after_merge = body
        .replace(r#""merged-vids": []"#, r#""merged-vids": [102]"#)
        .into_bytes();
    let answer = |body: &[u8]| {
        let (status, answer) = post(&server, "now", body, Sig::V3);
        assert_eq!(status, 200, "{answer}");
        answer
    };
    // Both between two ticks, so the first still waits when the second comes.
    common::wait_ticks(&server, 1);
    let first = answer(&contact_body(102, "bob@example.com"));
    let again = answer(&after_merge);
    assert_eq!(again["status"], "duplicate", "{again}");
    common::wait_ticks(&server, 2);
    let pending = "sendtime_pending_contacts{webhook=\"now\"}";
    assert_eq!(common::metric(&server, pending), 0, "the first was sent");
    let retry = answer(&after_merge);
    assert_eq!(retry["status"], "duplicate", "{retry}");
    assert_eq!(retry["receipt_id"], first["receipt_id"]);
    server.stop();
    assert_eq!(inbox(dir.path()).height(), 1);
}

/// `allow_unsigned` takes unsigned posts, warned about, until the endpoint has taken a signed
/// one (with `min_signature_version = "auto"`).
#[test]
fn unsigned_posts_only_where_allowed_and_always_warned() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "allow_unsigned = true");
    let server = Server::start(&cfg, &dir.path().join("data"), &[("TEST_SECRET", SECRET)]);
    assert!(
        server.logs().contains("allow_unsigned"),
        "no start-up warning:\n{}",
        server.logs()
    );
    let (status, _) = post(
        &server,
        "nurture",
        &contact_body(1, "u@example.com"),
        Sig::None,
    );
    assert_eq!(status, 200);
    // A signature that is present is still checked.
    let (status, _) = post(
        &server,
        "nurture",
        &contact_body(2, "v@example.com"),
        Sig::Raw("X-HubSpot-Signature", "00"),
    );
    assert_eq!(status, 503);
    // Once the endpoint has taken a signed post, an unsigned one is a replay stripped of its
    // signature headers, there and at the connector's webhooks that have taken none yet.
    let body = contact_body(3, "w@example.com");
    assert_eq!(post(&server, "nurture", &body, Sig::V1).0, 200);
    let (status, answer) = post(
        &server,
        "nurture",
        &contact_body(4, "x@example.com"),
        Sig::None,
    );
    assert_eq!(
        (status, answer["reason"].as_str()),
        (503, Some("signature_downgrade"))
    );
    let other = contact_body(5, "y@example.com");
    assert_eq!(post(&server, "big-list", &other, Sig::None).0, 503);
    let logs = server.stop();
    assert!(logs.contains("accepting an UNSIGNED post"), "{logs}");
    let rows = inbox(dir.path());
    let mut stored: Vec<(String, String)> = strings(&rows, "webhook_id")
        .into_iter()
        .zip(strings(&rows, "signature"))
        .collect();
    stored.sort();
    assert_eq!(
        stored,
        [
            // The connector is in dry run: such posts are only ever recorded as dry runs.
            ("nurture", "unsigned (dry run)"),
            ("nurture", "v1")
        ]
        .map(|(w, s)| (w.to_string(), s.to_string()))
    );
    // A replay is a signed post sent again: an unsigned body is not kept to recognise one
    // (strangers' bodies were remembered for three days).
    let mut hashed: Vec<(String, bool)> = strings(&rows, "signature")
        .into_iter()
        .zip(strings(&rows, "body_hash").iter().map(|h| !h.is_empty()))
        .collect();
    hashed.sort();
    assert_eq!(
        hashed,
        [
            ("unsigned (dry run)".to_string(), false),
            ("v1".to_string(), true)
        ]
    );
}

#[test]
fn no_secret_configured_is_503_so_hubspot_retries() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&config(dir.path(), ""), &dir.path().join("data"), &[]);
    for vid in 1..=5 {
        let (status, body) = post(
            &server,
            "nurture",
            &contact_body(vid, "a@example.com"),
            Sig::V2,
        );
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["reason"], "no_secret");
    }
    let logs = server.stop();
    // One error line, not one per post (the log is what this promise is about).
    let errors = logs
        .lines()
        .filter(|l| l.contains("reason=\"no_secret\""))
        .count();
    assert_eq!(errors, 1, "{logs}");
}

/// A start that cannot listen fails before it makes anything: it made the data folder (and
/// its datasets) first, which readers then took for real data (an audit).
#[test]
fn a_start_that_cannot_listen_makes_no_data_folder() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().to_string();
    let data = dir.path().join("data");
    for args in [
        [
            "serve",
            "--listen",
            port.as_str(),
            "--admin-listen",
            "127.0.0.1:0",
        ],
        [
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            port.as_str(),
        ],
    ] {
        let out = common::run(
            &config(dir.path(), ""),
            &data,
            &args,
            &[("TEST_SECRET", SECRET)],
        );
        let said = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {said}");
        assert!(said.contains(&format!("cannot listen on {port}")), "{said}");
        assert!(!data.exists(), "{args:?}");
    }
    // Refused by the data folder's lock (another `serve` sends from it): said so, and no
    // panic (the config's watch, started before the listeners then, panicked in the
    // runtime's shutdown in most starts refused a port; an audit).
    let lock = std::fs::File::create({
        std::fs::create_dir_all(&data).unwrap();
        data.join("dispatch.lock")
    })
    .unwrap();
    lock.lock().unwrap();
    for _ in 0..4 {
        let out = common::run(
            &config(dir.path(), ""),
            &data,
            &common::SERVE_ON_ANY_PORTS,
            &[("TEST_SECRET", SECRET)],
        );
        let said = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{said}");
        assert!(said.contains("another sendtime"), "{said}");
        assert!(!said.contains("panicked"), "{said}");
    }
}

#[test]
fn a_torn_part_is_quarantined_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    for vid in 1..=3 {
        assert_eq!(
            post(
                &server,
                "nurture",
                &contact_body(vid, "t@example.com"),
                Sig::V2
            )
            .0,
            200
        );
    }
    server.stop();
    let part = std::fs::read_dir(dir.path().join("data/inbox"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "parquet"))
        .unwrap();
    let len = std::fs::metadata(&part).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&part)
        .unwrap()
        .set_len(len / 2)
        .unwrap();

    let server = start(dir.path());
    let moved = dir
        .path()
        .join("data/quarantine/inbox")
        .join(part.file_name().unwrap());
    assert!(moved.exists());
    assert_eq!(std::fs::metadata(&moved).unwrap().len(), len / 2);
    assert_eq!(
        post(
            &server,
            "nurture",
            &contact_body(9, "after@example.com"),
            Sig::V2
        )
        .0,
        200
    );
    server.stop();
}

/// Slow clients are cut off: headers must arrive within 10 s and a body within 10 s more; an
/// oversized chunked body (no Content-Length to refuse it by) still gets 413.
#[test]
fn slow_or_oversized_requests_are_cut_off() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let addr = server.url("").trim_start_matches("http://").to_string();
    let connect = || {
        let s = std::net::TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s
    };
    // Headers that never end.
    let mut slow_headers = connect();
    slow_headers
        .write_all(b"POST /hooks/nurture HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    // Headers, then a body that stops half way.
    let mut slow_body = connect();
    slow_body
        .write_all(
            b"POST /hooks/nurture HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"vid\":",
        )
        .unwrap();
    let started = std::time::Instant::now();
    let mut answer = String::new();
    slow_body.read_to_string(&mut answer).ok();
    // 429, which HubSpot sends again (it retries no other 4xx), after 5 s in its unit for
    // workflow webhooks, milliseconds.
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("retry-after: 5000\r\n"),
        "{answer}"
    );
    let mut rest = Vec::new();
    let n = slow_headers.read_to_end(&mut rest).unwrap_or(0);
    assert!(started.elapsed() < Duration::from_secs(25));
    assert!(
        n == 0 || String::from_utf8_lossy(&rest).starts_with("HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&rest)
    );

    // Chunked, over max_body_bytes (64 KiB here).
    let mut big = connect();
    big.write_all(b"POST /hooks/nurture HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        .unwrap();
    for _ in 0..20 {
        let chunk = vec![b'x'; 8192];
        if big
            .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .is_err()
            || big.write_all(&chunk).is_err()
            || big.write_all(b"\r\n").is_err()
        {
            break;
        }
    }
    let mut answer = String::new();
    big.read_to_string(&mut answer).ok();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    for reason in ["body_timeout", "too_large"] {
        let series = format!("sendtime_webhooks_rejected_total{{reason=\"{reason}\"}}");
        assert!(common::metric(&server, &series) > 0, "{series}");
    }
    server.stop();
}

/// Strangers who send the headers of a large post and then a byte at a time cannot starve
/// signed posts: the body budget (128 MiB) counts bytes received, not bodies begun. Three
/// posts declaring 64 MiB each would hold the whole budget if what they declared were
/// counted, and 400 more hold connections.
#[test]
fn a_flood_of_stalled_bodies_does_not_block_signed_posts() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let cfg = TestConfig {
        env: "TEST",
        server: "max_body_bytes = 67108864",
        connector: "dry_run = true",
        hooks: HOOKS,
        ..TestConfig::default()
    }
    .write(dir.path());
    let server = Server::start(&cfg, &dir.path().join("data"), &[("TEST_SECRET", SECRET)]);
    let addr = server.url("").trim_start_matches("http://").to_string();
    let stall = |declared: usize| {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        // A well-formed signature header: the body is read before it can be checked.
        let head = format!(
            "POST /hooks/nurture HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {declared}\r\n\
             X-HubSpot-Signature: {}\r\nX-HubSpot-Signature-Version: v2\r\n\r\n{{",
            "0".repeat(64)
        );
        s.write_all(head.as_bytes()).unwrap();
        s
    };
    let flood: Vec<std::net::TcpStream> = (0..3)
        .map(|_| stall(64 << 20))
        .chain((0..400).map(|_| stall(60_000)))
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    for vid in 0..10 {
        let (status, body) = post(
            &server,
            "nurture",
            &contact_body(70_000 + vid, &format!("f{vid}@example.com")),
            Sig::V2,
        );
        assert_eq!(status, 200, "signed post {vid} during the flood: {body}");
    }
    drop(flood);
    server.stop();
    assert_eq!(inbox(dir.path()).height(), 10);
}

/// Overload that HubSpot understands: when the bodies being received (posts with a well-formed
/// signature header, which are read before it can be checked) hold the whole budget, a signed
/// post gets 429 with `Retry-After` (HubSpot retries a 429 at that pace; it never
/// retries other 4xx), and once the load is gone the same post is stored.
#[test]
fn overload_answers_429_with_retry_after() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let cfg = TestConfig {
        env: "TEST",
        server: "max_body_bytes = 2097152",
        connector: "dry_run = true",
        hooks: HOOKS,
        ..TestConfig::default()
    }
    .write(dir.path());
    let server = Server::start(&cfg, &dir.path().join("data"), &[("TEST_SECRET", SECRET)]);
    let addr = server.url("").trim_start_matches("http://").to_string();
    // Stalled bodies that hold all of the budget but 200 bytes at most: each declares one
    // byte more than it sends, which its buffer may grow to.
    let budget = sendtime::receiver::body::BODY_BUDGET_BYTES - 200;
    let sizes: Vec<usize> = (0..budget.div_ceil(1_000_000))
        .map(|i| (budget - i * 1_000_000).min(1_000_000))
        .collect();
    // The first stalled body's clock starts with its headers.
    let loaded = std::time::Instant::now();
    let load: Vec<std::net::TcpStream> = sizes
        .iter()
        .map(|&n| {
            let mut s = std::net::TcpStream::connect(&addr).unwrap();
            s.write_all(
                format!(
                    "POST /hooks/nurture HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\
                     X-HubSpot-Signature: {}\r\nX-HubSpot-Signature-Version: v2\r\n\r\n",
                    n + 1,
                    "0".repeat(64)
                )
                .as_bytes(),
            )
            .unwrap();
            s.write_all(&vec![b' '; n]).unwrap();
            s
        })
        .collect();
    let path = "/hooks/nurture";
    let signed = |body: &[u8]| {
        common::http()
            .post(server.url(path))
            .header(
                "X-HubSpot-Signature",
                sign_v2(
                    SECRET.as_bytes(),
                    "POST",
                    &format!("{PUBLIC_URL}{path}"),
                    body,
                ),
            )
            .header("X-HubSpot-Signature-Version", "v2")
            .body(body.to_vec())
            .send()
            .unwrap()
    };
    // The server has read the stalled bodies once a post is refused: probes of other contacts
    // until one is (those taken before are counted). It cuts each stalled body off
    // BODY_READ_TIMEOUT after its headers, so the probes stop well before that.
    let mut taken = 0;
    let probing = sendtime::receiver::refusal::BODY_READ_TIMEOUT
        .saturating_sub(loaded.elapsed() + Duration::from_secs(3));
    assert!(
        probing > Duration::from_secs(1),
        "sending the stalled bodies took {:?}: no time left to probe",
        loaded.elapsed()
    );
    let refused = eventually(probing, || {
        let probe = contact_body(81_000 + taken, &format!("probe{taken}@example.com"));
        let status = signed(&probe).status();
        taken += i64::from(status.as_u16() == 200);
        (status.as_u16() == 429).then_some(())
    });
    assert!(refused.is_some(), "never busy; logs:\n{}", server.logs());
    let body = contact_body(80_000, "busy@example.com");
    let busy = signed(&body);
    assert_eq!(busy.status().as_u16(), 429);
    assert_eq!(busy.headers()["retry-after"], "5000", "milliseconds");
    let answer: serde_json::Value = busy.json().unwrap();
    assert_eq!(answer["reason"], "busy");
    drop(load);
    let stored = eventually(Duration::from_secs(30), || {
        (signed(&body).status().as_u16() == 200).then_some(())
    });
    assert!(stored.is_some(), "still busy; logs:\n{}", server.logs());
    server.stop();
    assert_eq!(inbox(dir.path()).height() as i64, 1 + taken);
}

/// A client-secret rotation: while `client_secret_env` names the new secret and the old one,
/// posts signed with either are stored (a metric says which verified them); once the old one
/// is removed, a post signed with it alone is refused.
#[test]
fn a_rotated_secret_is_accepted_until_it_is_removed() {
    const NEW: &str = "the-new-client-secret";
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let write = |secrets: &str| {
        let text = dry_run_text().replace(
            "client_secret_env = \"TEST_SECRET\"",
            &format!("client_secret_env = {secrets}"),
        );
        let path = dir.path().join("webhooks.toml");
        std::fs::write(&path, text).unwrap();
        path
    };
    let signed_with = |server: &Server, secret: &str, vid: i64| {
        let body = String::from_utf8(contact_body(vid, &format!("r{vid}@example.com"))).unwrap();
        common::post_signed(&common::http(), server, secret, "/hooks/nurture", body)
    };
    let env = [("TEST_SECRET_NEW", NEW), ("TEST_SECRET", SECRET)];
    let config = write(r#"["TEST_SECRET_NEW", "TEST_SECRET"]"#);
    let server = Server::start(&config, &data, &env);
    assert_eq!(
        signed_with(&server, SECRET, 1),
        200,
        "old secret during rotation"
    );
    assert_eq!(
        signed_with(&server, NEW, 2),
        200,
        "new secret during rotation"
    );
    assert_eq!(signed_with(&server, "neither", 3), 503);
    let metrics = common::http()
        .get(server.admin_url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    for name in ["TEST_SECRET_NEW", "TEST_SECRET"] {
        let line = format!(
            "sendtime_signature_secret_total{{connector=\"main\",secret_env=\"{name}\"}} 1"
        );
        assert!(metrics.contains(&line), "{line} in\n{metrics}");
    }
    server.stop();

    let config = write(r#"["TEST_SECRET_NEW"]"#);
    let server = Server::start(&config, &data, &env);
    assert_eq!(
        signed_with(&server, SECRET, 4),
        503,
        "old secret after rotation: refused, as retryable (it may be ours to fix)"
    );
    assert_eq!(signed_with(&server, NEW, 5), 200);
    server.stop();
    assert_eq!(inbox(dir.path()).height(), 3);
}

/// The Parquet files in `dir`, sorted (none when it is not there).
fn parts(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .map(|r| r.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    v.retain(|p: &std::path::PathBuf| p.extension().is_some_and(|e| e == "parquet"));
    v.sort();
    v
}

/// A part whose bytes changed after it was written (one flipped bit) is never read as if it
/// were fine: it is quarantined with its checksum, and the other parts are read as before.
#[test]
fn a_flipped_bit_in_a_part_is_caught_by_its_checksum_and_quarantined() {
    let dir = tempfile::tempdir().unwrap();
    let inbox_dir = dir.path().join("data/inbox");
    for round in 0..2 {
        let server = start(dir.path());
        for vid in 0..5 {
            let vid = 90_000 + round * 10 + vid;
            let (status, body) = post(
                &server,
                "nurture",
                &contact_body(vid, &format!("b{vid}@example.com")),
                Sig::V2,
            );
            assert_eq!(status, 200, "{body}");
        }
        server.stop();
    }
    let written = parts(&inbox_dir);
    assert_eq!(written.len(), 2, "{written:?}");
    for p in &written {
        assert!(p.with_extension("xxh3").exists(), "{p:?} has its checksum");
    }
    // One bit in the middle of the first part.
    let victim = written[0].clone();
    let mut bytes = std::fs::read(&victim).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x04;
    std::fs::write(&victim, bytes).unwrap();

    let server = start(dir.path());
    let quarantined = dir
        .path()
        .join("data/quarantine/inbox")
        .join(victim.file_name().unwrap());
    assert!(quarantined.exists(), "{}", server.logs());
    assert!(quarantined.with_extension("xxh3").exists());
    assert_eq!(parts(&inbox_dir), [written[1].clone()]);
    // The other part's receipts are still pending: a repeat post is a duplicate.
    let (status, body) = post(
        &server,
        "nurture",
        &contact_body(90_010, "b90010@example.com"),
        Sig::V2,
    );
    assert_eq!((status, body["status"].as_str()), (200, Some("duplicate")));
    server.stop();
}

/// An inbox part damaged while `serve` runs, before planning read it, is set aside with its
/// receipts unplanned: those no longer wait, so a later post of one of their contacts is a new
/// receipt, HubSpot's retry of the same post too (they were answered `duplicate`, and never
/// sent, until a restart: an audit). The receipts of the other parts still wait.
#[test]
fn a_part_set_aside_before_it_was_planned_no_longer_holds_its_contacts() {
    let dir = tempfile::tempdir().unwrap();
    // A tick every 15 s: time to damage a part between two.
    let config = TestConfig {
        env: "TEST",
        server: "max_body_bytes = 65536",
        tables: "[scheduler]\ncron = \"*/15 * * * * *\"",
        connector: "dry_run = true",
        hooks: HOOKS,
    }
    .write(dir.path());
    // The dispatcher an hour behind: nothing comes due while the test runs.
    let clock = dir.path().join("clock");
    common::set_clock(&clock, now_ms() - 3_600_000);
    let server = Server::start(
        &config,
        &dir.path().join("data"),
        &[
            ("TEST_SECRET", SECRET),
            ("SENDTIME_CLOCK_FILE", clock.to_str().unwrap()),
        ],
    );
    let inbox_dir = dir.path().join("data/inbox");
    let inbox_parts = || parts(&inbox_dir);
    let answer = |body: &[u8]| {
        let (status, answer) = post(&server, "nurture", body, Sig::V2);
        assert_eq!(status, 200, "{answer}");
        answer["status"].as_str().unwrap().to_string()
    };
    // A contact planned as usual.
    let kept = contact_body(7_001, "kept@example.com");
    assert_eq!(answer(&kept), "accepted");
    common::wait_ticks(&server, 1);
    // Another, whose part is damaged just after a tick (tried again should one come first).
    let mut damaged = None;
    for vid in 7_100..7_104 {
        common::wait_ticks(&server, 1);
        let (before, ticks) = (inbox_parts(), common::ticks(&server));
        let body = contact_body(vid, "lost@example.com");
        assert_eq!(answer(&body), "accepted");
        let part = eventually(Duration::from_secs(10), || {
            inbox_parts().into_iter().find(|p| !before.contains(p))
        })
        .expect("the post's part is written");
        let mut bytes = std::fs::read(&part).unwrap();
        let at = bytes.len() / 2;
        bytes[at] ^= 0x04;
        std::fs::write(&part, bytes).unwrap();
        if common::ticks(&server) == ticks {
            damaged = Some((body, part));
            break;
        }
    }
    let (body, part) = damaged.expect("a part damaged before a tick read it");
    let aside = dir
        .path()
        .join("data/quarantine/inbox")
        .join(part.file_name().unwrap());
    eventually(Duration::from_secs(60), || aside.exists().then_some(()))
        .unwrap_or_else(|| panic!("the damaged part is set aside; logs:\n{}", server.logs()));
    // The tick that set it aside (or the one under way) lets them go at the next.
    common::wait_ticks(&server, 2);
    assert_eq!(
        answer(&body),
        "accepted",
        "HubSpot's retry of the post is taken"
    );
    assert_eq!(
        answer(&kept),
        "duplicate",
        "the contact planned still waits"
    );
    server.stop();
}

/// The admin surface is never on the public listener: its pages, data and buttons answer
/// only on `admin_listen`; the public one serves webhooks, actions and `/healthz`.
#[test]
fn status_and_metrics_are_only_on_the_admin_listener() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let get = |url: String| common::get(url).unwrap().status().as_u16();
    for path in [
        "/",
        "/dashboard.js",
        "/status",
        "/metrics",
        "/contact?q=a@example.com",
    ] {
        assert_eq!(get(server.url(path)), 404, "public {path}");
        assert_eq!(get(server.admin_url(path)), 200, "admin {path}");
    }
    let http = common::http();
    let post = |url: String| {
        (http.post(url).json(&serde_json::json!({"id": "nurture"})))
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    for path in ["/pause", "/resume", "/lift"] {
        assert_eq!(post(server.url(path)), 404, "public {path}");
    }
    assert_eq!(post(server.admin_url("/pause")), 200);
    assert_eq!(get(server.url("/healthz")), 200);
    assert_eq!(get(server.admin_url("/healthz")), 200);
    assert_eq!(
        get(server.admin_url("/hooks/nurture")),
        404,
        "no webhooks on admin"
    );
    server.stop();
}

/// A portal id that is present must be the connector's and a valid integer; with
/// `require_portal_id`, one must be present.
#[test]
fn a_malformed_or_missing_portal_id_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "require_portal_id = true");
    let server = Server::start(&cfg, &dir.path().join("data"), &[("TEST_SECRET", SECRET)]);
    let with_portal = |vid: i64, portal: &str| {
        String::from_utf8(contact_body(vid, &format!("p{vid}@example.com")))
            .unwrap()
            .replace("\"portal-id\": 62515", &format!("\"portal-id\": {portal}"))
            .into_bytes()
    };
    for (vid, portal) in [
        (1, "99999.0"),
        (2, "62516.5"),
        (3, "\"99999x\""),
        (4, "62515.0"),
    ] {
        let (status, body) = post(&server, "nurture", &with_portal(vid, portal), Sig::V2);
        assert_eq!(status, 401, "{portal}: {body}");
        assert_eq!(body["reason"], "wrong_portal");
    }
    let none = String::from_utf8(contact_body(5, "p5@example.com"))
        .unwrap()
        .replace("\"portal-id\": 62515,", "")
        .into_bytes();
    assert_eq!(post(&server, "nurture", &none, Sig::V2).0, 401, "required");
    assert_eq!(
        post(&server, "nurture", &with_portal(6, "\"62515\""), Sig::V2).0,
        200
    );
    server.stop();
    assert_eq!(inbox(dir.path()).height(), 1);
}

/// A bad byte in the middle of the write-ahead log loses only its own record: the records
/// after it are replayed, and the segment is kept aside, not deleted.
#[test]
fn a_damaged_log_frame_loses_only_itself_and_the_segment_is_kept() {
    use sendtime::datasets::inbox::WAL_DIR;
    use sendtime::store::wal::Segment;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let wal = data.join(WAL_DIR);
    // What a server acknowledged and then lost power before writing it as Parquet.
    let mut segment = Segment::create(&wal, "inbox").unwrap();
    let records = log_records(256, "w");
    segment.append(records.iter().map(Vec::as_slice)).unwrap();
    let name = segment.path.file_name().unwrap().to_owned();
    drop(segment);
    // Flip one byte inside record 85's payload (past the segment's magic).
    let offset: usize = sendtime::store::wal::MAGIC.len()
        + records[..85].iter().map(|r| 8 + r.len()).sum::<usize>()
        + 8
        + 20;
    let path = wal.join(&name);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[offset] ^= 0x01;
    std::fs::write(&path, bytes).unwrap();

    let server = start(dir.path());
    server.stop();
    let contacts = contact_ids(dir.path());
    assert_eq!(contacts.len(), 255, "every record but the damaged one");
    assert!(!contacts.contains(&85));
    assert!(contacts.contains(&86) && contacts.contains(&255));
    assert!(data.join("quarantine").join(WAL_DIR).join(&name).exists());
    assert!(!path.exists());
}

/// `n` receipts as the inbox's write-ahead log holds them: what a server acknowledged and
/// then lost power before writing as Parquet.
fn log_records(n: i64, prefix: &str) -> Vec<Vec<u8>> {
    use sendtime::config::WebhookType;
    use sendtime::datasets::inbox::Receipt;
    (0..n)
        .map(|i| {
            serde_json::to_vec(&Receipt {
                receipt_id: ulid::Ulid::generate().to_string(),
                webhook_id: "nurture".into(),
                webhook_type: WebhookType::Next24Hours,
                contact_id: Some(i),
                email: Some(format!("{prefix}{i}@example.com")),
                portal_id: Some(62515),
                received_at_ms: now_ms(),
                signature: "v2".into(),
                config: "c".into(),
                callback_id: None,
                body_hash: None,
                time_zone: None,
                hold_ends_ms: None,
            })
            .unwrap()
        })
        .collect()
}

/// A log segment cut exactly at a frame boundary looks like a shorter, intact log to any frame
/// check; its allocation gives it away: the records before the cut are replayed, the segment is
/// kept aside, and an error says acknowledged posts may be lost.
#[test]
fn a_log_cut_at_a_frame_boundary_is_detected_and_kept() {
    use sendtime::datasets::inbox::WAL_DIR;
    use sendtime::store::wal::{MAGIC, Segment};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let wal = data.join(WAL_DIR);
    let mut segment = Segment::create(&wal, "inbox").unwrap();
    let records = log_records(256, "c");
    segment.append(records.iter().map(Vec::as_slice)).unwrap();
    let path = segment.path.clone();
    drop(segment);
    let boundary = MAGIC.len() + records[..128].iter().map(|r| 8 + r.len()).sum::<usize>();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(boundary as u64)
        .unwrap();

    let server = start(dir.path());
    server.stop();
    assert_eq!(
        inbox(dir.path()).height(),
        128,
        "the records before the cut"
    );
    assert!(
        data.join("quarantine")
            .join(WAL_DIR)
            .join(path.file_name().unwrap())
            .exists(),
        "the cut segment is kept"
    );
}

/// What is not an email address is refused (400), and a signature header that is not text
/// is a bad signature, never an absent one: no downgrade to v1, no pass as unsigned.
/// Anyone may post where unsigned posts are allowed: while as many receipts taken unsigned
/// wait as may (counted again at start-up from the inbox), one more unsigned post gets 503
/// `unsigned_full`; a signed post is taken.
#[test]
fn unsigned_posts_are_refused_while_too_many_taken_unsigned_wait() {
    use sendtime::datasets::{inbox::Receipt, pending::MAX_UNSIGNED};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let waiting: Vec<Receipt> = (0..MAX_UNSIGNED as i64)
        .map(|i| Receipt {
            webhook_type: sendtime::config::WebhookType::NextWeek,
            signature: "unsigned (dry run)".into(),
            ..common::inbox_row(
                &ulid::Ulid::generate().to_string(),
                "nurture",
                1_000_000 + i,
                Some(format!("waiting{i}@example.com")),
                now_ms(),
            )
        })
        .collect();
    common::write_inbox(&data, &waiting);
    let cfg = config(dir.path(), "allow_unsigned = true");
    let server = Server::start(&cfg, &data, &[("TEST_SECRET", SECRET)]);
    let body = contact_body(1, "one-more@example.com");
    let (status, answer) = post(&server, "nurture", &body, Sig::None);
    assert_eq!(
        (status, &answer["reason"]),
        (503, &"unsigned_full".into()),
        "{answer}"
    );
    let body = contact_body(2, "signed@example.com");
    assert_eq!(post(&server, "nurture", &body, Sig::V2).0, 200);
}

#[test]
fn odd_emails_and_non_text_signature_headers_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "allow_unsigned = true");
    let server = Server::start(&cfg, &dir.path().join("data"), &[("TEST_SECRET", SECRET)]);
    for (vid, email) in [
        (1, ".."),
        (2, "a@b\r\nX-Injected: 1"),
        (3, "no-at-sign"),
        (4, "../x@example.com"),
    ] {
        let body = String::from_utf8(contact_body(vid, "ada@example.com"))
            .unwrap()
            .replace(
                "ada@example.com",
                &email.replace('\r', "\\r").replace('\n', "\\n"),
            )
            .into_bytes();
        let (status, answer) = post(&server, "nurture", &body, Sig::V2);
        assert_eq!(status, 400, "{email:?}: {answer}");
        assert_eq!(answer["reason"], "bad_email", "{email:?}");
    }
    // A list add needs only the record id: the odd email is dropped and the contact stored.
    let body = String::from_utf8(contact_body(77, "ada@example.com"))
        .unwrap()
        .replace("ada@example.com", "no-at-sign")
        .into_bytes();
    // (Signed v1, as the v1 post below: the connector's webhooks share what they have taken.)
    let (status, answer) = post(&server, "big-list", &body, Sig::V1);
    assert_eq!(status, 200, "{answer}");
    let good = contact_body(10, "sig@example.com");
    let garbage = reqwest::header::HeaderValue::from_bytes(b"\xff\xfe\xfd").unwrap();
    let send = |extra: &[(&str, reqwest::header::HeaderValue)], v1: bool| {
        let mut req = common::http()
            .post(server.url("/hooks/nurture"))
            .body(good.clone());
        if v1 {
            req = req
                .header("X-HubSpot-Signature", sign_v1(SECRET.as_bytes(), &good))
                .header("X-HubSpot-Signature-Version", "v1");
        }
        for (name, value) in extra {
            req = req.header(*name, value.clone());
        }
        let resp = req.send().unwrap();
        let status = resp.status().as_u16();
        (status, resp.json::<serde_json::Value>().unwrap())
    };
    // A good v1 signature beside a v3 header of non-text bytes: not a v1 post.
    let (status, answer) = send(&[("X-HubSpot-Signature-v3", garbage.clone())], true);
    assert_eq!(
        (status, answer["reason"].as_str()),
        (503, Some("signature_malformed"))
    );
    // With allow_unsigned, a non-text signature does not pass as unsigned.
    let (status, answer) = send(&[("X-HubSpot-Signature", garbage)], false);
    assert_eq!(
        (status, answer["reason"].as_str()),
        (503, Some("signature_malformed"))
    );
    // Still accepted: the good v1 post alone, beside the list's contact.
    assert_eq!(send(&[], true).0, 200);
    server.stop();
    let rows = inbox(dir.path());
    assert_eq!(rows.height(), 2);
    let listed = rows
        .filter(
            &rows
                .column("webhook_id")
                .unwrap()
                .str()
                .unwrap()
                .equal("big-list"),
        )
        .unwrap();
    assert_eq!(
        listed.column("contact_id").unwrap().i64().unwrap().get(0),
        Some(77)
    );
    assert_eq!(listed.column("email").unwrap().null_count(), 1);
}

/// With `min_signature_version`, weaker signatures are refused: a captured v1 post (it signs
/// only the body) can no longer be replayed to another webhook of the connector.
#[test]
fn weaker_signatures_than_the_connectors_minimum_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "min_signature_version = \"v2\"");
    let server = Server::start(&cfg, &dir.path().join("data"), &[("TEST_SECRET", SECRET)]);
    let (status, answer) = post(
        &server,
        "nurture",
        &contact_body(1, "m1@example.com"),
        Sig::V1,
    );
    assert_eq!(
        (status, answer["reason"].as_str()),
        (503, Some("signature_too_weak"))
    );
    assert_eq!(
        post(
            &server,
            "nurture",
            &contact_body(2, "m2@example.com"),
            Sig::V2
        )
        .0,
        200
    );
    assert_eq!(
        post(
            &server,
            "nurture",
            &contact_body(3, "m3@example.com"),
            Sig::V3
        )
        .0,
        200
    );
    server.stop();
    assert_eq!(inbox(dir.path()).height(), 2);
}

/// By default (`"auto"`) an endpoint that has taken a v3-signed post refuses posts carrying
/// only an older signature (a captured post with its v3 headers stripped), after a restart
/// too, and so does a webhook of its connector that has taken no post yet; a fixed
/// `min_signature_version` lifts it.
#[test]
fn a_post_stripped_to_an_older_signature_is_refused_once_a_stronger_one_was_taken() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let body = |vid: i64| contact_body(vid, &format!("r{vid}@example.com"));
    // A post refused for its body raises nothing.
    assert_eq!(
        post(&server, "nurture", &contact_body(9, "no-at"), Sig::V3).0,
        400
    );
    assert_eq!(post(&server, "nurture", &body(1), Sig::V1).0, 200);
    assert_eq!(post(&server, "nurture", &body(2), Sig::V3).0, 200);
    let (status, answer) = post(&server, "nurture", &body(3), Sig::V1);
    assert_eq!(
        (status, answer["reason"].as_str()),
        (503, Some("signature_downgrade"))
    );
    assert_eq!(post(&server, "nurture", &body(4), Sig::V2).0, 503);
    // A webhook of the same connector that has taken no post yet starts where its sibling is:
    // a captured post of one, stripped, is not taken at the other.
    let (status, answer) = post(&server, "big-list", &body(5), Sig::V1);
    assert_eq!(
        (status, answer["reason"].as_str()),
        (503, Some("signature_downgrade"))
    );
    assert_eq!(post(&server, "big-list", &body(10), Sig::V3).0, 200);
    server.stop();

    let server = start(dir.path());
    assert_eq!(post(&server, "nurture", &body(6), Sig::V1).0, 503);
    assert_eq!(post(&server, "nurture", &body(7), Sig::V3).0, 200);
    server.stop();

    let cfg = config(dir.path(), "min_signature_version = \"v1\"");
    let server = Server::start(&cfg, &dir.path().join("data"), &[("TEST_SECRET", SECRET)]);
    assert_eq!(post(&server, "nurture", &body(8), Sig::V1).0, 200);
    server.stop();
    let mut contacts = contact_ids(dir.path());
    contacts.sort();
    assert_eq!(contacts, [1, 2, 7, 8, 10]);
}

/// A request head longer than the 64 KiB cap is answered 431 at once, instead of being held
/// in memory until the header deadline (each such connection could hold ~400 KB).
#[test]
fn an_oversized_request_head_is_refused_at_once() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let addr = server.url("").trim_start_matches("http://").to_string();
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"POST /hooks/nurture HTTP/1.1\r\nHost: x\r\nX-Big: ")
        .unwrap();
    let line = vec![b'a'; 100 * 1024];
    let _ = s.write_all(&line);
    let mut answer = vec![0u8; 64];
    let n = s.read(&mut answer).unwrap_or(0);
    let answer = String::from_utf8_lossy(&answer[..n]).to_string();
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:?}");
    // The server goes on serving.
    assert_eq!(
        post(
            &server,
            "nurture",
            &contact_body(1, "h@example.com"),
            Sig::V2
        )
        .0,
        200
    );
    server.stop();
}

/// A post repeated after its contact was sent (HubSpot's retry of a lost 200, or a captured
/// post replayed) is a duplicate for three days, across a restart; the same body to another
/// webhook is a new receipt.
#[test]
fn a_replay_after_the_contact_was_sent_is_a_duplicate() {
    use sendtime::datasets::outcomes::{self, Status};
    let dir = tempfile::tempdir().unwrap();
    let hooks: &[&Hook] = &[
        &Hook {
            id: "now",
            kind: "IMMEDIATE",
            target: "workflow_id = 1",
        },
        &Hook {
            id: "other",
            kind: "IMMEDIATE",
            target: "workflow_id = 2",
        },
    ];
    let cfg = TestConfig {
        env: "TEST",
        tables: "[scheduler]\ncron = \"* * * * * *\"",
        connector: "dry_run = true",
        hooks,
        ..TestConfig::default()
    }
    .write(dir.path());
    let data = dir.path().join("data");
    let start = || Server::start(&cfg, &data, &[("TEST_SECRET", SECRET)]);
    let server = start();
    let body = contact_body(42, "replay@example.com");
    let (status, first) = post(&server, "now", &body, Sig::V2);
    assert_eq!((status, first["status"].as_str()), (200, Some("accepted")));
    let sent = common::eventually(Duration::from_secs(20), || {
        let rows = outcomes::read(&outcomes::dataset(&data).ok()?).ok()?;
        rows.iter()
            .any(|r| r.status == Status::DryRun)
            .then_some(())
    });
    assert!(sent.is_some(), "not dispatched; logs:\n{}", server.logs());
    let (status, again) = post(&server, "now", &body, Sig::V2);
    assert_eq!((status, again["status"].as_str()), (200, Some("duplicate")));
    assert_eq!(again["receipt_id"], first["receipt_id"]);
    server.stop();
    // A tick told it is a week later archives nothing received in real time just now.
    let week_on = (now_ms() + 7 * 86_400_000).to_string();
    common::sendtime(&cfg, &data, &["tick", "--now", &week_on], &[]);

    let server = start();
    let (status, again) = post(&server, "now", &body, Sig::V2);
    assert_eq!(
        (status, again["status"].as_str()),
        (200, Some("duplicate")),
        "after a restart and a tick a week on"
    );
    let (status, other) = post(&server, "other", &body, Sig::V2);
    assert_eq!(
        (status, other["status"].as_str()),
        (200, Some("accepted")),
        "another webhook"
    );
    server.stop();
    assert_eq!(inbox(dir.path()).height(), 2);
}

/// A problem with `serve`'s flags is the command line's, not the file's: it was printed as
/// `webhooks.toml:1:1` under "config ... is invalid", sending the operator to a sound file.
/// A token missing from the environment does not call the file invalid either.
#[test]
fn serve_names_the_command_line_for_its_flags_and_the_environment_for_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path(), "");
    let data = dir.path().join("data");
    let same = [
        "serve",
        "--listen",
        "127.0.0.1:1",
        "--admin-listen",
        "127.0.0.1:1",
    ];
    let out = common::run(&path, &data, &same, &[("TEST_SECRET", SECRET)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("\ncommand line: the admin surface (127.0.0.1:1) and the public listener"),
        "{err}"
    );
    assert!(
        !err.contains(":1:1:") && !err.contains("is invalid"),
        "{err}"
    );
    // Sending, without the token: the file's line that names it, under "cannot start".
    let sending = TestConfig {
        env: "TEST",
        hooks: HOOKS,
        ..TestConfig::default()
    }
    .write(dir.path());
    let out = common::run(&sending, &data, &["serve"], &[("TEST_SECRET", SECRET)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("cannot start with config") && err.contains("TEST_TOKEN"),
        "{err}"
    );
    assert!(!err.contains("is invalid"), "{err}");
}

/// A client that pipelines requests and reads none of the answers is dropped once they have
/// waited 30 s to be written: it held its connection, and one of the listener's slots, for
/// ever (hyper's header timeout runs only while it waits for a request).
#[test]
fn a_client_that_reads_no_answers_is_dropped() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let stream = std::net::TcpStream::connect(&server.addr).unwrap();
    // Far more answers than the kernel's buffers on both sides hold.
    const REQUESTS: usize = 400_000;
    let mut writer = stream.try_clone().unwrap();
    let (wrote, written) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
        let all: Vec<u8> = request
            .iter()
            .copied()
            .cycle()
            .take(request.len() * REQUESTS)
            .collect();
        // Blocks once the server stops reading; fails once it closes.
        let _ = wrote.send(writer.write_all(&all).is_err());
    });
    // The server closes the connection 30 s into the stall, and the write fails.
    let failed = written
        .recv_timeout(Duration::from_secs(120))
        .expect("the requests still blocked after 120 s: the connection is held");
    assert!(failed, "all the requests were taken");
    let mut reader = stream;
    reader
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let (mut read, mut buf) = (0usize, vec![0u8; 1 << 16]);
    let ended = loop {
        match reader.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => read += n,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
            // Still open, and nothing more to read: the answers went on being held.
            Err(_) => break false,
        }
    };
    let answer = "HTTP/1.1 200 OK".len();
    assert!(ended, "still open after {read} bytes");
    assert!(
        read < REQUESTS * answer,
        "every answer was written ({read} bytes)"
    );
}
