//! The registered controllers, and upstream's `--controllers` syntax over them: `*` (every controller enabled by
//! default), `name` (enable), `-name` (disable).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::ManagedController;

/// Why a controller could not be registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegistrationError {
    /// The name or an alias is already taken by another registered controller.
    #[error("controller name {name:?} is registered twice")]
    DuplicateName {
        /// The name.
        name: String,
    },
    /// A name or alias is empty, `*` or starts with `-`.
    #[error("controller name {name:?} is not valid (empty, \"*\", or starting with '-')")]
    InvalidName {
        /// The name.
        name: String,
    },
}

/// Why a `--controllers` value is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown controller {name:?}; known: {known}")]
#[non_exhaustive]
pub struct SelectionError {
    /// The unknown name.
    pub name: String,
    /// The known names, comma-separated.
    pub known: String,
}

/// The controllers a binary can run, by name: upstream's map of controller initializers.
///
/// ```
/// use controller_core::manager::ControllerRegistry;
/// use controller_core::node_lifecycle::{NodeLifecycleConfig, NodeLifecycleController};
/// let mut registry = ControllerRegistry::new();
/// registry.register(NodeLifecycleController::new(NodeLifecycleConfig::default())).unwrap();
/// let selection = registry.select(["*"]).unwrap();
/// assert!(selection.is_enabled("cloud-node-lifecycle"));
/// // Aliases resolve to the canonical name; unknown names list the known ones.
/// let only = registry.select(["cloud-node-lifecycle-controller"]).unwrap();
/// assert_eq!(only.names(), vec!["cloud-node-lifecycle"]);
/// assert!(registry.select(["servce"]).unwrap_err().to_string().contains("known: cloud-node-lifecycle"));
/// ```
#[derive(Clone, Default)]
pub struct ControllerRegistry {
    controllers: Vec<Arc<dyn ManagedController>>,
    /// Overrides of [`ManagedController::enabled_by_default`], by canonical name.
    default_on: BTreeMap<&'static str, bool>,
}

impl std::fmt::Debug for ControllerRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControllerRegistry")
            .field("controllers", &self.names())
            .finish()
    }
}

impl ControllerRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `controller`. Its name and aliases must not clash with any registered controller's.
    pub fn register(
        &mut self,
        controller: impl ManagedController,
    ) -> Result<&mut Self, RegistrationError> {
        self.register_arc(Arc::new(controller))
    }

    /// Like [`register`](Self::register), for a controller already behind an `Arc`.
    pub fn register_arc(
        &mut self,
        controller: Arc<dyn ManagedController>,
    ) -> Result<&mut Self, RegistrationError> {
        let names = std::iter::once(controller.name()).chain(controller.aliases().iter().copied());
        for name in names {
            if name.is_empty() || name == "*" || name.starts_with('-') || name.contains(',') {
                return Err(RegistrationError::InvalidName { name: name.into() });
            }
            if self.find(name).is_some() {
                return Err(RegistrationError::DuplicateName { name: name.into() });
            }
        }
        self.controllers.push(controller);
        Ok(self)
    }

    /// Overrides whether `*` includes the controller with this name or alias (a binary's choice of defaults, e.g.
    /// `node-pool` on in `node-pool-controller` and off in `cloud-controller-manager`). Returns whether it exists.
    pub fn set_enabled_by_default(&mut self, name: &str, on: bool) -> bool {
        let Some(canonical) = self.find(name).map(|c| c.name()) else {
            return false;
        };
        self.default_on.insert(canonical, on);
        true
    }

    /// Whether `*` includes this controller.
    fn is_default_on(&self, controller: &dyn ManagedController) -> bool {
        self.default_on
            .get(controller.name())
            .copied()
            .unwrap_or_else(|| controller.enabled_by_default())
    }

    /// The canonical names, in registration order.
    pub fn names(&self) -> Vec<&'static str> {
        self.controllers.iter().map(|c| c.name()).collect()
    }

    /// The controller with this name or alias.
    pub fn find(&self, name: &str) -> Option<&Arc<dyn ManagedController>> {
        self.controllers
            .iter()
            .find(|c| c.name() == name || c.aliases().contains(&name))
    }

    /// Every registered controller, in registration order.
    pub fn controllers(&self) -> impl Iterator<Item = &Arc<dyn ManagedController>> {
        self.controllers.iter()
    }

    /// Parses upstream's `--controllers` list (items may also be comma-separated inside one argument): an explicit
    /// `name` enables it, `-name` disables it, `*` enables every controller enabled by default that is not
    /// explicitly disabled; without `*` only the named ones run. The empty list means `*`. An unknown name is an
    /// error listing the known ones.
    pub fn select<I, S>(&self, items: I) -> Result<ControllerSelection, SelectionError>
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
                let controller = self.find(name).ok_or_else(|| SelectionError {
                    name: name.to_owned(),
                    known: self.known(),
                })?;
                if disable {
                    off.insert(controller.name());
                } else {
                    on.insert(controller.name());
                }
            }
        }
        if !any {
            star = true;
        }
        let enabled = self
            .controllers
            .iter()
            .filter(|c| {
                !off.contains(c.name())
                    && (on.contains(c.name()) || (star && self.is_default_on(c.as_ref())))
            })
            .map(|c| c.name())
            .collect();
        Ok(ControllerSelection { enabled })
    }

    fn known(&self) -> String {
        self.controllers
            .iter()
            .map(|c| {
                if c.aliases().is_empty() {
                    c.name().to_owned()
                } else {
                    format!("{} (alias {})", c.name(), c.aliases().join(", "))
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Which registered controllers run, by canonical name; made by [`ControllerRegistry::select`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControllerSelection {
    enabled: Vec<&'static str>,
}

impl ControllerSelection {
    /// Whether the controller with this canonical name runs.
    pub fn is_enabled(&self, name: &str) -> bool {
        self.enabled.contains(&name)
    }

    /// The canonical names that run, in registration order.
    pub fn names(&self) -> Vec<&'static str> {
        self.enabled.clone()
    }

    /// Disables a controller (e.g. routes when `--configure-cloud-routes=false`).
    pub fn disable(&mut self, name: &str) {
        self.enabled.retain(|n| *n != name);
    }
}

#[cfg(test)]
mod tests {
    use futures::future::BoxFuture;

    use super::*;
    use crate::ControllerContext;
    use crate::manager::{ControllerError, SharedCaches};
    use crate::runtime::CancellationToken;

    struct Named(&'static str, &'static [&'static str], bool);

    impl ManagedController for Named {
        fn name(&self) -> &'static str {
            self.0
        }
        fn aliases(&self) -> &'static [&'static str] {
            self.1
        }
        fn enabled_by_default(&self) -> bool {
            self.2
        }
        fn run(
            &self,
            _: ControllerContext,
            _: SharedCaches,
            _: CancellationToken,
        ) -> BoxFuture<'static, Result<(), ControllerError>> {
            Box::pin(async { Ok(()) })
        }
    }

    fn registry() -> ControllerRegistry {
        let mut r = ControllerRegistry::new();
        for c in [
            Named("cloud-node", &["cloud-node-controller"], true),
            Named(
                "service",
                &["service-lb-controller", "service-controller"],
                true,
            ),
            Named("route", &["route-controller"], true),
            Named("node-pool", &[], false),
        ] {
            r.register(c).unwrap_or_else(|e| panic!("{e}"));
        }
        r
    }

    #[test]
    fn upstream_syntax() {
        let r = registry();
        let p = |v: &[&str]| r.select(v.iter().copied()).map(|s| s.names());
        assert_eq!(p(&[]), Ok(vec!["cloud-node", "service", "route"]));
        assert_eq!(p(&["*"]), Ok(vec!["cloud-node", "service", "route"]));
        assert_eq!(
            p(&["*,-service", "-route-controller"]),
            Ok(vec!["cloud-node"])
        );
        assert_eq!(p(&["service-lb-controller"]), Ok(vec!["service"]));
        assert_eq!(p(&["-service"]), Ok(vec![]));
        // Off by default: only when named.
        assert_eq!(
            p(&["*", "node-pool"]),
            Ok(vec!["cloud-node", "service", "route", "node-pool"])
        );
        let err = p(&["*", "-nope"]).err();
        assert!(err.is_some_and(|e| {
            e.name == "nope"
                && e.known.contains("node-pool")
                && e.known
                    .contains("service (alias service-lb-controller, service-controller)")
        }));
    }

    #[test]
    fn clashing_or_invalid_names_are_refused() {
        let mut r = registry();
        assert_eq!(
            r.register(Named("service-controller", &[], true)).err(),
            Some(RegistrationError::DuplicateName {
                name: "service-controller".into()
            })
        );
        assert!(matches!(
            r.register(Named("tagging", &["-x"], true)).err(),
            Some(RegistrationError::InvalidName { .. })
        ));
        assert!(
            r.register(Named("tagging", &["tagging-controller"], true))
                .is_ok()
        );
        assert!(
            r.select(["tagging-controller"])
                .is_ok_and(|s| s.is_enabled("tagging"))
        );
    }

    #[test]
    fn defaults_can_be_overridden_by_the_binary() {
        let mut r = registry();
        assert!(r.set_enabled_by_default("node-pool", true));
        assert!(r.set_enabled_by_default("cloud-node-controller", false));
        assert!(!r.set_enabled_by_default("nope", true));
        assert_eq!(
            r.select(["*"]).map(|s| s.names()),
            Ok(vec!["service", "route", "node-pool"])
        );
    }
}
