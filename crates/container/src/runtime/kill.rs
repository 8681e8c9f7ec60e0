//! `kill`: signal a container's init, or all of its processes.

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::error::{Context, Error, Result};
use crate::state::{Root, Status, Verb};

/// Parse "TERM", "SIGTERM", "15".
pub fn parse_signal(s: &str) -> Result<Signal> {
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| Error::Msg(format!("unknown signal {s:?}")));
    }
    let up = s.to_ascii_uppercase();
    let name = if up.starts_with("SIG") {
        up
    } else {
        format!("SIG{up}")
    };
    name.parse::<Signal>()
        .map_err(|_| Error::Msg(format!("unknown signal {s:?}")))
}

/// `kill`: signal the init process, or every process of the container (`all`).
pub fn kill_container(root: &Root, id: &str, sig: Signal, all: bool) -> Result<()> {
    let st = root.load(id)?;
    let status = st.status_for(root, Verb::Kill)?;
    if all {
        let cg = st.cgroup()?;
        for p in cg.pids()? {
            let _ = kill(Pid::from_raw(p), sig);
        }
        if status == Status::Paused && sig == Signal::SIGKILL {
            let _ = cg.freeze(false);
        }
        return Ok(());
    }
    kill(Pid::from_raw(st.pid), sig).ctx(|| format!("sending {sig} to pid {}", st.pid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_parse_in_every_spelling() {
        assert_eq!(parse_signal("9").unwrap(), Signal::SIGKILL);
        assert_eq!(parse_signal("TERM").unwrap(), Signal::SIGTERM);
        assert_eq!(parse_signal("sigusr1").unwrap(), Signal::SIGUSR1);
        assert!(parse_signal("NOPE").is_err());
        assert!(parse_signal("999").is_err());
    }
}
