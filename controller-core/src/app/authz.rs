//! Delegated authorization of the secure port (upstream's `DelegatingAuthorizationOptions`): a request is allowed
//! by a SubjectAccessReview (`authorization.k8s.io/v1`) on the non-resource URL of its path, except the paths of
//! `--authorization-always-allow-paths`. Decisions are cached for
//! `--authorization-webhook-cache-authorized-ttl` / `--authorization-webhook-cache-unauthorized-ttl`.

use std::time::Duration;

use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};

use super::authn::{TtlCache, UserInfo};

/// The decision on a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Allowed.
    Allow,
    /// Denied, with the reason the review gave.
    Deny(String),
}

/// Whether `path` is one of `patterns` (an entry ending in `*` is a prefix, as upstream).
pub fn always_allowed(patterns: &[String], path: &str) -> bool {
    patterns.iter().any(|p| match p.strip_suffix('*') {
        Some(prefix) => path.starts_with(prefix),
        None => p == path,
    })
}

/// The Kubernetes verb of an HTTP method on a non-resource URL.
pub fn verb(method: &axum::http::Method) -> String {
    match *method {
        axum::http::Method::GET | axum::http::Method::HEAD => "get".into(),
        axum::http::Method::POST => "create".into(),
        axum::http::Method::PUT => "update".into(),
        ref other => other.as_str().to_ascii_lowercase(),
    }
}

type Key = (UserInfo, String, String);

/// Authorizes requests with SubjectAccessReviews.
pub struct Authorizer {
    reviews: Api<SubjectAccessReview>,
    allowed_ttl: Duration,
    denied_ttl: Duration,
    cache: TtlCache<Key, Decision>,
}

impl std::fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorizer")
            .field("allowed_ttl", &self.allowed_ttl)
            .field("denied_ttl", &self.denied_ttl)
            .finish_non_exhaustive()
    }
}

impl Authorizer {
    /// Reviews with `client`, caching allowed decisions for `allowed_ttl` and denied ones for `denied_ttl`.
    pub fn new(client: kube::Client, allowed_ttl: Duration, denied_ttl: Duration) -> Self {
        Self {
            reviews: Api::all(client),
            allowed_ttl,
            denied_ttl,
            cache: TtlCache::new(),
        }
    }

    /// May `user` do `verb` on the non-resource URL `path`?
    pub async fn authorize(
        &self,
        user: &UserInfo,
        verb: &str,
        path: &str,
    ) -> Result<Decision, kube::Error> {
        let key = (user.clone(), verb.to_owned(), path.to_owned());
        if let Some(decision) = self.cache.get(&key) {
            return Ok(decision);
        }
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(user.name.clone()),
                uid: user.uid.clone(),
                groups: Some(user.groups.clone()),
                non_resource_attributes: Some(NonResourceAttributes {
                    path: Some(path.to_owned()),
                    verb: Some(verb.to_owned()),
                }),
                ..SubjectAccessReviewSpec::default()
            },
            ..SubjectAccessReview::default()
        };
        let answer = self.reviews.create(&PostParams::default(), &review).await?;
        let status = answer.status.unwrap_or_default();
        let (decision, ttl) = if status.allowed && status.denied != Some(true) {
            (Decision::Allow, self.allowed_ttl)
        } else {
            (
                Decision::Deny(status.reason.unwrap_or_default()),
                self.denied_ttl,
            )
        };
        self.cache.insert(key, decision.clone(), ttl);
        Ok(decision)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn always_allow_paths_match_exactly_or_by_prefix() {
        let patterns = vec!["/healthz".to_owned(), "/debug/*".to_owned()];
        assert!(always_allowed(&patterns, "/healthz"));
        assert!(!always_allowed(&patterns, "/healthz/extra"));
        assert!(always_allowed(&patterns, "/debug/pprof"));
        assert!(!always_allowed(&patterns, "/metrics"));
        assert_eq!(verb(&axum::http::Method::GET), "get");
        assert_eq!(verb(&axum::http::Method::DELETE), "delete");
    }
}
