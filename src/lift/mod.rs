//! Measuring what sendtime changes: a seeded share of each webhook's receipts is held out
//! (sent at receipt, as the workflow would without sendtime), and `sendtime report lift`
//! compares how the two groups engaged afterwards.

mod compare;
pub mod report;
pub mod sends;
mod text;

/// The seed of the hold-out draw: fixed, so a receipt planned again (a restart, a replay) is
/// held out or not exactly as before.
const SEED: u64 = 0x686f_6c64_6f75_7431;

/// Whether the receipt `receipt_id` is held out of a webhook holding out `share` of them.
pub fn held_out(receipt_id: &str, share: f64) -> bool {
    if share <= 0.0 {
        return false;
    }
    let h = xxhash_rust::xxh3::xxh3_64_with_seed(receipt_id.as_bytes(), SEED);
    // The top 53 bits as a uniform draw in [0, 1).
    ((h >> 11) as f64 / (1u64 << 53) as f64) < share
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_share_held_out_is_the_one_asked_and_each_draw_is_stable() {
        for share in [0.0, 0.1, 0.5] {
            let n = 100_000;
            let held = (0..n)
                .filter(|i| held_out(&format!("01KRECEIPT{i:016}"), share))
                .count() as f64;
            let sd = (share * (1.0 - share) / n as f64).sqrt();
            assert!(
                (held / n as f64 - share).abs() <= 4.0 * sd + 1e-12,
                "{share}: {held}"
            );
        }
        assert_eq!(held_out("01KX", 0.3), held_out("01KX", 0.3));
    }
}
