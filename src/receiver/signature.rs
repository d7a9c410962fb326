//! HubSpot request signatures v1, v2 and v3.
//!
//! Always over the raw body bytes and the URL HubSpot called; compared in constant time after
//! a length check, so neither an empty signature nor a prefix ever verifies.

use base64::Engine as _;
use hmac::{KeyInit, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// How far a v3 timestamp may be from our clock, either way.
pub const MAX_SKEW_MS: i64 = 5 * crate::time::MINUTE_MS;

/// A signature version; later versions sign more (v1 the body; v2 also the method and URL;
/// v3 also a timestamp), so they compare greater.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Version {
    V1,
    V2,
    V3,
}

impl Version {
    pub const ALL: [Version; 3] = [Version::V1, Version::V2, Version::V3];

    pub fn parse(s: &str) -> Option<Version> {
        Version::ALL.into_iter().find(|v| v.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Version::V1 => "v1",
            Version::V2 => "v2",
            Version::V3 => "v3",
        }
    }
}

/// The weakest version a connector's endpoints take (`min_signature_version`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Floor {
    /// Per endpoint, the strongest version it has taken ([`super::ratchet`]), or before its
    /// first post its connector's siblings': HubSpot sends the older versions beside the
    /// newer, so a post without them was stripped.
    Auto,
    /// This version, whatever the endpoint has seen.
    At(Version),
}

/// Why a request was refused. The text goes back to the caller: it never contains the
/// secret or the expected digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing signature: expected X-HubSpot-Signature-v3 or X-HubSpot-Signature")]
    Missing,
    #[error("unsupported X-HubSpot-Signature-Version (expected v1 or v2)")]
    UnknownVersion,
    #[error("missing or malformed X-HubSpot-Request-Timestamp (epoch milliseconds)")]
    BadTimestamp,
    #[error("X-HubSpot-Request-Timestamp is more than 5 minutes from now")]
    Stale,
    #[error("signature does not match")]
    Mismatch,
    #[error("a signature header holds bytes that are not text")]
    Malformed,
    #[error("signature version {0} is weaker than this connector accepts (min_signature_version)")]
    TooWeak(&'static str),
    #[error(
        "signed with {carried} only, but this endpoint has taken {seen}-signed posts: refused as a possible replay (set min_signature_version if the sender changed)"
    )]
    Downgraded {
        carried: &'static str,
        seen: &'static str,
    },
    #[error(
        "unsigned, but this endpoint has taken {0}-signed posts: refused as a possible replay, though allow_unsigned is on (set min_signature_version = \"v1\" to take unsigned posts beside signed ones)"
    )]
    Stripped(&'static str),
}

impl SignatureError {
    /// Short label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            SignatureError::Missing => "signature_missing",
            SignatureError::UnknownVersion => "signature_version",
            SignatureError::BadTimestamp => "signature_timestamp",
            SignatureError::Stale => "signature_stale",
            SignatureError::Mismatch => "signature_mismatch",
            SignatureError::Malformed => "signature_malformed",
            SignatureError::TooWeak(_) => "signature_too_weak",
            SignatureError::Downgraded { .. } | SignatureError::Stripped(_) => {
                "signature_downgrade"
            }
        }
    }
}

/// The signature headers of one request, as sent.
#[derive(Debug, Default, Clone, Copy)]
pub struct Headers<'a> {
    /// `X-HubSpot-Signature-v3`
    pub v3: Option<&'a str>,
    /// `X-HubSpot-Request-Timestamp`
    pub timestamp: Option<&'a str>,
    /// `X-HubSpot-Signature`
    pub v1v2: Option<&'a str>,
    /// `X-HubSpot-Signature-Version`
    pub version: Option<&'a str>,
}

/// Verify a request: v3 when its header is present, else v1/v2 per the version header
/// (v1 when absent, as HubSpot's oldest senders do). `uri` is the full URL HubSpot called.
pub fn verify(
    secret: &[u8],
    method: &str,
    uri: &str,
    body: &[u8],
    headers: Headers<'_>,
    now_ms: i64,
) -> Result<Version, SignatureError> {
    if let Some(sig) = headers.v3 {
        let ts = headers.timestamp.ok_or(SignatureError::BadTimestamp)?;
        let ts_ms: i64 = ts
            .trim()
            .parse()
            .map_err(|_| SignatureError::BadTimestamp)?;
        if now_ms.abs_diff(ts_ms) > MAX_SKEW_MS as u64 {
            return Err(SignatureError::Stale);
        }
        let given = base64::engine::general_purpose::STANDARD
            .decode(sig.trim())
            .map_err(|_| SignatureError::Mismatch)?;
        let expected = v3_digest(secret, method, &v3_uri(uri), body, ts.trim());
        return equal(&given, &expected)
            .then_some(Version::V3)
            .ok_or(SignatureError::Mismatch);
    }
    let sig = headers.v1v2.ok_or(SignatureError::Missing)?;
    let version = match headers.version.map(str::trim) {
        None | Some("v1") | Some("V1") => Version::V1,
        Some("v2") | Some("V2") => Version::V2,
        Some(_) => return Err(SignatureError::UnknownVersion),
    };
    let given = hex::decode(sig.trim()).map_err(|_| SignatureError::Mismatch)?;
    let expected = match version {
        Version::V1 => v1_digest(secret, body),
        _ => v2_digest(secret, method, uri, body),
    };
    equal(&given, &expected)
        .then_some(version)
        .ok_or(SignatureError::Mismatch)
}

/// Constant-time equality with the length checked first (lengths are not secret).
fn equal(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len() && bool::from(given.ct_eq(expected))
}

/// SHA-256(secret + body).
pub fn v1_digest(secret: &[u8], body: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(secret);
    h.update(body);
    h.finalize().into()
}

/// SHA-256(secret + method + uri + body).
pub fn v2_digest(secret: &[u8], method: &str, uri: &str, body: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(secret);
    h.update(method.as_bytes());
    h.update(uri.as_bytes());
    h.update(body);
    h.finalize().into()
}

/// HMAC-SHA256(secret, method + uri + body + timestamp).
pub fn v3_digest(secret: &[u8], method: &str, uri: &str, body: &[u8], timestamp: &str) -> [u8; 32] {
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(method.as_bytes());
    mac.update(uri.as_bytes());
    mac.update(body);
    mac.update(timestamp.as_bytes());
    mac.finalize().into_bytes().into()
}

/// Signatures a client would send; used by tests, the load generator and `sendtime post`.
pub fn sign_v1(secret: &[u8], body: &[u8]) -> String {
    hex::encode(v1_digest(secret, body))
}

pub fn sign_v2(secret: &[u8], method: &str, uri: &str, body: &[u8]) -> String {
    hex::encode(v2_digest(secret, method, uri, body))
}

pub fn sign_v3(secret: &[u8], method: &str, uri: &str, body: &[u8], timestamp_ms: i64) -> String {
    let digest = v3_digest(
        secret,
        method,
        &v3_uri(uri),
        body,
        &timestamp_ms.to_string(),
    );
    base64::engine::general_purpose::STANDARD.encode(digest)
}

/// HubSpot's v3 scheme signs the URI with these percent-escapes decoded.
fn v3_uri(uri: &str) -> std::borrow::Cow<'_, str> {
    const DECODE: [(&str, &str); 12] = [
        ("%3A", ":"),
        ("%2F", "/"),
        ("%3F", "?"),
        ("%40", "@"),
        ("%21", "!"),
        ("%24", "$"),
        ("%27", "'"),
        ("%28", "("),
        ("%29", ")"),
        ("%2A", "*"),
        ("%2C", ","),
        ("%3B", ";"),
    ];
    if !uri.contains('%') {
        return uri.into();
    }
    let mut out = uri.to_string();
    for (from, to) in DECODE {
        out = out
            .replace(from, to)
            .replace(&from.to_ascii_lowercase(), to);
    }
    out.into()
}

#[cfg(test)]
mod tests {
    //! Known answers from `tests/fixtures/hubspot/signature-vectors.md`, plus the ways a check goes wrong.
    use super::*;

    const SECRET: &[u8] = b"yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy";
    const URI: &str = "https://www.example.com/webhook_uri";
    const SINGLE: &[u8] = b"{'example_field':'example_value'}";
    const DOUBLE: &[u8] = br#"{"example_field":"example_value"}"#;
    const TS: i64 = 15_000_000;

    fn v2(sig: &str, method: &str, body: &[u8]) -> Result<Version, SignatureError> {
        let h = Headers {
            v1v2: Some(sig),
            version: Some("v2"),
            ..Default::default()
        };
        verify(SECRET, method, URI, body, h, 0)
    }

    fn v3(sig: &str, body: &[u8], ts: &str, now: i64) -> Result<Version, SignatureError> {
        let h = Headers {
            v3: Some(sig),
            timestamp: Some(ts),
            ..Default::default()
        };
        verify(SECRET, "POST", URI, body, h, now)
    }

    #[test]
    fn known_answers_v1() {
        assert_eq!(
            sign_v1(SECRET, SINGLE),
            "69fc6631a867edd4f9e9e627fc5c1148e3fbdd8b21837b6d2b8901c1fa57f750"
        );
        let body = br#"[{"eventId":1,"subscriptionId":12345,"portalId":62515,"occurredAt":1564113600000,"subscriptionType":"contact.creation","attemptNumber":0,"objectId":123,"changeSource":"CRM","changeFlag":"NEW","appId":54321}]"#;
        assert_eq!(
            sign_v1(SECRET, body),
            "232db2615f3d666fe21a8ec971ac7b5402d33b9a925784df3ca654d05f4817de"
        );
        let h = Headers {
            v1v2: Some("69fc6631a867edd4f9e9e627fc5c1148e3fbdd8b21837b6d2b8901c1fa57f750"),
            version: Some("v1"),
            ..Default::default()
        };
        assert_eq!(verify(SECRET, "POST", URI, SINGLE, h, 0), Ok(Version::V1));
    }

    #[test]
    fn known_answers_v2() {
        let cases: [(&str, &[u8], &str); 3] = [
            (
                "POST",
                SINGLE,
                "4fe4e3a7d3cf09db53be39d0a58130e2aaba074ec123a9e355b876a689a1c383",
            ),
            (
                "GET",
                b"",
                "eee2dddcc73c94d699f5e395f4b9d454a069a6855fbfa152e91e88823087200e",
            ),
            (
                "POST",
                DOUBLE,
                "9569219f8ba981ffa6f6f16aa0f48637d35d728c7e4d93d0d52efaa512af7900",
            ),
        ];
        for (method, body, want) in cases {
            assert_eq!(sign_v2(SECRET, method, URI, body), want);
            assert_eq!(v2(want, method, body), Ok(Version::V2));
        }
    }

    #[test]
    fn known_answers_v3_digest_and_clock_separately() {
        let cases: [(&[u8], &str); 2] = [
            (SINGLE, "HPW73RUtKmcYoEDADG0s6MmGFWUzWJKAW07r8RDgcQw="),
            (DOUBLE, "fJwL147O2CMyGGBDGZPgScloA+jw6X0dJhSOkvWD3sY="),
        ];
        for (body, want) in cases {
            assert_eq!(sign_v3(SECRET, "POST", URI, body, TS), want);
            // With our clock at the vector's time the digest verifies...
            assert_eq!(v3(want, body, "15000000", TS), Ok(Version::V3));
            // ...and with the real clock the vector is far too old.
            assert_eq!(
                v3(want, body, "15000000", 1_700_000_000_000),
                Err(SignatureError::Stale)
            );
        }
    }

    #[test]
    fn v3_timestamp_window_is_five_minutes_each_way_in_milliseconds() {
        let now = 1_764_000_000_000;
        for (offset, ok) in [
            (0, true),
            (-MAX_SKEW_MS, true),
            (MAX_SKEW_MS, true),
            (-6 * crate::time::MINUTE_MS, false),
            (6 * crate::time::MINUTE_MS, false),
        ] {
            let ts = now + offset;
            let sig = sign_v3(SECRET, "POST", URI, DOUBLE, ts);
            let got = v3(&sig, DOUBLE, &ts.to_string(), now);
            assert_eq!(got.is_ok(), ok, "offset {offset}: {got:?}");
            if !ok {
                assert_eq!(got, Err(SignatureError::Stale));
            }
        }
        // Seconds instead of milliseconds is 50 years off: stale.
        let secs = now / 1000;
        let sig = sign_v3(SECRET, "POST", URI, DOUBLE, secs);
        assert_eq!(
            v3(&sig, DOUBLE, &secs.to_string(), now),
            Err(SignatureError::Stale)
        );
        // Extremes neither overflow nor wrap into the window.
        for ts in [i64::MIN, i64::MAX, now - i64::MAX] {
            let sig = sign_v3(SECRET, "POST", URI, DOUBLE, ts);
            assert_eq!(
                v3(&sig, DOUBLE, &ts.to_string(), now),
                Err(SignatureError::Stale),
                "{ts}"
            );
        }
    }

    #[test]
    fn wrong_secret_flipped_byte_truncated_and_empty_all_fail() {
        let good = "9569219f8ba981ffa6f6f16aa0f48637d35d728c7e4d93d0d52efaa512af7900";
        let h = Headers {
            v1v2: Some(good),
            version: Some("v2"),
            ..Default::default()
        };
        assert_eq!(
            verify(b"wrong-secret", "POST", URI, DOUBLE, h, 0),
            Err(SignatureError::Mismatch)
        );
        let mut flipped = DOUBLE.to_vec();
        flipped[3] ^= 1;
        assert_eq!(v2(good, "POST", &flipped), Err(SignatureError::Mismatch));
        assert_eq!(
            v2(&good[..good.len() - 2], "POST", DOUBLE),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            v2(&good[..32], "POST", DOUBLE),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(v2("", "POST", DOUBLE), Err(SignatureError::Mismatch));
        assert_eq!(v2("zz", "POST", DOUBLE), Err(SignatureError::Mismatch));
        // Another URL (e.g. the local listener) does not verify.
        let h = Headers {
            v1v2: Some(good),
            version: Some("v2"),
            ..Default::default()
        };
        assert_eq!(
            verify(
                SECRET,
                "POST",
                "http://127.0.0.1:8080/webhook_uri",
                DOUBLE,
                h,
                0
            ),
            Err(SignatureError::Mismatch)
        );

        let now = 1_764_000_000_000;
        let sig = sign_v3(SECRET, "POST", URI, DOUBLE, now);
        assert_eq!(
            v3("", DOUBLE, &now.to_string(), now),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            v3(&sig[..20], DOUBLE, &now.to_string(), now),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            v3(&sig, &flipped, &now.to_string(), now),
            Err(SignatureError::Mismatch)
        );
        // The timestamp is signed: changing it breaks the signature.
        assert_eq!(
            v3(&sig, DOUBLE, &(now + 1).to_string(), now),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn missing_headers() {
        assert_eq!(
            verify(SECRET, "POST", URI, DOUBLE, Headers::default(), 0),
            Err(SignatureError::Missing)
        );
        let h = Headers {
            v3: Some("abc="),
            ..Default::default()
        };
        assert_eq!(
            verify(SECRET, "POST", URI, DOUBLE, h, 0),
            Err(SignatureError::BadTimestamp)
        );
        let h = Headers {
            v3: Some("abc="),
            timestamp: Some("yesterday"),
            ..Default::default()
        };
        assert_eq!(
            verify(SECRET, "POST", URI, DOUBLE, h, 0),
            Err(SignatureError::BadTimestamp)
        );
        let h = Headers {
            v1v2: Some("00"),
            version: Some("v9"),
            ..Default::default()
        };
        assert_eq!(
            verify(SECRET, "POST", URI, DOUBLE, h, 0),
            Err(SignatureError::UnknownVersion)
        );
    }

    #[test]
    fn v3_decodes_hubspots_escapes_in_the_uri() {
        assert_eq!(v3_uri("https://x.com/a%3Ab?c=%2F"), "https://x.com/a:b?c=/");
        assert_eq!(v3_uri("https://x.com/plain"), "https://x.com/plain");
    }
}
