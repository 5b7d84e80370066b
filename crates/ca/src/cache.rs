//! Remembered token reviews. Every agent in the mesh renews on a schedule and retries on
//! failure, so without a cache each of those calls would be a TokenReview on the API server.
//! Entries are keyed by the token's SHA-256: the cache never holds a token.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use sha2::{Digest, Sha256};

use crate::auth::{AuthError, Caller};

/// The most reviews remembered; beyond it the expired, then the oldest, go first.
pub const CAPACITY: usize = 10_000;
/// How long an accepted token is trusted without asking again.
pub const ACCEPTED_FOR: Duration = Duration::from_secs(5 * 60);
/// How long a refused token is refused without asking again: short, so a token that was
/// refused while its pod was starting is soon looked at afresh, but long enough that a
/// flood of bad tokens is not a flood of reviews.
pub const REFUSED_FOR: Duration = Duration::from_secs(10);

/// A token's SHA-256.
pub type TokenDigest = [u8; 32];

/// The key a token is remembered under.
pub fn digest(token: &str) -> TokenDigest {
    Sha256::digest(token.as_bytes()).into()
}

struct Entry {
    outcome: Result<Caller, AuthError>,
    stored: Instant,
    expires: Instant,
}

/// Reviews by token digest, each kept for a while, at most [`ReviewCache::capacity`] of them.
pub struct ReviewCache {
    entries: HashMap<TokenDigest, Entry>,
    capacity: usize,
}

impl Default for ReviewCache {
    fn default() -> Self {
        ReviewCache::new(CAPACITY)
    }
}

impl ReviewCache {
    /// An empty cache holding at most `capacity` reviews.
    pub fn new(capacity: usize) -> ReviewCache {
        ReviewCache {
            entries: HashMap::new(),
            capacity: capacity.max(1),
        }
    }

    /// The review remembered for `key`, if it has not expired by `now`.
    pub fn get(&self, key: &TokenDigest, now: Instant) -> Option<Result<Caller, AuthError>> {
        self.entries
            .get(key)
            .filter(|e| now < e.expires)
            .map(|e| e.outcome.clone())
    }

    /// Remembers a review made at `now`. A failure to check the token says nothing about
    /// the token, so it is not remembered.
    pub fn insert(&mut self, key: TokenDigest, outcome: Result<Caller, AuthError>, now: Instant) {
        let keep_for = match &outcome {
            Ok(_) => ACCEPTED_FOR,
            Err(e) if e.is_refusal() => REFUSED_FOR,
            Err(_) => return,
        };
        if !self.entries.contains_key(&key) && self.entries.len() >= self.capacity {
            self.make_room(now);
        }
        let entry = Entry {
            outcome,
            stored: now,
            expires: now + keep_for,
        };
        self.entries.insert(key, entry);
    }

    /// How many reviews are held (expired ones included until they are evicted).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is held.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Drops the expired entries, and the oldest one if that freed nothing.
    fn make_room(&mut self, now: Instant) {
        self.entries.retain(|_, e| now < e.expires);
        if self.entries.len() < self.capacity {
            return;
        }
        let oldest = self
            .entries
            .iter()
            .min_by_key(|(_, e)| e.stored)
            .map(|(k, _)| *k);
        if let Some(oldest) = oldest {
            self.entries.remove(&oldest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(pod: &str) -> Caller {
        Caller {
            namespace: "shop".into(),
            service_account: "reviews".into(),
            pod: pod.into(),
        }
    }

    #[test]
    fn the_key_is_the_tokens_sha256() {
        // The test vector of FIPS 180-2 for "abc".
        let expected = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        let hex: String = digest("abc").iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, expected);
    }

    #[test]
    fn an_accepted_token_is_remembered_for_five_minutes() {
        let mut cache = ReviewCache::default();
        let t0 = Instant::now();
        cache.insert(digest("a"), Ok(caller("web-0")), t0);
        let just_before = t0 + ACCEPTED_FOR - Duration::from_millis(1);
        assert_eq!(
            cache.get(&digest("a"), just_before),
            Some(Ok(caller("web-0")))
        );
        assert_eq!(cache.get(&digest("a"), t0 + ACCEPTED_FOR), None);
        assert_eq!(cache.get(&digest("b"), t0), None);
    }

    #[test]
    fn a_refused_token_is_remembered_briefly() {
        let mut cache = ReviewCache::default();
        let t0 = Instant::now();
        cache.insert(digest("bad"), Err(AuthError::NotBoundToPod), t0);
        assert_eq!(
            cache.get(&digest("bad"), t0 + REFUSED_FOR - Duration::from_millis(1)),
            Some(Err(AuthError::NotBoundToPod))
        );
        assert_eq!(cache.get(&digest("bad"), t0 + REFUSED_FOR), None);
    }

    #[test]
    fn a_review_that_could_not_be_made_is_not_remembered() {
        let mut cache = ReviewCache::default();
        let t0 = Instant::now();
        cache.insert(
            digest("a"),
            Err(AuthError::Unavailable("connection refused".into())),
            t0,
        );
        assert!(cache.is_empty());
        assert_eq!(cache.get(&digest("a"), t0), None);
    }

    #[test]
    fn a_full_cache_drops_expired_entries_first() {
        let mut cache = ReviewCache::new(2);
        let t0 = Instant::now();
        cache.insert(digest("refused"), Err(AuthError::NotBoundToPod), t0);
        cache.insert(digest("old"), Ok(caller("a")), t0);
        let later = t0 + REFUSED_FOR;
        cache.insert(digest("new"), Ok(caller("b")), later);
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get(&digest("old"), later), Some(Ok(caller("a"))));
        assert_eq!(cache.get(&digest("new"), later), Some(Ok(caller("b"))));
    }

    #[test]
    fn a_full_cache_of_live_entries_drops_the_oldest() {
        let mut cache = ReviewCache::new(2);
        let t0 = Instant::now();
        cache.insert(digest("first"), Ok(caller("a")), t0);
        cache.insert(
            digest("second"),
            Ok(caller("b")),
            t0 + Duration::from_secs(1),
        );
        let now = t0 + Duration::from_secs(2);
        cache.insert(digest("third"), Ok(caller("c")), now);
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get(&digest("first"), now), None);
        assert_eq!(cache.get(&digest("second"), now), Some(Ok(caller("b"))));
        assert_eq!(cache.get(&digest("third"), now), Some(Ok(caller("c"))));
    }

    #[test]
    fn storing_a_key_again_replaces_it_without_evicting_others() {
        let mut cache = ReviewCache::new(2);
        let t0 = Instant::now();
        cache.insert(digest("a"), Ok(caller("a")), t0);
        cache.insert(digest("b"), Ok(caller("b")), t0);
        cache.insert(digest("a"), Err(AuthError::NotBoundToPod), t0);
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get(&digest("b"), t0), Some(Ok(caller("b"))));
        assert_eq!(
            cache.get(&digest("a"), t0),
            Some(Err(AuthError::NotBoundToPod))
        );
    }
}
