//! The contact in a workflow webhook body.
//!
//! Bodies carry every contact property with its history (tens of KB); we deserialize only
//! the few fields we use into borrowed types and let serde skip the rest, which is several
//! times faster than building a `serde_json::Value`.

use std::borrow::Cow;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny};

use super::refusal::{ECHOED_CHARS, clip};
use crate::lenient::Entry;
use crate::local_time::MAX_ZONE_CHARS;

/// Who the webhook is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contact {
    pub contact_id: Option<i64>,
    pub email: Option<String>,
    /// The contact's time zone as the body gives it (HubSpot writes `america_slash_new_york`).
    pub time_zone: Option<String>,
    pub portal: Portal,
    /// The ids of contacts merged into this one (`merged-vids`), at most
    /// [`MAX_MERGED_IDS`]: a receipt of one of them still waiting is this contact's.
    pub merged_ids: Vec<i64>,
}

/// HubSpot lets a contact be merged 250 times; ids past that are not read.
pub const MAX_MERGED_IDS: usize = 250;

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

impl Portal {
    /// The id, when a valid one is named.
    pub fn id(&self) -> Option<i64> {
        match self {
            Portal::Id(id) => Some(*id),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PayloadError {
    #[error("body is not a JSON object: {0}")]
    NotJson(String),
    #[error(
        "body has neither a contact id (canonical-vid, vid, objectId, hs_object_id) nor an email (properties.email.value, email)"
    )]
    NoContact,
    #[error(
        "body is a {0}'s, not a contact's: sendtime sends contacts on; post from a contact-based workflow"
    )]
    NotContact(&'static str),
}

/// Contacts v1 record fields plus the flat fields of customized bodies. Read by [`BodySeed`]:
/// the zone property's name comes from the config.
#[derive(Default)]
struct Body<'a> {
    canonical_vid: Option<i64>,
    vid: Option<i64>,
    portal_id: Portal,
    portal_id_flat: Portal,
    object_id: Option<i64>,
    hs_object_id: Option<i64>,
    email: Option<Cow<'a, str>>,
    /// The zone property as a flat field.
    zone: Option<Cow<'a, str>>,
    properties: Option<Properties<'a>>,
    identity_profiles: Option<Vec<Entry<IdentityProfile<'a>>>>,
    merged_vids: Option<Vec<Id>>,
    /// The other record a deal's, company's or ticket's body names itself by (`dealId`...).
    other_record: Option<&'static str>,
}

/// The properties read, each as a v1 property object or a plain value (the CRM objects'
/// shape).
#[derive(Default)]
struct Properties<'a> {
    email: Option<Cow<'a, str>>,
    zone: Option<Cow<'a, str>>,
    hs_object_id: Option<i64>,
}

/// `{"value": "…", "versions": […]}`; the history is skipped unread.
#[derive(Deserialize)]
struct Property<'a> {
    #[serde(default, borrow)]
    value: Option<Cow<'a, str>>,
}

/// A text field: a string, or a property object; of any other type it counts as absent (an
/// optional field's odd type is no reason to refuse the contact, which HubSpot would not send
/// again).
#[derive(Deserialize)]
#[serde(untagged)]
enum Flat<'a> {
    #[serde(borrow)]
    Text(Cow<'a, str>),
    #[serde(borrow)]
    Property(Property<'a>),
    Other(IgnoredAny),
}

impl<'a> Flat<'a> {
    fn text(self) -> Option<Cow<'a, str>> {
        match self {
            Flat::Text(t) => Some(t),
            Flat::Property(p) => p.value,
            Flat::Other(_) => None,
        }
    }
}

struct Id(Option<i64>);
impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        id(d).map(Id)
    }
}

struct PortalField(Portal);
impl<'de> Deserialize<'de> for PortalField {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        portal(d).map(PortalField)
    }
}

/// Reads a [`Body`], keeping the property named `zone` besides the fixed fields.
struct BodySeed<'z> {
    zone: &'z str,
}

impl<'de> de::DeserializeSeed<'de> for BodySeed<'_> {
    type Value = Body<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Body<'de>, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> de::Visitor<'de> for BodySeed<'_> {
    type Value = Body<'de>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Body<'de>, A::Error> {
        let mut b = Body::default();
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            match key.as_ref() {
                "canonical-vid" => b.canonical_vid = map.next_value::<Id>()?.0,
                "vid" => b.vid = map.next_value::<Id>()?.0,
                "portal-id" => b.portal_id = map.next_value::<PortalField>()?.0,
                "portalId" => b.portal_id_flat = map.next_value::<PortalField>()?.0,
                "objectId" => b.object_id = map.next_value::<Id>()?.0,
                "hs_object_id" => b.hs_object_id = map.next_value::<Id>()?.0,
                "email" => b.email = map.next_value::<Flat>()?.text(),
                "properties" => {
                    b.properties = map.next_value_seed(PropertiesSeed { zone: self.zone })?
                }
                "merged-vids" => b.merged_vids = map.next_value::<Entry<Vec<Id>>>()?.into_read(),
                "identity-profiles" => {
                    b.identity_profiles = map.next_value::<Entry<Vec<_>>>()?.into_read()
                }
                k if k == self.zone => b.zone = map.next_value::<Flat>()?.text(),
                k @ ("dealId" | "companyId" | "ticketId") => {
                    b.other_record = Some(match k {
                        "dealId" => "deal",
                        "companyId" => "company",
                        _ => "ticket",
                    });
                    map.next_value::<IgnoredAny>()?;
                }
                "objectType" => {
                    let kind = map.next_value::<Flat>()?.text();
                    b.other_record = kind.as_deref().and_then(other_record).or(b.other_record);
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(b)
    }
}

/// The record an `objectType` names when it is known not to be a contact: by name, by
/// HubSpot's object type id (`0-N` but the contacts' `0-1`), or a custom object's (`2-…`,
/// `p_…`, `p12345_…`); a contact's and unknown names are not judged.
fn other_record(kind: &str) -> Option<&'static str> {
    let k = kind.to_ascii_uppercase();
    let custom = k.starts_with("2-")
        || k.strip_prefix('P')
            .and_then(|rest| rest.split_once('_'))
            .is_some_and(|(digits, _)| digits.bytes().all(|b| b.is_ascii_digit()));
    match k.as_str() {
        "DEAL" | "DEALS" | "0-3" => Some("deal"),
        "COMPANY" | "COMPANIES" | "0-2" => Some("company"),
        "TICKET" | "TICKETS" | "0-5" => Some("ticket"),
        "0-1" => None,
        _ if k.starts_with("0-") => Some("non-contact record"),
        _ if custom => Some("custom object"),
        _ => None,
    }
}

struct PropertiesSeed<'z> {
    zone: &'z str,
}

impl<'de> de::DeserializeSeed<'de> for PropertiesSeed<'_> {
    type Value = Option<Properties<'de>>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> de::Visitor<'de> for PropertiesSeed<'_> {
    type Value = Option<Properties<'de>>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an object of contact properties")
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
    // Properties of another type than an object count as absent.
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }
    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut p = Properties::default();
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            match key.as_ref() {
                "email" => p.email = map.next_value::<Flat>()?.text(),
                "hs_object_id" => p.hs_object_id = map.next_value::<Id>()?.0,
                k if k == self.zone => p.zone = map.next_value::<Flat>()?.text(),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Some(p))
    }
}

#[derive(Deserialize)]
struct IdentityProfile<'a> {
    #[serde(default, borrow)]
    identities: Vec<Entry<Identity<'a>>>,
}

#[derive(Deserialize)]
struct Identity<'a> {
    #[serde(rename = "type", default, borrow)]
    kind: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    value: Option<Cow<'a, str>>,
    #[serde(rename = "is-primary", default)]
    is_primary: bool,
}

/// A text value trimmed, if anything is left.
fn text(value: Option<&str>) -> Option<String> {
    Some(value?.trim())
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

/// Parse the contact out of a webhook body; its zone from the property `zone_property`.
pub fn parse(body: &[u8], zone_property: &str) -> Result<Contact, PayloadError> {
    // serde would read a struct from a JSON array too; a contact is always an object.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(PayloadError::NotJson("expected `{`".into()));
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let b = de::DeserializeSeed::deserialize(
        BodySeed {
            zone: zone_property,
        },
        &mut de,
    )
    .and_then(|b| de.end().map(|()| b))
    // serde's message quotes a mistyped value whole.
    .map_err(|e| PayloadError::NotJson(clip(&e.to_string(), 4 * ECHOED_CHARS)))?;
    // Each candidate is checked before the next is looked at: an empty or zero first one
    // (`"email": {"value": ""}` beside a flat `email`) hid a good one, and the post was
    // refused for good (an audit).
    let id = |id: Option<i64>| id.filter(|id| *id > 0);
    let contact_id = id(b.canonical_vid)
        .or(id(b.vid))
        .or(id(b.object_id))
        .or(id(b.hs_object_id))
        .or_else(|| id(b.properties.as_ref().and_then(|p| p.hs_object_id)));
    let primary_email = || {
        let profiles = b.identity_profiles.as_ref()?;
        let emails = profiles
            .iter()
            .filter_map(Entry::read)
            .flat_map(|p| p.identities.iter().filter_map(Entry::read))
            .filter(|i| i.kind.as_deref() == Some("EMAIL"));
        let mut first = None;
        for identity in emails {
            let Some(value) = text(identity.value.as_deref()) else {
                continue;
            };
            if identity.is_primary {
                return Some(value);
            }
            first = first.or(Some(value));
        }
        first
    };
    let email = text(b.properties.as_ref().and_then(|p| p.email.as_deref()))
        .or_else(primary_email)
        .or_else(|| text(b.email.as_deref()));
    // A deal-, company- or ticket-based workflow posts that record as its API gives it: its
    // id (`objectId`, `hs_object_id`) would be taken for a contact's, and a list add would
    // add whichever contact has it (an audit). A contact's own body (its `vid`, its
    // identities, an email) may name one of them as a property of its own.
    let contact_marked = b.canonical_vid.is_some()
        || b.vid.is_some()
        || b.identity_profiles.is_some()
        || email.is_some();
    if let Some(record) = b.other_record.filter(|_| !contact_marked) {
        return Err(PayloadError::NotContact(record));
    }
    if contact_id.is_none() && email.is_none() {
        return Err(PayloadError::NoContact);
    }
    let zone = |z: Option<&str>| text(z).filter(|z| z.len() <= MAX_ZONE_CHARS);
    let time_zone = zone(b.properties.as_ref().and_then(|p| p.zone.as_deref()))
        .or_else(|| zone(b.zone.as_deref()));
    let mut merged_ids: Vec<i64> = (b.merged_vids.iter().flatten())
        .filter_map(|id| id.0)
        .filter(|id| *id > 0 && Some(*id) != contact_id)
        .take(MAX_MERGED_IDS)
        .collect();
    merged_ids.sort_unstable();
    merged_ids.dedup();
    Ok(Contact {
        contact_id,
        email,
        time_zone,
        merged_ids,
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

pub(super) fn portal_of(v: &serde_json::Value) -> Portal {
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

/// An id sent as a JSON number or as a string of digits (property values are strings);
/// anything else counts as absent.
pub(super) fn id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
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
            // Past any id HubSpot gives: absent, as any unexpected value.
            Ok(i64::try_from(v).ok())
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
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

    fn parse(body: &[u8]) -> Result<Contact, PayloadError> {
        super::parse(body, crate::local_time::DEFAULT_ZONE_PROPERTY)
    }

    #[test]
    fn the_zone_property_as_a_v1_property_or_a_flat_field() {
        let v1 = br#"{"vid": 1, "properties": {"hs_timezone": {"value": "europe_slash_brussels", "versions": []}, "email": {"value": "a@example.com"}}}"#;
        assert_eq!(
            parse(v1).unwrap().time_zone.as_deref(),
            Some("europe_slash_brussels")
        );
        let flat = br#"{"vid": 1, "tz": "America/New_York"}"#;
        assert_eq!(
            super::parse(flat, "tz").unwrap().time_zone.as_deref(),
            Some("America/New_York")
        );
        assert_eq!(parse(flat).unwrap().time_zone, None);
        let long = format!(r#"{{"vid": 1, "hs_timezone": "{}"}}"#, "x".repeat(65));
        assert_eq!(parse(long.as_bytes()).unwrap().time_zone, None);
    }

    /// An empty or zero value is no value: the next place that names one is read (an
    /// empty first email refused the post, and HubSpot does not retry a 400).
    #[test]
    fn an_empty_first_value_leaves_the_next_one_read() {
        let body = br#"{"canonical-vid": 0, "vid": 7, "properties": {"email": {"value": " "}, "hs_timezone": {"value": ""}}, "identity-profiles": [{"identities": [{"type": "EMAIL", "value": "", "is-primary": true}, {"type": "EMAIL", "value": "b@example.com"}]}], "hs_timezone": "Europe/Brussels"}"#;
        let contact = parse(body).unwrap();
        assert_eq!(contact.contact_id, Some(7));
        assert_eq!(contact.email.as_deref(), Some("b@example.com"));
        assert_eq!(contact.time_zone.as_deref(), Some("Europe/Brussels"));
        let flat = br#"{"properties": {"email": {"value": ""}}, "email": "a@example.com"}"#;
        assert_eq!(parse(flat).unwrap().email.as_deref(), Some("a@example.com"));
    }

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
                time_zone: None,
                portal: Portal::Id(62515),
                merged_ids: vec![],
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
    fn merged_ids_are_read_bounded_and_odd_ones_left_out() {
        let merged = |json: &str| {
            parse(format!(r#"{{"vid": 1, "canonical-vid": 2, "merged-vids": {json}}}"#).as_bytes())
                .unwrap()
                .merged_ids
        };
        assert_eq!(merged("[7, \"5\", 7, 2, -3, \"x\", null]"), vec![5, 7]);
        assert_eq!(merged("{}"), Vec::<i64>::new(), "not a list");
        let many: Vec<String> = (10..1010).map(|i| i.to_string()).collect();
        assert_eq!(
            merged(&format!("[{}]", many.join(","))).len(),
            MAX_MERGED_IDS
        );
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

    /// One entry of an unexpected shape leaves out that entry, not the primary email beside it.
    #[test]
    fn a_malformed_identity_leaves_out_only_itself() {
        let body = br#"{"vid": 5, "identity-profiles": [7, {"identities": [
            {"type": "EMAIL", "value": "odd@example.com", "is-primary": "yes"},
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
        // Properties that are no object are absent, so this body names no contact.
        let long = format!(r#"{{"properties": "{}"}}"#, "x".repeat(10_000));
        assert_eq!(parse(long.as_bytes()), Err(PayloadError::NoContact));
    }

    /// A deal's, company's or ticket's body (a workflow based on another record) is refused:
    /// its id was taken for a contact's. A contact's body naming such a record as a field of
    /// its own is still a contact's.
    #[test]
    fn another_records_body_is_not_a_contacts() {
        for (body, record) in [
            (
                r#"{"portalId": 62515, "dealId": 151088, "properties": {"hs_object_id": {"value": "151088"}}}"#,
                "deal",
            ),
            (
                r#"{"portalId": 62515, "companyId": 10444744, "properties": {}}"#,
                "company",
            ),
            (
                r#"{"portalId": 62515, "objectType": "TICKET", "objectId": 7, "properties": {}}"#,
                "ticket",
            ),
            (
                r#"{"objectType": "p_invoice", "objectId": 7}"#,
                "custom object",
            ),
            (r#"{"objectType": "0-3", "objectId": 7}"#, "deal"),
            (
                r#"{"objectType": "p12345_invoice", "objectId": 7}"#,
                "custom object",
            ),
            (
                r#"{"objectType": "0-7", "objectId": 7}"#,
                "non-contact record",
            ),
        ] {
            assert_eq!(
                parse(body.as_bytes()),
                Err(PayloadError::NotContact(record)),
                "{body}"
            );
        }
        for body in [
            r#"{"vid": 3, "companyId": 10444744}"#,
            r#"{"hs_object_id": 3, "email": "a@example.com", "dealId": 9}"#,
            r#"{"objectType": "CONTACT", "objectId": 3}"#,
            r#"{"objectType": "0-1", "objectId": 3}"#,
            r#"{"objectType": "SOMETHING_NEW", "objectId": 3}"#,
        ] {
            assert_eq!(
                parse(body.as_bytes()).unwrap().contact_id,
                Some(3),
                "{body}"
            );
        }
    }

    /// An optional field of an unexpected type is absent, not a reason to refuse the contact
    /// (HubSpot does not send a refused contact again).
    #[test]
    fn fields_of_other_shapes_or_odd_types_are_read_or_skipped() {
        // The zone as a plain value inside v1 properties.
        let c = parse(br#"{"vid": 4, "properties": {"email": {"value": "d@example.com"}, "hs_timezone": "europe_slash_brussels"}}"#).unwrap();
        assert_eq!(c.email.as_deref(), Some("d@example.com"));
        assert_eq!(c.time_zone.as_deref(), Some("europe_slash_brussels"));
        // The CRM objects' shape: plain property values, the id among them.
        let c =
            parse(br#"{"id": "2", "properties": {"email": "b@example.com", "hs_object_id": "2"}}"#)
                .unwrap();
        assert_eq!(
            (c.contact_id, c.email.as_deref()),
            (Some(2), Some("b@example.com"))
        );
        // A flat email as a property object.
        let c = parse(br#"{"hs_object_id": 3, "email": {"value": "c@example.com"}}"#).unwrap();
        assert_eq!(c.email.as_deref(), Some("c@example.com"));
        // Odd types count as absent.
        let c = parse(br#"{"vid": [1], "hs_object_id": true, "objectId": 6, "email": 5, "properties": {"email": false, "hs_timezone": 3}}"#).unwrap();
        assert_eq!((c.contact_id, c.email, c.time_zone), (Some(6), None, None));
    }

    #[test]
    fn escaped_strings_are_decoded() {
        let c = parse(br#"{"email": "a\u0040example.com"}"#).unwrap();
        assert_eq!(c.email.as_deref(), Some("a@example.com"));
    }
}
