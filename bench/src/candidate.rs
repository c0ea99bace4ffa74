//! Candidate processes: spawned with their stdout piped to us, each line timestamped on receipt with our own clocks.

use std::ffi::OsString;
use std::path::Path;
use std::process::Stdio;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};
use tokio::sync::mpsc::UnboundedSender;

/// What a candidate said (or that it went away).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Said {
    /// `LEADING epoch=<n>`.
    Leading { epoch: i64 },
    /// `FOLLOWING leader=<id|->`; `None` for `-`.
    Following { leader: Option<String> },
    /// `LOST`.
    Lost,
    /// `RELEASED`.
    Released,
    /// Any other line.
    Other(String),
    /// Its stdout closed: the process exited (or is exiting).
    Exited,
}

/// One line of one candidate, timestamped when we read it.
#[derive(Debug, Clone)]
pub struct Event {
    /// Our monotonic clock at receipt.
    pub at: Instant,
    /// Our wall clock at receipt, unix microseconds (to compare with the audit log).
    pub wall_us: i64,
    /// The candidate's identity (as we named it, not as it printed it).
    pub id: String,
    /// What it said.
    pub said: Said,
    /// The raw line, for diagnostics.
    pub raw: String,
}

impl Event {
    pub fn is_leading(&self) -> bool {
        matches!(self.said, Said::Leading { .. })
    }
}

/// Wall-clock now in unix microseconds.
pub fn wall_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Parses `<unix-micros> <identity> <what>`.
pub fn parse_line(line: &str) -> Said {
    let mut parts = line.splitn(3, ' ');
    let (Some(_micros), Some(_id), Some(what)) = (parts.next(), parts.next(), parts.next()) else {
        return Said::Other(line.to_owned());
    };
    let what = what.trim();
    if let Some(epoch) = what.strip_prefix("LEADING epoch=") {
        return Said::Leading {
            epoch: epoch.parse().unwrap_or(-1),
        };
    }
    if let Some(leader) = what.strip_prefix("FOLLOWING leader=") {
        let leader = (leader != "-" && !leader.is_empty()).then(|| leader.to_owned());
        return Said::Following { leader };
    }
    match what {
        "LOST" => Said::Lost,
        "RELEASED" => Said::Released,
        _ => Said::Other(what.to_owned()),
    }
}

/// Starts a candidate: stdout is read line by line into `events`, stderr goes to `log`. The child is killed when
/// the returned handle is dropped, and by the kernel if this process dies.
pub fn spawn(
    id: &str,
    program: &Path,
    args: &[OsString],
    log: &Path,
    events: UnboundedSender<Event>,
) -> Result<Child> {
    let stderr =
        std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .kill_on_drop(true);
    die_with_parent(&mut cmd);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {} as {id}", program.display()))?;
    let Some(stdout) = child.stdout.take() else {
        bail!("{id}: no stdout pipe");
    };
    tokio::spawn(read_lines(id.to_owned(), stdout, events));
    Ok(child)
}

/// Makes the kernel kill the child (SIGKILL) when this process dies, even by SIGKILL.
pub fn die_with_parent(cmd: &mut Command) {
    let parent = std::process::id();
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe calls (prctl, getppid)
    // without allocating.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // We may have died before prctl took effect.
            if u32::try_from(libc::getppid()).ok() != Some(parent) {
                return Err(std::io::Error::other("parent exited"));
            }
            Ok(())
        });
    }
}

async fn read_lines(id: String, stdout: ChildStdout, events: UnboundedSender<Event>) {
    let mut lines = BufReader::new(stdout).lines();
    loop {
        let (said, raw) = match lines.next_line().await {
            Ok(Some(line)) => (parse_line(&line), line),
            Ok(None) | Err(_) => (Said::Exited, String::from("<exited>")),
        };
        let exited = said == Said::Exited;
        let event = Event {
            at: Instant::now(),
            wall_us: wall_us(),
            id: id.clone(),
            said,
            raw,
        };
        if events.send(event).is_err() || exited {
            return;
        }
    }
}

/// Sends `signal` to a child we have not reaped yet (so its pid cannot have been reused).
pub fn signal(child: &Child, signal: libc::c_int) -> Result<()> {
    let Some(pid) = child.id() else {
        bail!("the process has already been reaped");
    };
    let pid = libc::pid_t::try_from(pid).context("pid out of range")?;
    // SAFETY: kill(2) has no memory-safety preconditions; the pid is our unreaped child.
    if unsafe { libc::kill(pid, signal) } != 0 {
        return Err(std::io::Error::last_os_error()).context("kill(2)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lines() {
        assert_eq!(
            parse_line("1700000000000000 rs-1 LEADING epoch=3"),
            Said::Leading { epoch: 3 }
        );
        assert_eq!(
            parse_line("1 go-2 FOLLOWING leader=go-1"),
            Said::Following {
                leader: Some("go-1".into())
            }
        );
        assert_eq!(
            parse_line("1 go-2 FOLLOWING leader=-"),
            Said::Following { leader: None }
        );
        assert_eq!(parse_line("1 a RELEASED"), Said::Released);
        assert_eq!(parse_line("1 a LOST"), Said::Lost);
        assert_eq!(parse_line("1 a EXIT lost"), Said::Other("EXIT lost".into()));
        assert_eq!(parse_line("garbage"), Said::Other("garbage".into()));
    }
}
