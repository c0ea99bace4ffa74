//! A registry of providers by name, each with a typed configuration.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::future::BoxFuture;
use serde::de::DeserializeOwned;

use crate::{CloudError, CloudProvider, CloudResult};

/// Provider names that mean "no in-process provider" (upstream: empty or `external`).
pub const NO_PROVIDER_NAMES: [&str; 2] = ["", "external"];

/// Why a provider could not be registered or built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// A provider was registered twice under the same name.
    #[error("cloud provider {0:?} was registered twice")]
    DuplicateName(String),
    /// The name means "no provider" (`""` or `external`) and cannot be registered.
    #[error("cloud provider name {0:?} is reserved (it means: no in-process provider)")]
    ReservedName(String),
    /// A name that is not registered was asked for.
    #[error("unknown cloud provider {name:?}; this binary has: {known}")]
    UnknownProvider {
        /// The name asked for.
        name: String,
        /// The registered names, comma-separated.
        known: String,
    },
    /// The configuration file could not be read.
    #[error("cannot read cloud config {path}: {source}")]
    ReadConfig {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The configuration does not fit the provider's config type.
    #[error(
        "invalid cloud config for provider {provider:?} in {origin}: field `{field}`: {message}"
    )]
    InvalidConfig {
        /// The provider.
        provider: String,
        /// Where the configuration came from (file path or `<inline>`).
        origin: String,
        /// The path of the offending field (`.` for the document itself).
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// The provider's factory failed.
    #[error("cannot initialize cloud provider {provider:?}: {source}")]
    Factory {
        /// The provider.
        provider: String,
        /// What the factory reported.
        #[source]
        source: CloudError,
    },
}

type BuildFn = dyn Fn(
        Option<(String, String)>,
    ) -> BoxFuture<'static, Result<Arc<dyn CloudProvider>, RegistryError>>
    + Send
    + Sync;

struct Entry {
    build: Box<BuildFn>,
    schema: fn() -> schemars::Schema,
}

/// Providers by name. A binary registers the providers compiled into it and builds the one the user chose.
///
/// ```
/// use std::sync::Arc;
/// use cloudprovider_api::{CloudProvider, ProviderRegistry};
///
/// #[derive(serde::Deserialize, schemars::JsonSchema, Default)]
/// #[serde(deny_unknown_fields)]
/// struct MyConfig { region: String }
///
/// struct MyCloud { region: String }
/// impl CloudProvider for MyCloud {
///     fn provider_name(&self) -> &str { "mycloud" }
/// }
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let mut registry = ProviderRegistry::new();
/// registry.register("mycloud", |config: Option<MyConfig>| async move {
///     let config = config.unwrap_or_default();
///     Ok(Arc::new(MyCloud { region: config.region }) as Arc<dyn CloudProvider>)
/// })?;
///
/// let provider = registry.build_from_str("mycloud", Some("region: eu-west-1")).await?.unwrap();
/// assert_eq!(provider.provider_name(), "mycloud");
///
/// // A typo names the field.
/// let err = registry.build_from_str("mycloud", Some("regoin: x")).await.err().unwrap();
/// assert!(err.to_string().contains("regoin"));
/// # Ok::<(), cloudprovider_api::RegistryError>(()) }).unwrap();
/// ```
#[derive(Default)]
pub struct ProviderRegistry {
    entries: BTreeMap<String, Entry>,
}

impl fmt::Debug for ProviderRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderRegistry")
            .field("providers", &self.entries.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl ProviderRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `factory` under `name`. The factory receives the parsed configuration, or `None` when no
    /// configuration was given. Registering a name twice is an error.
    pub fn register<C, F, Fut>(&mut self, name: &str, factory: F) -> Result<(), RegistryError>
    where
        C: DeserializeOwned + schemars::JsonSchema + Send + 'static,
        F: Fn(Option<C>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = CloudResult<Arc<dyn CloudProvider>>> + Send + 'static,
    {
        if NO_PROVIDER_NAMES.contains(&name) {
            return Err(RegistryError::ReservedName(name.to_owned()));
        }
        if self.entries.contains_key(name) {
            return Err(RegistryError::DuplicateName(name.to_owned()));
        }
        let provider = name.to_owned();
        let factory = Arc::new(factory);
        let build = move |config: Option<(String, String)>| -> BoxFuture<'static, _> {
            let provider = provider.clone();
            let factory = Arc::clone(&factory);
            Box::pin(async move {
                let parsed = match config {
                    None => None,
                    Some((origin, text)) => Some(parse_config::<C>(&provider, &origin, &text)?),
                };
                factory(parsed)
                    .await
                    .map_err(|source| RegistryError::Factory { provider, source })
            })
        };
        self.entries.insert(
            name.to_owned(),
            Entry {
                build: Box::new(build),
                schema: schema_of::<C>,
            },
        );
        Ok(())
    }

    /// The registered names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// The JSON Schema of the provider's configuration.
    pub fn config_schema(&self, name: &str) -> Result<schemars::Schema, RegistryError> {
        Ok((self.entry(name)?.schema)())
    }

    /// Builds provider `name` with the configuration file at `config` (YAML or JSON).
    /// Returns `Ok(None)` for the names that mean "no provider" (`""`, `external`).
    pub async fn build(
        &self,
        name: &str,
        config: Option<&Path>,
    ) -> Result<Option<Arc<dyn CloudProvider>>, RegistryError> {
        if NO_PROVIDER_NAMES.contains(&name) {
            return Ok(None);
        }
        let entry = self.entry(name)?;
        let config = match config {
            None => None,
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| RegistryError::ReadConfig {
                        path: path.to_owned(),
                        source,
                    })?;
                Some((path.display().to_string(), text))
            }
        };
        (entry.build)(config).await.map(Some)
    }

    /// Like [`build`](Self::build) with the configuration given as text.
    pub async fn build_from_str(
        &self,
        name: &str,
        config: Option<&str>,
    ) -> Result<Option<Arc<dyn CloudProvider>>, RegistryError> {
        if NO_PROVIDER_NAMES.contains(&name) {
            return Ok(None);
        }
        let entry = self.entry(name)?;
        (entry.build)(config.map(|t| ("<inline>".to_owned(), t.to_owned())))
            .await
            .map(Some)
    }

    fn entry(&self, name: &str) -> Result<&Entry, RegistryError> {
        self.entries
            .get(name)
            .ok_or_else(|| RegistryError::UnknownProvider {
                name: name.to_owned(),
                known: self.names().collect::<Vec<_>>().join(", "),
            })
    }
}

fn schema_of<C: schemars::JsonSchema>() -> schemars::Schema {
    schemars::schema_for!(C)
}

/// Parses YAML (and so JSON) into `C`, naming the offending field on error. An empty document is `{}`.
fn parse_config<C: DeserializeOwned>(
    provider: &str,
    origin: &str,
    text: &str,
) -> Result<C, RegistryError> {
    let text = if text.trim().is_empty() { "{}" } else { text };
    let invalid = |field: String, message: String| RegistryError::InvalidConfig {
        provider: provider.to_owned(),
        origin: origin.to_owned(),
        field,
        message,
    };
    let de = serde_yaml_ng::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let field = field_path(&e.path().to_string());
        let message = e.into_inner().to_string();
        invalid(field.clone(), without_value(without_path(&field, &message)))
    })
}

/// The path of the field at fault: serde_path_to_error's, without its `?` for a segment it could not name (a
/// syntax error in a key); `.` for the document itself.
fn field_path(path: &str) -> String {
    let mut path = path;
    while let Some(rest) = path.strip_suffix('?') {
        path = rest.strip_suffix('.').unwrap_or(rest);
    }
    if path.is_empty() {
        ".".to_owned()
    } else {
        path.to_owned()
    }
}

/// serde_yaml_ng starts its message with a path too: `field` itself, or its parent for an unknown key
/// (`groups[0]: unknown field `x``). The field is reported once, as `field`.
fn without_path<'m>(field: &str, message: &'m str) -> &'m str {
    match message.split_once(": ") {
        Some((head, rest))
            if !head.is_empty()
                && (field == head
                    || field.starts_with(&format!("{head}."))
                    || field.starts_with(&format!("{head}["))) =>
        {
            rest
        }
        _ => message,
    }
}

/// serde's message without the value it quotes: `invalid type: string "s3cr3t", expected u32` becomes
/// `invalid type: string, expected u32` (a secret pasted into the wrong field must not end up in logs). The same for
/// `invalid value: …` and `unknown variant …`; the field path, the expected type and YAML's location stay.
fn without_value(message: &str) -> String {
    for prefix in ["invalid type: ", "invalid value: ", "unknown variant "] {
        // serde_yaml_ng puts the path first (`size: invalid type: …`).
        let Some(start) = message.find(prefix) else {
            continue;
        };
        let (path, rest) = (&message[..start], &message[start + prefix.len()..]);
        // The expectation follows the value, so the last ", expected " is serde's own.
        let Some(at) = rest.rfind(", expected ") else {
            return format!("{path}{prefix}(value not shown)");
        };
        // What kind of value it was (`string`, `integer`, `floating point`, …): the words before the quote.
        let kind = rest[..at]
            .split(['"', '`', '\''])
            .next()
            .unwrap_or_default()
            .trim();
        let kind = if prefix == "unknown variant " || kind.is_empty() {
            String::new()
        } else {
            format!("{kind} ")
        };
        return format!("{path}{prefix}{kind}(value not shown){}", &rest[at..]);
    }
    message.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Named(String);
    impl CloudProvider for Named {
        fn provider_name(&self) -> &str {
            &self.0
        }
    }

    #[derive(serde::Deserialize, schemars::JsonSchema)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    struct Cfg {
        cluster_id: String,
        #[serde(default)]
        zones: Vec<String>,
    }

    fn registry() -> ProviderRegistry {
        let mut r = ProviderRegistry::new();
        let res = r.register("named", |c: Option<Cfg>| async move {
            let name = c
                .map(|c| format!("{}:{}", c.cluster_id, c.zones.len()))
                .unwrap_or_default();
            Ok(Arc::new(Named(name)) as Arc<dyn CloudProvider>)
        });
        assert!(res.is_ok());
        r
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn duplicate_and_reserved_names_are_errors() {
        let mut r = registry();
        let dup = r.register("named", |_: Option<Cfg>| async {
            Err::<Arc<dyn CloudProvider>, _>(CloudError::NotImplemented("x"))
        });
        assert!(matches!(dup, Err(RegistryError::DuplicateName(n)) if n == "named"));
        let reserved = r.register("external", |_: Option<Cfg>| async {
            Err::<Arc<dyn CloudProvider>, _>(CloudError::NotImplemented("x"))
        });
        assert!(matches!(reserved, Err(RegistryError::ReservedName(n)) if n == "external"));
    }

    #[test]
    fn build_parses_config_and_names_bad_fields() {
        let r = registry();
        rt().block_on(async {
            let p = r
                .build_from_str("named", Some("clusterId: c1\nzones: [a, b]"))
                .await;
            assert_eq!(
                p.ok().flatten().map(|p| p.provider_name().to_owned()),
                Some("c1:2".into())
            );

            let none = r.build_from_str("named", None).await;
            assert_eq!(
                none.ok().flatten().map(|p| p.provider_name().to_owned()),
                Some(String::new())
            );

            let bad = r
                .build_from_str("named", Some("clusterId: c1\nzones: 5"))
                .await;
            match bad {
                Err(RegistryError::InvalidConfig { field, .. }) => assert_eq!(field, "zones"),
                other => panic!("expected InvalidConfig, got {:?}", other.map(|_| ())),
            }
            let unknown_field = r.build_from_str("named", Some("clusterID: c1")).await;
            let msg = unknown_field
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(msg.contains("clusterID"), "{msg}");

            let missing = r.build_from_str("named", Some("")).await;
            let msg = missing.err().map(|e| e.to_string()).unwrap_or_default();
            assert!(msg.contains("clusterId"), "{msg}");
        });
    }

    /// Regression (issue 21, finding 4): a value of the wrong type was echoed back (`invalid type: string
    /// "s3cr3t", expected u32`), so a secret pasted into the wrong field ended up in logs.
    #[test]
    fn config_errors_name_the_field_and_type_but_not_the_value() {
        #[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
        #[serde(deny_unknown_fields, rename_all = "camelCase")]
        #[allow(dead_code)]
        struct Typed {
            #[serde(default)]
            size: u32,
            #[serde(default)]
            mode: Option<Mode>,
            #[serde(default)]
            nested: Vec<Typed>,
        }
        #[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
        enum Mode {
            Fast,
        }
        let mut r = ProviderRegistry::new();
        let res = r.register("typed", |_: Option<Typed>| async move {
            Ok(Arc::new(Named("t".into())) as Arc<dyn CloudProvider>)
        });
        assert!(res.is_ok());
        rt().block_on(async {
            for (text, field, expected) in [
                ("size: s3cr3t", "size", "expected u32"),
                ("{\"size\": \"s3cr3t\"}", "size", "expected u32"),
                ("size: -77123", "size", "expected u32"),
                (
                    "nested: [{size: 1.5e300}]",
                    "nested[0].size",
                    "expected u32",
                ),
                ("mode: s3cr3t", "mode", "expected"),
                ("size: \"s3cr3t, expected u8\"", "size", "expected u32"),
            ] {
                let err = r.build_from_str("typed", Some(text)).await.err();
                let Some(RegistryError::InvalidConfig {
                    field: f, message, ..
                }) = err
                else {
                    panic!("{text}: expected InvalidConfig, got {err:?}");
                };
                assert_eq!(f, field, "{text}: {message}");
                assert!(message.contains(expected), "{text}: {message}");
                assert!(!message.starts_with(&format!("{field}:")), "{message}");
                for leaked in ["s3cr3t", "77123", "1.5e300"] {
                    assert!(!message.contains(leaked), "{text}: {message}");
                }
            }
        });
        assert_eq!(
            without_value("invalid type: string \"x\", expected u32 at line 1 column 7"),
            "invalid type: string (value not shown), expected u32 at line 1 column 7"
        );
        assert_eq!(
            without_value("missing field `clusterId`"),
            "missing field `clusterId`"
        );
    }

    /// Regressions found by the property tests (issue 21): an unknown key in a nested object printed its parent's
    /// path twice (`field `groups[0].x`: groups[0]: unknown field …`), and a syntax error in a key named the field
    /// `?`.
    #[test]
    fn nested_unknown_keys_and_key_syntax_errors_name_the_field_once() {
        #[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Outer {
            #[serde(default)]
            groups: Vec<Inner>,
        }
        #[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Inner {
            id: String,
        }
        let mut r = ProviderRegistry::new();
        let res = r.register("outer", |_: Option<Outer>| async move {
            Ok(Arc::new(Named("o".into())) as Arc<dyn CloudProvider>)
        });
        assert!(res.is_ok());
        rt().block_on(async {
            let long_key = format!("{}: 1", "k".repeat(2000));
            for (text, want_field) in [
                ("groups: [{id: x, bogus: 1}]", "groups[0].bogus"),
                ("groups:\n  - id: x\n    bogus: 1", "groups[0].bogus"),
                (long_key.as_str(), "."),
            ] {
                let err = r.build_from_str("outer", Some(text)).await.err();
                let Some(RegistryError::InvalidConfig { field, message, .. }) = err else {
                    panic!("{text}: expected InvalidConfig, got {err:?}");
                };
                assert_eq!(field, want_field, "{message}");
                assert!(!message.starts_with("groups[0]"), "{message}");
            }
        });
        assert_eq!(field_path("?"), ".");
        assert_eq!(field_path("groups[0].?"), "groups[0]");
        assert_eq!(field_path(""), ".");
        assert_eq!(field_path("a.b"), "a.b");
        assert_eq!(
            without_path("size", "size: invalid type: string, expected u32"),
            "invalid type: string, expected u32"
        );
        assert_eq!(
            without_path("size", "invalid type: string, expected u32"),
            "invalid type: string, expected u32"
        );
    }

    #[test]
    fn unknown_and_external_names() {
        let r = registry();
        rt().block_on(async {
            let err = r
                .build("nope", None)
                .await
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(
                err.contains("unknown cloud provider \"nope\"") && err.contains("named"),
                "{err}"
            );
            assert!(matches!(r.build("external", None).await, Ok(None)));
            assert!(matches!(r.build("", None).await, Ok(None)));
        });
    }

    #[test]
    fn reads_config_files_and_reports_io_errors() {
        let r = registry();
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("cloud.yaml");
        std::fs::write(&path, "{\"clusterId\": \"json\"}").unwrap_or_else(|e| panic!("{e}"));
        rt().block_on(async {
            let p = r.build("named", Some(&path)).await;
            assert_eq!(
                p.ok().flatten().map(|p| p.provider_name().to_owned()),
                Some("json:0".into())
            );
            let missing = r
                .build("named", Some(&dir.path().join("absent.yaml")))
                .await;
            assert!(matches!(missing, Err(RegistryError::ReadConfig { .. })));
        });
    }

    #[test]
    fn schema_is_available() {
        let r = registry();
        let schema = r
            .config_schema("named")
            .map(|s| serde_json::to_string(&s).unwrap_or_default());
        assert!(schema.as_deref().unwrap_or_default().contains("clusterId"));
        assert!(r.config_schema("nope").is_err());
    }
}
