//! The instance-type offering of Karpenter's kwok cloud provider, as node groups of our fake cloud.
//!
//! Karpenter's kwok provider sells what `kwok/cloudprovider/instance_types.json` lists (the binary embeds it;
//! `scripts/build-karpenter` copies it next to the binary): 144 instance types (families `c`, `s`, `m` — 2, 4 and
//! 8 GiB per CPU — × 12 sizes from 1 to 256 CPUs × amd64/arm64 × linux/windows), each in 4 zones
//! (`test-zone-a`..`d`) × 2 capacity types (`spot`, `on-demand`): 1152 offerings. Architecture and OS change
//! neither shape nor price, so by default only the 36 `amd64`/`linux` types are taken — 288 node groups, one per
//! instance type × zone × capacity type — and the Karpenter NodePool of the benchmark is held to
//! `kubernetes.io/arch=amd64`, `kubernetes.io/os=linux` so both sides choose from the same 288 offerings.
//!
//! `bench karpenter-offering` prints them as a provider-fake config (`nodeGroups:`), as our NodePool
//! (`spec.nodeGroups:`), or as a Markdown table.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// Karpenter's kwok provider adds this to every instance type (`KubeReserved`), so a Node's allocatable is its
/// capacity less 100m CPU and 10Mi memory.
pub const KUBE_RESERVED_CPU_MILLIS: u64 = 100;
/// See [`KUBE_RESERVED_CPU_MILLIS`].
pub const KUBE_RESERVED_MEMORY_MIB: u64 = 10;

/// One instance type in one zone with one capacity type, at one price.
#[derive(Clone, Debug, PartialEq)]
pub struct Offering {
    /// `c-4x-amd64-linux`.
    pub instance_type: String,
    /// `c`, `s` or `m`.
    pub family: String,
    /// `amd64` or `arm64`.
    pub arch: String,
    /// `linux` or `windows`.
    pub os: String,
    /// CPUs, as the file spells them (`"4"`).
    pub cpu: String,
    /// Memory, as the file spells it (`"16Gi"`, `"1Ti"`).
    pub memory: String,
    /// The most Pods (16 per CPU, at most 1024: the file sets it, so Karpenter's default of 110 does not apply).
    pub pods: String,
    /// `test-zone-a`.
    pub zone: String,
    /// `spot` or `on-demand`.
    pub capacity_type: String,
    /// Per hour.
    pub price: f64,
}

impl Offering {
    /// The node group id: `c-4x-amd64-linux-zone-a-on-demand` (the zone without its `test-` prefix).
    pub fn node_group_id(&self) -> String {
        let zone = self.zone.strip_prefix("test-").unwrap_or(&self.zone);
        format!("{}-{zone}-{}", self.instance_type, self.capacity_type)
    }

    /// CPUs as a number (for sorting and sums).
    pub fn cpus(&self) -> f64 {
        self.cpu.parse().unwrap_or(0.0)
    }

    /// (cpu, memory) of the Node Karpenter's kwok provider registers: its allocatable, the capacity less
    /// [`KUBE_RESERVED_CPU_MILLIS`] and [`KUBE_RESERVED_MEMORY_MIB`] (`c-4x`: `3900m`, `8182Mi`).
    pub fn allocatable(&self) -> (String, String) {
        let cpu_m = (self.cpus() * 1000.0).round() as u64;
        let mib = memory_mib(&self.memory);
        match mib {
            Some(mib) => (
                format!("{}m", cpu_m.saturating_sub(KUBE_RESERVED_CPU_MILLIS)),
                format!("{}Mi", mib.saturating_sub(KUBE_RESERVED_MEMORY_MIB)),
            ),
            None => (self.cpu.clone(), self.memory.clone()),
        }
    }
}

/// `"16Gi"`, `"1Ti"`, `"512Mi"` in MiB.
fn memory_mib(q: &str) -> Option<u64> {
    let (n, unit) = q.split_at(q.find(|c: char| !c.is_ascii_digit())?);
    let n: u64 = n.parse().ok()?;
    Some(match unit {
        "Mi" => n,
        "Gi" => n * 1024,
        "Ti" => n * 1024 * 1024,
        _ => return None,
    })
}

/// Which offerings to take.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Subset {
    /// The 36 amd64/linux instance types × 4 zones × 2 capacity types (288).
    AmdLinux,
    /// Every instance type (144 × 8 = 1152).
    All,
}

/// Reads Karpenter's kwok `instance_types.json` into one [`Offering`] per instance type × zone × capacity type, in
/// the file's order.
pub fn read(path: &Path, subset: Subset) -> Result<Vec<Offering>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse(&text, subset).with_context(|| format!("parsing {}", path.display()))
}

/// [`read`] of a string.
pub fn parse(text: &str, subset: Subset) -> Result<Vec<Offering>> {
    let types: Vec<Value> = serde_json::from_str(text)?;
    let mut out = Vec::new();
    for t in &types {
        let s = |v: &Value, p: &str| v.pointer(p).and_then(Value::as_str).map(str::to_owned);
        let name = s(t, "/name").context("an instance type without a name")?;
        let arch = s(t, "/architecture").with_context(|| format!("{name}: no architecture"))?;
        let os = t
            .pointer("/operatingSystems")
            .and_then(Value::as_array)
            .and_then(|a| a.first())
            .and_then(Value::as_str)
            .with_context(|| format!("{name}: no operatingSystems"))?
            .to_owned();
        if subset == Subset::AmdLinux && (arch != "amd64" || os != "linux") {
            continue;
        }
        let cpu = s(t, "/resources/cpu").with_context(|| format!("{name}: no cpu"))?;
        let memory = s(t, "/resources/memory").with_context(|| format!("{name}: no memory"))?;
        // Karpenter's kwok provider defaults pods to 110 when the file has none (helpers.go setDefaultOptions).
        let pods = s(t, "/resources/pods").unwrap_or_else(|| "110".to_owned());
        let family = name.split(['-', '.']).next().unwrap_or_default().to_owned();
        let offerings = t
            .pointer("/offerings")
            .and_then(Value::as_array)
            .with_context(|| format!("{name}: no offerings"))?;
        for o in offerings {
            let price = o
                .pointer("/Price")
                .and_then(Value::as_f64)
                .with_context(|| format!("{name}: an offering without a Price"))?;
            let mut zone = None;
            let mut capacity_type = None;
            for r in o
                .pointer("/Requirements")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let value = r
                    .pointer("/values/0")
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                match r.pointer("/key").and_then(Value::as_str) {
                    Some("topology.kubernetes.io/zone") => zone = value,
                    Some("karpenter.sh/capacity-type") => capacity_type = value,
                    _ => {}
                }
            }
            let (Some(zone), Some(capacity_type)) = (zone, capacity_type) else {
                bail!("{name}: an offering without a zone or capacity type");
            };
            out.push(Offering {
                instance_type: name.clone(),
                family: family.clone(),
                arch: arch.clone(),
                os: os.clone(),
                cpu: cpu.clone(),
                memory: memory.clone(),
                pods: pods.clone(),
                zone,
                capacity_type,
                price,
            });
        }
    }
    Ok(out)
}

/// The provider-fake config: one node group per offering, `maxSize` each, e.g.
/// `- {id: c-4x-amd64-linux-zone-a-on-demand, maxSize: 500, price: 0.108589934592, template: {instanceType:
/// c-4x-amd64-linux, zone: test-zone-a, cpu: "4", memory: 8Gi, pods: "64", labels: {karpenter.sh/capacity-type:
/// on-demand}}}`. Prices are the same f64 as in Karpenter's file (shortest round-trip form), so both sides rank offerings alike. With
/// `allocatable`, cpu and memory are what Karpenter's Nodes report as allocatable (capacity less its
/// kube-reserved), so exactly the same Pods fit a node on either side.
pub fn fake_config_yaml(offerings: &[Offering], max_size: u32, allocatable: bool) -> String {
    let mut s = String::from(
        "# Karpenter's kwok instance-type offering (kwok/cloudprovider/instance_types.json), one node group per\n\
         # instance type x zone x capacity type. Made by `bench karpenter-offering`.\nnodeGroups:\n",
    );
    for o in offerings {
        let (cpu, memory) = if allocatable {
            o.allocatable()
        } else {
            (o.cpu.clone(), o.memory.clone())
        };
        let _ = writeln!(
            s,
            "- {{id: {}, maxSize: {max_size}, price: {}, template: {{instanceType: {}, zone: {}, cpu: \"{cpu}\", \
             memory: {memory}, pods: \"{}\", labels: {{karpenter.sh/capacity-type: {}}}}}}}",
            o.node_group_id(),
            o.price,
            o.instance_type,
            o.zone,
            o.pods,
            o.capacity_type
        );
    }
    s
}

/// Our NodePool (`kube-cloud-rs.dev/v1alpha1`) offering every one of `offerings` by node group id.
pub fn node_pool_yaml(name: &str, offerings: &[Offering], max_nodes: u32) -> String {
    let mut s = format!(
        "apiVersion: kube-cloud-rs.dev/v1alpha1\nkind: NodePool\nmetadata:\n  name: {name}\nspec:\n  minNodes: 0\n  \
         maxNodes: {max_nodes}\n  nodeGroups:\n"
    );
    for o in offerings {
        let _ = writeln!(s, "  - {}", o.node_group_id());
    }
    s
}

/// A Markdown table: one row per instance type (shape and both prices), zones and capacity types summarized.
pub fn markdown_table(offerings: &[Offering]) -> String {
    let mut rows: Vec<(String, &Offering, Option<f64>, Option<f64>)> = Vec::new();
    for o in offerings {
        let row = match rows.iter_mut().find(|r| r.0 == o.instance_type) {
            Some(r) => r,
            None => {
                rows.push((o.instance_type.clone(), o, None, None));
                rows.last_mut().expect("just pushed")
            }
        };
        let slot = if o.capacity_type == "spot" {
            &mut row.3
        } else {
            &mut row.2
        };
        // The file prices an instance type alike in every zone; a zone that differs shows as a range here.
        *slot = Some(slot.map_or(o.price, |p: f64| p.max(o.price)));
    }
    rows.sort_by(|a, b| {
        a.1.cpus()
            .total_cmp(&b.1.cpus())
            .then_with(|| family_rank(&a.1.family).cmp(&family_rank(&b.1.family)))
            .then_with(|| a.0.cmp(&b.0))
    });
    let mut zones: Vec<&str> = offerings.iter().map(|o| o.zone.as_str()).collect();
    zones.sort_unstable();
    zones.dedup();
    let mut s = String::from(
        "| instance type | CPU | memory | pods | on-demand $/h | spot $/h |\n|---|---:|---:|---:|---:|---:|\n",
    );
    for (name, o, on_demand, spot) in &rows {
        let p = |v: &Option<f64>| v.map_or("—".to_owned(), |v| format!("{v:.6}"));
        let _ = writeln!(
            s,
            "| `{name}` | {} | {} | {} | {} | {} |",
            o.cpu,
            o.memory,
            o.pods,
            p(on_demand),
            p(spot)
        );
    }
    let _ = write!(
        s,
        "\n{} instance types × zones {} × capacity types on-demand, spot = {} offerings.\n",
        rows.len(),
        zones.join(", "),
        offerings.len()
    );
    s
}

fn family_rank(family: &str) -> u8 {
    match family {
        "c" => 0,
        "s" => 1,
        "m" => 2,
        _ => 3,
    }
}

/// `bench karpenter-offering`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Karpenter's kwok `instance_types.json` (default: the one `scripts/build-karpenter` puts next to the binary).
    #[arg(long)]
    pub instance_types: Option<PathBuf>,
    /// Which instance types.
    #[arg(long, value_enum, default_value_t = Subset::AmdLinux)]
    pub subset: Subset,
    /// `maxSize` of every node group.
    #[arg(long, default_value_t = 500)]
    pub max_size: u32,
    /// What to print.
    #[arg(long, value_enum, default_value_t = Print::FakeConfig)]
    pub print: Print,
    /// Node-group cpu/memory as the allocatable of Karpenter's Nodes (capacity less 100m CPU, 10Mi memory)
    /// instead of the instance type's capacity.
    #[arg(long)]
    pub allocatable: bool,
}

/// What `bench karpenter-offering` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Print {
    /// The provider-fake config (`nodeGroups:`).
    FakeConfig,
    /// Our NodePool listing every node group (`spec.nodeGroups:`).
    NodePool,
    /// A Markdown table of the instance types.
    Table,
}

pub async fn run(args: Args) -> Result<()> {
    let path = match args.instance_types {
        Some(p) => p,
        None => karpenter_tools_dir().await?.join("instance_types.json"),
    };
    let offerings = read(&path, args.subset)?;
    let text = match args.print {
        Print::FakeConfig => fake_config_yaml(&offerings, args.max_size, args.allocatable),
        Print::NodePool => node_pool_yaml("karpenter-offering", &offerings, args.max_size),
        Print::Table => markdown_table(&offerings),
    };
    print!("{text}");
    Ok(())
}

/// The directory `scripts/build-karpenter` prints (it builds Karpenter first if needed: minutes when cold).
pub async fn karpenter_tools_dir() -> Result<PathBuf> {
    let script = crate::workspace_root()
        .join("scripts")
        .join("build-karpenter");
    let output = tokio::process::Command::new(&script)
        .kill_on_drop(true)
        .stderr(std::process::Stdio::inherit())
        .output()
        .await
        .with_context(|| format!("running {}", script.display()))?;
    if !output.status.success() {
        bail!("{} failed ({})", script.display(), output.status);
    }
    let dir = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    if dir.is_empty() {
        bail!("{} printed no directory", script.display());
    }
    Ok(PathBuf::from(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"[
      {"name": "c-4x-amd64-linux", "architecture": "amd64", "operatingSystems": ["linux"],
       "resources": {"cpu": "4", "memory": "8Gi", "pods": "64", "ephemeral-storage": "20Gi"},
       "offerings": [
         {"Price": 0.076, "Available": true, "Requirements": [
           {"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["spot"]},
           {"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["test-zone-a"]}]},
         {"Price": 0.10858993459200001, "Available": true, "Requirements": [
           {"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["on-demand"]},
           {"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["test-zone-a"]}]}]},
      {"name": "c-4x-arm64-windows", "architecture": "arm64", "operatingSystems": ["windows"],
       "resources": {"cpu": "4", "memory": "8Gi"},
       "offerings": [
         {"Price": 0.076, "Available": true, "Requirements": [
           {"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["spot"]},
           {"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["test-zone-b"]}]}]}
    ]"#;

    #[test]
    fn one_node_group_per_offering() {
        let offerings = parse(SAMPLE, Subset::AmdLinux).unwrap();
        assert_eq!(offerings.len(), 2);
        assert_eq!(
            offerings[1].node_group_id(),
            "c-4x-amd64-linux-zone-a-on-demand"
        );
        let yaml = fake_config_yaml(&offerings, 500, false);
        assert!(
            yaml.contains(
                "- {id: c-4x-amd64-linux-zone-a-on-demand, maxSize: 500, price: 0.108589934592, \
                 template: {instanceType: c-4x-amd64-linux, zone: test-zone-a, cpu: \"4\", memory: 8Gi, \
                 pods: \"64\", labels: {karpenter.sh/capacity-type: on-demand}}}\n"
            ),
            "{yaml}"
        );
        assert!(
            fake_config_yaml(&offerings, 500, true)
                .contains("cpu: \"3900m\", memory: 8182Mi, pods: \"64\"")
        );
        let pool = node_pool_yaml("p", &offerings, 10);
        assert!(pool.contains("  nodeGroups:\n  - c-4x-amd64-linux-zone-a-spot\n  - c-4x-amd64-linux-zone-a-on-demand\n"));
    }

    #[test]
    fn all_keeps_every_type_and_defaults_pods_like_karpenter() {
        let offerings = parse(SAMPLE, Subset::All).unwrap();
        assert_eq!(offerings.len(), 3);
        assert_eq!(offerings[2].pods, "110");
        assert_eq!(offerings[2].family, "c");
        let table = markdown_table(&offerings);
        assert!(table.contains("| `c-4x-amd64-linux` | 4 | 8Gi | 64 | 0.108590 | 0.076000 |"));
        assert!(table.contains("2 instance types"));
    }
}
