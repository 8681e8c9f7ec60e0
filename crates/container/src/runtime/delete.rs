//! `delete`: remove a container and everything it left.

use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::error::{Error, Result};
use crate::state::{self, Root, Status, Verb};

/// `delete`: remove a stopped (or, with `force`, any) container and everything it left.
pub fn delete(root: &Root, id: &str, force: bool) -> Result<()> {
    let st = match root.load(id) {
        Ok(st) => st,
        Err(Error::NotFound(_)) if force => return Ok(()),
        Err(e) => return Err(e),
    };
    // The runtime spec: deleting a container that is not stopped is an error (runc and crun
    // quietly delete a created one; --force does that here).
    let status = if force {
        st.status(root)
    } else {
        st.status_for(root, Verb::Delete)?
    };
    let cg = st.cgroup()?;
    if status != Status::Stopped {
        let _ = kill(Pid::from_raw(st.pid), Signal::SIGKILL);
    }
    // Without a pid namespace of its own, the container's other processes outlive its init.
    if let Ok(pids) = cg.pids() {
        for p in pids {
            let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
        }
    }
    if cg.is_frozen() {
        let _ = cg.freeze(false);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while st.init_alive() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    // systemd's unit first: stopping it ends what is left in it, and systemd removes the
    // group it made; the rest of the directories (cpuset on v1, ...) go after.
    let stopped = match &st.systemd_unit {
        Some(unit) => crate::cgroups::systemd::bus::Systemd::connect().and_then(|b| b.stop(unit)),
        None => Ok(()),
    };
    cg.remove()?;
    if let Some(keep) = &st.host_mounts_before {
        crate::mounts::unmount_new_under(&st.rootfs, keep);
    }
    let r = st
        .config
        .hooks()
        .as_ref()
        .and_then(|h| h.poststop().as_ref())
        .map(|h| crate::hooks::run("poststop", h, &st.oci(Status::Stopped)));
    state::remove_dir(root, id)?;
    stopped?;
    if let Some(Err(e)) = r {
        // The container is gone either way; the caller hears about the failing hook.
        return Err(e);
    }
    Ok(())
}
