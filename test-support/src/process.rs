//! Child processes that cannot outlive their owner: own process group, SIGTERM→SIGKILL on drop, and
//! `PR_SET_PDEATHSIG` so they die with the test process even when it is killed.
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// How long children get between SIGTERM and SIGKILL. Short: test data is throwaway, and a graceful
/// apiserver/etcd shutdown takes 2-3 s that every test would pay.
const GRACE: Duration = Duration::from_secs(1);

/// A running child whose stdout and stderr go to a log file.
#[derive(Debug)]
pub(crate) struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
    /// Set once the child was reaped; its pid must not be signalled afterwards (it may be reused).
    reaped: bool,
}

impl Proc {
    /// Starts `cmd` with its output in `log`, in its own process group, killed if this process dies.
    pub(crate) fn spawn(name: &str, mut cmd: Command, log: &Path) -> Result<Proc> {
        let file =
            File::create(log).map_err(|e| Error::io(format!("creating {}", log.display()), e))?;
        let file2 = file
            .try_clone()
            .map_err(|e| Error::io(format!("duplicating {}", log.display()), e))?;
        cmd.stdin(Stdio::null())
            .stdout(file)
            .stderr(file2)
            .process_group(0);
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: the closure runs between fork and exec and only makes async-signal-safe calls
        // (prctl, getppid) without allocating.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The parent may have died before prctl took effect.
                if libc::getppid() != parent {
                    return Err(std::io::Error::other("parent exited"));
                }
                Ok(())
            });
        }
        let child =
            spawn_on_keeper_thread(cmd).map_err(|e| Error::io(format!("starting {name}"), e))?;
        Ok(Proc {
            name: name.to_string(),
            child,
            log: log.to_path_buf(),
            reaped: false,
        })
    }

    /// The log file of this process.
    pub(crate) fn log(&self) -> &Path {
        &self.log
    }

    /// `Some(status)` once the process has exited.
    pub(crate) fn exit_status(&mut self) -> Option<String> {
        if self.reaped {
            return Some("exited".into());
        }
        match self.child.try_wait() {
            Ok(Some(status)) => {
                self.reaped = true;
                Some(status.to_string())
            }
            Ok(None) => None,
            Err(e) => Some(format!("unknown ({e})")),
        }
    }

    /// An error saying this process exited, with the end of its log.
    pub(crate) fn exited_error(&self, status: String) -> Error {
        Error::Exited {
            component: self.name.clone(),
            status,
            log: self.log.clone(),
            log_tail: tail(&self.log),
        }
    }

    fn signal_group(&mut self, signal: libc::c_int) {
        if self.exit_status().is_none() {
            // SAFETY: plain syscall; the group id is our unreaped child's pid, so it cannot have been reused.
            unsafe {
                libc::kill(-(self.child.id() as libc::pid_t), signal);
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        stop_all(std::slice::from_mut(self));
    }
}

/// SIGTERM to all (their whole process groups), wait up to [`GRACE`], then SIGKILL and reap.
pub(crate) fn stop_all(procs: &mut [Proc]) {
    for p in procs.iter_mut() {
        p.signal_group(libc::SIGTERM);
    }
    let deadline = Instant::now() + GRACE;
    while Instant::now() < deadline && procs.iter_mut().any(|p| p.exit_status().is_none()) {
        std::thread::sleep(Duration::from_millis(20));
    }
    for p in procs.iter_mut() {
        if p.exit_status().is_none() {
            p.signal_group(libc::SIGKILL);
            let _ = p.child.wait();
            p.reaped = true;
        }
    }
}

/// The last lines of a log file.
pub(crate) fn tail(path: &Path) -> String {
    const LINES: usize = 25;
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(LINES)..].join("\n")
        }
        Err(e) => format!("(cannot read log: {e})"),
    }
}

type SpawnJob = (Command, mpsc::Sender<std::io::Result<Child>>);

/// `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits, not the process. Test threads
/// and async runtime workers come and go, so all children are forked by one thread that lives as long as
/// the process.
fn spawn_on_keeper_thread(cmd: Command) -> std::io::Result<Child> {
    static KEEPER: OnceLock<Result<mpsc::Sender<SpawnJob>, String>> = OnceLock::new();
    let keeper = KEEPER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnJob>();
        std::thread::Builder::new()
            .name("test-support-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .map(|_| tx)
            .map_err(|e| e.to_string())
    });
    let keeper = keeper
        .as_ref()
        .map_err(|e| std::io::Error::other(e.clone()))?;
    let (reply_tx, reply_rx) = mpsc::channel();
    keeper
        .send((cmd, reply_tx))
        .map_err(|_| std::io::Error::other("spawner thread is gone"))?;
    reply_rx
        .recv()
        .map_err(|_| std::io::Error::other("spawner thread is gone"))?
}

/// File in each of our temporary directories naming the process that owns it.
const OWNER_FILE: &str = "owner.pid";

/// A fresh temporary directory tagged with our pid. The first call per process also removes directories
/// (with the same prefix) left behind by test processes that were killed before they could clean up.
pub(crate) fn owned_temp_dir(prefix: &str) -> Result<tempfile::TempDir> {
    static SWEPT: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    {
        let mut swept = SWEPT.lock().unwrap_or_else(|e| e.into_inner());
        if !swept.iter().any(|p| p == prefix) {
            swept.push(prefix.to_string());
            sweep_orphans(prefix);
        }
    }
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .map_err(|e| Error::io("creating a temporary directory", e))?;
    let owner = dir.path().join(OWNER_FILE);
    std::fs::write(&owner, std::process::id().to_string())
        .map_err(|e| Error::io(format!("writing {}", owner.display()), e))?;
    Ok(dir)
}

/// Keeps a directory for a post-mortem: it is no longer swept as an orphan.
pub(crate) fn keep_dir(dir: tempfile::TempDir) -> PathBuf {
    let _ = std::fs::remove_file(dir.path().join(OWNER_FILE));
    dir.keep()
}

fn sweep_orphans(prefix: &str) {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(prefix) {
            continue;
        }
        let owner = std::fs::read_to_string(entry.path().join(OWNER_FILE));
        let Some(pid) = owner.ok().and_then(|s| s.trim().parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}
