//! Comparing a secret someone presented (a bearer token, a client secret, a refresh token)
//! with the one held: in constant time, so that the time taken tells nothing of either.

use sha2::Digest;
use subtle::ConstantTimeEq;

/// Whether `given` is `held`. Their digests are compared, so that not even the held secret's
/// length shows in the time taken.
pub fn same_secret(given: &str, held: &str) -> bool {
    let digest = |t: &str| sha2::Sha256::digest(t.as_bytes());
    bool::from(digest(given).ct_eq(&digest(held)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_same_secret_is_the_same() {
        assert!(same_secret("pat-na1-abc", "pat-na1-abc"));
        for other in ["pat-na1-abd", "pat-na1-ab", "", "PAT-NA1-ABC"] {
            assert!(!same_secret(other, "pat-na1-abc"), "{other}");
        }
    }
}
