//! `sendtime import csv` and `import parquet` through the real binary, on files the tests
//! write: parts of bounded size, re-imports de-duplicated, a bad row anywhere means nothing
//! is imported, and Parquet time columns of every type.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use polars::prelude::*;

fn sendtime(data: &Path, args: &[&str]) -> Output {
    common::run(&common::shipped_config(), data, args, &[])
}

fn ok(o: &Output) -> String {
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn failed(o: &Output) -> String {
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir).map_or(vec![], |d| {
        d.map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == ext))
            .collect()
    });
    out.sort();
    out
}

/// The parts a reader lists under `data`'s `dataset` (a merge's sources are not, though
/// their files stay until the next one).
fn parts(data: &Path, dataset: &str) -> Vec<PathBuf> {
    if !data.join(dataset).exists() {
        return Vec::new();
    }
    sendtime::store::Dataset::open(data, dataset)
        .unwrap()
        .parts()
        .unwrap()
}

/// The contact dictionary's keys, in index order.
fn dictionary(data: &Path) -> Vec<String> {
    let mut keys = Vec::new();
    for part in parts(data, "contacts") {
        let df = ParquetReader::new(std::fs::File::open(part).unwrap())
            .finish()
            .unwrap();
        let idx = df.column("contact").unwrap().u32().unwrap().clone();
        let key = df.column("key").unwrap().str().unwrap().clone();
        for (i, k) in idx.into_no_null_iter().zip(key.iter().flatten()) {
            if keys.len() <= i as usize {
                keys.resize(i as usize + 1, String::new());
            }
            keys[i as usize] = k.to_string();
        }
    }
    keys
}

/// Every stored event as (contact key, kind code, at ms, slot), sorted.
fn stored(data: &Path) -> Vec<(String, u8, i64, u8)> {
    let keys = dictionary(data);
    let mut rows = Vec::new();
    for part in parts(data, "events") {
        let df = ParquetReader::new(std::fs::File::open(part).unwrap())
            .finish()
            .unwrap();
        let c = df.column("contact").unwrap().u32().unwrap().clone();
        let k = df.column("kind").unwrap().u8().unwrap().clone();
        let at = df.column("at").unwrap().cast(&DataType::Int64).unwrap();
        let s = df.column("slot").unwrap().u8().unwrap().clone();
        let at = at.i64().unwrap();
        for (((c, k), at), s) in c
            .into_no_null_iter()
            .zip(k.into_no_null_iter())
            .zip(at.into_no_null_iter())
            .zip(s.into_no_null_iter())
        {
            rows.push((keys[c as usize].clone(), k, at, s));
        }
    }
    rows.sort();
    rows
}

/// Row `i` of the generated export: contact, RFC 3339 time, kind.
fn row(i: usize) -> String {
    let contact = if i.is_multiple_of(7) {
        format!("Reader{}@Example.com", i % 50)
    } else {
        format!("{}", 1000 + i % 300)
    };
    // 2025-01-06 (a Monday) 00:00 UTC plus i * 37 minutes.
    let t = 1_736_121_600 + i as i64 * 37 * 60;
    let time = chrono_free_rfc3339(t);
    let kind = ["OPEN", "click", "DELIVERED"][i % 3];
    format!("{contact},{time},{kind}")
}

/// `YYYY-MM-DDTHH:MM:SSZ` of epoch seconds (days from civil, Howard Hinnant's algorithm), so
/// the test does not share the parser it checks.
fn chrono_free_rfc3339(t: i64) -> String {
    let (days, secs) = (t.div_euclid(86_400), t.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

fn export(path: &Path, rows: std::ops::Range<usize>) {
    let mut text = String::from("contact,time,kind\n");
    for i in rows {
        text.push_str(&row(i));
        text.push('\n');
    }
    std::fs::write(path, text).unwrap();
}

/// `import csv FILE` of the columns `contact` and `time`.
fn csv_columns(file: &str) -> Vec<&str> {
    vec![
        "import",
        "csv",
        file,
        "--contact",
        "contact",
        "--time",
        "time",
    ]
}

fn csv_import<'a>(file: &'a str, part_rows: &'a str) -> Vec<&'a str> {
    let mut args = csv_columns(file);
    args.extend(["--kind", "kind", "--part-rows", part_rows]);
    args
}

#[test]
fn csv_imports_in_parts_adds_only_what_is_new_and_refuses_a_bad_row_anywhere() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let events = data.join("events");
    let csv = dir.path().join("export.csv");
    export(&csv, 0..4500);
    let file = csv.to_str().unwrap();

    // A dry run before the data folder exists says it checks against an empty store, and
    // makes none.
    let mut dry = csv_import(file, "1000");
    dry.push("--dry-run");
    let checked = sendtime(&data, &dry);
    assert!(ok(&checked).starts_with("dry run: 4500 events of"));
    let said = String::from_utf8_lossy(&checked.stderr);
    assert!(
        said.contains("does not exist: the file is checked against an empty store"),
        "{said}"
    );
    assert!(!data.exists());
    let first = sendtime(&data, &csv_import(file, "1000"));
    let out = ok(&first);
    assert!(
        out.starts_with(
            "imported 4500 events (4500 events of 350 contacts, 2025-01-06 00:00 UTC to "
        ),
        "{out}"
    );
    // The data folder it made is named (a mistyped --data started a store without a word).
    let new_folder = "did not exist: importing into it as a new data folder";
    assert!(String::from_utf8_lossy(&first.stderr).contains(new_folder));
    // Parts of at most 1000 rows.
    let sizes: Vec<usize> = files(&events, "parquet")
        .iter()
        .map(|part| {
            let mut reader = ParquetReader::new(std::fs::File::open(part).unwrap());
            reader.num_rows().unwrap()
        })
        .collect();
    assert!(sizes.len() >= 5, "{sizes:?}");
    assert!(sizes.iter().all(|n| *n <= 1000), "{sizes:?}");
    assert_eq!(sizes.iter().sum::<usize>(), 4500);
    let rows = stored(&data);
    assert_eq!(rows.len(), 4500);
    // Row 0: an email (lower-cased), Monday 00:00, OPEN (6), slot 0; row 1: id 1001 at 00:37,
    // CLICK (7); row 100: id 1100 at +3700 min, Wednesday 13:40.
    assert!(rows.contains(&("reader0@example.com".into(), 6, 1_736_121_600_000, 0)));
    assert!(rows.contains(&("#1001".into(), 7, 1_736_123_820_000, 0)));
    assert!(rows.contains(&("#1100".into(), 7, 1_736_343_600_000, 24 + 24 + 13)));

    // The same file again adds nothing; a longer export adds only its new rows.
    let again = sendtime(&data, &csv_import(file, "1000"));
    assert!(!String::from_utf8_lossy(&again.stderr).contains(new_folder));
    let out = ok(&again);
    assert!(
        out.starts_with("nothing to import: all 4500 rows of "),
        "{out}"
    );
    assert_eq!(stored(&data).len(), 4500);
    export(&csv, 0..4600);
    let out = ok(&sendtime(&data, &csv_import(file, "1000")));
    assert!(
        out.starts_with("imported 100 events (100 events of ")
            && out.ends_with("; 4500 rows already stored, skipped\n"),
        "{out}"
    );
    assert_eq!(stored(&data).len(), 4600);
    assert_eq!(files(&events, "parquet").len(), sizes.len() + 1);

    // A bad row after several parts' worth of good ones (and more than a reader's batch):
    // nothing of the file is imported, nothing is left staged, the row is named by its line.
    let before = stored(&data);
    let contacts_before = files(&data.join("contacts"), "parquet");
    let mut text = String::from("contact,time,kind\n");
    // Rows repeat after 17,000 (37 minutes apart, later ones would be in the future).
    for i in 5000..75_000 {
        text.push_str(&row(5000 + i % 17_000));
        text.push('\n');
    }
    text.push_str("1234,2025-02-30T10:00:00Z,OPEN\n");
    text.push_str(&row(8001));
    text.push('\n');
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, text).unwrap();
    let err = failed(&sendtime(
        &data,
        &csv_import(bad.to_str().unwrap(), "20000"),
    ));
    assert!(err.contains("1 row of"), "{err}");
    assert!(
        err.contains(
            "bad.csv:70002: cannot parse time \"2025-02-30T10:00:00Z\" in column \"time\""
        ),
        "{err}"
    );
    assert!(err.contains("nothing was imported"), "{err}");
    assert_eq!(stored(&data), before);
    assert_eq!(files(&data.join("contacts"), "parquet"), contacts_before);
    let left: Vec<_> = std::fs::read_dir(&events)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".import-") || n.ends_with(".pending"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// A Parquet export with a time column of each type the importer takes, all the same instants.
fn parquet_export(path: &Path, n: usize) {
    let base_s = 1_736_121_600i64; // 2025-01-06T00:00:00Z, a Monday
    let secs: Vec<i64> = (0..n as i64).map(|i| base_s + i * 3_700).collect();
    let col = |name: &str, v: Vec<i64>| Column::new(name.into(), v);
    let ts = |name: &str, per_s: i64, unit| {
        col(name, secs.iter().map(|s| s * per_s).collect())
            .cast(&DataType::Datetime(unit, None))
            .unwrap()
    };
    let mut df = DataFrame::new(
        n,
        vec![
            col("hs_id", (0..n as i64).map(|i| 5000 + i % 40).collect()),
            ts("at_ns", 1_000_000_000, TimeUnit::Nanoseconds),
            ts("at_us", 1_000_000, TimeUnit::Microseconds),
            ts("at_ms", 1_000, TimeUnit::Milliseconds),
            col("epoch_s", secs.clone()),
            col("epoch_ms", secs.iter().map(|s| s * 1000).collect()),
            Column::new(
                "at_text".into(),
                secs.iter()
                    .map(|s| chrono_free_rfc3339(*s))
                    .collect::<Vec<_>>(),
            ),
            Column::new(
                "what".into(),
                (0..n).map(|i| ["OPEN", "CLICK"][i % 2]).collect::<Vec<_>>(),
            ),
            // The same, stored as categories (as pandas and Polars write categoricals).
            Column::new(
                "what_cat".into(),
                (0..n).map(|i| ["OPEN", "CLICK"][i % 2]).collect::<Vec<_>>(),
            )
            .cast(&DataType::from_categories(Categories::global()))
            .unwrap(),
        ],
    )
    .unwrap();
    ParquetWriter::new(std::fs::File::create(path).unwrap())
        .with_row_group_size(Some(1000))
        .finish(&mut df)
        .unwrap();
}

/// A streaming writer's export: a row group per small batch, thousands of them. Each was
/// decoded on its own, and decoding thousands at once overflowed a thread's stack (a review
/// reproduced it with 100-row groups).
#[test]
fn a_parquet_file_of_thousands_of_small_row_groups_imports() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("stream.parquet");
    let n = 300_000;
    let mut df = DataFrame::new(
        n,
        vec![
            Column::new(
                "id".into(),
                (0..n as i64).map(|i| 1 + i % 5000).collect::<Vec<_>>(),
            ),
            Column::new(
                "at".into(),
                (0..n as i64)
                    .map(|i| 1_736_121_600 + i * 60)
                    .collect::<Vec<_>>(),
            ),
        ],
    )
    .unwrap();
    ParquetWriter::new(std::fs::File::create(&file).unwrap())
        .with_row_group_size(Some(100))
        .finish(&mut df)
        .unwrap();
    let groups = ParquetReader::new(std::fs::File::open(&file).unwrap())
        .get_metadata()
        .unwrap()
        .row_groups
        .len();
    assert_eq!(groups, n / 100);
    let data = dir.path().join("data");
    let path = file.to_str().unwrap();
    let args = ["import", "parquet", path, "--contact", "id", "--time", "at"];
    let out = ok(&sendtime(&data, &args));
    assert!(
        out.starts_with(
            "imported 300000 events (300000 events of 5000 contacts, 2025-01-06 00:00 UTC to "
        ),
        "{out}"
    );
    assert_eq!(stored(&data).len(), n);
}

#[test]
fn parquet_imports_every_time_type_with_the_same_rules() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("export.parquet");
    parquet_export(&file, 2500);
    let path = file.to_str().unwrap();
    let mut first: Option<Vec<(String, u8, i64, u8)>> = None;
    for time in ["at_ns", "at_us", "at_ms", "epoch_s", "epoch_ms", "at_text"] {
        let data = dir.path().join(time);
        let args = [
            "import",
            "parquet",
            path,
            "--contact",
            "hs_id",
            "--time",
            time,
            "--kind",
            "what",
            "--part-rows",
            "1000",
        ];
        let out = ok(&sendtime(&data, &args));
        assert!(
            out.starts_with(
                "imported 2500 events (2500 events of 40 contacts, 2025-01-06 00:00 UTC to "
            ),
            "{time}: {out}"
        );
        assert_eq!(files(&data.join("events"), "parquet").len(), 3);
        let rows = stored(&data);
        assert_eq!(rows.len(), 2500);
        assert!(rows.contains(&("#5000".into(), 6, 1_736_121_600_000, 0)));
        // Row 1: 01:01:40 on the Monday, a click.
        assert!(rows.contains(&("#5001".into(), 7, 1_736_125_300_000, 1)));
        match &first {
            None => first = Some(rows),
            Some(f) => assert_eq!(&rows, f, "{time}"),
        }
        // Again: nothing new.
        let out = ok(&sendtime(&data, &args));
        assert!(out.starts_with("nothing to import: all 2500 rows"), "{out}");
    }

    // Kinds stored as categories read as their text.
    let data = dir.path().join("categories");
    let out = ok(&sendtime(
        &data,
        &[
            "import",
            "parquet",
            path,
            "--contact",
            "hs_id",
            "--time",
            "at_ms",
            "--kind",
            "what_cat",
        ],
    ));
    assert!(out.starts_with("imported 2500 events"), "{out}");
    assert_eq!(Some(stored(&data)), first);

    // Without a kind column every row takes --kind-default.
    let data = dir.path().join("default-kind");
    let out = ok(&sendtime(
        &data,
        &[
            "import",
            "parquet",
            path,
            "--contact",
            "hs_id",
            "--time",
            "at_us",
            "--kind-default",
            "DELIVERED",
        ],
    ));
    assert!(out.starts_with("imported 2500 events"), "{out}");
    // The same events as with the kind column (contact, time, slot), each of kind 3.
    let mut want: Vec<(String, u8, i64, u8)> = first
        .as_ref()
        .unwrap()
        .iter()
        .map(|(contact, _, at, slot)| (contact.clone(), 3, *at, *slot))
        .collect();
    want.sort();
    assert_eq!(want.len(), 2500);
    assert_eq!(stored(&data), want);

    // A bad row (a null time) is named by its row number and nothing is imported.
    let mut df = ParquetReader::new(std::fs::File::open(&file).unwrap())
        .finish()
        .unwrap();
    let at: Vec<Option<i64>> = (0..2500i64)
        .map(|i| (i != 2100).then_some(1_736_121_600 + i))
        .collect();
    let bad = dir.path().join("bad.parquet");
    let data = dir.path().join("bad");
    // `df` with these times, in row groups of 1000, imported: its error.
    let import_with = |df: &mut DataFrame, at: Column| {
        df.with_column(at).unwrap();
        ParquetWriter::new(std::fs::File::create(&bad).unwrap())
            .with_row_group_size(Some(1000))
            .finish(df)
            .unwrap();
        let file = bad.to_str().unwrap();
        let args = [
            "import",
            "parquet",
            file,
            "--contact",
            "hs_id",
            "--time",
            "epoch_s",
        ];
        failed(&sendtime(&data, &args))
    };
    let err = import_with(&mut df, Column::new("epoch_s".into(), at));
    assert!(
        err.contains("bad.parquet: row 2101: no time in column \"epoch_s\""),
        "{err}"
    );
    assert!(err.contains("nothing was imported"), "{err}");
    assert!(stored(&data).is_empty());

    // Every row bad (times out of range, in row groups of 1000): each counted, the first 20
    // listed with their reason, in order.
    let at: Vec<i64> = (0..2500i64).map(|i| 4_000_000_000_000_000 + i).collect();
    let err = import_with(&mut df, Column::new("epoch_s".into(), at));
    assert!(err.contains("2500 rows of "), "{err}");
    assert!(err.contains("... and 2480 more"), "{err}");
    let listed: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("bad.parquet: row "))
        .collect();
    assert_eq!(listed.len(), 20, "{err}");
    assert!(listed[0].contains("bad.parquet: row 1: "), "{err}");
    assert!(listed[19].contains("bad.parquet: row 20: "), "{err}");
    assert!(
        listed
            .iter()
            .all(|l| l.contains("more than a day from now")),
        "{err}"
    );
    assert!(stored(&data).is_empty());

    // A column of another type is refused with what it should be.
    let err = failed(&sendtime(
        &data,
        &[
            "import",
            "parquet",
            path,
            "--contact",
            "at_us",
            "--time",
            "epoch_s",
        ],
    ));
    assert!(
        err.contains("column \"at_us\" (given by --contact) is datetime"),
        "{err}"
    );
}

/// Exports write 0 or -1 for a missing record id: such a row is refused by its line (CSV) or
/// row (Parquet), as any bad row is, and nothing is imported. Before, every such row went to
/// one made-up contact. An id past `i64` (a `uint64` column) is refused as too large; it was
/// "no contact" (Parquet) and "neither an email nor a numeric contact id" (CSV).
#[test]
fn a_contact_id_that_is_not_positive_is_a_bad_row() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("ids.csv");
    std::fs::write(
        &csv,
        format!(
            "contact,time,kind\n{}\n0,2025-01-06T10:00:00Z,OPEN\n-1,2025-01-06T11:00:00Z,OPEN\n{}\n18446744073709551615,2025-01-06T12:00:00Z,OPEN\n",
            row(1),
            row(2)
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let err = failed(&sendtime(&data, &csv_import(csv.to_str().unwrap(), "1000")));
    for (line, id) in [(3, "0"), (4, "-1")] {
        assert!(
            err.contains(&format!(
                "ids.csv:{line}: contact id {id} in column \"contact\" is not a HubSpot record id"
            )),
            "{err}"
        );
    }
    let too_large = "contact id 18446744073709551615 in column \"contact\" is larger than any HubSpot record id";
    assert!(err.contains(&format!("ids.csv:6: {too_large}")), "{err}");
    assert!(err.contains("nothing was imported"), "{err}");
    assert!(stored(&data).is_empty());

    // The import's error for `df` written as a Parquet export.
    let file = dir.path().join("ids.parquet");
    let import_failing = |mut df: DataFrame| {
        ParquetWriter::new(std::fs::File::create(&file).unwrap())
            .finish(&mut df)
            .unwrap();
        failed(&sendtime(
            &data,
            &[
                "import",
                "parquet",
                file.to_str().unwrap(),
                "--contact",
                "hs_id",
                "--time",
                "epoch_s",
            ],
        ))
    };
    let err = import_failing(
        df!(
            "hs_id" => [12i64, 0, 13],
            "epoch_s" => [1_736_121_600i64, 1_736_121_700, 1_736_121_800],
        )
        .unwrap(),
    );
    assert!(
        err.contains(
            "ids.parquet: row 2: contact id 0 in column \"hs_id\" is not a HubSpot record id"
        ),
        "{err}"
    );
    assert!(stored(&data).is_empty());

    let err = import_failing(
        df!(
            "hs_id" => [12u64, u64::MAX],
            "epoch_s" => [1_736_121_600i64, 1_736_121_700],
        )
        .unwrap(),
    );
    assert!(
        err.contains("ids.parquet: row 2: contact id 18446744073709551615 in column \"hs_id\" is larger than any HubSpot record id"),
        "{err}"
    );
    assert!(stored(&data).is_empty());

    // Integers written as floats (pandas, for a column with a missing value): the errors say
    // so, and how to export them (they named only the type, or the value).
    for (df, column) in [
        (
            df!("hs_id" => [12.0f64], "epoch_s" => [1_736_121_600i64]),
            "hs_id",
        ),
        (
            df!("hs_id" => [12i64], "epoch_s" => [1_736_121_600.5f64]),
            "epoch_s",
        ),
    ] {
        let err = import_failing(df.unwrap());
        assert!(err.contains(&format!("column \"{column}\"")), "{err}");
        assert!(err.contains("integers written as floats"), "{err}");
    }
    std::fs::write(
        &csv,
        "contact,time,kind\n12345.0,2025-01-06T10:00:00Z,OPEN\n",
    )
    .unwrap();
    let err = failed(&sendtime(&data, &csv_import(csv.to_str().unwrap(), "1000")));
    assert!(
        err.contains("ids.csv:2: contact \"12345.0\" in column \"contact\" is neither an email nor a numeric contact id (ids written as floats: export the column as integers)"),
        "{err}"
    );
    assert!(stored(&data).is_empty());
}

/// 100 rows exported to `dir/export.csv` and imported into `dir/data` in two parts: the data
/// folder, the file and the parts.
fn imported_in_two_parts(dir: &Path) -> (PathBuf, PathBuf, Vec<PathBuf>) {
    let data = dir.join("data");
    let csv = dir.join("export.csv");
    export(&csv, 0..100);
    ok(&sendtime(&data, &csv_import(csv.to_str().unwrap(), "50")));
    let parts = files(&data.join("events"), "parquet");
    assert_eq!(parts.len(), 2);
    (data, csv, parts)
}

/// A crash while an import's parts were being published leaves them hidden, none of them
/// half-visible; the next import, or `serve`'s start, finishes the publish and removes what a
/// crash before publishing left staged (only a file import did, so `serve` never saw them).
#[test]
fn an_interrupted_publish_is_hidden_then_finished_by_the_next_import_or_serve() {
    for by_serve in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let (data, csv, parts) = imported_in_two_parts(dir.path());
        let events = data.join("events");
        let file = csv.to_str().unwrap();

        // As a crash leaves it: both parts named in a pending file, one already moved in.
        let staging = events.join(".import-01TESTPUBLISH");
        std::fs::create_dir(&staging).unwrap();
        let mut names = Vec::new();
        for part in &parts {
            let name = part.file_name().unwrap().to_str().unwrap().to_string();
            for f in [part.clone(), part.with_extension("xxh3")] {
                std::fs::rename(&f, staging.join(f.file_name().unwrap())).unwrap();
            }
            names.push(name);
        }
        std::fs::write(
            events.join(".import-01TESTPUBLISH.pending"),
            names.join("\n"),
        )
        .unwrap();
        for f in [names[0].clone(), names[0].replace(".parquet", ".xxh3")] {
            std::fs::rename(staging.join(&f), events.join(&f)).unwrap();
        }
        // And a staging folder from an import that died before publishing.
        let abandoned = events.join(".import-01TESTABANDONED");
        std::fs::create_dir(&abandoned).unwrap();
        std::fs::write(abandoned.join("part-x.parquet.tmp"), b"half").unwrap();

        let mut dry = csv_import(file, "50");
        dry.push("--dry-run");
        let out = ok(&sendtime(&data, &dry));
        assert!(
            out.starts_with("dry run: 100 events of"),
            "none of the parts is visible: {out}"
        );

        if by_serve {
            common::Server::start(&common::shipped_config(), &data, &[]).stop();
            assert!(!staging.exists() && !abandoned.exists());
            assert!(!events.join(".import-01TESTPUBLISH.pending").exists());
            assert_eq!(stored(&data).len(), 100);
        }
        let out = ok(&sendtime(&data, &csv_import(file, "50")));
        assert!(out.starts_with("nothing to import: all 100 rows"), "{out}");
        assert_eq!(stored(&data).len(), 100);
        assert_eq!(files(&events, "parquet").len(), 2);
        assert!(!staging.exists() && !abandoned.exists());
        assert!(!events.join(".import-01TESTPUBLISH.pending").exists());
    }
}

/// A file separated by semicolons (a European Excel's CSV), one saved as UTF-16 or
/// Windows-1252, and a compressed or archived export are refused with what to do (they got
/// "no column named" and "invalid utf-8 near byte 0").
#[test]
fn a_file_saved_in_another_form_says_how_to_save_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let semi = dir.path().join("semi.csv");
    std::fs::write(&semi, "contact;time\na@example.com;2026-01-01T10:00:00Z\n").unwrap();
    let err = failed(&sendtime(&data, &csv_import(semi.to_str().unwrap(), "50")));
    assert!(
        err.contains("the file looks separated by ';' or tabs, and sendtime reads commas"),
        "{err}"
    );
    let wide = dir.path().join("wide.csv");
    let mut bytes = vec![0xFF, 0xFE];
    for u in "contact,time\n".encode_utf16() {
        bytes.extend(u.to_le_bytes());
    }
    std::fs::write(&wide, bytes).unwrap();
    let err = failed(&sendtime(&data, &csv_import(wide.to_str().unwrap(), "50")));
    assert!(err.contains("is UTF-16 text: save it as UTF-8"), "{err}");
    // Excel's plain "CSV" (Windows-1252), a warehouse's gzip unload, HubSpot's zip download:
    // each said as the parser's "invalid UTF-8", or "the header has: PK...".
    let latin = dir.path().join("latin.csv");
    std::fs::write(&latin, b"contact,time,kind,pr\xe9nom\n").unwrap();
    let err = failed(&sendtime(&data, &csv_import(latin.to_str().unwrap(), "50")));
    assert!(
        err.contains("the header row is not UTF-8 text: save the file as UTF-8"),
        "{err}"
    );
    // A row's field in Windows-1252 is named by its column, with the same advice.
    let row = dir.path().join("row.csv");
    std::fs::write(
        &row,
        b"contact,time,kind\nj\xe9r\xf4me@example.com,2026-01-01T10:00:00Z,OPEN\n",
    )
    .unwrap();
    let err = failed(&sendtime(&data, &csv_import(row.to_str().unwrap(), "50")));
    assert!(
        err.contains("row.csv:2: ")
            && err
                .contains("column \"contact\" (field 1) is not UTF-8 text: save the file as UTF-8"),
        "{err}"
    );
    let gz = dir.path().join("export.csv.gz");
    std::fs::write(&gz, [0x1F, 0x8B, 0x08, 0x00, 0, 0, 0, 0]).unwrap();
    let zip = dir.path().join("export.zip");
    std::fs::write(&zip, b"PK\x03\x04\x14\x00").unwrap();
    for (file, said) in [
        (&gz, "is gzip-compressed: decompress it first"),
        (&zip, "is a zip archive: an Excel workbook (.xlsx) is one"),
    ] {
        let file = file.to_str().unwrap();
        let err = failed(&sendtime(&data, &csv_import(file, "50")));
        assert!(err.contains(said), "{err}");
        let parquet = [
            "import",
            "parquet",
            file,
            "--contact",
            "contact",
            "--time",
            "time",
        ];
        let err = failed(&sendtime(&data, &parquet));
        assert!(err.contains(said), "{err}");
    }
    // A kind not known names its column, as a contact or time does.
    let opened = dir.path().join("opened.csv");
    std::fs::write(
        &opened,
        "contact,time,kind\na@example.com,2026-01-01T10:00:00Z,OPENED\n",
    )
    .unwrap();
    let err = failed(&sendtime(
        &data,
        &csv_import(opened.to_str().unwrap(), "50"),
    ));
    assert!(
        err.contains("unknown event kind \"OPENED\" in column \"kind\""),
        "{err}"
    );
    assert!(!data.join("events").exists());
}

/// Zoned text as databases write it is read at its offset; a date without a time of day is
/// refused by its line (CSV) or its column's type (Parquet): it was taken for midnight UTC,
/// and the model learnt midnight.
#[test]
fn zoned_text_is_read_and_a_date_without_an_hour_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let zoned = dir.path().join("zoned.csv");
    std::fs::write(
        &zoned,
        "contact,time,kind\n\
         a@example.com,2026-01-02 03:04:05+00,OPEN\n\
         b@example.com,2026-01-01 19:04:05.000 -0800,OPEN\n\
         c@example.com,2026-01-02T04:04:05+0100,OPEN\n\
         d@example.com,1767323045.5,OPEN\n",
    )
    .unwrap();
    ok(&sendtime(&data, &csv_import(zoned.to_str().unwrap(), "50")));
    // Opens (kind 6) at 2026-01-02 03:04:05 UTC, a Friday: slot 4 * 24 + 3.
    let at = 1_767_323_045_000;
    let want: Vec<(String, u8, i64, u8)> = ["a", "b", "c", "d"]
        .iter()
        .map(|c| {
            (
                format!("{c}@example.com"),
                6,
                at + 500 * (*c == "d") as i64,
                99,
            )
        })
        .collect();
    assert_eq!(stored(&data), want);

    let dates = dir.path().join("dates.csv");
    std::fs::write(
        &dates,
        "contact,time,kind\ne@example.com,2026-01-02 03:04:05Z,OPEN\ne@example.com,2026-01-05,OPEN\n",
    )
    .unwrap();
    let err = failed(&sendtime(&data, &csv_import(dates.to_str().unwrap(), "50")));
    assert!(
        err.contains(
            "dates.csv:3: time \"2026-01-05\" in column \"time\" is a date without a time of day"
        ),
        "{err}"
    );
    let mut df = DataFrame::new(
        1,
        vec![
            Column::new("contact".into(), ["e@example.com"]),
            Column::new("day".into(), [20_455i32])
                .cast(&DataType::Date)
                .unwrap(),
        ],
    )
    .unwrap();
    let file = dir.path().join("dates.parquet");
    ParquetWriter::new(std::fs::File::create(&file).unwrap())
        .finish(&mut df)
        .unwrap();
    let args = [
        "import",
        "parquet",
        file.to_str().unwrap(),
        "--contact",
        "contact",
        "--time",
        "day",
    ];
    let err = failed(&sendtime(&data, &args));
    assert!(
        err.contains("column \"day\" (given by --time) is a DATE, without a time of day"),
        "{err}"
    );
    assert_eq!(stored(&data).len(), 4, "nothing more imported");
}

/// Ctrl-C during a file import stops it at its next batch: nothing imported, said so, and no
/// staging folder left (it ended without a word, its staged parts left for the next import).
#[test]
fn ctrl_c_stops_an_import_with_nothing_imported() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let small = dir.path().join("small.csv");
    std::fs::write(
        &small,
        "contact,time,kind\n7@example.com,2025-01-06T09:00:00Z,OPEN\n",
    )
    .unwrap();
    ok(&sendtime(&data, &csv_import(small.to_str().unwrap(), "50")));
    let big = dir.path().join("big.csv");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&big).unwrap());
    writeln!(out, "contact,time,kind").unwrap();
    for i in 0..4_000_000u64 {
        writeln!(
            out,
            "{},2025-01-{:02}T{:02}:{:02}:00Z,OPEN",
            1 + i % 50_000,
            1 + i % 28,
            i % 24,
            i % 60
        )
        .unwrap();
    }
    out.flush().unwrap();
    drop(out);
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_sendtime"))
        .args([
            "--config",
            common::shipped_config().to_str().unwrap(),
            "--data",
        ])
        .arg(&data)
        .args(csv_import(big.to_str().unwrap(), "100000"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let events = data.join("events");
    let staging = || {
        std::fs::read_dir(&events).unwrap().any(|e| {
            e.unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with(".import-")
        })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !staging() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let interrupted = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupted.success());
    let out = child.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("nothing of") && said.contains("was imported"),
        "{said}"
    );
    assert!(!staging(), "a staging folder left");
    assert_eq!(stored(&data).len(), 1, "only the small file's event");
}

/// A damaged stored part stops an import with what to do: `profiles` sets it aside, and the
/// import then stores its rows again (the error said only that the checksum did not match).
#[test]
fn a_damaged_part_stops_an_import_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let (data, csv, parts) = imported_in_two_parts(dir.path());
    let file = csv.to_str().unwrap();
    std::fs::write(parts[0].with_extension("xxh3"), "0").unwrap();
    let err = failed(&sendtime(&data, &csv_import(file, "50")));
    assert!(
        err.contains(
            "a stored events part is damaged: `sendtime profiles` moves it to quarantine/"
        ) && err.contains("does not match its checksum"),
        "{err}"
    );
    ok(&sendtime(&data, &["profiles"]));
    assert_eq!(files(&data.join("quarantine/events"), "parquet").len(), 1);
    let out = ok(&sendtime(&data, &csv_import(file, "50")));
    assert!(out.starts_with("imported 50 events"), "{out}");
    assert_eq!(stored(&data).len(), 100);
}

/// An erase cut short refuses a file import until it is finished: the person's entry may still
/// be in the dictionary beside its blank, and their new events were stored under it.
#[test]
fn an_erase_cut_short_refuses_an_import() {
    let dir = tempfile::tempdir().unwrap();
    let (data, _, _) = imported_in_two_parts(dir.path());
    let newer = dir.path().join("newer.csv");
    export(&newer, 100..150);
    let file = newer.to_str().unwrap();
    let intent = data.join("state/erase.pending");
    std::fs::create_dir_all(intent.parent().unwrap()).unwrap();
    std::fs::write(&intent, "{}").unwrap();
    let err = failed(&sendtime(&data, &csv_import(file, "50")));
    assert!(err.contains("an erase was cut short"), "{err}");
    assert_eq!(stored(&data).len(), 100);
    std::fs::remove_file(&intent).unwrap();
    ok(&sendtime(&data, &csv_import(file, "50")));
    assert_eq!(stored(&data).len(), 150);
}

/// An erase of a HubSpot id with `--only` takes it off the entry of the email it was stored
/// beside: a later file import of that email stored the erased id in each of its events.
#[test]
fn an_id_erased_alone_is_not_stored_again_by_an_import_of_its_email() {
    use sendtime::datasets::events::{Event, Kind, append};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let opened = |email: &str, id: Option<i64>, at_ms: i64| Event {
        event_id: None,
        contact_id: id,
        email: Some(email.into()),
        kind: Kind::Open,
        at_ms,
        filtered: false,
        source: "hubspot:main".into(),
    };
    let t = 1_736_121_600_000;
    append(
        &data,
        &[
            opened("carl@example.com", Some(7701), t),
            opened("dora@example.com", Some(9999), t),
        ],
    )
    .unwrap();
    let said = failed(&sendtime(&data, &["erase", "7701"]));
    assert!(said.contains("carl@example.com"), "{said}");
    let out = ok(&sendtime(&data, &["erase", "7701", "--only"]));
    assert!(
        out.contains("1 entries of other emails carry an id given"),
        "{out}"
    );
    let csv = dir.path().join("opens.csv");
    std::fs::write(
        &csv,
        "contact,time\ncarl@example.com,2025-02-03T08:00:00Z\ndora@example.com,2025-02-03T08:00:00Z\n",
    )
    .unwrap();
    ok(&sendtime(&data, &csv_columns(csv.to_str().unwrap())));
    let mut ids = Vec::new();
    for part in parts(&data, "events") {
        let df = ParquetReader::new(std::fs::File::open(part).unwrap())
            .finish()
            .unwrap();
        ids.extend(df.column("contact_id").unwrap().i64().unwrap().iter());
    }
    ids.sort();
    assert_eq!(ids, [None, Some(9999), Some(9999)]);
    // Carl's entry is kept, once, under his email.
    assert_eq!(dictionary(&data), ["carl@example.com", "dora@example.com"]);
}

/// With less memory for the stored events than they need, a longer export is checked in several
/// passes over the file and stores exactly what one pass stores: its new rows, the rows it
/// holds more often than the store, and new contacts' rows, each once.
#[test]
fn a_store_larger_than_the_dedup_memory_is_checked_in_passes_to_the_same_rows() {
    let dir = tempfile::tempdir().unwrap();
    let (one, passes) = (dir.path().join("one"), dir.path().join("passes"));
    let csv = dir.path().join("export.csv");
    export(&csv, 0..4500);
    let file = csv.to_str().unwrap();
    for data in [&one, &passes] {
        ok(&sendtime(data, &csv_import(file, "1000")));
    }
    let mut text = std::fs::read_to_string(&csv).unwrap();
    for i in [10, 10, 4499] {
        text.push_str(&row(i)); // each stored once, now in the file once more: three new rows
        text.push('\n');
    }
    for i in 4500..4600 {
        text.push_str(&row(i));
        text.push('\n');
        text.push_str(&format!(
            "new{i}@example.com,{}\n",
            &row(i)[row(i).find(',').unwrap() + 1..]
        ));
    }
    std::fs::write(&csv, text).unwrap();
    let whole = ok(&sendtime(&one, &csv_import(file, "1000")));
    let mut args = csv_import(file, "1000");
    // 4500 stored events take 36 KB: about four passes.
    args.extend(["--dedup-memory", "0.01"]);
    let split = ok(&sendtime(&passes, &args));
    assert!(
        whole.starts_with("imported 203 events (203 events of ")
            && whole.ends_with("; 4500 rows already stored, skipped\n"),
        "{whole}"
    );
    assert_eq!(
        split,
        whole.replace(one.to_str().unwrap(), passes.to_str().unwrap())
    );
    let rows = stored(&passes);
    assert_eq!(rows.len(), 4500 + 203);
    assert_eq!(rows, stored(&one));
    let tens = rows
        .iter()
        .filter(|r| r.2 == 1_736_121_600_000 + 10 * 37 * 60_000);
    assert_eq!(tens.count(), 3);

    let mut args = csv_import(file, "1000");
    args.extend(["--dedup-memory", "0"]);
    assert!(failed_usage(&sendtime(&passes, &args)).contains("not a number of megabytes above 0"));
    // So is a kind that is none, naming the kinds (it failed as a run, exit 1).
    let mut args = csv_columns(file);
    args.extend(["--kind-default", "BOGUS"]);
    let err = failed_usage(&sendtime(&passes, &args));
    assert!(
        err.contains("\"BOGUS\" is not an event kind; use one of: SENT,"),
        "{err}"
    );
}

fn failed_usage(o: &Output) -> String {
    assert_eq!(o.status.code(), Some(2));
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A warehouse's NUMBER column comes as a DECIMAL (`decimal-contact.parquet`, written with
/// pyarrow: contact `c` a decimal(18, 0), time `t` epoch seconds). It is refused with what to
/// do, as is one column given for two flags; both aborted the import with a panic.
#[test]
fn a_decimal_column_or_one_column_for_two_flags_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/import/decimal-contact.parquet");
    let path = file.to_str().unwrap();
    let run = |contact: &str, time: &str| {
        let args = [
            "import",
            "parquet",
            path,
            "--contact",
            contact,
            "--time",
            time,
        ];
        failed(&sendtime(&data, &args))
    };
    let err = run("c", "t");
    assert!(
        err.contains("\"c\" (given by --contact) is a DECIMAL"),
        "{err}"
    );
    let err = run("t", "t");
    assert!(
        err.contains("\"t\" is given by both --contact and --time"),
        "{err}"
    );
    // The same in a CSV file: ten-digit ids read as epoch seconds made up events.
    let csv = dir.path().join("ids.csv");
    std::fs::write(&csv, "hs_id,kind\n1000000001,OPEN\n").unwrap();
    let csv = csv.to_str().unwrap();
    for (contact, time, kind) in [("hs_id", "hs_id", "kind"), ("hs_id", "t", "hs_id")] {
        let args = [
            "import",
            "csv",
            csv,
            "--contact",
            contact,
            "--time",
            time,
            "--kind",
            kind,
        ];
        let err = failed(&sendtime(&data, &args));
        assert!(
            err.contains("\"hs_id\" is given by both --contact and"),
            "{err}"
        );
    }
    assert!(files(&data.join("events"), "parquet").is_empty());
}

/// A header row with an unclosed quote would take the whole file in as its name, and print
/// it back: it is refused once past its bound, in a short message.
#[test]
fn a_header_that_never_ends_is_refused_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let file = dir.path().join("opens.csv");
    let mut text = String::from("contact,\"time\n");
    for i in 0..100_000 {
        text.push_str(&format!("{i},2024-01-0{}T09:00:00Z\n", 1 + i % 9));
    }
    std::fs::write(&file, &text).unwrap();
    let err = failed(&sendtime(&data, &csv_columns(file.to_str().unwrap())));
    assert!(
        err.contains("does not end within its first 1024 KiB"),
        "{}",
        &err[..err.len().min(400)]
    );
    assert!(err.len() < 2_000, "a message of {} bytes", err.len());
}

/// A quote opened in the header and closed rows later takes those rows in as a column name:
/// refused, nothing imported (the import took the rows after it and said nothing of the
/// others); so too a short file whose header's quote never closes (it said "no rows").
#[test]
fn a_header_that_swallows_rows_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let file = dir.path().join("opens.csv");
    for text in [
        "contact,time,\"subject\n1,2025-01-01T10:00:00Z,hello\n2,2025-01-01T11:00:00Z,size 12\"\n3,2025-01-01T12:00:00Z,x\n",
        "contact,time,\"subject\n1,2025-01-01T10:00:00Z,hello\n",
    ] {
        std::fs::write(&file, text).unwrap();
        let err = failed(&sendtime(&data, &csv_columns(file.to_str().unwrap())));
        assert!(err.contains("line 1: the header's column"), "{err}");
        assert!(files(&data.join("events"), "parquet").is_empty());
    }
}

/// A file with a column that looks like the event kind, imported without --kind, is refused
/// naming it (every row was read as an open, deliveries too); --kind-default says every row
/// is one kind, and is then taken as said.
#[test]
fn a_kind_column_not_named_is_refused_unless_a_kind_is_chosen() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let file = dir.path().join("export.csv");
    std::fs::write(
        &file,
        "contact,time,Event_Type\na@example.com,2025-01-06T10:00:00Z,DELIVERED\na@example.com,2025-01-06T11:00:00Z,OPEN\n",
    )
    .unwrap();
    let base = csv_columns(file.to_str().unwrap());
    let err = failed(&sendtime(&data, &base));
    assert!(
        err.contains("column \"Event_Type\" looks like the event kind"),
        "{err}"
    );
    assert!(files(&data.join("events"), "parquet").is_empty());
    let chosen = [&base[..], &["--kind-default", "OPEN"]].concat();
    let out = sendtime(&data, &chosen);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!files(&data.join("events"), "parquet").is_empty());
}

/// A pipe cannot be read in place or again: it is refused, saying so, and nothing is imported.
#[test]
fn a_pipe_is_refused_with_what_to_do_instead() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut child = Command::new(env!("CARGO_BIN_EXE_sendtime"))
        .arg("--config")
        .arg(common::shipped_config())
        .arg("--data")
        .arg(&data)
        .args(csv_import("/dev/stdin", "1000"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // Refused before the pipe is read: its far end may be closed while this writes.
    let writer = std::thread::spawn(move || drop(stdin.write_all(row(0).as_bytes())));
    let err = failed(&child.wait_with_output().unwrap());
    writer.join().unwrap();
    assert!(
        err.contains("/dev/stdin is not a regular file")
            && err.contains("save a pipe's output to a file first"),
        "{err}"
    );
    assert!(files(&data.join("events"), "parquet").is_empty());
}

/// What a writer that crashed left in `events/` and `contacts/` (a temporary file, the
/// checksum of a part never published) is cleared by the next import, and nothing else.
#[test]
fn an_import_clears_what_a_crashed_writer_left() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let file = dir.path().join("export.csv");
    export(&file, 0..100);
    ok(&sendtime(
        &data,
        &csv_import(file.to_str().unwrap(), "1000"),
    ));
    let parts_before = files(&data.join("events"), "parquet");
    let left = [
        data.join("events/part-01KB0000000000000000000000.parquet.tmp"),
        data.join("events/part-01KB0000000000000000000000.xxh3"),
        data.join("contacts/part-01KB0000000000000000000001.parquet.tmp"),
    ];
    for f in &left {
        std::fs::write(f, b"left by a crash").unwrap();
    }
    export(&file, 100..200);
    ok(&sendtime(
        &data,
        &csv_import(file.to_str().unwrap(), "1000"),
    ));
    for f in &left {
        assert!(!f.exists(), "{}", f.display());
    }
    let parts_after = files(&data.join("events"), "parquet");
    assert_eq!(parts_after.len(), parts_before.len() + 1);
    assert_eq!(stored(&data).len(), 200);
}

/// A first import that fails leaves no data directory behind (a mistyped `--data` is no
/// trace); one into a directory that exists keeps it.
#[test]
fn a_failed_first_import_leaves_no_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.csv");
    std::fs::write(
        &bad,
        format!(
            "contact,time,kind\n{}\n1234,2025-02-30T10:00:00Z,OPEN\n",
            row(1)
        ),
    )
    .unwrap();
    let fresh = dir.path().join("fresh");
    let err = failed(&sendtime(&fresh, &csv_import(bad.to_str().unwrap(), "10")));
    assert!(err.contains("nothing was imported"), "{err}");
    assert!(!fresh.exists());

    let kept = dir.path().join("kept");
    std::fs::create_dir(&kept).unwrap();
    failed(&sendtime(&kept, &csv_import(bad.to_str().unwrap(), "10")));
    assert!(kept.is_dir());
}

/// An import's small parts (one a page from HubSpot, tens of thousands a year) are merged
/// when the profiles take them in, without a rebuild: every event is stored once, and the
/// profiles are those the same refresh makes without merging (here, while an import holds
/// the events lock).
#[test]
fn small_event_parts_are_merged_when_profiles_take_them_in() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (first, second) = (dir.path().join("first.csv"), dir.path().join("second.csv"));
    export(&first, 0..3000);
    export(&second, 3000..4500);
    ok(&sendtime(&data, &csv_import(first.to_str().unwrap(), "50")));
    let out = ok(&sendtime(&data, &["profiles"]));
    assert!(out.contains(" rebuilt (60 event parts read)"), "{out}");
    assert_eq!(parts(&data, "events").len(), 60, "merged at 60 parts");
    ok(&sendtime(
        &data,
        &csv_import(second.to_str().unwrap(), "50"),
    ));
    let rows = stored(&data);
    assert_eq!(rows.len(), 4500);
    assert_eq!(parts(&data, "events").len(), 90);
    let unmerged = dir.path().join("unmerged");
    common::copy_dir(&data, &unmerged);

    let out = ok(&sendtime(&data, &["profiles"]));
    assert!(out.contains(" updated (30 event parts read)"), "{out}");
    assert_eq!(parts(&data, "events").len(), 1, "not merged");
    // Sorted by contact, as written: a rebuild reads it on every core.
    let merged = sendtime::store::read_part(&parts(&data, "events")[0]).unwrap();
    let contacts = merged.column("contact").unwrap().u32().unwrap().clone();
    assert!(contacts.into_no_null_iter().is_sorted());
    assert!(parts(&data, "contacts").len() < 4);
    assert_eq!(stored(&data), rows);
    // The merged part took its sources' place: nothing new, and no rebuild.
    let out = ok(&sendtime(&data, &["profiles"]));
    assert!(out.contains(" updated (0 event parts read)"), "{out}");

    // The same refresh while an import writes: nothing merged.
    let lock = std::fs::File::create(unmerged.join("events.lock")).unwrap();
    lock.lock().unwrap();
    let out = ok(&sendtime(&unmerged, &["profiles"]));
    assert!(out.contains(" updated (30 event parts read)"), "{out}");
    assert_eq!(parts(&unmerged, "events").len(), 90);
    drop(lock);
    let explain = |data: &Path, who: &str| {
        ok(&sendtime(
            data,
            &["explain", who, "--at", "2026-10-24T12:00:00Z"],
        ))
    };
    for who in ["reader3@example.com", "1001", "1299"] {
        assert_eq!(explain(&data, who), explain(&unmerged, who));
    }

    // The merged parts' sources stay (unlisted) for readers that listed them before, and go
    // at the next profile update past their grace (here set an hour back).
    assert!(files(&data.join("events"), "parquet").len() > 1);
    let out = ok(&sendtime(&data, &["profiles"]));
    assert!(out.contains(" updated (0 event parts read)"), "{out}");
    assert!(files(&data.join("events"), "parquet").len() > 1);
    for dataset in ["events", "contacts"] {
        for intent in files(&data.join(dataset), "intent") {
            let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
            let file = std::fs::File::options().write(true).open(&intent).unwrap();
            file.set_modified(hour_ago).unwrap();
        }
    }
    let out = ok(&sendtime(&data, &["profiles"]));
    assert!(out.contains(" updated (0 event parts read)"), "{out}");
    assert_eq!(
        files(&data.join("events"), "parquet"),
        parts(&data, "events")
    );
    assert_eq!(
        files(&data.join("contacts"), "parquet"),
        parts(&data, "contacts")
    );
}

/// A file with a header and no rows imports nothing and says so, rather than "imported 0
/// events".
#[test]
fn a_file_without_rows_says_there_is_nothing_to_import() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let csv = dir.path().join("header.csv");
    std::fs::write(&csv, "contact,time,kind\n").unwrap();
    let out = ok(&sendtime(&data, &csv_import(csv.to_str().unwrap(), "1000")));
    assert_eq!(
        out,
        format!("nothing to import: {} has no rows\n", csv.display())
    );
    // Nor does it leave a data folder it made (readers took it for one with data).
    assert!(!data.exists());
    // A folder that was there stays, with what it holds.
    let one = dir.path().join("one.csv");
    export(&one, 0..1);
    ok(&sendtime(&data, &csv_import(one.to_str().unwrap(), "1000")));
    let stored = files(&data.join("events"), "parquet");
    assert_eq!(stored.len(), 1);
    ok(&sendtime(&data, &csv_import(csv.to_str().unwrap(), "1000")));
    assert_eq!(files(&data.join("events"), "parquet"), stored);
}

/// Contacts new to the store that come back batch after batch (a file of more than ten 2 MB chunks)
/// are each one contact, indexed in order of first sight as one thread interning every row
/// would (the readers look contacts up in an index the importer merges its new ones into);
/// the file imported again stores nothing, in passes too; and once two contacts are erased,
/// their rows in it are skipped and they do not come back.
#[test]
fn new_contacts_over_many_batches_are_each_one_contact_in_order_of_first_sight() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let csv = dir.path().join("export.csv");
    let n = 600_000usize;
    // Every other row a contact's first; the others one seen before, anywhere in the file.
    let contact = |i: usize| match i % 2 {
        0 => i / 2,
        _ => i.wrapping_mul(2_654_435_761) % (i / 2 + 1),
    };
    let (name, key) = (
        |k: usize| match k % 2 {
            0 => format!("{}", 1 + k),
            _ => format!("Person{k}@Example.com"),
        },
        |k: usize| match k % 2 {
            0 => format!("#{}", 1 + k),
            _ => format!("person{k}@example.com"),
        },
    );
    let at_s = |i: usize| 1_736_121_600 + i as i64 * 60;
    let mut text = String::from("contact,time\n");
    for i in 0..n {
        let at = chrono_free_rfc3339(at_s(i));
        text.push_str(&format!("{},{at}\n", name(contact(i))));
    }
    assert!(text.len() > 10 * (2 << 20), "{} bytes", text.len());
    std::fs::write(&csv, text).unwrap();
    let file = csv.to_str().unwrap();
    let args = csv_columns(file);
    let out = ok(&sendtime(&data, &args));
    assert!(
        out.starts_with(&format!(
            "imported {n} events ({n} events of {} contacts",
            n / 2
        )),
        "{out}"
    );
    let in_order: Vec<String> = (0..n / 2).map(key).collect();
    assert_eq!(dictionary(&data), in_order);
    let rows: Vec<(String, i64)> = (stored(&data).into_iter())
        .map(|(key, _, at, _)| (key, at))
        .collect();
    let mut expected: Vec<(String, i64)> =
        (0..n).map(|i| (key(contact(i)), at_s(i) * 1000)).collect();
    expected.sort();
    assert!(rows == expected, "the rows stored are not the file's");

    let again = format!("nothing to import: all {n} rows of {file} are already stored\n");
    assert_eq!(ok(&sendtime(&data, &args)), again);
    let mut in_passes = args.clone();
    in_passes.extend(["--dedup-memory", "1"]);
    assert_eq!(ok(&sendtime(&data, &in_passes)), again);

    for k in [0, 1] {
        ok(&sendtime(&data, &["erase", &name(k)]));
    }
    let theirs = (0..n).filter(|&i| contact(i) < 2).count();
    assert!(theirs > 2, "{theirs}");
    assert_eq!(
        ok(&sendtime(&data, &args)),
        format!(
            "nothing to import from {file}; {} rows already stored, skipped; {theirs} rows of \
             contacts erased (sendtime erase), skipped\n",
            n - theirs
        )
    );
    let keys = dictionary(&data);
    assert_eq!(keys.len(), n / 2, "no entry added for them");
    assert!(
        keys[..2].iter().all(|k| k.starts_with("~erased-")),
        "{:?}",
        &keys[..2]
    );
    assert_eq!(stored(&data).len(), n - theirs);
}

/// Change a byte in the middle of `part`, as a disk might after it was written.
fn damage(part: &Path) {
    let mut bytes = std::fs::read(part).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(part, bytes).unwrap();
}

/// A damaged events part (its bytes changed after it was written) does not stop an erase:
/// the real run sets it aside into quarantine/ and says so, where every erase used to stop
/// at it; a dry run, which moves nothing, names it and says what to do.
#[test]
fn an_erase_sets_a_damaged_part_aside_and_a_dry_run_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let csv = dir.path().join("export.csv");
    export(&csv, 0..3000);
    ok(&sendtime(&data, &csv_import(csv.to_str().unwrap(), "1000")));
    let events = parts(&data, "events");
    assert!(events.len() >= 3, "{events:?}");
    let damaged = &events[1];
    damage(damaged);
    let name = damaged.file_name().unwrap().to_str().unwrap();

    let said = failed(&sendtime(&data, &["erase", "--dry-run", "1001"]));
    assert!(
        said.contains(name) && said.contains("is damaged: run without --dry-run"),
        "{said}"
    );
    assert!(damaged.exists());

    let before = stored(&data);
    assert!(before.iter().any(|(key, ..)| key == "#1001"));
    let out = ok(&sendtime(&data, &["erase", "1001"]));
    assert!(!damaged.exists());
    assert!(data.join("quarantine/events").join(name).exists());
    assert!(out.contains("events: "), "{out}");
    // One part, its checksum file not counted as another.
    assert!(
        out.contains("hold 1 files set aside as unreadable (a part and its checksum counted once)"),
        "{out}"
    );
    // Contact 1001's events left in the other parts are gone; the others' are kept.
    let left = stored(&data);
    assert!(left.iter().all(|(key, ..)| key != "#1001"), "{left:?}");
    assert!(left.iter().any(|(key, ..)| key == "#1002"), "{left:?}");
}

/// A file import's dry run, which writes nothing, names a damaged part of the contact
/// dictionary and leaves it where it is (it set it aside into quarantine, beside a running
/// `serve` too: an audit).
#[test]
fn an_imports_dry_run_names_a_damaged_contacts_part_and_moves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let csv = dir.path().join("export.csv");
    export(&csv, 0..3000);
    ok(&sendtime(&data, &csv_import(csv.to_str().unwrap(), "1000")));
    let contacts = parts(&data, "contacts");
    let damaged = &contacts[0];
    damage(damaged);
    let name = damaged.file_name().unwrap().to_str().unwrap();
    let mut dry = csv_import(csv.to_str().unwrap(), "1000");
    dry.push("--dry-run");
    let said = failed(&sendtime(&data, &dry));
    assert!(
        said.contains(name) && said.contains("is damaged: run without --dry-run"),
        "{said}"
    );
    assert!(damaged.exists());
    assert!(!data.join("quarantine/contacts").exists());
}

/// An erase waits for a file import (which holds the events lock for as long as it reads its
/// file) without holding the dispatch lock meanwhile: `serve` and `tick` could not start for
/// the length of an unrelated import.
#[test]
fn an_erase_waiting_for_an_import_leaves_dispatching_free() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let csv = dir.path().join("opens.csv");
    std::fs::write(
        &csv,
        "contact,time\nann@example.com,2025-03-04T09:15:00Z\nbob@example.com,2025-03-04T10:15:00Z\n",
    )
    .unwrap();
    ok(&sendtime(&data, &csv_columns(csv.to_str().unwrap())));
    let importing = std::fs::File::open(data.join("events.lock")).unwrap();
    importing.lock().unwrap();
    let mut erase = std::process::Command::new(env!("CARGO_BIN_EXE_sendtime"))
        .arg("--config")
        .arg(common::shipped_config())
        .arg("--data")
        .arg(&data)
        .args(["erase", "ann@example.com"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert!(erase.try_wait().unwrap().is_none(), "the erase waits");
    let dispatch = std::fs::File::create(data.join("dispatch.lock")).unwrap();
    assert!(
        dispatch.try_lock().is_ok(),
        "the erase held the dispatch lock"
    );
    drop(dispatch);
    drop(importing);
    let erased = erase.wait_with_output().unwrap();
    assert!(
        erased.status.success(),
        "{}",
        String::from_utf8_lossy(&erased.stderr)
    );
    let keys: Vec<String> = stored(&data).into_iter().map(|r| r.0).collect();
    assert_eq!(keys, ["bob@example.com"]);
}

/// A warehouse export whose dates were cast to timestamps (every time at midnight) is
/// refused as a file of dates, nothing imported; one real time among them is enough to take it.
#[test]
fn times_that_are_all_midnight_are_refused_as_dates() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let csv = dir.path().join("dates.csv");
    let mut text = String::from("contact,time\n");
    for i in 0..150 {
        text.push_str(&format!(
            "{},2025-0{}-{:02} 00:00:00\n",
            1000 + i % 40,
            1 + i % 6,
            1 + i % 28
        ));
    }
    std::fs::write(&csv, &text).unwrap();
    let said = failed(&sendtime(&data, &csv_columns(csv.to_str().unwrap())));
    assert!(
        said.contains("all 150 events are at 00:00:00 UTC"),
        "{said}"
    );
    assert!(parts(&data, "events").is_empty());
    // A zone's midnight across a change of summer time: two times an hour apart (taken before).
    let mut zoned = String::from("contact,time\n");
    for i in 0..150 {
        let (month, hour) = if i % 2 == 0 { (1, 23) } else { (7, 22) };
        zoned.push_str(&format!(
            "{},2025-0{month}-{:02}T{hour}:00:00Z\n",
            1000 + i % 40,
            1 + i % 28
        ));
    }
    std::fs::write(&csv, &zoned).unwrap();
    let said = failed(&sendtime(&data, &csv_columns(csv.to_str().unwrap())));
    assert!(
        said.contains("all 150 events are at 23:00:00 or 22:00:00 UTC"),
        "{said}"
    );
    assert!(parts(&data, "events").is_empty());
    text.push_str("1000,2025-07-01 09:41:00\n");
    std::fs::write(&csv, &text).unwrap();
    let out = ok(&sendtime(&data, &csv_columns(csv.to_str().unwrap())));
    assert!(out.contains("imported 151 events"), "{out}");
}
