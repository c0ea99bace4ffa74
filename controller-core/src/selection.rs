//! Upstream's `--controllers` syntax: `*` (all enabled by default), `name` (enable), `-name` (disable).

use std::collections::BTreeSet;

/// A controller this crate provides, with upstream's names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ControllerKind {
    /// `cloud-node` (alias `cloud-node-controller`): initializes new Nodes.
    CloudNode,
    /// `cloud-node-lifecycle` (alias `cloud-node-lifecycle-controller`): deletes Nodes whose instance is gone.
    CloudNodeLifecycle,
    /// `service` (aliases `service-lb-controller`, `service-controller`): load balancers.
    Service,
    /// `route` (aliases `node-route-controller`, `route-controller`): routes for pod CIDRs.
    Route,
}

impl ControllerKind {
    /// Every controller.
    pub const ALL: [ControllerKind; 4] = [
        Self::CloudNode,
        Self::CloudNodeLifecycle,
        Self::Service,
        Self::Route,
    ];

    /// The canonical name.
    pub fn name(self) -> &'static str {
        match self {
            Self::CloudNode => "cloud-node",
            Self::CloudNodeLifecycle => "cloud-node-lifecycle",
            Self::Service => "service",
            Self::Route => "route",
        }
    }

    /// The names accepted besides the canonical one.
    pub fn aliases(self) -> &'static [&'static str] {
        match self {
            Self::CloudNode => &["cloud-node-controller"],
            Self::CloudNodeLifecycle => &["cloud-node-lifecycle-controller"],
            Self::Service => &["service-lb-controller", "service-controller"],
            Self::Route => &["node-route-controller", "route-controller"],
        }
    }

    /// Looks a controller up by name or alias.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == name || k.aliases().contains(&name))
    }
}

/// Why a `--controllers` value is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--controllers: unknown controller {name:?}; known: {known}")]
pub struct SelectionError {
    /// The unknown name.
    pub name: String,
    /// The known names, comma-separated.
    pub known: String,
}

/// Which controllers run.
///
/// ```
/// use controller_core::{ControllerKind, ControllerSelection};
/// let s = ControllerSelection::parse(["*", "-route"]).unwrap();
/// assert!(s.is_enabled(ControllerKind::Service));
/// assert!(!s.is_enabled(ControllerKind::Route));
/// let only = ControllerSelection::parse(["cloud-node-controller"]).unwrap();
/// assert_eq!(only.enabled(), vec![ControllerKind::CloudNode]);
/// assert!(ControllerSelection::parse(["servce"]).is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControllerSelection {
    enabled: BTreeSet<ControllerKind>,
}

impl ControllerSelection {
    /// Parses upstream's list (items may also be comma-separated inside one argument). Upstream semantics: an
    /// explicit `name` enables it, `-name` disables it, `*` enables every controller not explicitly disabled; without
    /// `*` only the named ones run. The empty list means `*`.
    pub fn parse<I, S>(items: I) -> Result<Self, SelectionError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut star = false;
        let mut on = BTreeSet::new();
        let mut off = BTreeSet::new();
        let mut any = false;
        for item in items {
            for raw in item
                .as_ref()
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
            {
                any = true;
                if raw == "*" {
                    star = true;
                    continue;
                }
                let (disable, name) = raw.strip_prefix('-').map_or((false, raw), |n| (true, n));
                let kind = ControllerKind::from_name(name).ok_or_else(|| SelectionError {
                    name: name.to_owned(),
                    known: ControllerKind::ALL.map(ControllerKind::name).join(", "),
                })?;
                if disable {
                    off.insert(kind);
                } else {
                    on.insert(kind);
                }
            }
        }
        if !any {
            star = true;
        }
        let enabled = ControllerKind::ALL
            .into_iter()
            .filter(|k| !off.contains(k) && (star || on.contains(k)))
            .collect();
        Ok(Self { enabled })
    }

    /// Every controller.
    pub fn all() -> Self {
        Self {
            enabled: ControllerKind::ALL.into_iter().collect(),
        }
    }

    /// Whether `kind` runs.
    pub fn is_enabled(&self, kind: ControllerKind) -> bool {
        self.enabled.contains(&kind)
    }

    /// The controllers that run, in a stable order.
    pub fn enabled(&self) -> Vec<ControllerKind> {
        self.enabled.iter().copied().collect()
    }

    /// Disables `kind` (e.g. routes when `--configure-cloud-routes=false`).
    pub fn disable(&mut self, kind: ControllerKind) {
        self.enabled.remove(&kind);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_syntax() {
        let p = |v: &[&str]| ControllerSelection::parse(v.iter().copied()).map(|s| s.enabled());
        assert_eq!(p(&[]), Ok(ControllerKind::ALL.to_vec()));
        assert_eq!(p(&["*"]), Ok(ControllerKind::ALL.to_vec()));
        assert_eq!(
            p(&["*,-service", "-route-controller"]),
            Ok(vec![
                ControllerKind::CloudNode,
                ControllerKind::CloudNodeLifecycle
            ])
        );
        assert_eq!(
            p(&["service-lb-controller"]),
            Ok(vec![ControllerKind::Service])
        );
        assert_eq!(p(&["-service"]), Ok(vec![]));
        let err = p(&["*", "-nope"]).err();
        assert!(err.is_some_and(|e| e.name == "nope" && e.known.contains("cloud-node-lifecycle")));
    }
}
