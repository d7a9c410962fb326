//! The JSON Schema of `webhooks.toml` and the config reader agree: the same keys in every
//! table, the same types, ranges and choices, the same defaults. `sendtime schema` prints
//! what the repository ships, and the shipped config names it on its first line.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use sendtime::config::{Config, EnvCheck, Overrides};
use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn shipped_schema() -> Value {
    serde_json::from_slice(&std::fs::read(repo().join("webhooks.schema.json")).unwrap()).unwrap()
}

#[test]
fn the_shipped_schema_is_what_sendtime_schema_prints_and_the_config_names_it() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sendtime"))
        .arg("schema")
        .output()
        .unwrap();
    assert!(out.status.success());
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        printed,
        shipped_schema(),
        "run `sendtime schema > webhooks.schema.json`"
    );
    let config = std::fs::read_to_string(repo().join("webhooks.toml")).unwrap();
    assert_eq!(
        config.lines().next(),
        Some("#:schema ./webhooks.schema.json")
    );
    // Commands that read no config refuse one given (they ignored it), the default's name
    // included (`gen` takes --data only as its --out).
    let dir = tempfile::tempdir().unwrap();
    let refused = [
        &["schema", "--config", "nope.toml"][..],
        &["schema", "--data", "nowhere"],
        &["demo", "--config", "webhooks.toml"],
        &["hubspot-standin", "--data", "nowhere"],
        &[
            "gen",
            "--config",
            "webhooks.toml",
            "--contacts",
            "1",
            "--events",
            "1",
            "--out",
            "g",
        ],
    ];
    for args in refused {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sendtime"))
            .current_dir(dir.path())
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("drop --"),
            "{args:?}"
        );
    }
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing made"
    );
}

/// The tables of a config, each a list of `key = value` lines (TOML), in order.
#[derive(Clone)]
struct Draft(BTreeMap<&'static str, Vec<(String, String)>>);

const TABLES: [&str; 8] = [
    "",
    "server",
    "scheduler",
    "import",
    "model",
    "connector",
    "webhook",
    "action",
];

impl Draft {
    fn base() -> Draft {
        let mut d = BTreeMap::new();
        let kv = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        };
        d.insert("", kv(&[("version", "1")]));
        d.insert(
            "server",
            kv(&[("public_url", "\"https://hooks.example.com\"")]),
        );
        d.insert("scheduler", vec![]);
        d.insert("import", vec![]);
        d.insert("model", vec![]);
        d.insert(
            "connector",
            kv(&[
                ("id", "\"main\""),
                ("portal_id", "62515"),
                ("app_id", "1"),
                ("client_secret_env", "\"S\""),
                ("access_token_env", "\"T\""),
            ]),
        );
        d.insert(
            "webhook",
            kv(&[
                ("id", "\"w\""),
                ("type", "\"NEXT_24_HOURS\""),
                ("workflow_id", "1"),
            ]),
        );
        d.insert("action", kv(&[("id", "\"a\"")]));
        Draft(d)
    }

    fn set(mut self, table: &'static str, key: &str, value: &str) -> Draft {
        let rows = self.0.get_mut(table).unwrap();
        match rows.iter_mut().find(|(k, _)| k == key) {
            Some(row) => row.1 = value.to_string(),
            None => rows.push((key.to_string(), value.to_string())),
        }
        self
    }

    fn remove(mut self, table: &'static str, key: &str) -> Draft {
        self.0.get_mut(table).unwrap().retain(|(k, _)| k != key);
        self
    }

    /// What a key needs beside it to be valid at all.
    fn for_key(self, table: &str, key: &str) -> Draft {
        match (table, key) {
            ("connector", "client_id_env" | "refresh_token_env") => self
                .remove("connector", "access_token_env")
                .set("connector", "auth", "\"oauth\"")
                .set("connector", "client_id_env", "\"CID\"")
                .set("connector", "refresh_token_env", "\"RT\""),
            ("webhook", "list_id") => self
                .remove("webhook", "workflow_id")
                .set("webhook", "type", "\"UPDATE_ONLY\"")
                .set("webhook", "list_id", "\"987\""),
            _ => self,
        }
    }

    fn text(&self) -> String {
        let mut out = String::new();
        for table in TABLES {
            match table {
                "" => {}
                "connector" | "webhook" | "action" => out.push_str(&format!("[[{table}]]\n")),
                t => out.push_str(&format!("[{t}]\n")),
            }
            for (k, v) in &self.0[table] {
                out.push_str(&format!("{k} = {v}\n"));
            }
        }
        out
    }

    /// The parsed config, or every problem (one per line).
    fn parse(&self) -> Result<Config, String> {
        Config::from_text(
            Path::new("/tmp/webhooks.toml"),
            &self.text(),
            &Overrides::default(),
            EnvCheck::Warn,
        )
        .map(|l| l.config)
        .map_err(|d| d.to_string())
    }
}

/// A config as text with what identifies the file blanked, for comparing meanings.
fn meaning(config: &Config) -> String {
    let mut c = config.clone();
    c.identity.clear();
    format!("{c:?}")
}

/// `(table, key schema)` for every key of every table.
fn keys(schema: &Value) -> Vec<(&'static str, String, Value)> {
    let mut out = Vec::new();
    for table in TABLES {
        let node = match table {
            "" => schema,
            "connector" | "webhook" | "action" => &schema["properties"][table]["items"],
            t => &schema["properties"][t],
        };
        for (k, v) in node["properties"].as_object().unwrap() {
            if table.is_empty() && (v.get("properties").is_some() || v.get("items").is_some()) {
                continue; // the sub-tables, checked as tables
            }
            out.push((table, k.clone(), v.clone()));
        }
    }
    out
}

#[test]
fn every_table_has_the_same_keys_in_the_schema_and_the_reader() {
    let schema = shipped_schema();
    for table in TABLES {
        let draft = Draft::base().set(table, "zz_not_a_key", "1");
        let err = draft.parse().unwrap_err();
        let listed: BTreeSet<String> = err
            .lines()
            .find_map(|l| l.split("expected one of: ").nth(1))
            .unwrap_or_else(|| panic!("{table}: {err}"))
            .split(", ")
            .map(str::to_string)
            .collect();
        let node = match table {
            "" => &schema,
            "connector" | "webhook" | "action" => &schema["properties"][table]["items"],
            t => &schema["properties"][t],
        };
        let declared: BTreeSet<String> = node["properties"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        assert_eq!(listed, declared, "table [{table}]");
    }
}

/// The shipped `webhooks.toml` is the commented example of every key: each table's keys are
/// in it, set or commented out, within that table.
#[test]
fn the_shipped_config_shows_every_key_of_every_table() {
    let text = std::fs::read_to_string(repo().join("webhooks.toml")).unwrap();
    // Each table's lines: from its header (the first of an array) to the next header.
    let mut tables: BTreeMap<String, String> = BTreeMap::new();
    let mut current = String::new();
    for line in text.lines() {
        let header = line.trim_start_matches('[').trim_end_matches(']');
        if line.starts_with('[') && !header.contains(' ') {
            current = header.to_string();
        }
        let body = tables.entry(current.clone()).or_default();
        body.push_str(line.trim_start_matches("# "));
        body.push('\n');
    }
    let mut missing = Vec::new();
    for (table, key, _) in keys(&shipped_schema()) {
        let shown = tables
            .get(table)
            .is_some_and(|body| body.lines().any(|l| l.starts_with(&format!("{key} = "))));
        if !shown {
            missing.push(format!("[{table}] {key}"));
        }
    }
    assert!(missing.is_empty(), "not in webhooks.toml: {missing:?}");
}

/// A value of the key's schema that the schema accepts, for keys without a default.
fn sample(key: &str, schema: &Value) -> String {
    if let Some(d) = schema.get("default") {
        return toml_value(d);
    }
    if let Some(first) = schema.get("enum").and_then(|e| e.get(0)) {
        return toml_value(first);
    }
    match key {
        "public_url" => "\"https://hooks.example.com\"".into(),
        "time_zone" => "\"Europe/Brussels\"".into(),
        "quiet_hours" => "\"21:00-08:00\"".into(),
        "window" => "\"36h\"".into(),
        "connector" => "\"main\"".into(),
        "version" => "1".into(),
        "list_id" => "\"987\"".into(),
        "client_secret_env" => "[\"S2\", \"S\"]".into(),
        "id" => "\"x-1\"".into(),
        _ if schema["type"] == "integer" => schema["minimum"].to_string(),
        _ if schema
            .get("pattern")
            .is_some_and(|p| p.as_str().unwrap().contains("A-Za-z_")) =>
        {
            "\"SOME_ENV\"".into()
        }
        _ => "\"text\"".into(),
    }
}

fn toml_value(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

#[test]
fn types_ranges_choices_and_defaults_agree() {
    let schema = shipped_schema();
    for (table, key, spec) in keys(&schema) {
        let base = Draft::base().for_key(table, &key);
        let with = |value: &str| base.clone().set(table, &key, value).parse();
        let what = format!("[{table}] {key}");
        // A value the schema accepts is read.
        let good = sample(&key, &spec);
        with(&good).unwrap_or_else(|e| panic!("{what} = {good}: {e}"));
        // A value of another type is refused.
        let wrong = match spec["type"].as_str() {
            Some("string") => "12",
            Some("integer" | "number") => "\"12\"",
            Some("boolean") => "\"yes\"",
            _ => "{}",
        };
        assert!(with(wrong).is_err(), "{what} = {wrong} was read");
        // Ranges: both ends read, one past either refused.
        if spec["type"] == "integer"
            && let (Some(min), Some(max)) = (spec["minimum"].as_u64(), spec["maximum"].as_u64())
        {
            let (min, max) = (min as i128, max as i128);
            for ok in [min, max] {
                with(&ok.to_string()).unwrap_or_else(|e| panic!("{what} = {ok}: {e}"));
            }
            assert!(with(&(max + 1).to_string()).is_err(), "{what} above {max}");
            assert!(with(&(min - 1).to_string()).is_err(), "{what} below {min}");
        }
        // TOML's other spellings of an integer the schema takes are read as it (the schema
        // sees only the value): `list_id = 0x10` was refused.
        let integer = spec["type"] == "integer"
            || spec["anyOf"]
                .as_array()
                .is_some_and(|a| a.iter().any(|s| s["type"] == "integer"));
        if let (true, Ok(n)) = (integer, good.trim_matches('"').parse::<u64>()) {
            let decimal = meaning(&with(&n.to_string()).unwrap());
            for spelled in [format!("0x{n:x}"), format!("0o{n:o}"), format!("0b{n:b}")] {
                let read = with(&spelled).unwrap_or_else(|e| panic!("{what} = {spelled}: {e}"));
                assert_eq!(meaning(&read), decimal, "{what} = {spelled}");
            }
        }
        if spec["type"] == "number"
            && let (Some(min), Some(max)) = (spec["minimum"].as_f64(), spec["maximum"].as_f64())
        {
            for ok in [min, max] {
                with(&format!("{ok:?}")).unwrap_or_else(|e| panic!("{what} = {ok}: {e}"));
            }
            assert!(
                with(&format!("{:?}", max * 1.5 + 1.0)).is_err(),
                "{what} above {max}"
            );
            assert!(
                with(&format!("{:?}", min - 0.5)).is_err(),
                "{what} below {min}"
            );
        }
        // Patterns: values the schema refuses, the reader refuses too (a stray space, a sign,
        // a character that is not ASCII).
        if let Some(pattern) = spec["pattern"].as_str() {
            let mut near = vec![format!(" {}", good.trim_matches('"'))];
            if pattern == "^[1-9][0-9]*[mhd]$" {
                near.extend(["+24h", "024h", "24é", "24 h", "24h "].map(String::from));
            }
            if pattern.starts_with("^[0-9]{1,2}:") {
                near.extend(
                    ["7:5-22:00", "22:00 - 07:00", "22:00-07:00 ", "+7:00-22:00"].map(String::from),
                );
            }
            for v in near {
                assert!(with(&format!("{v:?}")).is_err(), "{what} = {v:?} was read");
            }
        }
        // Lengths: the schema's bounds are the reader's, and a free-text string the schema takes
        // (of any length within them) is read.
        if spec["type"] == "string" && spec.get("pattern").is_none() && spec.get("enum").is_none() {
            match spec["minLength"].as_u64() {
                Some(min) => assert!(
                    with(&format!("{:?}", "x".repeat(min as usize - 1))).is_err(),
                    "{what} shorter than {min}"
                ),
                None => {
                    with("\"\"")
                        .unwrap_or_else(|e| panic!("{what} = \"\" (the schema takes it): {e}"));
                }
            }
            if let Some(max) = spec["maxLength"].as_u64() {
                let longest = format!("{:?}", "x".repeat(max as usize));
                with(&longest).unwrap_or_else(|e| panic!("{what} = {longest}: {e}"));
                let over = format!("{:?}", "x".repeat(max as usize + 1));
                assert!(with(&over).is_err(), "{what} longer than {max}");
            }
        }
        // Choices: each one read (where the rest of the table allows it), another refused.
        if let Some(values) = spec["enum"].as_array() {
            for v in values {
                let v = toml_value(v);
                let draft = match (table, key.as_str(), v.as_str()) {
                    ("webhook", "type", "\"UPDATE_ONLY\"") => base
                        .clone()
                        .remove("webhook", "workflow_id")
                        .set("webhook", "list_id", "\"987\""),
                    ("connector", "auth", "\"oauth\"") => {
                        base.clone().for_key("connector", "client_id_env")
                    }
                    _ => base.clone(),
                };
                draft
                    .set(table, &key, &v)
                    .parse()
                    .unwrap_or_else(|e| panic!("{what} = {v}: {e}"));
            }
            assert!(with("\"NOT_A_CHOICE\"").is_err(), "{what}: any string read");
        }
        // Defaults: leaving the key out means the same as writing its default.
        if let Some(default) = spec.get("default") {
            let absent = base.clone().remove(table, &key).parse().unwrap();
            let written = with(&toml_value(default)).unwrap();
            assert_eq!(
                meaning(&absent),
                meaning(&written),
                "{what}: default {default}"
            );
        }
    }
}
