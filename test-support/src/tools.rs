use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use crate::error::{Error, Result};

/// The directory of test tools made by `scripts/build-test-tools`: `bin/<tool>` and `kwok-stages/*.yaml`.
#[derive(Debug)]
pub struct Tools {
    dir: PathBuf,
}

impl Tools {
    /// Finds the tools once per process: `$KUBE_CLOUD_TOOLS_DIR` if set, else the directory printed by
    /// `scripts/build-test-tools` (which builds them first if needed; that blocks, and takes tens of
    /// minutes on a cold cache).
    pub fn get() -> Result<&'static Tools> {
        static TOOLS: OnceLock<Result<Tools, String>> = OnceLock::new();
        TOOLS
            .get_or_init(locate)
            .as_ref()
            .map_err(|e| Error::Tools(e.clone()))
    }

    /// Like [`Tools::get`], but runs the (possibly long) lookup off the async runtime's threads.
    pub async fn get_async() -> Result<&'static Tools> {
        match tokio::task::spawn_blocking(Tools::get).await {
            Ok(r) => r,
            Err(e) => Err(Error::Tools(format!("tool lookup panicked: {e}"))),
        }
    }

    /// The tools directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The directory holding the binaries (etcd, kube-apiserver, kube-scheduler, kubectl, kwok).
    pub fn bin_dir(&self) -> PathBuf {
        self.dir.join("bin")
    }

    /// The path of one binary, e.g. `bin("kubectl")`.
    pub fn bin(&self, name: &str) -> PathBuf {
        self.bin_dir().join(name)
    }

    /// The kwok stage files, sorted by name.
    pub fn kwok_stages(&self) -> Result<Vec<PathBuf>> {
        let dir = self.dir.join("kwok-stages");
        let entries = std::fs::read_dir(&dir)
            .map_err(|e| Error::io(format!("reading {}", dir.display()), e))?;
        let mut stages: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
            .collect();
        stages.sort();
        if stages.is_empty() {
            return Err(Error::Tools(format!(
                "no kwok stage files in {}",
                dir.display()
            )));
        }
        Ok(stages)
    }
}

/// The repository root (this crate lives in `<root>/test-support`).
pub(crate) fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

fn locate() -> Result<Tools, String> {
    let dir = match std::env::var_os("KUBE_CLOUD_TOOLS_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(run_script("build-test-tools", &[]).map_err(|e| e.to_string())?),
    };
    let tools = Tools { dir };
    for name in [
        "etcd",
        "kube-apiserver",
        "kube-scheduler",
        "kubectl",
        "kwok",
    ] {
        let bin = tools.bin(name);
        if !bin.is_file() {
            return Err(format!("{} is missing", bin.display()));
        }
    }
    Ok(tools)
}

/// Runs `scripts/<name> args...` (its stderr goes to ours, so slow builds show progress) and returns the
/// last line of its stdout.
pub(crate) fn run_script(name: &str, args: &[&str]) -> Result<String> {
    let script = repo_root().join("scripts").join(name);
    let command = format!("{} {}", script.display(), args.join(" "));
    let out = Command::new(&script)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| Error::io(format!("running {command}"), e))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(Error::Command {
            command,
            detail: format!("{} (stderr above)", out.status),
        });
    }
    match stdout.lines().rev().find(|l| !l.trim().is_empty()) {
        Some(line) => Ok(line.trim().to_string()),
        None => Err(Error::Command {
            command,
            detail: "printed nothing".into(),
        }),
    }
}

/// PKI files: (file name, contents).
type PkiFiles = Vec<(String, Vec<u8>)>;

/// PKI made once per process by `scripts/local-cluster pki` and kept in memory: (file name, contents).
pub(crate) fn pki() -> Result<&'static [(String, Vec<u8>)]> {
    static PKI: OnceLock<Result<PkiFiles, String>> = OnceLock::new();
    PKI.get_or_init(|| make_pki().map_err(|e| e.to_string()))
        .as_deref()
        .map_err(|e| Error::Command {
            command: "scripts/local-cluster pki".into(),
            detail: e.clone(),
        })
}

fn make_pki() -> Result<PkiFiles> {
    let scratch = tempfile::Builder::new()
        .prefix("test-support-pki-")
        .tempdir()
        .map_err(|e| Error::io("creating a temporary directory", e))?;
    let dir = scratch.path().join("pki");
    let dir_str = dir.to_string_lossy().into_owned();
    let script = repo_root().join("scripts").join("local-cluster");
    let out = Command::new(&script)
        .args(["pki", &dir_str])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::io(format!("running {}", script.display()), e))?;
    if !out.status.success() {
        return Err(Error::Command {
            command: format!("{} pki {dir_str}", script.display()),
            detail: format!("{}: {}", out.status, String::from_utf8_lossy(&out.stderr)),
        });
    }
    let mut files = Vec::new();
    for name in [
        "ca.crt",
        "ca.key",
        "apiserver.crt",
        "apiserver.key",
        "admin.crt",
        "admin.key",
        "sa.key",
        "sa.pub",
    ] {
        let path = dir.join(name);
        let bytes = std::fs::read(&path)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        files.push((name.to_string(), bytes));
    }
    Ok(files)
}
