//! The HubSpot client against the local stand-in over real HTTP: every call's happy path, and
//! every kind of failure sorted into the error the dispatcher acts on.

use std::time::Duration;

use sendtime::clock::Clock;
use sendtime::hubspot::standin::{DEFAULT_TOKEN, Fault, Injection, LogEntry, Options, StandIn};
use sendtime::hubspot::wire::EventsQuery;
use sendtime::hubspot::{ApiError, Client, ClientOptions, EmailEvent, RateLimit, RatePolicy};

fn event(i: usize, created: i64) -> EmailEvent {
    EmailEvent {
        id: format!("ev-{i}"),
        created,
        kind: if i.is_multiple_of(3) { "CLICK" } else { "OPEN" }.into(),
        recipient: Some(format!("person{}@example.com", i % 7)),
        email_campaign_id: Some(42),
        filtered_event: i.is_multiple_of(5),
        extra: Default::default(),
    }
}

fn client(standin: &StandIn) -> Client {
    client_with(standin, Duration::from_secs(10))
}

fn client_with(standin: &StandIn, timeout: Duration) -> Client {
    Client::new(
        &standin.url(),
        DEFAULT_TOKEN,
        ClientOptions {
            timeout,
            requests_per_10s: 1000,
        },
    )
    .unwrap()
}

async fn standin(options: Options) -> StandIn {
    StandIn::start(options).await.unwrap()
}

#[tokio::test]
async fn email_events_page_newest_first_within_the_window() {
    let events: Vec<_> = (0..25).map(|i| event(i, 1_000 + i as i64 * 10)).collect();
    let s = standin(Options {
        events,
        ..Options::default()
    })
    .await;
    let c = client(&s);
    let mut q = EventsQuery {
        start_ms: Some(1_050),
        end_ms: Some(1_200),
        limit: 4,
        ..EventsQuery::default()
    };
    let mut seen = Vec::new();
    loop {
        let page = c.email_events(&q).await.unwrap();
        assert!(page.events.len() <= 4);
        seen.extend(page.events.iter().map(|e| e.created));
        if !page.has_more {
            break;
        }
        q.offset = page.offset;
    }
    let want: Vec<i64> = (5..=20).rev().map(|i| 1_000 + i * 10).collect();
    assert_eq!(seen, want);

    let first = c
        .email_events(&EventsQuery {
            limit: 1,
            ..EventsQuery::default()
        })
        .await
        .unwrap();
    let e = &first.events[0];
    assert_eq!((e.id.as_str(), e.created), ("ev-24", 1_240));
    assert_eq!(e.kind, "CLICK");
    assert_eq!(e.email_campaign_id, Some(42));
    assert!(first.has_more);

    let clicks = c
        .email_events(&EventsQuery {
            event_type: Some("CLICK".into()),
            ..EventsQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(clicks.events.len(), 9);
    assert!(!clicks.has_more);
}

#[tokio::test]
async fn enroll_is_remembered_and_read_back() {
    let s = standin(Options::default()).await;
    let c = client(&s);
    // Only existing contacts can be enrolled.
    match c.enroll(1234, "nobody@example.com").await.unwrap_err() {
        ApiError::Permanent { status: 404, .. } => {}
        other => panic!("expected HubSpot's 404, got {other:?}"),
    }
    s.add_contact("ann+news/letter@example.com", 4242);
    c.enroll(1234, "Ann+news/letter@example.com").await.unwrap();
    c.enroll(77, "ann+news/letter@example.com").await.unwrap();
    let vid = s
        .vid_of("ann+news/letter@example.com")
        .expect("contact exists");
    let workflows = c.enrollments(vid).await.unwrap();
    let ids: Vec<u64> = workflows.iter().map(|w| w.id).collect();
    assert_eq!(ids, [77, 1234]);
    assert_eq!(workflows[1].name, "Workflow 1234");
    assert!(c.enrollments(999_999).await.unwrap().is_empty());
    let log = s.log();
    assert_eq!(log[0].status, Some(404));
    assert_eq!(
        log[1].path,
        "/automation/v2/workflows/1234/enrollments/contacts/Ann%2Bnews%2Fletter%40example.com"
    );
    assert_eq!((log[1].method.as_str(), log[1].status), ("POST", Some(204)));
}

/// A contact read by id answers its primary address now: after a change, the old address no
/// longer enrolls, a merge's secondary one still does; a deleted contact is HubSpot's 404, a
/// contact without an address `None`, and a token without the read scope a missing scope.
#[tokio::test]
async fn a_contacts_address_now_is_read_by_its_id() {
    let s = standin(Options::default()).await;
    let c = client(&s);
    s.add_contact("First@example.com", 5);
    s.add_contact("merged@example.com", 5);
    assert_eq!(
        c.contact_email(5).await.unwrap().as_deref(),
        Some("first@example.com")
    );
    s.change_email(5, "second@example.com");
    assert_eq!(
        c.contact_email(5).await.unwrap().as_deref(),
        Some("second@example.com")
    );
    assert!(matches!(
        c.enroll(1, "first@example.com").await,
        Err(ApiError::Permanent { status: 404, .. })
    ));
    c.enroll(1, "merged@example.com").await.unwrap();
    let read = s.log().into_iter().find(|e| e.method == "GET").unwrap();
    assert_eq!(read.path, "/crm/objects/2026-03/contacts/5");
    assert_eq!(read.query.as_deref(), Some("properties=email"));
    s.delete_contact(5);
    assert!(matches!(
        c.contact_email(5).await,
        Err(ApiError::Permanent { status: 404, .. })
    ));
    s.inject(Injection::next(Fault::Json(serde_json::json!({
        "id": "6",
        "properties": {"email": null, "hs_object_id": "6"},
        "archived": false,
    }))));
    assert_eq!(c.contact_email(6).await.unwrap(), None);
    // An answer far larger than a contact's is refused, not read and parsed whole (every
    // answer was read up to an events page's 32 MB), and one that cannot be read says so in
    // a few hundred characters, not by quoting megabytes.
    let filler = "x".repeat(3 << 20);
    s.inject(Injection::next(Fault::Json(
        serde_json::json!({"id": "6", "properties": {"email": filler}}),
    )));
    match c.contact_email(6).await.unwrap_err() {
        ApiError::Transient { message, .. } => {
            assert!(message.contains("larger than 2 MB"), "{message}")
        }
        other => panic!("expected Transient, got {other:?}"),
    }
    s.inject(Injection::next(Fault::Json(
        serde_json::json!({"id": "6", "properties": "x".repeat(1 << 20)}),
    )));
    match c.contact_email(6).await.unwrap_err() {
        ApiError::Transient { message, .. } => assert!(message.len() < 400, "{}", message.len()),
        other => panic!("expected Transient, got {other:?}"),
    }
    let scoped = standin(Options {
        scopes: Some(vec!["automation".into()]),
        ..Options::default()
    })
    .await;
    scoped.add_contact("first@example.com", 5);
    match client(&scoped).contact_email(5).await {
        Err(ApiError::MissingScopes { scopes, .. }) => {
            assert_eq!(scopes, ["crm.objects.contacts.read"])
        }
        other => panic!("expected a missing scope, got {other:?}"),
    }
}

#[tokio::test]
async fn list_add_reports_added_and_missing_and_is_idempotent() {
    let s = standin(Options::default()).await;
    let c = client(&s);
    let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let r = c
        .add_to_list("987", &ids(&["1", "2", "nope"]))
        .await
        .unwrap();
    assert_eq!(r.record_ids_added, ["1", "2"]);
    assert_eq!(r.record_ids_missing, ["nope"]);
    let r = c.add_to_list("987", &ids(&["2", "3"])).await.unwrap();
    assert_eq!(r.record_ids_added, ["3"]);
    assert_eq!(s.list_members("987"), ["1", "2", "3"]);
}

#[tokio::test]
async fn rate_limit_headers_are_parsed_from_every_response() {
    let s = standin(Options {
        limit_per_10s: 190,
        daily_limit: 500_000,
        ..Options::default()
    })
    .await;
    let c = client(&s);
    assert_eq!(c.last_rate_limit(), None);
    c.enrollments(1).await.unwrap();
    c.enrollments(1).await.unwrap();
    assert_eq!(
        c.last_rate_limit(),
        Some(RateLimit {
            max: Some(190),
            remaining: Some(188),
            interval: Some(Duration::from_secs(10)),
            daily: Some(500_000),
            daily_remaining: Some(499_998),
        })
    );
    // Error answers carry them too.
    s.inject(Injection::next(Fault::Status {
        status: 500,
        message: "boom".into(),
    }));
    c.enrollments(1).await.unwrap_err();
    // Scripted faults are answered before the limits count the call.
    assert_eq!(c.last_rate_limit().unwrap().remaining, Some(188));
}

#[tokio::test]
async fn ten_secondly_429_with_and_without_retry_after() {
    let s = standin(Options::default()).await;
    let c = client(&s);
    s.add_contact("a@example.com", 1);
    s.inject(Injection::next(Fault::RateLimited {
        policy: RatePolicy::TenSecondly,
        retry_after: Some(Duration::from_secs(3)),
    }));
    s.inject(Injection::next(Fault::RateLimited {
        policy: RatePolicy::TenSecondly,
        retry_after: None,
    }));
    match c.enroll(1, "a@example.com").await.unwrap_err() {
        ApiError::RateLimited {
            policy,
            retry_after,
            message,
        } => {
            assert_eq!(policy, RatePolicy::TenSecondly);
            assert_eq!(retry_after, Some(Duration::from_secs(3)));
            assert!(message.contains("ten_secondly_rolling"), "{message}");
        }
        other => panic!("expected RateLimited, got {other:?}"),
    }
    // Scripted rules apply in order: the first has been used up. The client's next call
    // waits out the Retry-After first (every caller of the connector does).
    let started = std::time::Instant::now();
    match c.enroll(1, "a@example.com").await.unwrap_err() {
        ApiError::RateLimited {
            policy: RatePolicy::TenSecondly,
            retry_after: None,
            ..
        } => {}
        other => panic!("expected RateLimited without Retry-After, got {other:?}"),
    }
    assert!(started.elapsed() >= Duration::from_millis(2900));
    // Without Retry-After: the interval HubSpot's headers give (the stand-in's ten seconds).
    let started = std::time::Instant::now();
    c.enroll(1, "a@example.com").await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(9900));
}

#[tokio::test]
async fn daily_limit_gives_a_daily_429() {
    let s = standin(Options {
        daily_limit: 2,
        ..Options::default()
    })
    .await;
    let c = client(&s);
    c.enrollments(1).await.unwrap();
    c.enrollments(1).await.unwrap();
    let err = c.enrollments(1).await.unwrap_err();
    assert!(
        matches!(
            err,
            ApiError::RateLimited {
                policy: RatePolicy::Daily,
                retry_after: None,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_retryable());
    assert_eq!(c.last_rate_limit().unwrap().daily_remaining, Some(0));
}

/// A 429 page that names no policy (an edge's HTML) while HubSpot's headers say the day's
/// calls are spent is the daily limit, not a burst to retry in ten seconds all day.
#[tokio::test]
async fn a_429_page_with_the_day_spent_is_the_daily_limit() {
    let s = standin(Options {
        daily_limit: 2,
        ..Options::default()
    })
    .await;
    let c = client(&s);
    s.inject(Injection::next(Fault::Html(429)));
    let err = c.enrollments(1).await.unwrap_err();
    assert!(
        matches!(
            err,
            ApiError::RateLimited {
                policy: RatePolicy::TenSecondly,
                ..
            }
        ),
        "{err:?}"
    );
    c.enrollments(1).await.unwrap();
    c.enrollments(1).await.unwrap();
    s.inject(Injection::next(Fault::Html(429)));
    let err = c.enrollments(1).await.unwrap_err();
    assert!(
        matches!(
            err,
            ApiError::RateLimited {
                policy: RatePolicy::Daily,
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn the_daily_limit_resets_at_midnight_in_the_accounts_time_zone() {
    const HOUR: i64 = 3_600_000;
    // 2026-11-27 03:30 UTC: 22:30 the evening before for an account at UTC-05:00.
    let start = 1_795_750_200_000;
    let dir = tempfile::tempdir().unwrap();
    let clock = dir.path().join("clock");
    std::fs::write(&clock, start.to_string()).unwrap();
    let s = standin(Options {
        daily_limit: 2,
        utc_offset_minutes: -300,
        clock: Clock::File(clock.clone()),
        ..Options::default()
    })
    .await;
    let c = client(&s);
    let daily = |r: Result<Vec<_>, ApiError>| {
        matches!(
            r,
            Err(ApiError::RateLimited {
                policy: RatePolicy::Daily,
                ..
            })
        )
    };
    c.enrollments(1).await.unwrap();
    c.enrollments(1).await.unwrap();
    assert!(daily(c.enrollments(1).await));
    // Midnight UTC has passed; the account's midnight (05:00 UTC) has not.
    std::fs::write(&clock, (start + 90 * 60_000 - 1).to_string()).unwrap();
    assert!(daily(c.enrollments(1).await));
    std::fs::write(&clock, (start + 90 * 60_000).to_string()).unwrap();
    c.enrollments(1).await.unwrap();
    assert_eq!(c.last_rate_limit().unwrap().daily_remaining, Some(1));
    c.enrollments(1).await.unwrap();
    assert!(daily(c.enrollments(1).await));
    // A clock that steps back does not hand out a second allowance for the same day.
    std::fs::write(&clock, (start + HOUR).to_string()).unwrap();
    assert!(daily(c.enrollments(1).await));
}

#[tokio::test]
async fn server_errors_are_transient_and_reached_hubspot() {
    let s = standin(Options::default()).await;
    let c = client(&s);
    s.inject(Injection::next(Fault::Status {
        status: 503,
        message: "Service Unavailable".into(),
    }));
    let err = c.enroll(1, "a@example.com").await.unwrap_err();
    assert_eq!(
        err,
        ApiError::Transient {
            status: Some(503),
            may_have_reached: true,
            message: "Service Unavailable".into()
        }
    );
    assert!(err.is_retryable());
}

#[tokio::test]
async fn a_slow_answer_times_out_as_transient_that_may_have_reached_hubspot() {
    let s = standin(Options::default()).await;
    let c = client_with(&s, Duration::from_millis(300));
    s.add_contact("slow@example.com", 1);
    s.inject(Injection::next(Fault::Slow(Duration::from_secs(3))));
    let err = c.enroll(5, "slow@example.com").await.unwrap_err();
    match &err {
        ApiError::Transient {
            status: None,
            may_have_reached: true,
            message,
        } => assert!(message.contains("timed out"), "{message}"),
        other => panic!("expected a timeout, got {other:?}"),
    }
    // The stand-in did the work before answering late: a retry would be a repeat.
    assert_eq!(s.enrollments_of("slow@example.com"), [5]);
}

#[tokio::test]
async fn a_dropped_connection_is_transient() {
    let s = standin(Options::default()).await;
    let c = client(&s);
    s.add_contact("drop@example.com", 2);
    s.inject(Injection::next(Fault::Drop));
    let err = c.enroll(5, "drop@example.com").await.unwrap_err();
    assert!(
        matches!(
            err,
            ApiError::Transient {
                status: None,
                may_have_reached: true,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(s.log()[0].status, None);
    assert!(s.enrollments_of("drop@example.com").is_empty());
    c.enroll(5, "drop@example.com").await.unwrap();
}

#[tokio::test]
async fn connection_refused_never_reached_hubspot() {
    // The discard port, where nothing listens (a port bound and let go could be taken by a
    // stand-in of a test running beside).
    let c = Client::new("http://127.0.0.1:9", "t", ClientOptions::default()).unwrap();
    let err = c.enrollments(1).await.unwrap_err();
    assert!(
        matches!(
            err,
            ApiError::Transient {
                status: None,
                may_have_reached: false,
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn permanent_errors_carry_hubspots_message() {
    let s = standin(Options {
        workflows: vec![1],
        ..Options::default()
    })
    .await;
    let c = client(&s);
    // The workflow editor's flow id is no workflow the v2 API knows, as its workflow read says
    // (every other id is one there).
    let flows = standin(Options {
        flow_ids: vec![(5551, 1)],
        ..Options::default()
    })
    .await;
    for (c, id, flow) in [(&c, 2, ""), (&client(&flows), 5551, " (a flow id)")] {
        match c.enroll(id, "a@example.com").await.unwrap_err() {
            ApiError::Permanent {
                status,
                message,
                correlation_id,
            } => {
                assert_eq!(status, 404, "{id}{flow}");
                assert_eq!(message, format!("Workflow {id} not found"));
                assert!(correlation_id.is_some());
            }
            other => panic!("expected Permanent{flow}, got {other:?}"),
        }
    }
    let wrong = Client::new(&s.url(), "not-the-token", ClientOptions::default()).unwrap();
    let err = wrong.enrollments(1).await.unwrap_err();
    assert!(!err.is_retryable());
    assert_eq!(err.status(), Some(401));
    assert!(
        err.to_string()
            .contains("Authentication credentials not found"),
        "{err}"
    );
    assert!(!err.to_string().contains("not-the-token"));
    // A message of any length is kept to 300 characters: it lands in every outcome row.
    s.inject(Injection::next(Fault::Status {
        status: 400,
        message: "é".repeat(100_000),
    }));
    match c.enroll(1, "a@example.com").await.unwrap_err() {
        ApiError::Permanent { message, .. } => {
            assert_eq!(message, "é".repeat(300));
        }
        other => panic!("expected Permanent, got {other:?}"),
    }
    // A page that does not say whether more follow (a proxy's `{}`) is no last page: read as
    // one, it marked the window imported with nothing read.
    s.inject(Injection::next(Fault::Json(serde_json::json!({}))));
    assert!(matches!(
        c.email_events(&EventsQuery::default()).await,
        Err(ApiError::Transient { .. })
    ));
    // A successful answer far larger than any of HubSpot's is refused, not read whole.
    let events: Vec<serde_json::Value> = (0..1000)
        .map(|i| serde_json::json!({"id": format!("e{i}"), "filler": "x".repeat(40_000)}))
        .collect();
    s.inject(Injection::next(Fault::Json(
        serde_json::json!({"events": events, "hasMore": false}),
    )));
    match c.email_events(&EventsQuery::default()).await.unwrap_err() {
        ApiError::Transient { message, .. } => {
            assert!(message.contains("larger than 32 MB"), "{message}")
        }
        other => panic!("expected Transient, got {other:?}"),
    }
}

#[tokio::test]
async fn too_large_list_batches_are_classified_for_splitting() {
    let s = standin(Options {
        max_list_batch: Some(3),
        ..Options::default()
    })
    .await;
    let c = client(&s);
    let ids: Vec<String> = (1..=4).map(|i| i.to_string()).collect();
    match c.add_to_list("5", &ids).await.unwrap_err() {
        ApiError::BatchTooLarge { size, status, .. } => assert_eq!((size, status), (4, 400)),
        other => panic!("expected BatchTooLarge, got {other:?}"),
    }
    c.add_to_list("5", &ids[..3]).await.unwrap();
    c.add_to_list("5", &ids[3..]).await.unwrap();
    assert_eq!(s.list_members("5").len(), 4);
    // The same 4xx on a call that is not a batch stays permanent.
    s.inject(Injection::next(Fault::Status {
        status: 400,
        message: "Request is too large".into(),
    }));
    assert!(matches!(
        c.enroll(1, "a@example.com").await.unwrap_err(),
        ApiError::Permanent { status: 400, .. }
    ));
    // Nor for one record, nor in a status other than 400 or 422: such words may be of
    // something else (a single callback's expiry, a token's).
    let refuse = |status: u16| {
        Injection::next(Fault::Status {
            status,
            message: "A maximum of 3 records is allowed".into(),
        })
        .on("/crm/lists")
    };
    s.inject(refuse(400));
    assert!(matches!(
        c.add_to_list("5", &ids[..1]).await.unwrap_err(),
        ApiError::Permanent { status: 400, .. }
    ));
    s.inject(refuse(409));
    assert!(matches!(
        c.add_to_list("5", &ids[..2]).await.unwrap_err(),
        ApiError::Permanent { status: 409, .. }
    ));
}

#[tokio::test]
async fn standin_rolling_limit_answers_hubspots_429_once_exceeded() {
    let s = standin(Options {
        limit_per_10s: 5,
        ..Options::default()
    })
    .await;
    let http = http();
    let url = format!("{}/automation/v2/workflows/enrollments/contacts/1", s.url());
    let get = || async {
        http.get(&url)
            .bearer_auth(DEFAULT_TOKEN)
            .send()
            .await
            .unwrap()
    };
    let mut statuses = Vec::new();
    let mut last = None;
    for _ in 0..7 {
        let resp = get().await;
        statuses.push(resp.status().as_u16());
        last = Some(resp);
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429, 429]);
    let resp = last.unwrap();
    let h = resp.headers();
    assert_eq!(h["x-hubspot-ratelimit-max"], "5");
    assert_eq!(h["x-hubspot-ratelimit-remaining"], "0");
    assert_eq!(h["x-hubspot-ratelimit-interval-milliseconds"], "10000");
    assert!(h.get("retry-after").is_none());
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["status"], "error");
    assert_eq!(body["errorType"], "RATE_LIMIT");
    assert_eq!(body["policyName"], "TEN_SECONDLY_ROLLING");
    assert!(
        body["correlationId"]
            .as_str()
            .is_some_and(|c| !c.is_empty())
    );
    assert!(body["message"].as_str().is_some());
    // Rejected calls do not count: five more refused halfway through the window would fill
    // it again if they did, and yet it frees up ten seconds after the first call.
    let first = s.log()[0].at;
    let until = |after: Duration| after.saturating_sub(first.elapsed().unwrap());
    tokio::time::sleep(until(Duration::from_secs(5))).await;
    for _ in 0..5 {
        assert_eq!(get().await.status(), 429);
    }
    tokio::time::sleep(until(Duration::from_millis(10_200))).await;
    assert_eq!(get().await.status(), 200);
}

#[tokio::test]
async fn standin_rejects_a_missing_token_with_hubspots_401() {
    let s = standin(Options::default()).await;
    let resp = http()
        .get(format!("{}/email/public/v1/events", s.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert!(resp.headers().contains_key("x-hubspot-ratelimit-max"));
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["status"], "error");
    assert_eq!(body["category"], "INVALID_AUTHENTICATION");
}

/// The events page is 10 events without a `limit` and refuses one outside 1 to 1000, as
/// HubSpot's events reference says (the stand-in gave 100 and clamped any limit).
#[tokio::test]
async fn standin_pages_events_as_hubspots_reference_says() {
    let now = chrono::Utc::now().timestamp_millis();
    let events = (0..25)
        .map(|i| event(i, now - 3_600_000 - i as i64 * 1000))
        .collect();
    let s = standin(Options {
        events,
        ..Options::default()
    })
    .await;
    let page = |query: &'static str| {
        let url = format!("{}/email/public/v1/events{query}", s.url());
        async move {
            let resp = (http().get(url).bearer_auth(DEFAULT_TOKEN).send().await).unwrap();
            let status = resp.status().as_u16();
            let body: serde_json::Value = resp.json().await.unwrap();
            (status, body["events"].as_array().map_or(0, Vec::len))
        }
    };
    assert_eq!(page("").await, (200, 10));
    assert_eq!(page("?limit=1000").await, (200, 25));
    assert_eq!(page("?limit=0").await.0, 400);
    assert_eq!(page("?limit=1001").await.0, 400);
}

/// `calls` calls of a client set to `requests_per_10s` against a stand-in allowing 20 per
/// 10 s, each waiting for the limiter by itself; what the stand-in logged.
async fn calls_under_a_limit_of_20(
    requests_per_10s: u32,
    calls: usize,
) -> Vec<sendtime::hubspot::standin::LogEntry> {
    let s = standin(Options {
        limit_per_10s: 20,
        ..Options::default()
    })
    .await;
    let c = Client::new(
        &s.url(),
        DEFAULT_TOKEN,
        ClientOptions {
            timeout: Duration::from_secs(5),
            requests_per_10s,
        },
    )
    .unwrap();
    for _ in 0..calls {
        let _ = c.enrollments(1).await;
    }
    s.log()
}

#[tokio::test]
async fn the_limiter_keeps_a_client_under_the_standins_limit() {
    let log = calls_under_a_limit_of_20(20, 24).await;
    assert!(log.iter().all(|e| e.status == Some(200)), "{log:?}");
}

/// A connector set above HubSpot's limit for the app (110 per 10 s for an OAuth app taken for
/// a private app's 190) paces under the limit HubSpot's headers say once it has seen them:
/// before, it burst to HubSpot's limit and then stood still for the rest of the window.
#[tokio::test]
async fn a_limit_set_above_hubspots_paces_under_hubspots() {
    let log = calls_under_a_limit_of_20(40, 30).await;
    assert!(log.iter().all(|e| e.status == Some(200)), "{log:?}");
    // Paced at 18 per 10 s: a call every 0.56 s, none waiting out a spent window.
    let longest = (log.windows(2))
        .map(|w| w[1].at.duration_since(w[0].at).unwrap())
        .max()
        .unwrap();
    assert!(longest < Duration::from_secs(3), "{longest:?}");
}

/// An HTML 403 comes from something in front of HubSpot's API (an edge block), not from
/// HubSpot refusing the token: it is worth retrying and must not pause the connector.
#[tokio::test]
async fn an_html_403_from_the_edge_is_transient_not_a_refused_token() {
    let s = standin(Options::default()).await;
    let c = client(&s);
    s.add_contact("edge@example.com", 3);
    s.inject(Injection::next(Fault::Html(403)));
    match c.enroll(5, "edge@example.com").await.unwrap_err() {
        ApiError::Transient {
            status: Some(403),
            may_have_reached: false,
            ..
        } => {}
        other => panic!("expected a transient 403, got {other:?}"),
    }
    c.enroll(5, "edge@example.com").await.unwrap();
}

/// A 2xx HTML page (a proxy's login or block page) did not enroll anyone: not HubSpot's API,
/// never taken for a success.
#[tokio::test]
async fn a_2xx_html_page_is_not_taken_for_a_success() {
    let s = standin(Options::default()).await;
    let c = client(&s);
    s.add_contact("proxy@example.com", 3);
    s.inject(Injection::next(Fault::Html(200)));
    match c.enroll(5, "proxy@example.com").await.unwrap_err() {
        ApiError::NotTheApi { status: 200, .. } => {}
        other => panic!("expected a page that is not the API, got {other:?}"),
    }
    assert!(c.enrollments(3).await.unwrap().is_empty());
    c.enroll(5, "proxy@example.com").await.unwrap();
}

/// HubSpot's own answers: a token without the scope a call needs gets `MISSING_SCOPES` (with
/// the scope named), a DYNAMIC list refuses membership changes, an unknown route is an HTML 404.
#[tokio::test]
async fn missing_scopes_dynamic_lists_and_unknown_routes_answer_as_hubspot_does() {
    let s = standin(Options {
        scopes: Some(vec![
            "content".into(),
            "crm.lists.read".into(),
            "crm.lists.write".into(),
        ]),
        lists: vec![
            ("987".into(), sendtime::hubspot::standin::ListKind::Dynamic),
            ("988".into(), sendtime::hubspot::standin::ListKind::Snapshot),
        ],
        ..Options::default()
    })
    .await;
    let c = client(&s);
    s.add_contact("scoped@example.com", 4);
    // An older route's refusal names the token it was sent (HubSpot's older form): read as a
    // missing scope, the token cut out of the text that goes to logs and `/status`.
    let token = sendtime::hubspot::standin::DEFAULT_TOKEN;
    let raw = http()
        .post(format!(
            "{}/automation/v2/workflows/5/enrollments/contacts/scoped@example.com",
            s.url()
        ))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status().as_u16(), 403);
    assert!(raw.text().await.unwrap().contains(token));
    match c.enroll(5, "scoped@example.com").await.unwrap_err() {
        e @ ApiError::MissingScopes { .. } => {
            let ApiError::MissingScopes { scopes, message } = &e else {
                unreachable!()
            };
            assert_eq!(scopes, &["automation"]);
            assert!(
                message.contains("does not have proper permissions"),
                "{message}"
            );
            assert!(!format!("{e} {e:?}").contains(token), "{e:?}");
        }
        other => panic!("expected a missing scope, got {other:?}"),
    }
    // The newer form, on a newer route.
    match c.contact_email(4).await.unwrap_err() {
        ApiError::MissingScopes { scopes, message } => {
            assert_eq!(scopes, ["crm.objects.contacts.read"]);
            assert!(message.contains("required scopes"), "{message}");
        }
        other => panic!("expected MISSING_SCOPES, got {other:?}"),
    }
    match c.add_to_list("987", &["4".into()]).await.unwrap_err() {
        ApiError::Permanent {
            status: 400,
            message,
            ..
        } => assert!(message.contains("DYNAMIC"), "{message}"),
        other => panic!("expected a refused DYNAMIC list, got {other:?}"),
    }
    assert_eq!(
        c.add_to_list("988", &["4".into()])
            .await
            .unwrap()
            .record_ids_added,
        ["4"]
    );
    match c.add_to_list("999", &["4".into()]).await.unwrap_err() {
        ApiError::Permanent { status: 404, .. } => {}
        other => panic!("expected a missing list, got {other:?}"),
    }
    // Adding to a list takes `crm.lists.read` with either write scope (HubSpot's OpenAPI
    // spec; its reference page says "one of the following scopes", which the stand-in took
    // literally), and a token without is told all three.
    let scoped = |scopes: &[&str]| Options {
        scopes: Some(scopes.iter().map(|s| s.to_string()).collect()),
        lists: vec![("988".into(), sendtime::hubspot::standin::ListKind::Snapshot)],
        ..Options::default()
    };
    let cases: [(&[&str], bool); 5] = [
        (&["crm.lists.read", "crm.lists.write"], true),
        (
            &["crm.lists.read", "cms.membership.access_groups.write"],
            true,
        ),
        (&["crm.lists.write"], false),
        (&["crm.lists.read"], false),
        (&["content"], false),
    ];
    for (scopes, takes) in cases {
        let scoped = standin(scoped(scopes)).await;
        scoped.add_contact("scoped@example.com", 4);
        match (
            client(&scoped).add_to_list("988", &["4".into()]).await,
            takes,
        ) {
            (Ok(added), true) => assert_eq!(added.record_ids_added, ["4"]),
            (Err(ApiError::MissingScopes { scopes: named, .. }), false) => assert_eq!(
                named,
                [
                    "cms.membership.access_groups.write",
                    "crm.lists.read",
                    "crm.lists.write"
                ]
            ),
            (other, _) => panic!("{scopes:?}: {other:?}"),
        }
    }
    let resp = http()
        .get(format!("{}/no/such/route", s.url()))
        .bearer_auth(sendtime::hubspot::standin::DEFAULT_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
}

/// An installed OAuth app whose access tokens live HubSpot's 30 minutes.
fn oauth_app() -> sendtime::hubspot::standin::OAuthApp {
    sendtime::hubspot::standin::OAuthApp {
        client_id: "id".into(),
        client_secret: "secret".into(),
        refresh_token: "refresh".into(),
        lifetime: Duration::from_secs(1800),
        rotate: false,
        says_expires_in: true,
    }
}

/// As at HubSpot, refused calls count toward the ten-second limit, and OAuth apps get no
/// daily-limit headers.
#[tokio::test]
async fn refused_calls_count_and_oauth_answers_carry_no_daily_headers() {
    let s = standin(Options {
        limit_per_10s: 3,
        oauth: Some(oauth_app()),
        ..Options::default()
    })
    .await;
    // A client each: one client paces under the limit HubSpot's headers say (here 3 per
    // 10 s, paced to 1), which would spread the three calls over the window.
    for _ in 0..3 {
        let wrong = Client::new(&s.url(), "wrong-token", ClientOptions::default()).unwrap();
        match wrong.enrollments(1).await.unwrap_err() {
            ApiError::Permanent { status: 401, .. } => {}
            other => panic!("expected 401, got {other:?}"),
        }
    }
    match client(&s).enrollments(1).await.unwrap_err() {
        ApiError::RateLimited { .. } => {}
        other => panic!("refused calls did not count: {other:?}"),
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
    let oauth = oauth_client(&s);
    oauth.enrollments(1).await.unwrap();
    let rate = oauth.last_rate_limit().unwrap();
    assert!(rate.max.is_some() && rate.daily.is_none(), "{rate:?}");
}

/// OAuth apps have no daily limit at HubSpot ("there is no daily limit for these calls"): the
/// stand-in counts none of their calls, and a static token's stay limited (it applied the
/// limit to both; an audit).
#[tokio::test]
async fn oauth_calls_meet_no_daily_limit_a_static_tokens_do() {
    let s = standin(Options {
        daily_limit: 1,
        oauth: Some(oauth_app()),
        ..Options::default()
    })
    .await;
    let oauth = oauth_client(&s);
    for _ in 0..3 {
        oauth.enrollments(1).await.unwrap();
    }
    client(&s).enrollments(1).await.unwrap();
    match client(&s).enrollments(1).await.unwrap_err() {
        ApiError::RateLimited {
            policy: sendtime::hubspot::RatePolicy::Daily,
            ..
        } => {}
        other => panic!("expected the daily limit, got {other:?}"),
    }
}

/// A token endpoint's answer that echoes the form it was sent (an edge's page, a proxy's)
/// reaches the error, which goes to `/status` and logs, without the client secret or the
/// refresh token.
#[tokio::test]
async fn a_token_refusal_that_echoes_the_form_shows_no_secret() {
    use sendtime::hubspot::auth::{Auth, TOKEN_PATH};
    let (secret, refresh) = ("app-secret-1234", "refresh-token-5678");
    let s = standin(Options {
        oauth: Some(sendtime::hubspot::standin::OAuthApp {
            client_secret: secret.into(),
            refresh_token: refresh.into(),
            ..oauth_app()
        }),
        ..Options::default()
    })
    .await;
    let echoed = format!("bad form: client_id=id&client_secret={secret}&refresh_token={refresh}");
    s.inject(
        Injection::next(Fault::Status {
            status: 400,
            message: echoed,
        })
        .on(TOKEN_PATH),
    );
    let client = Client::with_auth(
        &s.url(),
        Auth::oauth("id", secret, refresh),
        ClientOptions::default(),
    )
    .unwrap();
    let message = match client.enrollments(1).await.unwrap_err() {
        ApiError::Permanent { message, .. } | ApiError::NoAccessToken { message, .. } => message,
        other => panic!("expected the refusal, got {other:?}"),
    };
    assert!(message.contains("bad form"), "{message}");
    assert!(message.contains("<redacted>"), "{message}");
    assert!(
        !message.contains(secret) && !message.contains(refresh),
        "{message}"
    );
}

/// An async HTTP client for the stand-in: never through a proxy from the environment.
fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("an HTTP client")
}

/// A stand-in's options with [`oauth_app`] installed, its access tokens living `lifetime`.
fn oauth_options(lifetime: Duration) -> Options {
    Options {
        oauth: Some(sendtime::hubspot::standin::OAuthApp {
            lifetime,
            ..oauth_app()
        }),
        ..Options::default()
    }
}

/// An OAuth client of `s` (its app from [`oauth_app`]).
fn oauth_client(s: &StandIn) -> Client {
    use sendtime::hubspot::auth::Auth;
    Client::with_auth(
        &s.url(),
        Auth::oauth("id", "secret", "refresh"),
        ClientOptions::default(),
    )
    .unwrap()
}

/// A wrong developer API key's 401 (a call made with `hapikey`) is the key's, not the
/// access token's: the token is neither withdrawn nor refreshed, and the call not made again.
#[tokio::test]
async fn a_refused_developer_key_leaves_the_access_token_alone() {
    use sendtime::hubspot::auth::TOKEN_PATH;
    let s = standin(oauth_options(oauth_app().lifetime)).await;
    let client = oauth_client(&s);
    match client
        .get_json("/automation/v4/actions/123?hapikey=wrong")
        .await
        .unwrap_err()
    {
        ApiError::Permanent { status: 401, .. } => {}
        other => panic!("expected the key refused, got {other:?}"),
    }
    let log = s.log();
    let count = |path: &str| log.iter().filter(|e| e.path.starts_with(path)).count();
    assert_eq!(count(TOKEN_PATH), 1, "{log:?}");
    assert_eq!(count("/automation/v4/actions/"), 1, "{log:?}");
    // An answer that echoes the URL (an edge's) shows the key in neither spelling.
    let (key, encoded) = ("developer-key-1234", "developer%2Dkey%2D1234");
    s.inject(
        Injection::next(Fault::Status {
            status: 400,
            message: format!("bad request: /automation/v4/actions/123?hapikey={encoded} ({key})"),
        })
        .on("/automation/v4/actions/"),
    );
    let e = (client
        .get_json(&format!("/automation/v4/actions/123?hapikey={encoded}"))
        .await)
        .unwrap_err();
    let shown = format!("{e} {e:?}");
    assert!(shown.contains("bad request"), "{shown}");
    assert!(!shown.contains(key) && !shown.contains(encoded), "{shown}");
}

/// A token endpoint that fails only at the call's timeout, past the 15 s after which a
/// dropped caller's refresh is made again, gets one request: the call's own failure is its
/// answer (it was made again at once: two requests, and twice the wait; an audit).
#[tokio::test]
async fn a_token_endpoint_failing_slowly_gets_one_request() {
    use sendtime::hubspot::auth::{Auth, TOKEN_PATH};
    let s = standin(oauth_options(oauth_app().lifetime)).await;
    let slow = Fault::Slow(Duration::from_secs(20));
    s.inject(Injection::next(slow).times(u64::MAX).on(TOKEN_PATH));
    let options = ClientOptions {
        timeout: Duration::from_secs(16),
        ..ClientOptions::default()
    };
    let client =
        Client::with_auth(&s.url(), Auth::oauth("id", "secret", "refresh"), options).unwrap();
    let started = std::time::Instant::now();
    match client.enrollments(1).await.unwrap_err() {
        ApiError::NoAccessToken { .. } => {}
        other => panic!("expected no access token, got {other:?}"),
    }
    assert_eq!(token_requests(&s), 1);
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "{:?}",
        started.elapsed()
    );
}

/// Requests to HubSpot's token endpoint, by the stand-in's log.
fn token_requests(s: &StandIn) -> usize {
    let path = sendtime::hubspot::auth::TOKEN_PATH;
    s.log().iter().filter(|e| e.path == path).count()
}

/// The token endpoint down when the early refresh comes (five minutes before expiry at
/// HubSpot, a sixth of the life here): the token in hand serves while it has life left, and
/// the refresh is tried again now and then, not on every call. It was dropped at the first
/// failure: the connector paused while every call would have gone.
#[tokio::test]
async fn a_token_endpoint_down_at_the_early_refresh_leaves_the_token_in_use() {
    // 30 s: refreshed from 25 s, kept to 27.5 s.
    let s = standin(oauth_options(Duration::from_secs(30))).await;
    let oauth = oauth_client(&s);
    oauth.enrollments(1).await.unwrap();
    assert_eq!(token_requests(&s), 1);
    s.inject(
        Injection::next(Fault::Status {
            status: 502,
            message: "Bad gateway".into(),
        })
        .times(u64::MAX)
        .on(sendtime::hubspot::auth::TOKEN_PATH),
    );
    tokio::time::sleep(Duration::from_millis(25_500)).await;
    for _ in 0..5 {
        oauth.enrollments(1).await.unwrap();
    }
    // One refresh tried (a second if the calls straddled its retry), not one per call.
    let tried = token_requests(&s) - 1;
    assert!((1..=2).contains(&tried), "{tried} refreshes tried");
    // Past its margin the token is not used: the calls in flight could arrive after it expired.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    match oauth.enrollments(1).await.unwrap_err() {
        ApiError::NoAccessToken { .. } => {}
        other => panic!("expected no access token, got {other:?}"),
    }
    let used_after = s
        .log()
        .iter()
        .filter(|e| e.path.starts_with("/automation"))
        .count();
    assert_eq!(used_after, 6, "a call went with a token about to expire");
}

/// A token endpoint slow to answer the early refresh holds only the call refreshing: the
/// others take the token in hand while it may be kept. Every call waited on the refresh.
#[tokio::test]
async fn a_slow_early_refresh_holds_only_the_call_making_it() {
    // 60 s: refreshed from 50 s, kept to 55 s.
    let s = standin(oauth_options(Duration::from_secs(60))).await;
    let oauth = std::sync::Arc::new(oauth_client(&s));
    oauth.enrollments(1).await.unwrap();
    s.inject(
        Injection::next(Fault::Slow(Duration::from_secs(8)))
            .on(sendtime::hubspot::auth::TOKEN_PATH),
    );
    tokio::time::sleep(Duration::from_millis(50_500)).await;
    let refreshing = {
        let oauth = oauth.clone();
        tokio::spawn(async move { oauth.enrollments(1).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = std::time::Instant::now();
    oauth.enrollments(1).await.unwrap();
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(4),
        "waited {waited:?} on the refresh"
    );
    refreshing.await.unwrap().unwrap();
    assert_eq!(token_requests(&s), 2);
}

/// A call dropped while its refresh is under way (a pause, a shutdown) leaves the refresh to
/// the next call: a second refresh beside it spent the refresh token the first had spent, and
/// HubSpot, rotating it, refused the connector's credentials.
#[tokio::test]
async fn a_refresh_whose_caller_is_dropped_is_taken_up_not_made_twice() {
    let mut options = oauth_options(Duration::from_secs(1800));
    options.oauth.as_mut().unwrap().rotate = true;
    let s = standin(options).await;
    let oauth = oauth_client(&s);
    s.inject(
        Injection::next(Fault::Slow(Duration::from_secs(2)))
            .on(sendtime::hubspot::auth::TOKEN_PATH),
    );
    let dropped = tokio::time::timeout(Duration::from_millis(500), oauth.enrollments(1)).await;
    assert!(dropped.is_err(), "the call was to be dropped mid-refresh");
    oauth.enrollments(1).await.unwrap();
    oauth.enrollments(1).await.unwrap();
    assert_eq!(token_requests(&s), 1);
}

/// An early refresh whose caller was dropped holds no one while the token in hand may be
/// kept: the next call takes that token (it waited for the refresh a review found), and the
/// refresh's token is taken up after, with no second refresh.
#[tokio::test]
async fn a_dropped_early_refresh_holds_no_call_the_token_in_hand_serves() {
    // 30 s: refreshed from 25 s, kept to 27.5 s.
    let s = standin(oauth_options(Duration::from_secs(30))).await;
    let oauth = oauth_client(&s);
    oauth.enrollments(1).await.unwrap();
    s.inject(
        Injection::next(Fault::Slow(Duration::from_secs(2)))
            .on(sendtime::hubspot::auth::TOKEN_PATH),
    );
    tokio::time::sleep(Duration::from_millis(25_200)).await;
    let dropped = tokio::time::timeout(Duration::from_millis(300), oauth.enrollments(1)).await;
    assert!(dropped.is_err(), "the call was to be dropped mid-refresh");
    let started = std::time::Instant::now();
    oauth.enrollments(1).await.unwrap();
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(1),
        "waited {waited:?} on the refresh"
    );
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    oauth.enrollments(1).await.unwrap();
    assert_eq!(token_requests(&s), 2);
}

/// An edge's 401, a page or a bare status, is no word on the token: the call is retried as
/// an outage and the token is not refreshed for it (it was, once per call, for as long as the
/// edge answered so; a bare 401 still was, an audit found).
#[tokio::test]
async fn an_edge_401_page_does_not_refresh_the_token() {
    let s = standin(oauth_options(oauth_app().lifetime)).await;
    let oauth = oauth_client(&s);
    for fault in [Fault::Html(401), Fault::Empty(401)] {
        s.clear_faults();
        s.inject(Injection::next(fault.clone()).times(3).on("/automation"));
        for _ in 0..3 {
            match oauth.enrollments(1).await.unwrap_err() {
                ApiError::Transient {
                    status: Some(401), ..
                } => {}
                other => panic!("{fault:?}: expected a transient 401, got {other:?}"),
            }
        }
        assert_eq!(token_requests(&s), 1, "{fault:?}");
    }
    oauth.enrollments(1).await.unwrap();
}

/// HubSpot's 401 whose content type a proxy dropped is still HubSpot's word on the token:
/// refreshed and retried, as with the type. The refresh guard read the content type while
/// the error's sorting read the body, so this one paused the connector without a refresh.
#[tokio::test]
async fn hubspots_401_without_a_content_type_refreshes_the_token() {
    let s = standin(oauth_options(oauth_app().lifetime)).await;
    let oauth = oauth_client(&s);
    s.inject(
        Injection::next(Fault::Untyped {
            status: 401,
            message: "The OAuth token used to make this call expired 0 second(s) ago.".into(),
        })
        .on("/automation"),
    );
    oauth.enrollments(1).await.unwrap();
    let statuses: Vec<Option<u16>> = (s.log().into_iter())
        .filter(|e| e.path.starts_with("/automation"))
        .map(|e| e.status)
        .collect();
    assert_eq!(statuses, [Some(401), Some(200)]);
    assert_eq!(token_requests(&s), 2);
}

/// A 4xx with JSON from the token endpoint other than a refusal (a path gone, an edge's
/// timeout) is no access token for now, not refused credentials that pause the connector
/// for an operator.
#[tokio::test]
async fn a_token_endpoint_404_is_not_a_refused_refresh_token() {
    let s = standin(oauth_options(oauth_app().lifetime)).await;
    let path = sendtime::hubspot::auth::TOKEN_PATH;
    for (status, refused) in [(404, false), (408, false), (400, true)] {
        s.inject(
            Injection::next(Fault::Status {
                status,
                message: "no".into(),
            })
            .on(path),
        );
        let got = oauth_client(&s).enrollments(1).await.unwrap_err();
        match (&got, refused) {
            (ApiError::NoAccessToken { .. }, false) => {}
            (ApiError::Permanent { status: 401, .. }, true) => {}
            _ => panic!("{status}: got {got:?}"),
        }
    }
}

/// A token answer without `expires_in` (HubSpot's has one) is taken to last HubSpot's 30
/// minutes: the token is used, and the calls after it do not refresh it.
#[tokio::test]
async fn a_token_answer_without_expires_in_lasts_thirty_minutes() {
    let s = standin(Options {
        oauth: Some(sendtime::hubspot::standin::OAuthApp {
            says_expires_in: false,
            ..oauth_app()
        }),
        ..Options::default()
    })
    .await;
    let oauth = oauth_client(&s);
    for _ in 0..3 {
        oauth.enrollments(1).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    assert_eq!(token_requests(&s), 1);
}

/// A contact's current enrollments as HubSpot's reference shows them, one workflow object, or
/// as it describes them, a list: both are read (only a list was, so a send in doubt could not
/// be checked and failed after its retries).
#[tokio::test]
async fn current_enrollments_are_read_as_one_workflow_or_a_list() {
    let s = standin(Options::default()).await;
    let one = serde_json::json!({"id": 406048, "portalId": 62515, "name": "Test", "enabled": true});
    for body in [one.clone(), serde_json::json!([one])] {
        s.inject(Injection::next(Fault::Json(body)).on("/automation/v2/workflows/enrollments"));
        let got = client(&s).enrollments(7).await.unwrap();
        assert_eq!(got.iter().map(|w| w.id).collect::<Vec<_>>(), [406048]);
    }
}

/// The stand-in holds callback completions to HubSpot's references: `outputFields` and
/// `typedOutputs` are required (on v4's batch too, since 2026-03), so a client that dropped
/// either would fail here, not in production.
#[tokio::test]
async fn a_completion_without_output_fields_or_typed_outputs_is_refused() {
    let s = standin(Options::default()).await;
    s.add_callback("cb-1");
    let http = http();
    let post = |body: serde_json::Value| {
        http.post(format!(
            "{}/automation/actions/callbacks/2026-03/complete",
            s.url()
        ))
        .bearer_auth(DEFAULT_TOKEN)
        .json(&body)
        .send()
    };
    let without = post(serde_json::json!({"inputs": [
        {"callbackId": "cb-1", "outputFields": {"hs_execution_state": "SUCCESS"}}
    ]}))
    .await
    .unwrap();
    assert_eq!(without.status().as_u16(), 400);
    assert!(s.completion("cb-1").is_none());
    let no_outputs = post(serde_json::json!({"inputs": [
        {"callbackId": "cb-1", "typedOutputs": {}}
    ]}))
    .await
    .unwrap();
    assert_eq!(no_outputs.status().as_u16(), 400);
    assert!(s.completion("cb-1").is_none());
    let with = post(serde_json::json!({"inputs": [
        {"callbackId": "cb-1", "outputFields": {"hs_execution_state": "SUCCESS"}, "typedOutputs": {}}
    ]}))
    .await
    .unwrap();
    assert_eq!(with.status().as_u16(), 204);
    assert!(s.completion("cb-1").is_some());
    // The single-callback endpoint with a body that is not an object is a 400, and the
    // stand-in answers on: it panicked with its world locked, failing every later call.
    s.add_callback("cb-2");
    let one = |body: &'static str| {
        http.post(format!(
            "{}/automation/actions/callbacks/2026-03/cb-2/complete",
            s.url()
        ))
        .bearer_auth(DEFAULT_TOKEN)
        .header("content-type", "application/json")
        .body(body)
        .send()
    };
    assert_eq!(one("[]").await.unwrap().status().as_u16(), 400);
    let single = one(r#"{"outputFields": {"hs_execution_state": "SUCCESS"}, "typedOutputs": {}}"#);
    assert_eq!(single.await.unwrap().status().as_u16(), 204);
    assert!(s.completion("cb-2").is_some());
    // v4's batch, supported until 2027-03-30, requires `typedOutputs` too since 2026-03.
    s.add_callback("cb-3");
    let v4 = |input: serde_json::Value| {
        http.post(format!(
            "{}/automation/v4/actions/callbacks/complete",
            s.url()
        ))
        .bearer_auth(DEFAULT_TOKEN)
        .json(&serde_json::json!({ "inputs": [input] }))
        .send()
    };
    let success = serde_json::json!({"hs_execution_state": "SUCCESS"});
    let without = v4(serde_json::json!({"callbackId": "cb-3", "outputFields": success}));
    assert_eq!(without.await.unwrap().status().as_u16(), 400);
    let with =
        serde_json::json!({"callbackId": "cb-3", "outputFields": success, "typedOutputs": {}});
    assert_eq!(v4(with).await.unwrap().status().as_u16(), 204);
    assert!(s.completion("cb-3").is_some());
}

/// A call whose token HubSpot refuses (401) is retried once with a fresh token, and that
/// retry waits its turn like any call: with many calls in flight when a token is revoked, an
/// earlier version sent every retry at once, past the app's burst limit.
#[tokio::test]
async fn the_retry_after_a_refused_token_is_paced_like_any_call() {
    use sendtime::hubspot::auth::Auth;
    let s = standin(oauth_options(oauth_app().lifetime)).await;
    // Paced at one call a second or so.
    let oauth = Client::with_auth(
        &s.url(),
        Auth::oauth("id", "secret", "refresh"),
        ClientOptions {
            requests_per_10s: 10,
            ..ClientOptions::default()
        },
    )
    .unwrap();
    s.inject(
        Injection::next(Fault::Status {
            status: 401,
            message: "The OAuth token used to make this call expired 0 second(s) ago.".into(),
        })
        .on("/automation"),
    );
    oauth.enrollments(1).await.unwrap();
    let calls: Vec<LogEntry> = s
        .log()
        .into_iter()
        .filter(|e| e.path.starts_with("/automation"))
        .collect();
    assert_eq!(
        calls.iter().map(|e| e.status).collect::<Vec<_>>(),
        [Some(401), Some(200)]
    );
    let gap = calls[1].at.duration_since(calls[0].at).unwrap();
    assert!(gap >= Duration::from_millis(900), "retried after {gap:?}");
}

/// A refused token's retry does not wait out a 429's hold on the connector (up to an hour,
/// from `Retry-After`): waiting in the client, it ignored a stop and an operator's pause, so
/// a shutdown could take the hour. The call fails as held, for the caller's retry to wait.
#[tokio::test]
async fn the_retry_after_a_refused_token_does_not_wait_out_a_429s_hold() {
    let s = standin(oauth_options(oauth_app().lifetime)).await;
    let oauth = oauth_client(&s);
    s.inject(
        Injection::next(Fault::RateLimited {
            policy: RatePolicy::TenSecondly,
            retry_after: Some(Duration::from_secs(3600)),
        })
        .on("/automation"),
    );
    s.inject(
        Injection::next(Fault::Status {
            status: 401,
            message: "The OAuth token used to make this call expired 0 second(s) ago.".into(),
        })
        .on("/automation"),
    );
    // Let through before the 429 came, the second call meets the refused token after it.
    let admitted = oauth.admit().await;
    assert!(matches!(
        oauth.enrollments(1).await,
        Err(ApiError::RateLimited { .. })
    ));
    let refused = tokio::time::timeout(Duration::from_secs(10), admitted.enrollments(2))
        .await
        .expect("the retry waited out the hour's hold");
    match refused {
        Err(ApiError::RateLimited {
            retry_after: Some(wait),
            ..
        }) => assert!(wait > Duration::from_secs(3500), "held for {wait:?}"),
        other => panic!("expected the call held by the 429, got {other:?}"),
    }
    let statuses: Vec<Option<u16>> = s
        .log()
        .into_iter()
        .filter(|e| e.path.starts_with("/automation"))
        .map(|e| e.status)
        .collect();
    assert_eq!(
        statuses,
        [Some(429), Some(401)],
        "no retry went during the hold"
    );
    // The refused token is replaced meanwhile: the call after the hold does not meet it again.
    let tokens = s
        .log()
        .into_iter()
        .filter(|e| e.path == sendtime::hubspot::auth::TOKEN_PATH && e.status == Some(200))
        .count();
    assert_eq!(tokens, 2, "the first token and its replacement");
}

/// A 408 (a request timeout at an edge or proxy) is retried, not recorded as the contact's
/// failure. A redirect, or a retired route's 405 or 410 page (not HubSpot's JSON), is the
/// route's: every call would get it. HubSpot's own JSON 410 stays final, and other pages stay
/// the call's own.
#[tokio::test]
async fn a_request_timeout_is_retried_and_a_redirect_or_a_route_page_is_not_the_api() {
    let s = standin(Options::default()).await;
    let status_fault = |status: u16| Fault::Status {
        status,
        message: "try again".into(),
    };
    s.inject(Injection::next(status_fault(408)).on("/automation"));
    match client(&s).enroll(101, "a@example.com").await.unwrap_err() {
        // A proxy's 408 may come after it passed the call on: checked before it is sent again.
        ApiError::Transient {
            may_have_reached: true,
            ..
        } => {}
        other => panic!("408: expected a transient failure, got {other:?}"),
    }
    for fault in [
        status_fault(301),
        status_fault(307),
        Fault::Html(405),
        Fault::Html(410),
    ] {
        s.inject(Injection::next(fault.clone()).on("/automation"));
        match client(&s).enroll(101, "a@example.com").await.unwrap_err() {
            ApiError::NotTheApi { .. } => {}
            other => panic!("{fault:?}: expected the route's failure, got {other:?}"),
        }
    }
    s.inject(Injection::next(status_fault(410)).on("/automation"));
    match client(&s).enroll(101, "a@example.com").await.unwrap_err() {
        ApiError::Permanent { status: 410, .. } => {}
        other => panic!("JSON 410: expected HubSpot's final refusal, got {other:?}"),
    }
    // Other pages may be the call's own: an edge's 400 for one contact's address fails that
    // contact, and its 413 for a list batch has the batch split; neither pauses the connector.
    s.inject(Injection::next(Fault::Html(400)).on("/automation"));
    match client(&s).enroll(101, "a@example.com").await.unwrap_err() {
        ApiError::Permanent { status: 400, .. } => {}
        other => panic!("HTML 400: expected the contact's failure, got {other:?}"),
    }
    s.inject(Injection::next(Fault::Html(413)).on("/crm/lists"));
    let ids: Vec<String> = (1..=50).map(|i| i.to_string()).collect();
    match client(&s).add_to_list("988", &ids).await.unwrap_err() {
        ApiError::BatchTooLarge { size: 50, .. } => {}
        other => panic!("HTML 413: expected a batch to split, got {other:?}"),
    }
}

/// HubSpot's error-handling guide: a 423 is a lock lasting 2 seconds, to be waited out, and a
/// 502/504 means its processing limits were met, to pause for a few seconds. Each is worth
/// retrying, and the connector's next call, whoever makes it, waits that long.
#[tokio::test]
async fn a_lock_or_an_overloaded_hubspot_holds_every_call_of_the_connector() {
    let s = standin(Options::default()).await;
    s.add_contact("locked@example.com", 7);
    for (status, wait) in [
        (423, Duration::from_secs(2)),
        (502, Duration::from_secs(5)),
        (503, Duration::from_secs(5)),
        (504, Duration::from_secs(5)),
        (521, Duration::from_secs(5)),
    ] {
        let c = client(&s);
        s.inject(
            Injection::next(Fault::Status {
                status,
                message: "busy".into(),
            })
            .on("/automation"),
        );
        let e = c.enroll(5, "locked@example.com").await.unwrap_err();
        assert!(e.is_retryable(), "{status}: {e:?}");
        assert_eq!(e.status(), Some(status));
        // Another call of the same client: not the one refused.
        c.enrollments(1).await.unwrap();
        let log = s.log();
        let refused = log.iter().rev().find(|e| e.status == Some(status)).unwrap();
        let next = log.last().unwrap();
        let gap = next.at.duration_since(refused.at).unwrap();
        assert!(
            gap >= wait - Duration::from_millis(100),
            "{status}: next call after {gap:?}"
        );
    }
}

/// The stand-in's request log keeps at most `log_limit` requests, the latest: the demo runs
/// for days and reads none (a million were kept, some 200 MB).
#[tokio::test]
async fn the_standins_log_keeps_the_latest_requests_within_its_limit() {
    let s = standin(Options {
        log_limit: 4,
        ..Options::default()
    })
    .await;
    let c = client(&s);
    for _ in 0..10 {
        c.enrollments(1).await.unwrap();
    }
    let log = s.log();
    assert!(log.len() <= 4, "{}", log.len());
    assert_eq!(log.last().unwrap().seq, 9);
}

/// A list read whose answer does not say the list's processing type (another shape) is taken
/// as usable, the list add to tell; one that says DYNAMIC is not.
#[tokio::test]
async fn a_list_read_that_names_no_processing_type_is_tried() {
    let s = standin(Options::default()).await;
    let c = client(&s);
    let read = |body: serde_json::Value| {
        s.inject(Injection::next(Fault::Json(body)).on("/crm/lists/2026-03/5"));
        async {
            sendtime::hubspot::targets::list(c.admit().await, "5")
                .await
                .unwrap()
        }
    };
    let untyped =
        serde_json::json!({"list": {"listId": "5", "name": "News", "objectTypeId": "0-1"}});
    assert_eq!(read(untyped).await.unwrap().0, "News");
    let dynamic = serde_json::json!({"list": {"listId": "5", "name": "News", "objectTypeId": "0-1", "processingType": "DYNAMIC"}});
    assert!(read(dynamic).await.is_err());
}

/// A workflow's whole definition may be large: read past the 2 MB other answers are held to,
/// into its name and whether it is on; a field of another type counts as absent.
#[tokio::test]
async fn a_large_workflow_definition_is_read_for_its_name_and_state() {
    let s = standin(Options::default()).await;
    let c = client(&s);
    let read = |body: serde_json::Value| {
        s.inject(Injection::next(Fault::Json(body)).on("/automation/v3/workflows/7"));
        async {
            sendtime::hubspot::targets::workflow(c.admit().await, 7)
                .await
                .unwrap()
        }
    };
    let actions: Vec<serde_json::Value> = (0..3000)
        .map(|i| serde_json::json!({"type": "DELAY", "actionId": i, "note": "x".repeat(1000)}))
        .collect();
    let big = serde_json::json!({"name": "Nurture", "enabled": false, "actions": actions});
    assert!(read(big).await.is_err(), "off");
    let odd = serde_json::json!({"name": 5, "enabled": "yes"});
    assert_eq!(read(odd).await.unwrap(), "unnamed");
}
