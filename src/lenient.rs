//! Reading JSON from outside (HubSpot's posts and answers) where a field of an unexpected
//! type counts as absent: one odd field must not refuse a contact HubSpot will not send
//! again, nor stop an import at the same page run after run.

use serde::de::{Deserialize, Deserializer, IgnoredAny};

/// A value of the shape `T`, or of any other, which counts as absent: `identity-profiles`
/// that is an object, or one of its entries of an unexpected shape (a string `is-primary`, a
/// number), left out without the entries beside it.
#[derive(serde::Deserialize)]
#[serde(untagged)]
pub enum Entry<T> {
    Read(T),
    Other(IgnoredAny),
}

impl<T> Entry<T> {
    pub fn read(&self) -> Option<&T> {
        match self {
            Entry::Read(t) => Some(t),
            Entry::Other(_) => None,
        }
    }

    pub fn into_read(self) -> Option<T> {
        match self {
            Entry::Read(t) => Some(t),
            Entry::Other(_) => None,
        }
    }
}

/// A field read as [`Entry`]: its value when of the shape `T`, else `T`'s default (absent).
pub fn or_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<Entry<T>>::deserialize(d)?
        .and_then(Entry::into_read)
        .unwrap_or_default())
}
