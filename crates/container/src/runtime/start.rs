//! `start`: let the init process exec the user's program.

use std::fs;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::error::{Context, Error, Result};
use crate::state::{Root, Status, Verb};

/// `start`: let the init process exec the user's program; returns once it has.
pub fn start(root: &Root, id: &str) -> Result<()> {
    let st = root.load(id)?;
    st.status_for(root, Verb::Start)?;
    let fifo = st.fifo(root);
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags_nonblock()
        .open(&fifo)
        .ctx(|| "opening the exec fifo")?;
    let fd: OwnedFd = f.into();
    // Wait for the init to open its side and write its "0". Until it has, the fifo has no
    // writer and a read would see end-of-file, so poll (a fifo never written to does not
    // report a hang-up) and watch that the init is still alive.
    let mut f = fs::File::from(fd);
    loop {
        let mut pfd = [nix::poll::PollFd::new(
            f.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        match nix::poll::poll(&mut pfd, nix::poll::PollTimeout::from(50u16)) {
            Ok(n) if n > 0 => break,
            Ok(_) | Err(nix::Error::EINTR) => {}
            Err(e) => return Err(e).ctx(|| "polling the exec fifo"),
        }
        if !st.init_alive() {
            let _ = fs::remove_file(&fifo);
            return Err(Error::Msg(format!(
                "container {id:?}: its process exited before it was started"
            )));
        }
    }
    nix::fcntl::fcntl(
        f.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::empty()),
    )
    .ctx(|| "setting the exec fifo blocking")?;
    let mut first = [0u8; 1];
    let n = f.read(&mut first).ctx(|| "reading the exec fifo")?;
    if n == 0 {
        let _ = fs::remove_file(&fifo);
        return Err(Error::Msg(format!(
            "container {id:?}: its process exited before it was started"
        )));
    }
    let mut rest = String::new();
    let _ = f.read_to_string(&mut rest);
    let _ = fs::remove_file(&fifo);
    crate::timing::mark("start-exec");
    if !rest.is_empty() {
        return Err(Error::Msg(format!("starting container {id:?}: {rest}")));
    }
    if let Some(h) = st
        .config
        .hooks()
        .as_ref()
        .and_then(|h| h.poststart().as_ref())
    {
        if let Err(e) = crate::hooks::run("poststart", h, &st.oci(Status::Running)) {
            let _ = kill(Pid::from_raw(st.pid), Signal::SIGKILL);
            return Err(e);
        }
    }
    Ok(())
}

trait NonBlock {
    fn custom_flags_nonblock(&mut self) -> &mut Self;
}
impl NonBlock for fs::OpenOptions {
    fn custom_flags_nonblock(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
    }
}
