//! Reading a post's body within a memory budget shared by every post.
//!
//! Bodies are read before their signature can be checked, so strangers can make the server
//! hold whatever they send. The budget counts the memory allocated for bytes *received*, not
//! bodies begun: a client that sends headers and then a byte at a time holds a few bytes of
//! it, not a body's worth, so slow or stalled clients cannot starve signed posts of memory.
//! It counts the buffer's capacity, not its length, so the budget is what is held. The bytes
//! stay counted until the post has been answered.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
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
    pub bytes: Vec<u8>,
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

/// Read `body`, at most `limit` bytes, within [`BODY_READ_TIMEOUT`], taking budget as bytes
/// arrive. `declared` is the Content-Length, when sent: the buffer grows no larger than it.
pub async fn read(
    body: Body,
    limit: usize,
    declared: Option<usize>,
    budget: &Arc<Semaphore>,
) -> Result<Received, Refusal> {
    let cap = declared.unwrap_or(limit).min(limit);
    tokio::time::timeout(BODY_READ_TIMEOUT, read_within(body, limit, cap, budget))
        .await
        .map_err(|_| Refusal::BodyTimeout)?
}

/// Read into a buffer that at least doubles as it grows (to `cap` at most, unless more
/// arrives), taking budget for each growth before it is allocated.
async fn read_within(
    mut body: Body,
    limit: usize,
    cap: usize,
    budget: &Arc<Semaphore>,
) -> Result<Received, Refusal> {
    let mut bytes: Vec<u8> = Vec::new();
    let mut held: Option<OwnedSemaphorePermit> = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Refusal::BodyUnreadable { why: e.to_string() })?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        let needed = bytes.len() + data.len();
        if needed > limit {
            return Err(Refusal::TooLarge { limit });
        }
        if needed > bytes.capacity() {
            let grown = needed.max((2 * bytes.capacity()).min(cap));
            take(budget, grown - bytes.capacity(), &mut held).await?;
            bytes.reserve_exact(grown - bytes.len());
            // The allocator may give more than asked: that is counted too.
            let counted = held.as_ref().map_or(0, |h| h.num_permits());
            if bytes.capacity() > counted {
                take(budget, bytes.capacity() - counted, &mut held).await?;
            }
        }
        bytes.extend_from_slice(&data);
    }
    Ok(Received { bytes, _held: held })
}

/// Add `n` bytes of budget to `held`, waiting [`BUDGET_WAIT`] at most.
async fn take(
    budget: &Arc<Semaphore>,
    n: usize,
    held: &mut Option<OwnedSemaphorePermit>,
) -> Result<(), Refusal> {
    let n = u32::try_from(n).unwrap_or(u32::MAX);
    let permit = tokio::time::timeout(BUDGET_WAIT, budget.clone().acquire_many_owned(n))
        .await
        .map_err(|_| Refusal::Busy)?
        .map_err(|_| Refusal::Busy)?;
    match held {
        Some(h) => h.merge(permit),
        None => *held = Some(permit),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunked(chunks: usize, size: usize) -> Body {
        let frames = (0..chunks)
            .map(move |_| Ok::<_, std::io::Error>(axum::body::Bytes::from(vec![7u8; size])));
        Body::from_stream(futures_util::stream::iter(frames))
    }

    /// What is counted covers the buffer's growth (at most twice what arrived), never less
    /// than what arrived, and all of it comes back once the body is dropped.
    #[tokio::test]
    async fn the_budget_counts_the_buffer_and_is_given_back() {
        let budget = Arc::new(Semaphore::new(1 << 20));
        for (chunks, size, declared) in [(1000, 100, None), (3, 30_000, Some(90_000)), (1, 5, None)]
        {
            let body = read(chunked(chunks, size), 1 << 20, declared, &budget)
                .await
                .unwrap();
            let (len, held) = (chunks * size, body.bytes.capacity());
            let counted = (1 << 20) - budget.available_permits();
            assert_eq!(body.bytes.len(), len);
            assert!(counted >= held, "{held} bytes held, {counted} counted");
            assert!(counted <= 2 * len, "{len} bytes, {counted} counted");
            drop(body);
            assert_eq!(budget.available_permits(), 1 << 20);
        }
    }

    /// A body the budget cannot hold is refused as busy, and nothing stays counted.
    #[tokio::test]
    async fn a_body_past_the_budget_is_busy() {
        let budget = Arc::new(Semaphore::new(10_000));
        let err = read(chunked(30, 1000), 1 << 20, None, &budget).await.err();
        assert!(matches!(err, Some(Refusal::Busy)), "{err:?}");
        assert_eq!(budget.available_permits(), 10_000);
    }
}
