//! The machinery for reading `webhooks.toml` with every problem's position: [`Ctx`] collects
//! problems, a [`TableReader`] reads one table's keys by kind and reports the ones nobody
//! asked for. What the keys mean is [`super::read`]'s business.

use std::cell::RefCell;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::diagnostics::Lines;
use super::{Diagnostics, Severity};

/// Keys people reach for that would put a secret in git.
const INLINE_SECRET_KEYS: &[(&str, &str)] = &[
    ("client_secret", "client_secret_env"),
    ("secret", "client_secret_env"),
    ("access_token", "access_token_env"),
    ("token", "access_token_env"),
    ("api_key", "access_token_env"),
];

/// Where problems are collected while reading one file.
pub(super) struct Ctx<'t> {
    pub lines: Lines<'t>,
    pub diags: Diagnostics,
    /// What the command line sets instead of the file: the file's value is not checked for
    /// what only the address in use decides (a flag's is, once applied).
    pub overrides: &'t super::Overrides,
    /// What the command needs of the environment: a variable it cannot start without is an
    /// error for `serve` (and `validate --online`), a warning for the rest.
    pub env: super::EnvCheck,
}

impl Ctx<'_> {
    pub fn error(&mut self, at: usize, message: impl Into<String>) {
        let at = self.lines.line_column(at);
        self.diags.push(Severity::Error, at, message.into());
    }

    pub fn warning(&mut self, at: usize, message: impl Into<String>) {
        let at = self.lines.line_column(at);
        self.diags.push(Severity::Warning, at, message.into());
    }
}

pub(super) type Value<'i> = Spanned<DeValue<'i>>;

/// Reads the keys of one table, type-checking each. The keys it is asked for are the table's
/// keys: [`TableReader::finish`] reports every other key as unknown, so a key is named once,
/// where it is read.
pub(super) struct TableReader<'a, 'i> {
    /// How the table is named in messages, e.g. `[server]` or `[[webhook]] #2`.
    pub name: String,
    table: &'a DeTable<'i>,
    /// Where "missing key" problems point: the table's header.
    pub at: usize,
    /// The keys asked for so far, in order (they are listed in that order).
    known: RefCell<Vec<&'static str>>,
}

impl<'a, 'i> TableReader<'a, 'i> {
    pub fn new(name: String, table: &'a DeTable<'i>, at: usize) -> Self {
        Self {
            name,
            table,
            at,
            known: RefCell::default(),
        }
    }

    /// Report the keys nobody asked for. Call once every key has been read.
    pub fn finish(self, ctx: &mut Ctx) {
        let known = self.known.into_inner();
        for (key, _) in self.table.iter() {
            let k = key.get_ref().as_ref();
            if known.contains(&k) {
                continue;
            }
            let hint = if let Some((_, env)) = INLINE_SECRET_KEYS.iter().find(|(s, _)| *s == k) {
                format!(
                    "; secrets never go in this file: name the environment variable that holds it with `{env}`"
                )
            } else if let Some(close) = closest(k, &known) {
                format!("; did you mean `{close}`?")
            } else {
                format!("; expected one of: {}", known.join(", "))
            };
            ctx.error(
                key.span().start,
                format!("unknown key `{k}` in {}{hint}", self.name),
            );
        }
    }

    /// The value of `key`, which is one of this table's keys from now on.
    pub fn get(&self, key: &'static str) -> Option<&'a Value<'i>> {
        let mut known = self.known.borrow_mut();
        if !known.contains(&key) {
            known.push(key);
        }
        self.table
            .iter()
            .find(|(k, _)| k.get_ref().as_ref() == key)
            .map(|(_, v)| v)
    }

    /// Whether `key` is present (whatever its value).
    pub fn has(&self, key: &'static str) -> bool {
        self.get(key).is_some()
    }

    pub fn missing(&self, ctx: &mut Ctx, key: &'static str, why: &str) {
        ctx.error(
            self.at,
            format!("missing required key `{key}` in {}{why}", self.name),
        );
    }

    pub fn wrong_type(&self, ctx: &mut Ctx, key: &'static str, v: &Value, expected: &str) {
        ctx.error(
            v.span().start,
            format!(
                "`{key}` in {} must be {expected}, found {}",
                self.name,
                describe(v.get_ref())
            ),
        );
    }

    pub fn string(&self, ctx: &mut Ctx, key: &'static str) -> Option<(String, usize)> {
        let v = self.get(key)?;
        match v.get_ref() {
            DeValue::String(s) => Some((s.to_string(), v.span().start)),
            _ => {
                self.wrong_type(ctx, key, v, "a string");
                None
            }
        }
    }

    pub fn integer(&self, ctx: &mut Ctx, key: &'static str) -> Option<(i64, usize)> {
        let v = self.get(key)?;
        match v.get_ref() {
            DeValue::Integer(i) => match i64::from_str_radix(i.as_str(), i.radix()) {
                Ok(n) => Some((n, v.span().start)),
                Err(_) => {
                    ctx.error(
                        v.span().start,
                        format!(
                            "`{key}` in {} is out of range: integers here are from {} to {}",
                            self.name,
                            i64::MIN,
                            i64::MAX
                        ),
                    );
                    None
                }
            },
            _ => {
                self.wrong_type(ctx, key, v, "an integer");
                None
            }
        }
    }

    /// A positive integer no larger than `max`.
    pub fn positive(&self, ctx: &mut Ctx, key: &'static str, max: u64) -> Option<u64> {
        let (n, at) = self.integer(ctx, key)?;
        if n <= 0 || n as u64 > max {
            ctx.error(
                at,
                format!(
                    "`{key}` in {} must be between 1 and {max}, found {n}",
                    self.name
                ),
            );
            return None;
        }
        Some(n as u64)
    }

    pub fn boolean(&self, ctx: &mut Ctx, key: &'static str) -> Option<bool> {
        let v = self.get(key)?;
        match v.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            _ => {
                self.wrong_type(ctx, key, v, "true or false");
                None
            }
        }
    }

    /// [`TableReader::positive`] with a default when the key is absent; `None` only when it
    /// is present and wrong.
    pub fn positive_or(
        &self,
        ctx: &mut Ctx,
        key: &'static str,
        max: u64,
        default: u64,
    ) -> Option<u64> {
        match self.get(key) {
            None => Some(default),
            Some(_) => self.positive(ctx, key, max),
        }
    }

    /// [`TableReader::boolean`] with a default when the key is absent.
    pub fn boolean_or(&self, ctx: &mut Ctx, key: &'static str, default: bool) -> Option<bool> {
        match self.get(key) {
            None => Some(default),
            Some(_) => self.boolean(ctx, key),
        }
    }

    /// An optional string key read by `parse`: `Some(None)` when absent, `None` when present
    /// and wrong (the error, at the value, says why in `parse`'s words).
    pub fn parsed<T>(
        &self,
        ctx: &mut Ctx,
        key: &'static str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<Option<T>> {
        if !self.has(key) {
            return Some(None);
        }
        let (text, at) = self.string(ctx, key)?;
        match parse(&text) {
            Ok(v) => Some(Some(v)),
            Err(why) => {
                ctx.error(at, format!("`{key}` in {}: {why}", self.name));
                None
            }
        }
    }

    /// A key every table of this kind must have: its value when present (and of the right
    /// kind, by `read`), else a "missing" error at the table's header.
    pub fn required<T>(
        &self,
        ctx: &mut Ctx,
        key: &'static str,
        why: &str,
        read: impl FnOnce(&Self, &mut Ctx) -> Option<T>,
    ) -> Option<T> {
        if !self.has(key) {
            self.missing(ctx, key, why);
            return None;
        }
        read(self, ctx)
    }

    /// An environment variable *name*, checked for shape (never its value).
    pub fn env_name(&self, ctx: &mut Ctx, key: &'static str) -> Option<(String, usize)> {
        let (name, at) = self.string(ctx, key)?;
        if is_env_name(&name) {
            Some((name, at))
        } else {
            ctx.error(
                at,
                format!(
                    "`{key}` must name an environment variable (letters, digits and `_`, not starting with a digit; a run of 16 or more letters and digits that switches case and digits as random text does is taken for a secret: separate a name's words with `_`), not hold a value; the secret itself belongs in that variable"
                ),
            );
            None
        }
    }

    /// One environment variable name, or an array of them (at least one, at most 8), each
    /// checked as [`TableReader::env_name`] checks one; with where each is.
    pub fn env_names(&self, ctx: &mut Ctx, key: &'static str) -> Option<Vec<(String, usize)>> {
        let v = self.get(key)?;
        let DeValue::Array(items) = v.get_ref() else {
            return self.env_name(ctx, key).map(|one| vec![one]);
        };
        if items.is_empty() || items.len() > 8 {
            ctx.error(
                v.span().start,
                format!("`{key}` must name 1 to 8 environment variables, current first"),
            );
            return None;
        }
        let mut names = Vec::new();
        let mut ok = true;
        for item in items {
            let at = item.span().start;
            match item.get_ref() {
                DeValue::String(s) if is_env_name(s) => names.push((s.to_string(), at)),
                _ => {
                    ctx.error(
                        at,
                        format!(
                            "`{key}` must name environment variables (letters, digits and `_`, not starting with a digit; a run of 16 or more letters and digits that switches case and digits as random text does is taken for a secret: separate a name's words with `_`), not hold values"
                        ),
                    );
                    ok = false;
                }
            }
        }
        ok.then_some(names)
    }

    /// An absolute http(s) URL, returned without a trailing slash.
    pub fn http_url(&self, ctx: &mut Ctx, key: &'static str) -> Option<String> {
        let (raw, at) = self.string(ctx, key)?;
        // The example for the key at hand: HubSpot's API, or where HubSpot posts.
        let example = if key == "api_base" {
            "https://api.hubapi.com"
        } else {
            "https://hooks.example.com"
        };
        match check_http_url(&raw, example) {
            Ok(url) => Some(url),
            Err(why) => {
                ctx.error(at, format!("`{key}` {why}, found \"{}\"", shown_url(&raw)));
                None
            }
        }
    }
}

/// Reads `[name]` (a plain table) if present; `None` plus an error when it is not a table.
pub(super) fn sub_table<'a, 'i>(
    ctx: &mut Ctx,
    top: &TableReader<'a, 'i>,
    key: &'static str,
) -> Result<Option<(&'a DeTable<'i>, usize)>, ()> {
    let Some(v) = top.get(key) else {
        return Ok(None);
    };
    match v.get_ref() {
        DeValue::Table(t) => Ok(Some((t, v.span().start))),
        other => {
            ctx.error(
                v.span().start,
                format!(
                    "`{key}` must be a table ([{key}]), found {}",
                    describe(other)
                ),
            );
            Err(())
        }
    }
}

/// The tables of `[[key]]`, each with its header offset and 1-based position.
pub(super) fn read_array<'a, 'i>(
    ctx: &mut Ctx,
    top: &TableReader<'a, 'i>,
    key: &'static str,
) -> Vec<(&'a DeTable<'i>, usize, usize)> {
    let Some(v) = top.get(key) else {
        return Vec::new();
    };
    let DeValue::Array(items) = v.get_ref() else {
        ctx.error(
            v.span().start,
            format!(
                "`{key}` must be an array of tables: write each one under a [[{key}]] header, found {}",
                describe(v.get_ref())
            ),
        );
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match item.get_ref() {
            DeValue::Table(t) => out.push((t, item.span().start, i + 1)),
            other => ctx.error(
                item.span().start,
                format!("each `{key}` must be a table, found {}", describe(other)),
            ),
        }
    }
    out
}

/// A TOML integer or float as f64.
pub(super) fn number(v: &DeValue) -> Option<f64> {
    match v {
        DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix())
            .ok()
            .map(|n| n as f64),
        DeValue::Float(f) => f.as_str().replace('_', "").parse().ok(),
        _ => None,
    }
}

fn check_http_url(raw: &str, example: &str) -> Result<String, String> {
    // A URL parser drops a stray space at either end (and encodes one inside), but signatures
    // are checked over this text as written: one space would refuse every post.
    if raw.chars().any(char::is_whitespace) {
        return Err("must not contain spaces (check both ends of the string)".into());
    }
    let absolute = || format!("must be an absolute http(s) URL such as \"{example}\"");
    let url = reqwest::Url::parse(raw).map_err(|_| absolute())?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(absolute());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("must not carry a query or fragment".into());
    }
    // HubSpot signs the URL without them, and they would be logged with every refusal.
    if !url.username().is_empty() || url.password().is_some() {
        return Err(
            "must not carry a user name or password (`user:pass@`): put credentials in \
             environment variables"
                .into(),
        );
    }
    Ok(raw.trim_end_matches('/').to_string())
}

/// `raw` for an error message, its query, fragment and user info left out: they may hold a
/// key (`?hapikey=…`), and the message goes to `validate`'s output and `serve`'s log.
pub(super) fn shown_url(raw: &str) -> String {
    let (kept, cut) = match raw.find(['?', '#']) {
        Some(i) => (&raw[..i], "…"),
        None => (raw, ""),
    };
    let (scheme, rest) = match kept.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => (String::new(), kept),
    };
    // Up to the last `@`: a password may hold a `/`.
    let rest = match rest.rsplit_once('@') {
        Some((_, host)) => format!("…@{host}"),
        None => rest.to_string(),
    };
    format!("{scheme}{rest}{cut}")
}

fn is_env_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && !b[0].is_ascii_digit()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
        && !looks_like_a_secret(s)
}

/// A run of letters and digits between `_` that changes between lower case, upper case and
/// digits as random text does (the output of `openssl rand -hex 32`, a password manager's, a
/// URL-safe base64 token's runs) is a secret pasted where its variable's name belongs, not a
/// name: refused, and never echoed in "variable ... is not set", which would write it to every
/// log. From 16 characters, the shortest admin token `serve` takes. A heuristic: some tokens
/// pass (letters alone nearly always), and a name such as `HubSpotV2EuToken1` is refused.
fn looks_like_a_secret(s: &str) -> bool {
    // Random characters change class about every other one. A CamelCase name changes once a
    // word (its capital to its lower case is not counted: counted, `HubSpotAccessToken` and
    // many longer names were refused), and a name's number once.
    let class = |c: u8| (c.is_ascii_digit(), c.is_ascii_uppercase());
    let random = |run: &str| {
        let changes = (run.as_bytes().windows(2))
            .filter(|w| {
                let (a, b) = (class(w[0]), class(w[1]));
                a != b && (a, b) != ((false, true), (false, false))
            })
            .count();
        run.len() >= 16 && changes * 3 >= run.len()
    };
    s.split('_').any(random)
}

pub(super) fn describe(v: &DeValue) -> String {
    match v {
        DeValue::String(s) => format!("the string \"{s}\""),
        DeValue::Integer(i) => format!("the integer {}", i.as_str()),
        DeValue::Float(f) => format!("the float {}", f.as_str()),
        DeValue::Boolean(b) => format!("the boolean {b}"),
        DeValue::Datetime(d) => format!("the datetime {d}"),
        DeValue::Array(_) => "an array".into(),
        DeValue::Table(_) => "a table".into(),
    }
}

pub(super) fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s).trim()
}

/// The known key closest to a typo, if it is close enough to be a plausible suggestion.
pub(super) fn closest<'k>(typo: &str, known: &[&'k str]) -> Option<&'k str> {
    // `workflow` for `workflow_id`, `secret_env` for `client_secret_env`; of several, the
    // nearest (`token_env` is `access_token_env`: the first, `refresh_token_env`, was named).
    if let Some(k) = known
        .iter()
        .filter(|k| typo.len() >= 4 && (k.starts_with(typo) || k.ends_with(typo)))
        .min_by_key(|k| edit_distance(typo, k))
    {
        return Some(k);
    }
    known
        .iter()
        .map(|k| (edit_distance(typo, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_only_for_near_misses() {
        let known = ["listen", "public_url", "data_dir", "max_body_bytes"];
        assert_eq!(closest("lisen", &known), Some("listen"));
        assert_eq!(closest("zzzzzz", &known), None);
        let credentials = ["refresh_token_env", "access_token_env"];
        assert_eq!(closest("token_env", &credentials), Some("access_token_env"));
    }

    /// Secrets pasted as names are told from long names: by digits among letters, or by
    /// letters changing case about every other one (a CamelCase name changes once a word).
    #[test]
    fn a_secret_is_told_from_a_long_name() {
        for secret in [
            "a3f9c2e07b1d4e6f8a9b0c1d2e3f4a5b",
            "qZkTwVbNmRtYpLsDxHcGfJaEuWiO",
            "xKpqRmWzTbnLvQasDfGhJkLyU",
            // Admin tokens as short as `serve` takes them.
            "k3j5h2g7f9d1s4a6x8",
            "9f2c4e1a7b3d5f60",
            "Tq8vLm2XpR7kWz4N",
            // A URL-safe base64 token (`secrets.token_urlsafe(32)`) with a `_` in it.
            "q3XvR9tL0pZk2Wm_7bNcY4sHa1JdE8uGf6Qo5iKrT2w",
        ] {
            assert!(looks_like_a_secret(secret), "{secret}");
            assert!(!is_env_name(secret), "{secret}");
        }
        for name in [
            "SendtimeHubspotAccessToken",
            "HUBSPOT_CLIENT_SECRET_NEWER_ONE",
            "HUBSPOTCLIENTSECRETFORPORTAL",
            "HubspotTokenProd",
            "HubSpotAccessToken",
            "HubSpotPrivateAppToken",
            "AdminTokenForSendtime",
            "HubSpotClientSecretPortal",
            "HubSpotAccessTokenStaging",
            "HubSpotPrivateAppTokenEU",
            "AcmeEuHubSpotAccessToken",
            "SendtimeHubspotToken2026",
            "Hubspot2Token2026x",
            "HUBSPOTTOKEN2026",
            "AcmeEu2Token",
            "short2",
        ] {
            assert!(is_env_name(name), "{name}");
        }
    }

    #[test]
    fn a_url_in_an_error_shows_no_key_nor_password() {
        for (raw, shown) in [
            ("https://api.hubapi.com", "https://api.hubapi.com"),
            ("https://h.example/x?hapikey=k1#f", "https://h.example/x…"),
            ("http://user:pa/ss@h.example/x", "http://…@h.example/x"),
            ("https:/user:pw@h.example", "…@h.example"),
            ("h.example/x#k2", "h.example/x…"),
        ] {
            assert_eq!(shown_url(raw), shown, "{raw}");
        }
    }
}
