//! Building the programs under test: our example binaries with cargo, the Go programs with `bench/build-go`.

use std::path::PathBuf;

use anyhow::{Context, Result, anyhow, bail};

/// Builds binary `bin` of kube-cloud-examples with cargo (release) and returns its path.
pub async fn rust_binary(bin: &str) -> Result<PathBuf> {
    eprintln!("bench: cargo build --release -p kube-cloud-examples --bin {bin}");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = tokio::process::Command::new(cargo);
    cmd.kill_on_drop(true);
    // `cargo run` gave us its package's variables; build scripts (ring's) track some of them, so passing them on
    // would rebuild half the dependency graph and invalidate the next plain `cargo build`.
    for (key, _) in std::env::vars_os() {
        let key_str = key.to_string_lossy();
        if [
            "CARGO_PKG_",
            "CARGO_MANIFEST_",
            "CARGO_BIN_",
            "CARGO_CRATE_",
        ]
        .iter()
        .any(|p| key_str.starts_with(p))
            || key_str == "CARGO_PRIMARY_PACKAGE"
        {
            cmd.env_remove(&key);
        }
    }
    let output = cmd
        .current_dir(crate::workspace_root())
        .args([
            "build",
            "--release",
            "-p",
            "kube-cloud-examples",
            "--bin",
            bin,
            "--message-format=json-render-diagnostics",
        ])
        .stderr(std::process::Stdio::inherit())
        .output()
        .await
        .context("running cargo build")?;
    if !output.status.success() {
        bail!("cargo build of {bin} failed ({})", output.status);
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == bin)
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .ok_or_else(|| anyhow!("cargo did not report the {bin} executable"))
}

/// Builds (or finds cached) the Go program `bench/go/<program>` with `bench/build-go` and returns its path.
pub async fn go_binary(program: &str) -> Result<PathBuf> {
    let script = crate::workspace_root().join("bench").join("build-go");
    let output = tokio::process::Command::new(&script)
        .arg(program)
        .kill_on_drop(true)
        .stderr(std::process::Stdio::inherit())
        .output()
        .await
        .with_context(|| format!("running {}", script.display()))?;
    if !output.status.success() {
        bail!("{} {program} failed ({})", script.display(), output.status);
    }
    let path = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    if path.is_empty() {
        bail!("{} printed no path", script.display());
    }
    Ok(PathBuf::from(path))
}
