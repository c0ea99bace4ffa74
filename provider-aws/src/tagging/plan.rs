//! The tagging controller's decisions, without AWS or Kubernetes calls.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Node;
use sha2::{Digest, Sha256};

use crate::tags::TAG_VALUE_OWNED;

/// The Node label recording which tag set its instance carries (upstream's key).
pub const TAGGING_LABEL: &str = "k8s.io/cloud-provider-aws";

/// Parses `--tags`: `key=value` pairs separated by commas; a pair without `=` or with nothing after it is a tag
/// with an empty value (as upstream's docs show: `Key1=Val1,KeyNoVal1=,KeyNoVal2`). Keys must not be empty, must
/// not repeat, and must not use the reserved `aws:` prefix; at most 50 tags (EC2's limit per resource).
pub fn parse_tags(raw: &str) -> Result<BTreeMap<String, String>, String> {
    let mut tags = BTreeMap::new();
    for item in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (key, value) = item.split_once('=').unwrap_or((item, ""));
        let (key, value) = (key.trim(), value.trim());
        if key.is_empty() {
            return Err(format!("{item:?} has an empty key; want key=value,…"));
        }
        if key.len() > 128 || value.len() > 256 {
            return Err(format!(
                "tag {key:?} is too long (keys up to 128 characters, values up to 256)"
            ));
        }
        if key.to_ascii_lowercase().starts_with("aws:") {
            return Err(format!("tag {key:?} uses the reserved prefix aws:"));
        }
        if tags.insert(key.to_owned(), value.to_owned()).is_some() {
            return Err(format!("tag {key:?} is given twice"));
        }
    }
    if tags.len() > 50 {
        return Err(format!(
            "{} tags; EC2 allows at most 50 per instance",
            tags.len()
        ));
    }
    Ok(tags)
}

/// The value of [`TAGGING_LABEL`] for a tag set: a digest of the sorted `key=value` pairs (32 hex characters;
/// upstream uses MD5 of the same text, so Nodes labelled by the Go controller are tagged once more, harmlessly).
pub fn checksum(tags: &BTreeMap<String, String>) -> String {
    let text = tags
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let digest = hex::encode(Sha256::digest(text.as_bytes()));
    digest.chars().take(32).collect()
}

/// True when the Node's instance does not carry this tag set yet.
pub fn needs_tagging(node: &Node, checksum: &str) -> bool {
    node.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(TAGGING_LABEL))
        .is_none_or(|v| v != checksum)
}

/// The tags to create on an instance: the configured ones, plus the cluster tag (`owned`) when the instance has
/// no cluster tag at all — an existing value (`shared`) is never overwritten.
pub fn tags_to_create(
    configured: &BTreeMap<String, String>,
    instance_tag_keys: &BTreeSet<String>,
    cluster_key: &str,
) -> BTreeMap<String, String> {
    let mut tags = configured.clone();
    if !instance_tag_keys.contains(cluster_key) {
        tags.insert(cluster_key.to_owned(), TAG_VALUE_OWNED.to_owned());
    }
    tags
}

/// The Nodes known to be tagged that are gone from `present`: their instances get the configured tags removed.
pub fn departed(
    known: &BTreeMap<String, String>,
    present: &BTreeSet<String>,
) -> Vec<(String, String)> {
    known
        .iter()
        .filter(|(name, _)| !present.contains(*name))
        .map(|(n, i)| (n.clone(), i.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_parse_like_upstreams_docs() {
        let tags = parse_tags("Key1=Val1, KeyNoVal1=,KeyNoVal2").unwrap_or_default();
        assert_eq!(
            tags,
            BTreeMap::from([
                ("Key1".to_owned(), "Val1".to_owned()),
                ("KeyNoVal1".to_owned(), String::new()),
                ("KeyNoVal2".to_owned(), String::new()),
            ])
        );
        assert!(parse_tags("=v").is_err());
        assert!(parse_tags("a=1,a=2").unwrap_err().contains("twice"));
        assert!(parse_tags("aws:x=1").unwrap_err().contains("reserved"));
        let many: Vec<String> = (0..51).map(|i| format!("k{i}=v")).collect();
        assert!(parse_tags(&many.join(",")).unwrap_err().contains("50"));
        assert_eq!(parse_tags(""), Ok(BTreeMap::new()));
    }

    #[test]
    fn the_checksum_follows_the_tag_set_not_its_order() {
        let a = parse_tags("x=1,y=2").unwrap_or_default();
        let b = parse_tags("y=2,x=1").unwrap_or_default();
        let c = parse_tags("x=1,y=3").unwrap_or_default();
        assert_eq!(checksum(&a), checksum(&b));
        assert_ne!(checksum(&a), checksum(&c));
        assert_eq!(checksum(&a).len(), 32);
    }

    #[test]
    fn the_label_says_whether_to_tag() {
        let mut node = Node::default();
        assert!(needs_tagging(&node, "abc"));
        node.metadata.labels = Some([(TAGGING_LABEL.to_owned(), "abc".to_owned())].into());
        assert!(!needs_tagging(&node, "abc"));
        assert!(needs_tagging(&node, "def"));
    }

    #[test]
    fn the_cluster_tag_is_added_only_when_missing() {
        let configured = parse_tags("team=web").unwrap_or_default();
        let key = "kubernetes.io/cluster/c1";
        let fresh = tags_to_create(&configured, &BTreeSet::new(), key);
        assert_eq!(fresh.get(key).map(String::as_str), Some("owned"));
        let shared = tags_to_create(&configured, &[key.to_owned()].into(), key);
        assert_eq!(shared, configured);
    }

    #[test]
    fn departed_nodes_are_the_known_ones_gone() {
        let known = BTreeMap::from([
            ("a".to_owned(), "i-1".to_owned()),
            ("b".to_owned(), "i-2".to_owned()),
        ]);
        let present = BTreeSet::from(["a".to_owned()]);
        assert_eq!(
            departed(&known, &present),
            vec![("b".to_owned(), "i-2".to_owned())]
        );
    }
}
