//! Delegated authentication of the secure port (upstream's `DelegatingAuthenticationOptions`): a bearer token is
//! checked with a TokenReview (`authentication.k8s.io/v1`), a TLS client certificate verified against
//! `--client-ca-file` names the user (CN) and groups (O). Decisions on tokens are cached for
//! `--authentication-token-webhook-cache-ttl`, keyed by the token's SHA-256.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::{Api, PostParams};
use parking_lot::Mutex;
use sha2::{Digest, Sha256};

/// Who made a request.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct UserInfo {
    /// The user name (a ServiceAccount's is `system:serviceaccount:<namespace>:<name>`).
    pub name: String,
    /// The user's UID, if the authenticator gave one.
    pub uid: Option<String>,
    /// The user's groups.
    pub groups: Vec<String>,
}

/// Entries a cache holds before expired ones are dropped.
const CACHE_PRUNE_AT: usize = 1024;

/// A small map whose entries expire after a TTL chosen per entry.
pub(super) struct TtlCache<K, V> {
    entries: Mutex<HashMap<K, (Instant, V)>>,
}

impl<K: Eq + Hash, V: Clone> TtlCache<K, V> {
    pub(super) fn new() -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
        }
    }

    pub(super) fn get(&self, key: &K) -> Option<V> {
        let entries = self.entries.lock();
        entries
            .get(key)
            .filter(|(expires, _)| *expires > Instant::now())
            .map(|(_, v)| v.clone())
    }

    pub(super) fn insert(&self, key: K, value: V, ttl: Duration) {
        if ttl.is_zero() {
            return;
        }
        let mut entries = self.entries.lock();
        let now = Instant::now();
        if entries.len() >= CACHE_PRUNE_AT {
            entries.retain(|_, (expires, _)| *expires > now);
        }
        if entries.len() < CACHE_PRUNE_AT {
            entries.insert(key, (now + ttl, value));
        }
    }
}

/// Why a request is not authenticated.
#[derive(Debug, thiserror::Error)]
pub enum AuthnError {
    /// No bearer token and no verified client certificate.
    #[error("no credentials")]
    NoCredentials,
    /// The TokenReview said the token is not valid.
    #[error("invalid bearer token: {0}")]
    Rejected(String),
    /// The TokenReview could not be made.
    #[error("TokenReview failed: {0}")]
    Review(#[source] kube::Error),
}

/// Authenticates requests by bearer token (TokenReview) or verified client certificate.
pub struct Authenticator {
    reviews: Api<TokenReview>,
    ttl: Duration,
    cache: TtlCache<Vec<u8>, Option<UserInfo>>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// Reviews tokens with `client`, caching each decision for `ttl` (0: no cache).
    pub fn new(client: kube::Client, ttl: Duration) -> Self {
        Self {
            reviews: Api::all(client),
            ttl,
            cache: TtlCache::new(),
        }
    }

    /// The user of a request: the verified client certificate's (`peer`, leaf DER) if any, else the bearer token's
    /// (the value of the `Authorization` header).
    pub async fn authenticate(
        &self,
        peer: Option<&[u8]>,
        authorization: Option<&str>,
    ) -> Result<UserInfo, AuthnError> {
        if let Some(user) = peer.and_then(user_from_certificate) {
            return Ok(user);
        }
        let token = authorization
            .and_then(|h| {
                let (scheme, token) = h.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .filter(|t| !t.is_empty())
            .ok_or(AuthnError::NoCredentials)?;
        let key = Sha256::digest(token.as_bytes()).to_vec();
        if let Some(decision) = self.cache.get(&key) {
            return decision.ok_or_else(|| AuthnError::Rejected("cached".into()));
        }
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_owned(),
                audiences: None,
            },
            ..TokenReview::default()
        };
        let answer = self
            .reviews
            .create(&PostParams::default(), &review)
            .await
            .map_err(AuthnError::Review)?;
        let status = answer.status.unwrap_or_default();
        let user = status
            .user
            .filter(|_| status.authenticated == Some(true))
            .and_then(|u| {
                Some(UserInfo {
                    name: u.username.filter(|n| !n.is_empty())?,
                    uid: u.uid,
                    groups: u.groups.unwrap_or_default(),
                })
            });
        self.cache.insert(key, user.clone(), self.ttl);
        user.ok_or_else(|| AuthnError::Rejected(status.error.unwrap_or_default()))
    }
}

/// The user of a client certificate (DER): CN is the name, each O a group (as the apiserver's x509 authenticator).
/// `None` when the subject has no CN.
pub fn user_from_certificate(der: &[u8]) -> Option<UserInfo> {
    let (cn, orgs) = der::subject_names(der)?;
    let name = cn.filter(|n| !n.is_empty())?;
    Some(UserInfo {
        name,
        uid: None,
        groups: orgs,
    })
}

/// Just enough DER to read a certificate's subject CN and O.
mod der {
    const OID_CN: &[u8] = &[0x55, 0x04, 0x03];
    const OID_O: &[u8] = &[0x55, 0x04, 0x0a];

    /// (tag, contents, rest).
    fn read(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let (&tag, input) = input.split_first()?;
        let (&first, mut input) = input.split_first()?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let count = usize::from(first & 0x7f);
            if count == 0 || count > 4 || input.len() < count {
                return None;
            }
            let (bytes, rest) = input.split_at(count);
            input = rest;
            bytes.iter().fold(0usize, |n, b| (n << 8) | usize::from(*b))
        };
        if input.len() < len {
            return None;
        }
        let (contents, rest) = input.split_at(len);
        Some((tag, contents, rest))
    }

    /// The subject's CN (the last one) and Os of a certificate.
    pub(super) fn subject_names(cert: &[u8]) -> Option<(Option<String>, Vec<String>)> {
        let (_, certificate, _) = read(cert)?;
        let (_, tbs, _) = read(certificate)?;
        let mut fields = tbs;
        // [0] version (optional), serial, signature algorithm, issuer, validity, subject.
        let (tag, _, rest) = read(fields)?;
        if tag == 0xa0 {
            fields = rest;
        }
        for _ in 0..4 {
            let (_, _, rest) = read(fields)?;
            fields = rest;
        }
        let (_, mut subject, _) = read(fields)?;
        let (mut cn, mut orgs) = (None, Vec::new());
        while !subject.is_empty() {
            let (_, mut set, rest) = read(subject)?;
            subject = rest;
            while !set.is_empty() {
                let (_, attribute, rest) = read(set)?;
                set = rest;
                let (_, oid, value) = read(attribute)?;
                let (_, text, _) = read(value)?;
                let text = String::from_utf8_lossy(text).into_owned();
                if oid == OID_CN {
                    cn = Some(text);
                } else if oid == OID_O {
                    orgs.push(text);
                }
            }
        }
        Some((cn, orgs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_certificate_names_the_user_and_groups() {
        let mut params =
            rcgen::CertificateParams::new(Vec::<String>::new()).unwrap_or_else(|e| panic!("{e}"));
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "system:masters");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "scraper");
        let key = rcgen::KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
        let cert = params.self_signed(&key).unwrap_or_else(|e| panic!("{e}"));
        let user = user_from_certificate(cert.der());
        assert_eq!(
            user,
            Some(UserInfo {
                name: "scraper".into(),
                uid: None,
                groups: vec!["system:masters".into()],
            })
        );
        assert_eq!(user_from_certificate(b"\x30\x03junk"), None);
    }

    #[test]
    fn cache_expires() {
        let cache: TtlCache<u8, u8> = TtlCache::new();
        cache.insert(1, 2, Duration::from_millis(50));
        cache.insert(3, 4, Duration::ZERO);
        assert_eq!(cache.get(&1), Some(2));
        assert_eq!(cache.get(&3), None);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(cache.get(&1), None);
    }
}
