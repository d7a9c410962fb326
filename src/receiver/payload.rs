//! The contact in a workflow webhook body.
//!
//! Bodies carry every contact property with its history (tens of KB); we deserialize only
//! the few fields we use into borrowed types and let serde skip the rest, which is several
//! times faster than building a `serde_json::Value`.

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny};

/// Who the webhook is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contact {
    pub contact_id: Option<i64>,
    pub email: Option<String>,
    pub portal: Portal,
}

/// The portal a body names: unlike a contact id, one that is present must be a valid
/// integer, or the portal check could be slipped past (`99999.0`, `"99999x"`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Portal {
    #[default]
    Absent,
    Id(i64),
    /// Present, but not an integer: as written.
    Invalid(String),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PayloadError {
    #[error("body is not a JSON object: {0}")]
    NotJson(String),
    #[error(
        "body has neither a contact id (canonical-vid, vid, objectId, hs_object_id) nor an email (properties.email.value, email)"
    )]
    NoContact,
}

/// Contacts v1 record fields plus the flat fields of customized bodies.
#[derive(Deserialize)]
struct Body<'a> {
    #[serde(rename = "canonical-vid", default, deserialize_with = "id")]
    canonical_vid: Option<i64>,
    #[serde(default, deserialize_with = "id")]
    vid: Option<i64>,
    #[serde(rename = "portal-id", default, deserialize_with = "portal")]
    portal_id: Portal,
    #[serde(rename = "portalId", default, deserialize_with = "portal")]
    portal_id_flat: Portal,
    #[serde(rename = "objectId", default, deserialize_with = "id")]
    object_id: Option<i64>,
    #[serde(default, deserialize_with = "id")]
    hs_object_id: Option<i64>,
    #[serde(default, borrow)]
    email: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    properties: Option<Properties<'a>>,
    #[serde(rename = "identity-profiles", default, borrow)]
    identity_profiles: Option<Vec<IdentityProfile<'a>>>,
}

#[derive(Deserialize)]
struct Properties<'a> {
    #[serde(default, borrow)]
    email: Option<Property<'a>>,
}

/// `{"value": "…", "versions": […]}`; the history is skipped unread.
#[derive(Deserialize)]
struct Property<'a> {
    #[serde(default, borrow)]
    value: Option<std::borrow::Cow<'a, str>>,
}

#[derive(Deserialize)]
struct IdentityProfile<'a> {
    #[serde(default, borrow)]
    identities: Vec<Identity<'a>>,
}

#[derive(Deserialize)]
struct Identity<'a> {
    #[serde(rename = "type", default, borrow)]
    kind: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    value: Option<std::borrow::Cow<'a, str>>,
    #[serde(rename = "is-primary", default)]
    is_primary: bool,
}

/// Parse the contact out of a webhook body.
pub fn parse(body: &[u8]) -> Result<Contact, PayloadError> {
    // serde would read a struct from a JSON array too; a contact is always an object.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(PayloadError::NotJson("expected `{`".into()));
    }
    let b: Body = serde_json::from_slice(body).map_err(|e| PayloadError::NotJson(e.to_string()))?;
    let contact_id = b
        .canonical_vid
        .or(b.vid)
        .or(b.object_id)
        .or(b.hs_object_id)
        .filter(|id| *id > 0);
    let primary_email = || {
        let profiles = b.identity_profiles.as_ref()?;
        let emails = profiles
            .iter()
            .flat_map(|p| &p.identities)
            .filter(|i| i.kind.as_deref() == Some("EMAIL"));
        let mut first = None;
        for identity in emails {
            if identity.is_primary {
                return identity.value.clone();
            }
            first = first.or_else(|| identity.value.clone());
        }
        first
    };
    let email = b
        .properties
        .as_ref()
        .and_then(|p| p.email.as_ref())
        .and_then(|p| p.value.clone())
        .or_else(primary_email)
        .or_else(|| b.email.clone())
        .map(|e| e.trim().to_string())
        .filter(|e| !e.is_empty());
    if contact_id.is_none() && email.is_none() {
        return Err(PayloadError::NoContact);
    }
    Ok(Contact {
        contact_id,
        email,
        portal: match b.portal_id {
            Portal::Absent => b.portal_id_flat,
            named => named,
        },
    })
}

/// A portal id: an integer, or a string of digits; anything else present is [`Portal::Invalid`].
fn portal<'de, D: Deserializer<'de>>(d: D) -> Result<Portal, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    Ok(portal_of(&v))
}

fn portal_of(v: &serde_json::Value) -> Portal {
    use serde_json::Value;
    match v {
        Value::Null => Portal::Absent,
        Value::Number(n) => n
            .as_i64()
            .map_or_else(|| Portal::Invalid(n.to_string()), Portal::Id),
        Value::String(s) => {
            let t = s.trim();
            match t.parse::<i64>() {
                Ok(id) if t.bytes().all(|c| c.is_ascii_digit()) => Portal::Id(id),
                _ => Portal::Invalid(s.chars().take(40).collect()),
            }
        }
        // `{"value": "62515"}`: a property object in a customized body.
        Value::Object(o) => o.get("value").map_or(Portal::Absent, portal_of),
        other => Portal::Invalid(other.to_string().chars().take(40).collect()),
    }
}

/// An id sent as a JSON number or as a string of digits (property values are strings).
fn id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    struct V;
    impl<'de> de::Visitor<'de> for V {
        type Value = Option<i64>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an integer id or a string of digits")
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(v))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            i64::try_from(v).map(Some).map_err(E::custom)
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(v.trim().parse().ok())
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        /// `{"value": "123"}`: a property object in a customized body.
        fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = None;
            while let Some(key) = map.next_key::<std::borrow::Cow<str>>()? {
                if key == "value" {
                    out = map.next_value_seed(IdSeed)?;
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(out)
        }
    }
    struct IdSeed;
    impl<'de> de::DeserializeSeed<'de> for IdSeed {
        type Value = Option<i64>;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            id(d)
        }
    }
    d.deserialize_any(V)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contacts_v1_record_from_the_fixture() {
        let body = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/hubspot/contact-webhook.json"
        ))
        .unwrap();
        assert_eq!(
            parse(&body).unwrap(),
            Contact {
                contact_id: Some(9153674),
                email: Some("ada@example.com".into()),
                portal: Portal::Id(62515),
            }
        );
    }

    #[test]
    fn a_portal_id_that_is_present_must_be_an_integer() {
        let portal = |json: &str| {
            parse(format!(r#"{{"vid": 1, "portal-id": {json}}}"#).as_bytes())
                .unwrap()
                .portal
        };
        assert_eq!(portal("62515"), Portal::Id(62515));
        assert_eq!(portal(r#""62515""#), Portal::Id(62515));
        assert_eq!(portal(r#"{"value": "62515"}"#), Portal::Id(62515));
        assert_eq!(portal("null"), Portal::Absent);
        for bad in [
            "99999.0",
            "62516.5",
            r#""99999x""#,
            r#""-1 ""#,
            "true",
            "[62515]",
        ] {
            assert!(matches!(portal(bad), Portal::Invalid(_)), "{bad}");
        }
        assert_eq!(parse(br#"{"vid": 1}"#).unwrap().portal, Portal::Absent);
    }

    #[test]
    fn canonical_vid_wins_over_vid_after_a_merge() {
        let body = br#"{"vid": 1, "canonical-vid": 2, "properties": {}}"#;
        assert_eq!(parse(body).unwrap().contact_id, Some(2));
    }

    #[test]
    fn primary_email_identity_when_the_property_is_absent() {
        let body = br#"{"vid": 5, "identity-profiles": [{"identities": [
            {"type": "EMAIL", "value": "old@example.com"},
            {"type": "EMAIL", "value": "main@example.com", "is-primary": true}]}]}"#;
        assert_eq!(
            parse(body).unwrap().email.as_deref(),
            Some("main@example.com")
        );
    }

    #[test]
    fn flat_custom_bodies() {
        let c = parse(br#"{"objectId": "77", "email": "x@example.com", "portalId": 9}"#).unwrap();
        assert_eq!(c.contact_id, Some(77));
        assert_eq!(c.email.as_deref(), Some("x@example.com"));
        assert_eq!(c.portal, Portal::Id(9));
        let c = parse(br#"{"hs_object_id": 88}"#).unwrap();
        assert_eq!(c.contact_id, Some(88));
        let c = parse(br#"{"hs_object_id": {"value": "99"}}"#).unwrap();
        assert_eq!(c.contact_id, Some(99));
        let c = parse(br#"{"email": "only@example.com", "unknown": [1, {"a": null}]}"#).unwrap();
        assert_eq!(
            (c.contact_id, c.email.as_deref()),
            (None, Some("only@example.com"))
        );
    }

    #[test]
    fn rejects_bodies_without_a_contact_or_not_json() {
        assert_eq!(
            parse(br#"{"properties": {"firstname": {"value": "Ada"}}}"#),
            Err(PayloadError::NoContact)
        );
        assert_eq!(parse(br#"{"email": "  "}"#), Err(PayloadError::NoContact));
        assert!(matches!(parse(b"not json"), Err(PayloadError::NotJson(_))));
        assert!(matches!(parse(b"[1,2]"), Err(PayloadError::NotJson(_))));
    }

    #[test]
    fn escaped_strings_are_decoded() {
        let c = parse(br#"{"email": "a\u0040example.com"}"#).unwrap();
        assert_eq!(c.email.as_deref(), Some("a@example.com"));
    }
}
