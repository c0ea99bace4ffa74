//! Provider IDs: `spec.providerID` of a Node, `<provider>://<rest>`.

use std::fmt;
use std::str::FromStr;

use crate::CloudError;

/// A parsed `spec.providerID`: `<provider>://<id>`, e.g. `aws:///us-east-1a/i-0abc` has provider `aws` and
/// id `/us-east-1a/i-0abc`; `fake://node-1` has provider `fake` and id `node-1`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProviderId {
    provider: String,
    id: String,
}

/// The field name used in errors about provider IDs.
pub const PROVIDER_ID_FIELD: &str = "spec.providerID";

impl ProviderId {
    /// Builds a provider ID from its parts. The provider name must be non-empty and contain neither `:` nor `/`.
    pub fn new(provider: impl Into<String>, id: impl Into<String>) -> Result<Self, CloudError> {
        let provider = provider.into();
        let id = id.into();
        validate_provider_name(&provider)?;
        if id.is_empty() {
            return Err(CloudError::invalid_input(
                PROVIDER_ID_FIELD,
                "the part after \"://\" must not be empty",
            ));
        }
        Ok(Self { provider, id })
    }

    /// Parses `<provider>://<id>`.
    ///
    /// ```
    /// use cloudprovider_api::ProviderId;
    /// let p: ProviderId = "aws:///us-east-1a/i-0abc".parse().unwrap();
    /// assert_eq!(p.provider(), "aws");
    /// assert_eq!(p.id(), "/us-east-1a/i-0abc");
    /// assert_eq!(p.to_string(), "aws:///us-east-1a/i-0abc");
    /// assert!("i-0abc".parse::<ProviderId>().is_err());
    /// ```
    pub fn parse(s: &str) -> Result<Self, CloudError> {
        let Some((provider, id)) = s.split_once("://") else {
            return Err(CloudError::invalid_input(
                PROVIDER_ID_FIELD,
                format!("{s:?} is not of the form <provider>://<id>"),
            ));
        };
        Self::new(provider, id)
    }

    /// Parses `s` and checks that it belongs to `provider`.
    pub fn parse_for(provider: &str, s: &str) -> Result<Self, CloudError> {
        let p = Self::parse(s)?;
        if p.provider != provider {
            return Err(CloudError::invalid_input(
                PROVIDER_ID_FIELD,
                format!(
                    "{s:?} belongs to provider {:?}, not {provider:?}",
                    p.provider
                ),
            ));
        }
        Ok(p)
    }

    /// The provider name (the scheme).
    pub fn provider(&self) -> &str {
        &self.provider
    }

    /// Everything after `://`.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The last `/`-separated segment of the id (an instance ID in most clouds' formats).
    pub fn last_segment(&self) -> &str {
        self.id
            .rsplit('/')
            .find(|s| !s.is_empty())
            .unwrap_or(&self.id)
    }
}

fn validate_provider_name(provider: &str) -> Result<(), CloudError> {
    if provider.is_empty() || provider.contains([':', '/']) {
        return Err(CloudError::invalid_input(
            PROVIDER_ID_FIELD,
            format!("provider name {provider:?} must be non-empty and contain neither ':' nor '/'"),
        ));
    }
    Ok(())
}

impl fmt::Display for ProviderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.provider, self.id)
    }
}

impl FromStr for ProviderId {
    type Err = CloudError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// The `spec.providerID` of a node, if set and non-empty.
pub fn node_provider_id(node: &k8s_openapi::api::core::v1::Node) -> Option<&str> {
    node.spec
        .as_ref()
        .and_then(|s| s.provider_id.as_deref())
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_format() {
        let p = ProviderId::parse("fake://node-1").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((p.provider(), p.id()), ("fake", "node-1"));
        assert_eq!(p.last_segment(), "node-1");
        let aws = ProviderId::parse("aws:////i-0abc").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(aws.last_segment(), "i-0abc");
        assert_eq!(aws.to_string(), "aws:////i-0abc");
    }

    #[test]
    fn rejects_bad_input() {
        for bad in ["", "fake", "://x", "fake://", "a/b://x", "no-scheme/x"] {
            let err = ProviderId::parse(bad).err();
            assert!(
                matches!(err, Some(CloudError::InvalidInput { ref field, .. }) if field == PROVIDER_ID_FIELD),
                "{bad:?} gave {err:?}"
            );
        }
        assert!(ProviderId::parse_for("aws", "fake://x").is_err());
        assert!(ProviderId::parse_for("fake", "fake://x").is_ok());
    }
}
