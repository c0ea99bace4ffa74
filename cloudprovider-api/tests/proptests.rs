//! Property tests (issue 21) of the parsers of `cloudprovider-api` that users and clouds feed: provider IDs
//! (`spec.providerID`), resource quantities, and provider configurations (YAML or JSON) through the
//! [`ProviderRegistry`]'s typed config, with nesting and size bombs. Properties: no input panics, every rejection
//! names the field, and valid generated inputs are accepted with the value they denote.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cloudprovider_api::{
    CloudError, CloudProvider, PROVIDER_ID_FIELD, ProviderId, ProviderRegistry, RegistryError,
    parse_quantity,
};
use proptest::prelude::*;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        // No regression files: a failure is fixed and kept as a unit test.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Provider IDs

/// A provider name as clouds use them.
fn provider_name() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9.-]{0,15}"
}

/// Anything after `://`, including more `://`, slashes and non-ASCII.
fn provider_id_rest() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9/_.:-]{1,40}",
        "/[a-z]{2}-[a-z]+-[0-9][a-z]/i-[0-9a-f]{8,17}",
        any::<String>().prop_filter("non-empty", |s| !s.is_empty()),
    ]
}

proptest! {
    #![proptest_config(config(256))]

    /// Any text: no panic; a rejection names `spec.providerID`; an accepted ID prints as the input and parses back
    /// to itself.
    #[test]
    fn provider_id_any_text(s in prop_oneof![any::<String>(), "[a-z:/]{0,12}", "[a-z]{0,4}://.{0,8}"]) {
        match ProviderId::parse(&s) {
            Ok(p) => {
                prop_assert_eq!(p.to_string(), s.clone());
                prop_assert_eq!(ProviderId::parse(&p.to_string()).ok(), Some(p.clone()));
                prop_assert!(!p.provider().is_empty() && !p.id().is_empty());
                prop_assert!(!p.provider().contains([':', '/']));
                // No panic on any ID, and the segment is part of it.
                prop_assert!(p.id().contains(p.last_segment()));
            }
            Err(CloudError::InvalidInput { field, message }) => {
                prop_assert_eq!(field, PROVIDER_ID_FIELD);
                prop_assert!(!message.is_empty());
            }
            Err(other) => prop_assert!(false, "{s:?}: not InvalidInput: {other:?}"),
        }
    }

    /// `<provider>://<rest>` with a valid provider and a non-empty rest is accepted with exactly those parts, and
    /// `parse_for` accepts it for its own provider only.
    #[test]
    fn provider_id_valid_round_trip(provider in provider_name(), rest in provider_id_rest(), other in provider_name()) {
        let text = format!("{provider}://{rest}");
        let p = ProviderId::parse(&text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        prop_assert_eq!(p.provider(), provider.as_str());
        prop_assert_eq!(p.id(), rest.as_str());
        prop_assert_eq!(p.to_string(), text.clone());
        prop_assert_eq!(ProviderId::new(&provider, &rest).ok(), Some(p.clone()));
        prop_assert!(ProviderId::parse_for(&provider, &text).is_ok());
        let foreign = ProviderId::parse_for(&format!("{other}x"), &text);
        if other.clone() + "x" != provider {
            prop_assert!(
                matches!(&foreign, Err(CloudError::InvalidInput { field, .. }) if field == PROVIDER_ID_FIELD),
                "{:?}", foreign
            );
        }
    }

    /// Without `://`, or with an empty or invalid provider, or nothing after `://`: rejected naming the field.
    #[test]
    fn provider_id_invalid_named(
        word in "[a-z0-9/._-]{0,30}",
        bad_provider in prop_oneof![Just(String::new()), "[a-z]{0,5}[:/][a-z]{0,5}"],
        provider in provider_name(),
    ) {
        for text in [word.replace(':', ""), format!("{bad_provider}://x"), format!("{provider}://")] {
            let r = ProviderId::parse(&text);
            prop_assert!(
                matches!(&r, Err(CloudError::InvalidInput { field, .. }) if field == PROVIDER_ID_FIELD),
                "{text:?}: {r:?}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Quantities

const BINARY: [(&str, u32); 6] = [
    ("Ki", 10),
    ("Mi", 20),
    ("Gi", 30),
    ("Ti", 40),
    ("Pi", 50),
    ("Ei", 60),
];
const DECIMAL: [(&str, i32); 10] = [
    ("n", -9),
    ("u", -6),
    ("m", -3),
    ("", 0),
    ("k", 3),
    ("M", 6),
    ("G", 9),
    ("T", 12),
    ("P", 15),
    ("E", 18),
];

/// `n · 10^pow10 · 1000`, rounded up, or `None` when it does not fit an `i128` (the documented contract).
fn decimal_milli(n: i128, pow10: i32) -> Option<i128> {
    let e = pow10 + 3;
    if e >= 0 {
        n.checked_mul(10i128.checked_pow(e.unsigned_abs())?)
    } else {
        let div = 10i128.checked_pow(e.unsigned_abs())?;
        Some(n / div + i128::from(n % div != 0))
    }
}

proptest! {
    #![proptest_config(config(256))]

    /// Any text: no panic, and a value is never produced for text with letters other than a suffix.
    #[test]
    fn quantity_any_text(s in prop_oneof![
        any::<String>(),
        "[-+]?[0-9.]{0,45}([eE][-+]?[0-9]{1,12}|[numkMGTPE]|[KMGTPE]i)?",
        "[-+0-9.eEiKMG ]{0,20}",
    ]) {
        if let Some(v) = parse_quantity(&s) {
            let t = s.trim();
            prop_assert!(t.starts_with(|c: char| c.is_ascii_digit() || "+-.".contains(c)), "{s:?} -> {v}");
        }
    }

    /// `<n>Ki` … `<n>Ei` parse to `n · 2^k` (in thousandths), or `None` when that does not fit an `i128`.
    #[test]
    fn quantity_binary_suffixes(n in prop_oneof![0u64..=4096, any::<u64>()], which in 0usize..BINARY.len()) {
        let (suffix, shift) = BINARY[which];
        let want = i128::from(n).checked_mul(1i128 << shift).and_then(|b| b.checked_mul(1000));
        prop_assert_eq!(parse_quantity(&format!("{n}{suffix}")), want, "{}{}", n, suffix);
        prop_assert_eq!(parse_quantity(&format!(" {n}{suffix}\t")), want);
        prop_assert_eq!(parse_quantity(&format!("+{n}{suffix}")), want);
        prop_assert_eq!(parse_quantity(&format!("-{n}{suffix}")), want.map(|w| -w));
        prop_assert_eq!(parse_quantity(&format!("{n}.0{suffix}")), want);
    }

    /// Decimal suffixes and exponents: `<n><s>` and `<n>e<k>` are `n · 10^k` thousandths, rounded up.
    #[test]
    fn quantity_decimal_suffixes_and_exponents(
        n in prop_oneof![0u64..=100_000, any::<u64>()],
        which in 0usize..DECIMAL.len(),
        exp in -30i32..=30,
    ) {
        let (suffix, pow10) = DECIMAL[which];
        let n128 = i128::from(n);
        prop_assert_eq!(parse_quantity(&format!("{n}{suffix}")), decimal_milli(n128, pow10), "{}{}", n, suffix);
        for e in ["e", "E"] {
            prop_assert_eq!(parse_quantity(&format!("{n}{e}{exp}")), decimal_milli(n128, exp), "{}e{}", n, exp);
        }
    }

    /// The whole `i128` range with the sub-unit suffixes: rounded up without overflowing near `i128::MAX`.
    #[test]
    fn quantity_i128_range(
        n in prop_oneof![0..=i128::MAX, (i128::MAX - 10_000_000_000)..=i128::MAX],
        which in 0usize..3,
    ) {
        let (suffix, pow10) = DECIMAL[which];
        prop_assert_eq!(parse_quantity(&format!("{n}{suffix}")), decimal_milli(n, pow10), "{}{}", n, suffix);
        prop_assert_eq!(parse_quantity(&format!("{n}")), n.checked_mul(1000));
    }

    /// Decimal fractions: `<a>.<b>` is `a.b · 1000`, rounded up.
    #[test]
    fn quantity_fractions(a in 0u64..=1_000_000_000, b in "[0-9]{1,12}") {
        let text = format!("{a}.{b}");
        let mantissa: i128 = format!("{a}{b}").parse().unwrap_or_else(|e| panic!("{e}"));
        let frac = i32::try_from(b.len()).unwrap_or_else(|e| panic!("{e}"));
        prop_assert_eq!(parse_quantity(&text), decimal_milli(mantissa, -frac), "{}", text);
        prop_assert_eq!(parse_quantity(&format!(".{b}")), decimal_milli(b.parse().unwrap_or_else(|e| panic!("{e}")), -frac));
    }

    /// Numbers that cannot fit an `i128`, however written, are `None` (not 0, not a panic); leading zeros do not
    /// count.
    #[test]
    fn quantity_huge_numbers(
        digits in "[1-9][0-9]{40,80}",
        zeros in "0{0,50}",
        suffix in prop_oneof![Just(String::new()), Just("k".to_owned()), Just("Ei".to_owned()), "[eE]\\+?[0-9]{1,4}"],
        small in prop_oneof![Just("n".to_owned()), Just("m".to_owned()), "[eE]-[0-9]{1,4}"],
        exp in prop_oneof![Just(i32::MAX), Just(i32::MIN), Just(i32::MIN + 1), any::<i32>()],
    ) {
        prop_assert_eq!(parse_quantity(&format!("{digits}{suffix}")), None, "{}{}", digits, suffix);
        prop_assert_eq!(parse_quantity(&format!("-{digits}")), None);
        // A huge mantissa with a small scale: too large for the parser (`None`) or the value, rounded up.
        let scaled = format!("{digits}{small}");
        prop_assert!(parse_quantity(&scaled).is_none_or(|v| v >= 1), "{}", scaled);
        prop_assert_eq!(parse_quantity(&format!("{zeros}1Ki")), Some(1024 * 1000));
        // Extreme exponents: no overflow panic; zero stays zero and anything else is too large or rounds up.
        for text in [format!("1e{exp}"), format!("1.5e{exp}"), format!("0.{zeros}1e{exp}")] {
            prop_assert!(parse_quantity(&text).is_none_or(|v| v >= 1), "{}", text);
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Provider configurations through the registry

/// A provider's typed configuration with every shape real ones have: required and defaulted fields, numbers of
/// several widths, an enum, lists, maps, optional and recursive nesting.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Cfg {
    cluster_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    size: Option<u32>,
    #[serde(default)]
    big: u64,
    #[serde(default)]
    delta: i16,
    #[serde(default)]
    enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mode: Option<Mode>,
    #[serde(default)]
    zones: Vec<String>,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    #[serde(default)]
    groups: Vec<Group>,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Group {
    id: String,
    #[serde(default)]
    min_size: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    child: Option<Box<Group>>,
    #[serde(default)]
    children: Vec<Group>,
}

#[derive(
    Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
enum Mode {
    Fast,
    Safe,
}

/// A provider whose name carries what it was built from, so a test can see the parsed config.
struct Built;
impl CloudProvider for Built {
    fn provider_name(&self) -> &str {
        "typed"
    }
}

fn registry() -> ProviderRegistry {
    let mut r = ProviderRegistry::new();
    r.register("typed", |c: Option<Cfg>| async move {
        // Handed back through a thread-local rather than re-parsed from JSON: a config nested as deep as the YAML
        // parser allows is deeper than serde_json's own recursion limit (a drawn depth of 63 once failed there).
        BUILT.with(|b| *b.borrow_mut() = Some(c));
        Ok(Arc::new(Built) as Arc<dyn CloudProvider>)
    })
    .unwrap_or_else(|e| panic!("{e}"));
    r
}

thread_local! {
    /// The config the last successful build received.
    static BUILT: std::cell::RefCell<Option<Option<Cfg>>> = const { std::cell::RefCell::new(None) };
    static REGISTRY: ProviderRegistry = registry();
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
}

/// Builds `typed` from `text`: the parsed config, or the error.
fn build(text: &str) -> Result<Option<Cfg>, RegistryError> {
    REGISTRY.with(|r| {
        RUNTIME.with(|rt| {
            rt.block_on(r.build_from_str("typed", Some(text))).map(|p| {
                assert!(p.is_some(), "typed built no provider");
                BUILT
                    .with(|b| b.borrow_mut().take())
                    .unwrap_or_else(|| panic!("typed was built without its config"))
            })
        })
    })
}

/// The error's field and message, asserting the error is `InvalidConfig` and names its field in its text.
fn invalid(text: &str, r: Result<Option<Cfg>, RegistryError>) -> (String, String) {
    match r {
        Err(e @ RegistryError::InvalidConfig { .. }) => {
            let shown = e.to_string();
            let RegistryError::InvalidConfig { field, message, .. } = e else {
                unreachable!()
            };
            assert!(!field.is_empty(), "{text:?}: empty field: {shown}");
            assert!(shown.contains(&format!("field `{field}`")), "{shown}");
            assert!(!message.is_empty(), "{shown}");
            (field, message)
        }
        other => panic!("{:.200?}: expected InvalidConfig, got {other:?}", text),
    }
}

fn group(depth: u32) -> impl Strategy<Value = Group> {
    let leaf = ("[a-z][a-z0-9-]{0,10}", any::<u32>()).prop_map(|(id, min_size)| Group {
        id,
        min_size,
        child: None,
        children: Vec::new(),
    });
    leaf.prop_recursive(depth, 24, 4, |inner| {
        (
            "[a-z][a-z0-9-]{0,10}",
            any::<u32>(),
            proptest::option::of(inner.clone()),
            proptest::collection::vec(inner, 0..4),
        )
            .prop_map(|(id, min_size, child, children)| Group {
                id,
                min_size,
                child: child.map(Box::new),
                children,
            })
    })
}

fn valid_config() -> impl Strategy<Value = Cfg> {
    (
        (
            any::<String>(),
            proptest::option::of(any::<u32>()),
            any::<u64>(),
            any::<i16>(),
            any::<bool>(),
        ),
        proptest::option::of(prop_oneof![Just(Mode::Fast), Just(Mode::Safe)]),
        proptest::collection::vec(any::<String>(), 0..5),
        proptest::collection::btree_map("[a-zA-Z0-9./_-]{1,20}", any::<String>(), 0..5),
        proptest::collection::vec(group(4), 0..4),
    )
        .prop_map(
            |((cluster_id, size, big, delta, enabled), mode, zones, tags, groups)| Cfg {
                cluster_id,
                size,
                big,
                delta,
                enabled,
                mode,
                zones,
                tags,
                groups,
            },
        )
}

/// A value of the wrong type for the field it is put in, carrying a marker that must not be echoed.
fn wrong_value(marker: &str) -> Vec<serde_json::Value> {
    use serde_json::json;
    vec![
        json!(marker),
        json!(format!("{marker}, expected u8")),
        json!({ "k": marker }),
        json!([marker]),
    ]
}

proptest! {
    #![proptest_config(config(128))]

    /// A valid configuration written as JSON or YAML is accepted with exactly its values.
    #[test]
    fn config_valid_round_trips(cfg in valid_config()) {
        let json = serde_json::to_string(&cfg).unwrap_or_else(|e| panic!("{e}"));
        prop_assert_eq!(build(&json).ok().flatten(), Some(cfg.clone()), "JSON {}", json);
        let pretty = serde_json::to_string_pretty(&cfg).unwrap_or_else(|e| panic!("{e}"));
        prop_assert_eq!(build(&pretty).ok().flatten(), Some(cfg.clone()));
        let yaml = serde_yaml_ng::to_string(&cfg).unwrap_or_else(|e| panic!("{e}"));
        prop_assert_eq!(build(&yaml).ok().flatten(), Some(cfg.clone()), "YAML {}", yaml);
    }

    /// Any text: no panic, and a rejection is `InvalidConfig` naming a field (`.` for the document).
    #[test]
    fn config_any_text(text in prop_oneof![
        any::<String>(),
        "[-a-zA-Z0-9:{}\\[\\],\"'&*!|>#\n ]{0,200}",
        "(clusterId|size|groups|zones|tags|mode|big|delta|enabled|id|minSize|child|children|x)[:] ?([-0-9a-z{}\\[\\],.\"]{0,10}\n  ?){0,4}",
    ]) {
        if let Err(e) = build(&text) {
            invalid(&text, Err(e));
        }
    }

    /// A value of the wrong type at any depth is rejected naming that field's path and the expected type, without
    /// the value itself (a secret pasted into the wrong field must not end up in logs).
    #[test]
    fn config_wrong_type_names_the_path(
        cfg in valid_config(),
        which in 0usize..7,
        bad in 0usize..4,
        nested in 0usize..4,
        marker in "[a-z]{6}[0-9]{6}",
    ) {
        let mut doc = serde_json::to_value(&cfg).unwrap_or_else(|e| panic!("{e}"));
        let value = wrong_value(&marker)[bad].clone();
        // (pointer, the path serde_path_to_error reports)
        let mut targets = vec![
            ("/size".to_owned(), "size".to_owned()),
            ("/big".to_owned(), "big".to_owned()),
            ("/delta".to_owned(), "delta".to_owned()),
            ("/enabled".to_owned(), "enabled".to_owned()),
            ("/mode".to_owned(), "mode".to_owned()),
            ("/clusterId".to_owned(), "clusterId".to_owned()),
        ];
        // Deep in the groups: groups[0].children[0]… then minSize.
        if !cfg.groups.is_empty() {
            let (mut pointer, mut path) = ("/groups/0".to_owned(), "groups[0]".to_owned());
            let mut g = &cfg.groups[0];
            for _ in 0..nested {
                let Some(c) = g.children.first() else { break };
                pointer.push_str("/children/0");
                path.push_str(".children[0]");
                g = c;
            }
            targets.push((format!("{pointer}/minSize"), format!("{path}.minSize")));
        }
        let (pointer, path) = targets[which % targets.len()].clone();
        // A string is a valid clusterId / mode spelling: only non-strings are wrong there.
        if (path == "clusterId" || path == "mode") && value.is_string() {
            return Ok(());
        }
        let (parent, key) = pointer.rsplit_once('/').unwrap_or_else(|| panic!("{pointer}"));
        let parent = if parent.is_empty() { doc.as_object_mut() } else { doc.pointer_mut(parent).and_then(|p| p.as_object_mut()) };
        parent.unwrap_or_else(|| panic!("{pointer}")).insert(key.to_owned(), value);
        for text in [
            serde_json::to_string(&doc).unwrap_or_else(|e| panic!("{e}")),
            serde_yaml_ng::to_string(&doc).unwrap_or_else(|e| panic!("{e}")),
        ] {
            let (field, message) = invalid(&text, build(&text));
            prop_assert_eq!(&field, &path, "{}: {}", text, message);
            prop_assert!(message.contains("expected") || message.contains("invalid type"), "{}", message);
            prop_assert!(!message.contains(&marker), "value echoed: {}", message);
        }
    }

    /// An unknown key anywhere is rejected naming it.
    #[test]
    fn config_unknown_key_is_named(cfg in valid_config(), key in "[a-z]{1,8}X[a-z]{0,4}", in_group in any::<bool>()) {
        let mut doc = serde_json::to_value(&cfg).unwrap_or_else(|e| panic!("{e}"));
        let target = if in_group && !cfg.groups.is_empty() { doc.pointer_mut("/groups/0") } else { Some(&mut doc) };
        if let Some(obj) = target.and_then(|t| t.as_object_mut()) {
            obj.insert(key.clone(), serde_json::json!(1));
        }
        let text = serde_json::to_string(&doc).unwrap_or_else(|e| panic!("{e}"));
        let (field, message) = invalid(&text, build(&text));
        prop_assert!(field.ends_with(&key) || message.contains(&key), "{}: {}", field, message);
    }

    /// Numbers out of range for their field, however large, are rejected naming the field, not echoed.
    #[test]
    fn config_huge_numbers(digits in "[1-9][0-9]{20,400}", exp in 300u32..100_000, neg in any::<bool>()) {
        let sign = if neg { "-" } else { "" };
        for (field, value) in [
            ("size", format!("{sign}{digits}")),
            ("big", format!("{sign}{digits}")),
            ("delta", format!("{sign}{digits}")),
            ("size", format!("{sign}1.5e{exp}")),
            ("big", format!("{sign}{digits}e{exp}")),
        ] {
            for text in [format!("clusterId: c\n{field}: {value}"), format!("{{\"clusterId\": \"c\", \"{field}\": {value}}}")] {
                let (f, message) = invalid(&text, build(&text));
                prop_assert_eq!(f.as_str(), field, "{}", message);
                prop_assert!(!message.contains(&digits), "value echoed: {}", message);
            }
        }
    }
}

proptest! {
    // Few cases: each builds documents of up to half a megabyte.
    #![proptest_config(config(6))]

    /// Size bombs are parsed or rejected in bounded time: huge strings and keys, long lists and maps.
    #[test]
    fn config_size_bombs(len in 50_000usize..500_000, items in 5_000usize..50_000, c in "[a-z]") {
        let start = Instant::now();
        let huge = c.repeat(len);
        let text = format!("clusterId: {huge}\nzones: [{}]\n", vec!["z"; items].join(","));
        let cfg = build(&text).ok().flatten().unwrap_or_else(|| panic!("a long valid config was refused"));
        prop_assert_eq!(cfg.cluster_id.len(), len);
        prop_assert_eq!(cfg.zones.len(), items);
        let tags: Vec<String> = (0..items / 10).map(|i| format!("\"k{i}\": \"v\"")).collect();
        let json = format!("{{\"clusterId\": \"c\", \"tags\": {{{}}}}}", tags.join(","));
        prop_assert_eq!(build(&json).ok().flatten().map(|c| c.tags.len()), Some(items / 10));
        // A huge key (YAML allows 1024 characters for a plain key) is a syntax error of the document, with its
        // location, and does not hang.
        let (field, message) = invalid("<huge key>", build(&format!("clusterId: c\n{huge}X: 1")));
        prop_assert_eq!(field.as_str(), ".", "{:.100}", message);
        prop_assert!(message.contains("line 2"), "{:.100}", message);
        prop_assert!(start.elapsed() < Duration::from_secs(20), "took {:?}", start.elapsed());
    }

}

proptest! {
    #![proptest_config(config(24))]

    /// Deep nesting (flow and block style, lists and maps, into the recursive type or not) is rejected with a
    /// field, never a stack overflow, or accepted when the type allows it. From depth 2: `zones: []` (depth 1) is
    /// an empty list, rightly accepted (a drawn depth of 1 once failed the suite).
    #[test]
    fn config_deep_nesting(depth in prop_oneof![2usize..200, 200usize..10_000], style in 0usize..5) {
        let text = match style {
            0 => format!("clusterId: c\nzones: {}{}", "[".repeat(depth), "]".repeat(depth)),
            1 => format!("clusterId: c\ntags: {}{}", "{a: ".repeat(depth), "}".repeat(depth)),
            2 => format!(
                "{{\"clusterId\": \"c\", \"groups\": [{}\"id\": \"x\"{}]}}",
                "{\"id\": \"x\", \"child\": ".repeat(depth),
                "}".repeat(depth)
            ),
            3 => {
                let mut s = String::from("clusterId: c\ngroups:\n");
                // Indentation grows with the depth (quadratic text): past the recursion limit (128) is enough.
                for i in 0..depth.min(300) {
                    let pad = "  ".repeat(i);
                    s.push_str(&format!("{pad}- id: g{i}\n{pad}  children:\n"));
                }
                s
            }
            _ => format!("{}{}", "- ".repeat(depth), "x"),
        };
        match build(&text) {
            Ok(Some(cfg)) => {
                // Only the recursive type can hold nesting, and only within the parser's recursion limit.
                prop_assert!(style == 2 || style == 3, "style {style} depth {depth} accepted: {cfg:?}");
            }
            other => {
                invalid("<deep>", other);
            }
        }
    }

    /// YAML anchors and aliases cannot blow up the parsed size: a "billion laughs" document whose aliases all
    /// fit the recursive type (each level's group has `width` children aliasing the level below, `width^levels`
    /// groups if expanded) is rejected naming a field, or accepted when small, in bounded time.
    #[test]
    fn config_alias_bomb(levels in 2usize..12, width in 2usize..12) {
        let start = Instant::now();
        let mut text = String::from("clusterId: c\ngroups:\n  - &g0 {id: g0}\n");
        for l in 1..levels {
            let refs = vec![format!("*g{}", l - 1); width].join(", ");
            text.push_str(&format!("  - &g{l} {{id: g{l}, children: [{refs}]}}\n"));
        }
        // Every group expanded: the group of level l holds 1 + width · (the group of level l - 1).
        let mut per_level = vec![1u128];
        for l in 1..levels {
            per_level.push(1 + width as u128 * per_level[l - 1]);
        }
        let expanded: u128 = per_level.iter().sum();
        match build(&text) {
            Ok(Some(cfg)) => {
                fn count(g: &Group) -> u128 {
                    1 + g.children.iter().map(count).sum::<u128>()
                }
                prop_assert_eq!(cfg.groups.iter().map(count).sum::<u128>(), expanded);
                prop_assert!(expanded <= 1_000_000, "{expanded} groups accepted");
            }
            other => {
                invalid("<aliases>", other);
            }
        }
        prop_assert!(start.elapsed() < Duration::from_secs(10), "took {:?}", start.elapsed());
    }
}

/// An empty document is `{}`: the required field is named.
#[test]
fn config_empty_names_required_field() {
    for text in ["", "   \n", "{}"] {
        let (field, message) = invalid(text, build(text));
        assert!(
            message.contains("clusterId") || field.contains("clusterId"),
            "{text:?}: {field}: {message}"
        );
    }
}

/// The case property testing found (depth 63, style 3 of `config_deep_nesting`): groups nested as deep as the YAML
/// parser allows are built, and the test's own plumbing must not fail on them.
#[test]
fn groups_nested_63_deep_are_built() {
    let mut text = String::from("clusterId: c\ngroups:\n");
    for i in 0..63 {
        let pad = "  ".repeat(i);
        text.push_str(&format!("{pad}- id: g{i}\n{pad}  children:\n"));
    }
    let cfg = build(&text).unwrap_or_else(|e| panic!("{e}"));
    assert!(cfg.is_some_and(|c| !c.groups.is_empty()));
}
