//! Reading a post's body within a memory budget shared by every post.
//!
//! Bodies are read before their signature can be checked, so strangers can make the server
//! hold whatever they send. The budget counts bytes *received*, not bodies begun: a client
//! that sends headers and then a byte at a time holds a byte of it, not a body's worth, so
//! slow or stalled clients cannot starve signed posts of memory. The bytes stay counted until
//! the post has been answered.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::refusal::{BODY_READ_TIMEOUT, Refusal};

/// Bytes of bodies held at once, all posts together: the memory strangers can make the
/// receiver hold for bodies.
pub const BODY_BUDGET_BYTES: usize = 128 * 1024 * 1024;
/// How long a post waits for budget when the budget is spent before it is refused as busy
/// (429 with `Retry-After`, which HubSpot retries).
const BUDGET_WAIT: Duration = Duration::from_secs(1);

/// The shared budget.
pub fn budget() -> Arc<Semaphore> {
    Arc::new(Semaphore::new(BODY_BUDGET_BYTES))
}

/// A body read whole, and its share of the budget (released when dropped).
pub struct Received {
    pub bytes: Bytes,
    pub _held: Option<OwnedSemaphorePermit>,
}

impl Received {
    /// The body's XXH3-128, hex: how a replayed post is recognised. Only posts whose
    /// signature holds are hashed, so nobody can choose a body to collide with another, and
    /// a fast hash costs nothing beside the signature's SHA-256.
    pub fn hash(&self) -> String {
        format!("{:032x}", xxhash_rust::xxh3::xxh3_128(&self.bytes))
    }
}

/// Memory reserved up front for a body of a declared length, at most: more is taken as it
/// arrives (a declared length costs the sender nothing).
const RESERVE_AT_MOST: usize = 64 * 1024;

/// Read `body`, at most `limit` bytes, within [`BODY_READ_TIMEOUT`], taking budget as bytes
/// arrive. `declared` is the Content-Length, when sent.
pub async fn read(
    body: Body,
    limit: usize,
    declared: Option<usize>,
    budget: &Arc<Semaphore>,
) -> Result<Received, Refusal> {
    let reserve = declared.unwrap_or(0).min(limit).min(RESERVE_AT_MOST);
    tokio::time::timeout(BODY_READ_TIMEOUT, read_within(body, limit, reserve, budget))
        .await
        .map_err(|_| Refusal::BodyTimeout)?
}

async fn read_within(
    mut body: Body,
    limit: usize,
    reserve: usize,
    budget: &Arc<Semaphore>,
) -> Result<Received, Refusal> {
    let mut bytes = Vec::with_capacity(reserve);
    let mut held: Option<OwnedSemaphorePermit> = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Refusal::BodyUnreadable { why: e.to_string() })?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        if bytes.len() + data.len() > limit {
            return Err(Refusal::TooLarge { limit });
        }
        if data.is_empty() {
            continue;
        }
        let n = u32::try_from(data.len()).map_err(|_| Refusal::TooLarge { limit })?;
        let permit = tokio::time::timeout(BUDGET_WAIT, budget.clone().acquire_many_owned(n))
            .await
            .map_err(|_| Refusal::Busy)?
            .map_err(|_| Refusal::Busy)?;
        match held.as_mut() {
            Some(h) => h.merge(permit),
            None => held = Some(permit),
        }
        bytes.extend_from_slice(&data);
    }
    Ok(Received {
        bytes: Bytes::from(bytes),
        _held: held,
    })
}
