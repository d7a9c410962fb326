//! The model's commands through the real binary: `import csv`, `explain`, `predict`,
//! `backtest` and `gen`, on real files.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn sendtime(data: &Path, args: &[&str]) -> Output {
    common::run(&common::shipped_config(), data, args, &[])
}

/// `sendtime predict --as-of AS_OF --out OUT` on `data`.
fn predict(data: &Path, as_of: &str, out: &Path) -> Output {
    sendtime(
        data,
        &["predict", "--as-of", as_of, "--out", out.to_str().unwrap()],
    )
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn parts(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| {
        d.filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "parquet")
        })
        .count()
    })
}

fn sample() -> String {
    repo()
        .join("data/sample/outspot-sample.csv")
        .display()
        .to_string()
}

/// `import csv FILE --contact CONTACT --time opened`.
fn import_args<'a>(file: &'a str, contact: &'a str) -> [&'a str; 7] {
    [
        "import",
        "csv",
        file,
        "--contact",
        contact,
        "--time",
        "opened",
    ]
}

#[test]
fn malformed_csv_is_refused_with_row_numbers_and_nothing_is_imported() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let rows = [
        "user_id,opened",
        "1,2022-03-18 15:28:01.000000 UTC",
        "2,yesterday",
        "3,2022-03-18 16:00:00 UTC",
        ",2022-03-18 16:00:00 UTC",
        "5,2022-03-18 17:00:00 UTC",
        "6",
        "7,27795684",
    ];
    // Line numbers are right with Unix and with Windows line endings.
    for (name, eol) in [("bad.csv", "\n"), ("bad-crlf.csv", "\r\n")] {
        let csv = dir.path().join(name);
        std::fs::write(&csv, rows.join(eol) + eol).unwrap();
        let out = sendtime(&data, &import_args(csv.to_str().unwrap(), "user_id"));
        let (_, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("4 rows of"), "{stderr}");
        assert!(
            stderr.contains(&format!(
                "{name}:8: time \"27795684\" in column \"opened\" is 1970-11-18"
            )),
            "{stderr}"
        );
        assert!(stderr.contains("nothing was imported"), "{stderr}");
        assert!(
            stderr.contains(&format!("{name}:7: 1 field where the header has 2")),
            "{stderr}"
        );
        assert!(
            stderr.contains(&format!(
                "{name}:3: cannot parse time \"yesterday\" in column \"opened\""
            )),
            "{stderr}"
        );
        assert!(
            stderr.contains(&format!("{name}:5: empty contact in column \"user_id\"")),
            "{stderr}"
        );
        assert_eq!(parts(&data.join("events")), 0);
    }
    let csv = dir.path().join("bad.csv");

    // A column that does not exist is named, with the ones that do.
    let out = sendtime(&data, &import_args(csv.to_str().unwrap(), "user"));
    let (_, stderr) = text(&out);
    assert!(
        stderr.contains("no column named \"user\" (--contact); the header has: user_id, opened"),
        "{stderr}"
    );
}

#[test]
fn import_dry_run_explain_predict_and_backtest_on_the_sample() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let sample_csv = sample();
    let import = import_args(&sample_csv, "user_id");

    let mut dry = import.to_vec();
    dry.push("--dry-run");
    let out = sendtime(&data, &dry);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.starts_with("dry run: 2583 events of 150 contacts"),
        "{stdout}"
    );
    assert!(!data.exists(), "a dry run made {}", data.display());

    let out = sendtime(&data, &import);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.starts_with("imported 2583 events"), "{stdout}");
    assert_eq!(parts(&data.join("events")), 1);
    // The same file again adds nothing; a longer export of it adds only its new rows.
    let out = sendtime(&data, &import);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.starts_with("nothing to import: all 2583 rows of "),
        "{stdout}"
    );
    assert_eq!(parts(&data.join("events")), 1);
    let longer = dir.path().join("longer.csv");
    let mut text_of_sample = std::fs::read_to_string(&sample_csv).unwrap();
    text_of_sample.push_str("64705618,2023-03-01 09:15:00.000000 UTC\n");
    std::fs::write(&longer, text_of_sample).unwrap();
    let mut again = import.to_vec();
    again[2] = longer.to_str().unwrap();
    let out = sendtime(&data, &again);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.starts_with("imported 1 events (1 events of 1 contacts")
            && stdout.ends_with("; 2583 rows already stored, skipped\n"),
        "{stdout}"
    );

    // profiles: a dry run builds and stores nothing; then built and stored once, and a second
    // run has no new part to read.
    let out = sendtime(&data, &["profiles", "--rebuild", "--dry-run"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.starts_with("dry run: profiles of 150 contacts (150 with opens or clicks)"),
        "{stdout}"
    );
    assert!(!data.join("profiles").exists());
    let out = sendtime(&data, &["profiles"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.starts_with("profiles of 150 contacts rebuilt (2 event parts read)"),
        "{stdout}"
    );
    let out = sendtime(&data, &["profiles"]);
    let (stdout, _) = text(&out);
    assert!(
        stdout.starts_with("profiles of 150 contacts updated (0 event parts read)"),
        "{stdout}"
    );

    // explain: class, heat map, and all five types with a reason.
    let out = sendtime(&data, &["explain", "64705618", "--at", "2022-07-01"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.starts_with("64705618: class "), "{stdout}");
    assert!(
        stdout.contains("\n      Mon  ") && stdout.contains("\n      Sun  "),
        "{stdout}"
    );
    assert!(stdout.contains("best slot: "), "{stdout}");
    for kind in [
        "NEXT_24_HOURS",
        "NEXT_WEEK_FREQUENCY_OPTIMIZED",
        "NEXT_WEEK",
        "IMMEDIATE",
        "UPDATE_ONLY",
    ] {
        assert!(stdout.contains(kind), "{kind} missing:\n{stdout}");
    }
    // The shipped config's workflow action, as planning would place it.
    assert!(
        stdout.contains(
            "action send-time (NEXT_24_HOURS, when its workflow chooses no delivery type): "
        ),
        "{stdout}"
    );
    let out = sendtime(&data, &["explain", "nobody@example.com"]);
    assert!(text(&out).0.contains("no events"), "{}", text(&out).0);

    // predict: 168 rows per contact seen before the cut-off, scores summing to 1.
    let csv = dir.path().join("scores.csv");
    // ...but nothing before the data starts, or from a folder with no events, is an error
    // that says so (and creates nothing).
    let too_early = [
        "predict",
        "--as-of",
        "2000-01-01",
        "--out",
        csv.to_str().unwrap(),
    ];
    let out = sendtime(&data, &too_early);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).1.contains("no events before 2000-01-01"),
        "{}",
        text(&out).1
    );
    let empty = dir.path().join("empty");
    let out = sendtime(&empty, &too_early);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).1.contains("no data directory at"),
        "{}",
        text(&out).1
    );
    std::fs::create_dir(&empty).unwrap();
    let out = sendtime(&empty, &too_early);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).1.contains("holds none of sendtime's data"),
        "{}",
        text(&out).1
    );
    std::fs::remove_dir(&empty).unwrap();
    assert!(!empty.exists() && !csv.exists());
    let out = predict(&data, "2022-01-01", &csv);
    assert!(out.status.success(), "{}", text(&out).1);
    let scores = std::fs::read_to_string(&csv).unwrap();
    let mut lines = scores.lines();
    assert_eq!(lines.next(), Some("contact_id,slot,score"));
    let rows: Vec<(String, usize, f64)> = lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (
                f[0].to_string(),
                f[1].parse().unwrap(),
                f[2].parse().unwrap(),
            )
        })
        .collect();
    assert_eq!(rows.len() % 168, 0);
    let contacts = rows.len() / 168;
    assert!(contacts > 50 && contacts <= 150, "{contacts}");
    for chunk in rows.chunks(168) {
        assert!(
            chunk
                .iter()
                .enumerate()
                .all(|(i, r)| r.1 == i && r.0 == chunk[0].0)
        );
        let total: f64 = chunk.iter().map(|r| r.2).sum();
        assert!((total - 1.0).abs() < 1e-3, "{total}");
    }
    let classes = std::fs::read_to_string(dir.path().join("scores.classes.csv")).unwrap();
    assert_eq!(classes.lines().count(), contacts + 1);
    assert!(classes.starts_with("contact_id,class,engagements,machine\n"));

    // backtest from the events dataset, as JSON.
    let out = sendtime(&data, &["backtest", "--split", "2022-07-01", "--json"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let warm = report["warm"].as_array().unwrap();
    assert_eq!(warm[0][0], "sendtime model");
    let events = warm[0][1]["events"].as_u64().unwrap();
    assert!(events > 100, "{stdout}");
    for (_, s) in warm.iter().map(|p| (p[0].clone(), p[1].clone())) {
        let h = s["hour_of_day"]["hit_at_3"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&h));
    }
    assert!(report["evaluating"].is_array() && report["cold"].is_array());
    // The model against each of the four baselines, each gain inside its interval.
    let against = report["model_against"].as_array().unwrap();
    assert_eq!(against.len(), 4, "{stdout}");
    for c in against {
        let gain = c["hit_at_3_gain"].as_f64().unwrap();
        let [lo, hi] = [0, 1].map(|i| c["hit_at_3_interval"][i].as_f64().unwrap());
        assert!(lo <= gain && gain <= hi, "{c}");
    }

    // Relearning every 30 days scores the same events, in steps.
    let out = sendtime(
        &data,
        &[
            "backtest",
            "--split",
            "2022-07-01",
            "--relearn",
            "30",
            "--json",
        ],
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let relearnt: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(relearnt["warm"][0][1]["events"].as_u64(), Some(events));
    assert_eq!(relearnt["relearn"]["every_days"], 30);
    assert!(
        relearnt["relearn"]["steps"].as_u64().unwrap() > 1,
        "{stdout}"
    );
    assert!(report["relearn"].is_null());
    let out = sendtime(
        &data,
        &["backtest", "--split", "2022-07-01", "--relearn", "0"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out).1);
    // Nothing to score, or to tune on, is an error, not a table of zeros.
    let sample = sample();
    let refusals: [(&[&str], &str); 2] = [
        (
            &[
                "--events",
                &sample,
                "--contact",
                "user_id",
                "--time",
                "opened",
                "--kind-default",
                "SENT",
            ],
            "no opens or clicks after the split",
        ),
        (
            &["--tune", "--validation-days", "3650"],
            "before the first event",
        ),
    ];
    for (args, says) in refusals {
        let mut all = vec!["backtest", "--split", "2022-07-01"];
        all.extend_from_slice(args);
        let out = sendtime(&data, &all);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(text(&out).1.contains(says), "{args:?}: {}", text(&out).1);
    }
}

#[test]
fn gen_is_reproducible_and_the_model_learns_its_habits() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    for out in [&a, &b] {
        gen_300_contacts(out);
    }
    let read = |d: &Path| {
        let mut files: Vec<_> = std::fs::read_dir(d.join("events"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        files
            .iter()
            .filter(|f| f.extension().is_some_and(|e| e == "parquet"))
            .map(|f| sendtime::store::read_part(f).unwrap())
            .collect::<Vec<_>>()
    };
    // The same events, in the same parts (named afresh each run).
    let (parts_a, parts_b) = (read(&a), read(&b));
    assert!(!parts_a.is_empty());
    assert_eq!(parts_a.len(), parts_b.len());
    for (x, y) in parts_a.iter().zip(&parts_b) {
        assert!(x.height() > 0 && x.equals_missing(y), "{x}\n{y}");
    }
    // Refuses to write into a folder that already has data.
    let small = ["gen", "--contacts", "3", "--events", "30", "--out"];
    let small_into_a = [&small[..], &[a.to_str().unwrap()]].concat();
    let o = sendtime(&a, &small_into_a);
    assert_eq!(o.status.code(), Some(1));
    // A run stopped before its contacts were written (they come last) left events: a second
    // run is refused, not added to them.
    let before = read(&a).len();
    std::fs::remove_dir_all(a.join("contacts")).unwrap();
    let o = sendtime(&a, &small_into_a);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o).1);
    assert_eq!(read(&a).len(), before);
    // --respond answers the sends of a folder `serve` ran on: another folder is refused and
    // left as it was.
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let o = sendtime(
        &other,
        &[
            "gen",
            "--contacts",
            "3",
            "--respond",
            "--out",
            other.to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o).1);
    assert_eq!(std::fs::read_dir(&other).unwrap().count(), 0);
    // --no-habits goes with --respond (the population's response: it was refused, and the
    // habits answered a world generated without), not with --flat.
    let no_habits = |extra: &[&str]| {
        let mut args = vec!["gen", "--contacts", "3", "--respond", "--no-habits"];
        args.extend(extra);
        args.extend(["--out", other.to_str().unwrap()]);
        sendtime(&other, &args)
    };
    let o = no_habits(&[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o).1);
    assert!(text(&o).1.contains("no sends recorded"), "{}", text(&o).1);
    assert_eq!(no_habits(&["--flat"]).status.code(), Some(2));
    // --events is not taken with --respond (it was accepted and ignored).
    let o = sendtime(
        &a,
        &[
            "gen",
            "--contacts",
            "3",
            "--respond",
            "--events",
            "30",
            "--out",
            a.to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o).1);
    // And what shapes responses is not taken without --respond (it was ignored), into a
    // folder of its own: refused before anything is written.
    let fresh = dir.path().join("fresh");
    for flag in [
        &["--flat"][..],
        &["--since", "2025-01-01"],
        &["--draw", "0"],
    ] {
        let mut args = vec!["gen", "--contacts", "3", "--events", "30"];
        args.extend(flag);
        args.extend(["--out", fresh.to_str().unwrap()]);
        let o = sendtime(&fresh, &args);
        assert_eq!(o.status.code(), Some(1), "{flag:?}: {}", text(&o).1);
        assert!(
            text(&o).1.contains("they go with --respond"),
            "{}",
            text(&o).1
        );
        assert!(!fresh.exists(), "{flag:?}");
    }
    // Sizes it cannot make (a typo of a few zeros took all the machine's memory), nor none.
    for (contacts, events) in [("10", "100000000000"), ("1000000000", "10"), ("0", "10")] {
        let args = ["gen", "--contacts", contacts, "--events", events, "--out"];
        let o = sendtime(&fresh, &[&args[..], &[fresh.to_str().unwrap()]].concat());
        assert_eq!(
            o.status.code(),
            Some(1),
            "{contacts} {events}: {}",
            text(&o).1
        );
        assert!(text(&o).1.contains("--contacts") || text(&o).1.contains("--events"));
        assert!(!fresh.exists(), "{contacts} {events}");
    }

    // Synthetic contacts have real habits: the model must beat the population clearly (read
    // from `a`'s events alone, their dictionary removed above: that panicked the backtest).
    let o = sendtime(&a, &["backtest", "--split", "2025-10-01", "--json"]);
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let hit3 = |name: &str| {
        report["warm"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p[0] == name)
            .unwrap()[1]["hour_of_day"]["hit_at_3"]
            .as_f64()
            .unwrap()
    };
    assert!(
        hit3("sendtime model") > hit3("population best hours") + 0.1,
        "{stdout}"
    );
}

#[test]
fn backtest_reads_a_kind_column_and_learns_from_opens_and_clicks_only() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("kinds.csv");
    let mut rows = String::from("email,when,type\n");
    // Before the split: 3 sends, 2 opens and a click per contact; after it: one open each.
    for c in 0..4 {
        for (day, kind) in ["SENT", "OPEN", "SENT", "OPEN", "SENT", "CLICK"]
            .iter()
            .enumerate()
        {
            rows.push_str(&format!(
                "c{c}@example.com,2024-01-{:02} 09:1{c}:00 UTC,{kind}\n",
                day + 1
            ));
        }
        rows.push_str(&format!("c{c}@example.com,2024-02-01 09:00:00 UTC,OPEN\n"));
    }
    std::fs::write(&csv, rows).unwrap();
    let data = dir.path().join("data");
    let args_with = |extra: &[&str]| {
        let mut args = vec![
            "backtest".to_string(),
            "--split".into(),
            "2024-01-15".into(),
            "--events".into(),
            csv.to_str().unwrap().into(),
            "--contact".into(),
            "email".into(),
            "--time".into(),
            "when".into(),
            "--json".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    let backtest = |extra: &[&str]| {
        let args = args_with(extra);
        sendtime(&data, &args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let run = |extra: &[&str]| {
        let out = backtest(extra);
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{stderr}");
        serde_json::from_str::<serde_json::Value>(&stdout).unwrap()
    };
    // With the kind column: 3 opens and clicks per contact before the split, all warm.
    let report = run(&["--kind", "type"]);
    assert_eq!(report["training_events"], 12, "{report}");
    assert_eq!(report["warm"][0][1]["contacts"], 4, "{report}");
    // Without it, the column that looks like the kind is refused unread (every row was read
    // as an open, an audit found)...
    let out = backtest(&[]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("column \"type\" looks like the event kind"),
        "{stderr}"
    );
    // ...unless every row is said to be one kind.
    let report = run(&["--kind-default", "OPEN"]);
    assert_eq!(report["training_events"], 24, "{report}");
}

/// A backtest on a file of dates written as times (every event at midnight) is refused, as an
/// import of it is: it was taken, everyone's hour learnt as midnight (an audit).
#[test]
fn backtest_refuses_a_file_of_dates_as_an_import_does() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("dates.csv");
    let mut rows = String::from("email,when\n");
    for i in 0..200 {
        rows.push_str(&format!(
            "c{}@example.com,2024-01-{:02}T00:00:00Z\n",
            i % 20,
            1 + i % 28
        ));
    }
    std::fs::write(&csv, rows).unwrap();
    let data = dir.path().join("data");
    let file = csv.to_str().unwrap();
    let columns = ["--contact", "email", "--time", "when"];
    let mut backtest = vec!["backtest", "--split", "2024-01-15", "--events", file];
    backtest.extend(columns);
    let mut import = vec!["import", "csv", file];
    import.extend(columns);
    for args in [&backtest, &import] {
        let out = sendtime(&data, args);
        let (_, stderr) = text(&out);
        assert!(!out.status.success(), "{args:?}: {stderr}");
        assert!(
            stderr.contains(
                "all 200 events are at 00:00:00 UTC: the times are dates written as times"
            ),
            "{args:?}: {stderr}"
        );
        assert_eq!(
            stderr.contains("nothing was imported"),
            args[0] == "import",
            "{stderr}"
        );
    }
}

/// A read-only command that finds a damaged part moves it aside, as any reader does, and says
/// so: an earlier version had no logger outside `serve`, `tick` and `import`, so the part
/// went to quarantine without a word.
#[test]
fn a_reading_command_says_when_it_quarantines_a_damaged_part() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // (`report lift` reads the outcomes only where receipts were held out: it reads the
    // plan.)
    for (args, dataset, name) in [
        (
            &["explain", "x@example.com"][..],
            "plan",
            "part-01JDAMAGED0000000000000000.parquet",
        ),
        (
            &["report", "lift"][..],
            "plan",
            "part-01JDAMAGED0000000000000001.parquet",
        ),
    ] {
        std::fs::create_dir_all(data.join(dataset)).unwrap();
        let part = data.join(dataset).join(name);
        std::fs::write(&part, b"not parquet").unwrap();
        let out = sendtime(&data, args);
        let (_, err) = text(&out);
        assert!(out.status.success(), "{args:?}: {err}");
        assert!(!part.exists(), "{args:?} left the damaged part");
        assert!(data.join("quarantine").join(dataset).join(name).exists());
        assert!(
            err.contains(name) && err.contains("quarantine"),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn a_mistyped_data_directory_is_refused_not_created() {
    let dir = tempfile::tempdir().unwrap();
    let typo = dir.path().join("dta");
    let commands: [&[&str]; 6] = [
        &["explain", "123"],
        &["profiles"],
        &["report", "lift"],
        &["pause"],
        &["pause", "nurture-step-2"],
        &["tick"],
    ];
    let env = [
        ("HUBSPOT_ACCESS_TOKEN", "t"),
        ("HUBSPOT_CLIENT_SECRET", "s"),
    ];
    for args in commands {
        let out = common::run(&common::shipped_config(), &typo, args, &env);
        let (_, err) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains("no data directory at"), "{args:?}: {err}");
        assert!(!typo.exists(), "{args:?} created {}", typo.display());
    }
    // A folder that is not sendtime's (a home folder, a typo that exists) is refused by the
    // commands that read what `serve` and `import` stored, and left as it was; a file too.
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, "").unwrap();
    let scores = dir.path().join("scores.csv");
    let predict = [
        "predict",
        "--as-of",
        "2026-01-01",
        "--out",
        scores.to_str().unwrap(),
    ];
    for args in [
        &["explain", "123"][..],
        &["profiles"],
        &["report", "lift"],
        &predict,
        &["tick"],
        &["pause"],
        &["resume", "nurture-step-2"],
    ] {
        let out = common::run(&common::shipped_config(), &other, args, &env);
        let (_, err) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains("holds none of sendtime's data"),
            "{args:?}: {err}"
        );
        assert_eq!(
            std::fs::read_dir(&other).unwrap().count(),
            0,
            "{args:?} wrote into it"
        );
        let out = common::run(&common::shipped_config(), &file, args, &env);
        let (_, err) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains("is a file, not a data folder"),
            "{args:?}: {err}"
        );
    }
    // A pause may be set in an empty folder before `serve` first starts, not in another's.
    let notes = other.join("notes.txt");
    std::fs::write(&notes, "mine").unwrap();
    let args = ["pause", "nurture-step-2"];
    let out = common::run(&common::shipped_config(), &other, &args, &env);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out).1);
    assert_eq!(std::fs::read_dir(&other).unwrap().count(), 1);
    std::fs::remove_file(&notes).unwrap();
    let out = common::run(&common::shipped_config(), &other, &args, &env);
    assert!(out.status.success(), "{}", text(&out).1);
}

#[test]
fn a_reader_that_goes_away_ends_a_printing_command_quietly() {
    use std::os::unix::process::ExitStatusExt;
    // The reader is gone before the command starts (dropped after the spawn, it could still
    // read everything: the schema fits in the pipe's buffer).
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_sendtime"))
        .arg("schema")
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.signal(), Some(13), "{out:?}"); // SIGPIPE, as `head` leaves `cat`
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `predict` killed as it writes leaves no file at the names asked for: it wrote them in
/// place, and a run cut short left files that ended mid-contact and read as complete.
#[test]
fn predict_cut_short_leaves_no_file_at_its_names() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let generate = [
        "gen",
        "--contacts",
        "20000",
        "--events",
        "300000",
        "--seed",
        "4",
        "--end",
        "2026-01-01",
        "--out",
        data.to_str().unwrap(),
    ];
    assert!(sendtime(&data, &generate).status.success());
    let scores = dir.path().join("scores.csv");
    let classes = dir.path().join("scores.classes.csv");
    let partial = dir.path().join("scores.csv.partial");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sendtime"))
        .args([
            "--config",
            common::shipped_config().to_str().unwrap(),
            "--data",
        ])
        .arg(&data)
        .args([
            "predict",
            "--as-of",
            "2026-01-01",
            "--out",
            scores.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !partial.exists() && !scores.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(partial.exists(), "predict never began writing");
    assert!(!scores.exists() && !classes.exists());

    // Run whole: the files at their names, no partial one left.
    let out = predict(&data, "2026-01-01", &scores);
    assert!(out.status.success(), "{}", text(&out).1);
    let lines = std::fs::read_to_string(&scores).unwrap().lines().count();
    let contacts = std::fs::read_to_string(&classes).unwrap().lines().count() - 1;
    assert_eq!(lines, 1 + 168 * contacts);
    assert!(!partial.exists());

    // A folder named for the scores: refused before anything is written, naming it (the
    // classes file was published beside the folder, and the error named no path).
    let folder = dir.path().join("folder");
    std::fs::create_dir(&folder).unwrap();
    let out = predict(&data, "2026-01-01", &folder);
    assert_eq!(out.status.code(), Some(1));
    let said = format!("{} is a folder", folder.display());
    assert!(text(&out).1.contains(&said), "{}", text(&out).1);
    assert!(!dir.path().join("folder.classes.csv").exists());
    assert!(!dir.path().join("folder.classes.csv.partial").exists());
    assert_eq!(std::fs::read_dir(&folder).unwrap().count(), 0);
    // A folder that is not there: refused before the build, naming it (found only at the
    // end, after the whole build: an audit).
    let missing = dir.path().join("missing");
    let out = predict(&data, "2026-01-01", &missing.join("scores.csv"));
    assert_eq!(out.status.code(), Some(1));
    let said = format!("no folder {}", missing.display());
    assert!(text(&out).1.contains(&said), "{}", text(&out).1);
}

#[test]
fn a_data_directory_made_by_an_import_is_its_owners_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("nested/data");
    let out = sendtime(&data, &import_args(&sample(), "user_id"));
    assert!(out.status.success(), "{}", text(&out).1);
    let mode = std::fs::metadata(&data).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "{mode:o}");
}

/// `explain` shows the knobs `serve` plans with: the fit the stored profiles hold (kept until
/// they are rebuilt), not one worked out afresh; with `--at` it fits afresh as of that time.
/// It fitted afresh every time, so its hours could differ from what `serve` planned.
#[test]
fn explain_uses_the_fit_the_stored_profiles_hold() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    gen_300_contacts(&data);
    let o = sendtime(&data, &["profiles"]);
    assert!(o.status.success(), "{}", text(&o).1);
    // The stored fit, as a rebuild some weeks ago left it.
    let knobs = store_a_fit(&data, |_| {});
    let o = sendtime(&data, &["explain", "5"]);
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "{stderr}");
    assert!(stdout.contains(knobs), "{stdout}");
    let o = sendtime(&data, &["explain", "5", "--at", "2025-12-15"]);
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "{stderr}");
    assert!(!stdout.contains(knobs), "{stdout}");
}

/// `gen` 300 contacts' 30,000 events (seed 3) into `out`.
fn gen_300_contacts(out: &Path) {
    let args = [
        "gen",
        "--contacts",
        "300",
        "--events",
        "30000",
        "--seed",
        "3",
    ];
    let o = sendtime(
        out,
        &[&args[..], &["--out", out.to_str().unwrap()]].concat(),
    );
    assert!(o.status.success(), "{}", text(&o).1);
}

/// `data`'s stored profiles exist and none of their files holds contact `theirs`.
fn assert_stored_without(data: &Path, theirs: u32) {
    let profiles = data.join("profiles");
    assert!(parts(&profiles) > 0, "no profiles stored");
    for entry in std::fs::read_dir(&profiles).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "parquet") {
            let df = sendtime::store::read_part(&path).unwrap();
            let contact = df.column("contact").unwrap().u32().unwrap();
            assert!(
                contact.iter().all(|c| c != Some(theirs)),
                "{}",
                path.display()
            );
        }
    }
}

/// Write a fit of its own into the stored profiles' state in `data`, after `edit`; what
/// `explain` and `profiles` print of its knobs.
fn store_a_fit(data: &Path, edit: impl FnOnce(&mut serde_json::Value)) -> &'static str {
    let state = data.join("profiles/state.json");
    let mut stored: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    edit(&mut stored);
    stored["fit"] = serde_json::json!({
        "fitted": true, "changed": true, "prior_strength": 3.5, "hour_bandwidth": 0.25,
        "events": 1234, "contacts": 56, "loss": 2.0, "file_loss": 2.1, "population_loss": 2.2
    });
    std::fs::write(&state, serde_json::to_vec(&stored).unwrap()).unwrap();
    "prior_strength 3.5, hour_bandwidth 0.25"
}

/// Profiles a former build stored (their state names no model version) are built again, not
/// extended: that build may have counted or fitted otherwise, and its fit was planned with
/// until the monthly rebuild (an audit found a fixed fit loaded as it was by the next build).
#[test]
fn profiles_a_former_build_stored_are_built_again() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    gen_300_contacts(&data);
    let o = sendtime(&data, &["profiles"]);
    assert!(o.status.success(), "{}", text(&o).1);
    let o = sendtime(&data, &["profiles"]);
    assert!(text(&o).0.contains("updated"), "{}", text(&o).0);
    // As a former build left them: no model version, and its own fit.
    let knobs = store_a_fit(&data, |state| {
        state.as_object_mut().unwrap().remove("model").unwrap();
    });
    let o = sendtime(&data, &["explain", "5"]);
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "{stderr}");
    assert!(!stdout.contains(knobs), "{stdout}");
    let o = sendtime(&data, &["profiles"]);
    let (stdout, stderr) = text(&o);
    assert!(stdout.contains("rebuilt"), "{stdout}\n{stderr}");
    assert!(!stdout.contains(knobs), "{stdout}");
}

/// `tick --now` and `explain --at` take a time from 2000 to a year from now: `tick --now 2099`
/// (a typo of the year) sent at once every contact pending, and `--now 1` ran in 1970.
#[test]
fn a_time_to_plan_at_outside_2000_to_next_year_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let env = [
        ("HUBSPOT_ACCESS_TOKEN", "t"),
        ("HUBSPOT_CLIENT_SECRET", "s"),
    ];
    for args in [
        &["tick", "--now", "2099-01-01"][..],
        &["tick", "--now", "1"],
        &["explain", "5", "--at", "1999-12-31"],
    ] {
        let out = common::run(&common::shipped_config(), &data, args, &env);
        let (_, err) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains("is out of range: give a time from 2000"),
            "{args:?}: {err}"
        );
        assert!(!data.exists(), "{args:?} made {}", data.display());
    }
}

/// `explain` takes what names a contact, as imports do: 0 and -1 (an export's "no id") are no
/// HubSpot record ids, and were explained as a new contact.
#[test]
fn explain_refuses_what_names_no_contact() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("events")).unwrap();
    for contact in ["0", "-1", "nobody"] {
        let out = sendtime(&data, &["explain", "--", contact]);
        let (_, err) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{contact}: {err}");
        assert!(
            err.contains("neither an email address nor"),
            "{contact}: {err}"
        );
    }
    // A number past any id says so; a pasted blob is shown clipped, not whole.
    let out = sendtime(&data, &["explain", "99999999999999999999"]);
    let (_, err) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("larger than any HubSpot contact id"), "{err}");
    let blob = format!("{}@x", "a".repeat(5000));
    let out = sendtime(&data, &["explain", &blob]);
    let (_, err) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.len() < 400 && err.contains("(5002 bytes)"), "{err}");
    let out = sendtime(&data, &["explain", "5"]);
    assert!(out.status.success(), "{}", text(&out).1);
}

/// `report lift` with `--since` at or after `--as-of` is refused: it reported nothing to
/// compare, as if no send had been made.
#[test]
fn a_lift_report_since_after_its_as_of_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("outcomes")).unwrap();
    let args = [
        "report",
        "lift",
        "--since",
        "2025-01-01",
        "--as-of",
        "2020-01-01",
    ];
    let out = sendtime(&data, &args);
    let (_, err) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("is not before the report's as-of time"),
        "{err}"
    );
    let out = sendtime(&data, &["report", "lift", "--since", "2020-01-01"]);
    assert!(out.status.success(), "{}", text(&out).1);
}

/// `backtest`'s flags that shape --events or --tune are refused without them: they were
/// ignored (clap's `requires` took the other flag's default for its presence).
#[test]
fn backtest_flags_without_what_they_shape_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    for (args, says) in [
        (&["--contact", "id"][..], "they go with it"),
        (&["--kind-default", "CLICK"], "they go with it"),
        (&["--validation-days", "60"], "it goes with --tune"),
    ] {
        let mut all = vec!["backtest", "--split", "2025-01-01"];
        all.extend(args);
        let out = sendtime(&data, &all);
        let (_, err) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    // Fewer than its four windows of a week: refused (it ran on 28 days, saying nothing).
    let out = sendtime(
        &data,
        &[
            "backtest",
            "--split",
            "2025-01-01",
            "--tune",
            "--validation-days",
            "10",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out).1);
    // An hour past the day's: refused by the parser, as the other ranges are (it was 1).
    let out = sendtime(&data, &["backtest", "--fixed-hour", "24"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out).1);
    assert!(text(&out).1.contains("0..=23"), "{}", text(&out).1);
}

/// Mistyped times and contacts are refused before any work: `predict --as-of` and `backtest
/// --split` took a year's typo (2062), `report lift --since` one of 0225, and an erase of a
/// name waited for a file import holding the events' lock before it said the name is no
/// contact (an audit).
#[test]
fn mistyped_times_and_contacts_are_refused_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    gen_300_contacts(&data);
    let scores = dir.path().join("scores.csv");
    for args in [
        &[
            "predict",
            "--as-of",
            "2062-01-01",
            "--out",
            scores.to_str().unwrap(),
        ][..],
        &["backtest", "--split", "2062-01-01"],
        &["report", "lift", "--since", "0225-01-01"],
        &["report", "lift", "--as-of", "2062-01-01"],
    ] {
        let o = sendtime(&data, args);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", text(&o).1);
        assert!(
            text(&o).1.contains("is out of range"),
            "{args:?}: {}",
            text(&o).1
        );
    }
    assert!(!scores.exists());
    // The events' lock held, as by a file import reading its file.
    let lock = std::fs::File::create(data.join("events.lock")).unwrap();
    lock.lock().unwrap();
    let o = sendtime(&data, &["erase", "John Smith"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o).1);
    assert!(text(&o).1.contains("\"John Smith\""), "{}", text(&o).1);
}

/// A first profile build killed before it named its files in `profiles/state.json` left them,
/// holding every contact's weights: an erase rebuilds the profiles then too (it left them).
#[test]
fn an_erase_rebuilds_profiles_a_killed_first_build_left() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    gen_300_contacts(&data);
    let o = sendtime(&data, &["profiles"]);
    assert!(o.status.success(), "{}", text(&o).1);
    std::fs::remove_file(data.join("profiles/state.json")).unwrap();
    let contacts = sendtime::datasets::contacts::Contacts::load(&data).unwrap();
    let theirs = contacts.get("#1").unwrap();
    let o = sendtime(&data, &["erase", "1"]);
    assert!(o.status.success(), "{}", text(&o).1);
    assert_stored_without(&data, theirs);
}

/// An erasure request does not wait for a webhook's fix: with a config that does not
/// validate, the erase reads the data folder from its TOML, deletes the person's rows and
/// the stored profiles (no `[model]` settings say how to rebuild them), which the next
/// build makes again without them.
#[test]
fn an_erase_runs_with_a_config_that_does_not_validate() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    gen_300_contacts(&data);
    let o = sendtime(&data, &["profiles"]);
    assert!(o.status.success(), "{}", text(&o).1);
    let contacts = sendtime::datasets::contacts::Contacts::load(&data).unwrap();
    let theirs = contacts.get("#1").unwrap();
    let broken = dir.path().join("webhooks.toml");
    let shipped = std::fs::read_to_string(common::shipped_config()).unwrap();
    std::fs::write(
        &broken,
        format!("{shipped}\n[[webhook]]\nid = \"half-written\"\n"),
    )
    .unwrap();
    let o = common::run(&broken, &data, &["validate"], &[]);
    assert!(!o.status.success(), "the config validates: {}", text(&o).0);

    let o = common::run(&broken, &data, &["erase", "1"], &[]);
    assert!(o.status.success(), "{}", text(&o).1);
    assert!(text(&o).0.contains("profiles: deleted"), "{}", text(&o).0);
    assert_eq!(parts(&data.join("profiles")), 0, "profiles left");
    assert!(!data.join("profiles/state.json").exists());
    let events = sendtime::datasets::events::dataset(&data).unwrap();
    let parts_read = events.read_all().unwrap();
    assert!(!parts_read.is_empty());
    for (path, df) in parts_read {
        let contact = df.column("contact").unwrap().u32().unwrap();
        assert!(
            contact.iter().all(|c| c != Some(theirs)),
            "{}",
            path.display()
        );
    }

    let o = sendtime(&data, &["profiles"]);
    assert!(o.status.success(), "{}", text(&o).1);
    assert_stored_without(&data, theirs);
}

/// Events that name contacts the dictionary does not hold (a writer stopped before it wrote
/// them): `predict` scores the contacts it can name, and does not panic.
#[test]
fn predict_runs_over_events_past_the_dictionary() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    gen_300_contacts(&data);
    std::fs::remove_dir_all(data.join("contacts")).unwrap();
    let scores = dir.path().join("scores.csv");
    let o = predict(&data, "2026-01-01", &scores);
    assert!(o.status.success(), "{}", text(&o).1);
    let rows = std::fs::read_to_string(&scores).unwrap();
    assert_eq!(
        rows.lines().count(),
        1,
        "a contact without a key was scored: {rows}"
    );
}
