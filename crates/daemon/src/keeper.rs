//! The keeper: a small process that holds every open channel's descriptors for the daemon, so
//! that a daemon killed (or stopped) while domains run loses none of them. The next daemon
//! asks the keeper for them back and hands out ends as if it had never gone (no channel is left
//! "adopted" for ever). A file descriptor store in the manner of systemd's FDSTORE, without
//! systemd.
//!
//! The keeper is `cellvisord --keeper DIR`, started on the first channel; it listens on
//! `DIR/keeper.sock` (SOCK_SEQPACKET, the state directory's owner only) and serves one daemon
//! at a time, in order: a daemon's messages are all read before the next daemon's, so what a
//! killed daemon sent is held before its successor asks. Messages: `put ID` with the five
//! descriptors, `forget ID`, `list` (answered by `chan ID` + descriptors for each, then `end`),
//! `exit`. The daemon tells it to exit when it stops with nothing up.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use channel::handoff;
use nix::sys::socket::{
    accept4, bind, getsockopt, listen, setsockopt, sockopt, AddressFamily, Backlog, SockFlag,
    SockType, UnixAddr,
};
use nix::sys::time::{TimeVal, TimeValLike};

/// The keeper's socket in a state directory.
pub fn socket(dir: &Path) -> PathBuf {
    dir.join("keeper.sock")
}

/// Where the daemon keeps its channels' descriptors beyond its own life.
pub trait EndStore: Send {
    /// Hold channel `id`'s five descriptors (as `End::fds` lists them).
    fn put(&mut self, id: u64, fds: [RawFd; 5]) -> io::Result<()>;
    /// Let channel `id` go.
    fn forget(&mut self, id: u64) -> io::Result<()>;
    /// Copies of every channel held, by id.
    fn list(&mut self) -> io::Result<Vec<(u64, [OwnedFd; 5])>>;
}

fn seqpacket() -> io::Result<OwnedFd> {
    Ok(nix::sys::socket::socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?)
}

fn connect(path: &Path) -> io::Result<OwnedFd> {
    let s = seqpacket()?;
    nix::sys::socket::connect(s.as_raw_fd(), &UnixAddr::new(path)?)?;
    // A keeper that hangs must not hang the daemon: its answers come within 10 s or not at all.
    setsockopt(&s, sockopt::ReceiveTimeout, &TimeVal::seconds(10))?;
    Ok(s)
}

/// A socket listening on `path`.
fn listening(path: &Path) -> io::Result<OwnedFd> {
    let l = seqpacket()?;
    bind(l.as_raw_fd(), &UnixAddr::new(path)?)?;
    listen(&l, Backlog::new(8)?)?;
    Ok(l)
}

fn send(s: &OwnedFd, msg: &str, fds: &[RawFd]) -> io::Result<()> {
    handoff::send(s.as_raw_fd(), msg.as_bytes(), fds)
}

fn recv(s: &OwnedFd) -> io::Result<(String, Vec<OwnedFd>)> {
    let mut buf = [0u8; 64];
    let (n, fds) = handoff::recv(s.as_raw_fd(), &mut buf)?;
    Ok((String::from_utf8_lossy(&buf[..n]).into_owned(), fds))
}

fn five(fds: Vec<OwnedFd>) -> Option<[OwnedFd; 5]> {
    fds.try_into().ok()
}

/// The daemon's side: a connection to the keeper of its state directory, made (and the keeper
/// started) when first needed.
pub struct Keeper {
    dir: PathBuf,
    /// `cellvisord`, run as `--keeper DIR`.
    exe: PathBuf,
    conn: Option<OwnedFd>,
}

impl Keeper {
    pub fn new(dir: &Path, exe: &Path) -> Keeper {
        Keeper {
            dir: dir.to_path_buf(),
            exe: exe.to_path_buf(),
            conn: None,
        }
    }

    /// The running keeper, if there is one; a socket nobody answers is removed.
    fn reach(&mut self) -> io::Result<Option<&OwnedFd>> {
        if self.conn.is_none() {
            let path = socket(&self.dir);
            match connect(&path) {
                Ok(s) => self.conn = Some(s),
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ECONNREFUSED)) => {
                    let _ = std::fs::remove_file(&path);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(self.conn.as_ref())
    }

    /// The running keeper, started if there is none.
    fn reach_or_start(&mut self) -> io::Result<&OwnedFd> {
        if self.reach()?.is_none() {
            self.start()?;
        }
        Ok(self.conn.as_ref().expect("connected"))
    }

    /// Bind the keeper's socket here (so it is listening before anyone connects), start
    /// `cellvisord --keeper DIR` with it as descriptor 3, and connect.
    fn start(&mut self) -> io::Result<()> {
        use std::os::unix::process::CommandExt;
        let path = socket(&self.dir);
        let _ = std::fs::remove_file(&path);
        let l = listening(&path)?;
        let fd = l.as_raw_fd();
        let mut c = std::process::Command::new(&self.exe);
        // From /: a keeper that outlives its daemon pins no directory it was started in.
        c.arg("--keeper")
            .arg(&self.dir)
            .current_dir("/")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        // SAFETY: dup2 and setsid are async-signal-safe; dup2 onto 3 clears its CLOEXEC.
        unsafe {
            c.pre_exec(move || {
                if libc::dup2(fd, 3) < 0 || libc::setsid() < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        // The keeper forks and its first process exits at once: nobody's child, never reaped.
        let st = c.status().inspect_err(|_| {
            let _ = std::fs::remove_file(&path);
        })?;
        if !st.success() {
            let _ = std::fs::remove_file(&path);
            return Err(io::Error::other(format!("the keeper did not start ({st})")));
        }
        self.conn = Some(connect(&path)?);
        Ok(())
    }

    /// Send on the connection; a keeper that went away (killed) is started again, once.
    fn say(&mut self, msg: &str, fds: &[RawFd]) -> io::Result<()> {
        let r = send(self.reach_or_start()?, msg, fds);
        match r {
            Err(e) if matches!(e.raw_os_error(), Some(libc::EPIPE | libc::ECONNRESET)) => {
                self.conn = None;
                send(self.reach_or_start()?, msg, fds)
            }
            r => r,
        }
    }
}

impl EndStore for Keeper {
    fn put(&mut self, id: u64, fds: [RawFd; 5]) -> io::Result<()> {
        self.say(&format!("put {id}"), &fds)
    }

    fn forget(&mut self, id: u64) -> io::Result<()> {
        match self.reach()? {
            // No keeper: it holds nothing.
            None => Ok(()),
            Some(s) => send(s, &format!("forget {id}"), &[]),
        }
    }

    fn list(&mut self) -> io::Result<Vec<(u64, [OwnedFd; 5])>> {
        let Some(s) = self.reach()? else {
            return Ok(Vec::new());
        };
        send(s, "list", &[])?;
        let mut out = Vec::new();
        loop {
            let (msg, fds) = recv(s)?;
            if msg == "end" {
                return Ok(out);
            }
            let id = msg.strip_prefix("chan ").and_then(|i| i.parse().ok());
            match (id, five(fds)) {
                (Some(id), Some(fds)) => out.push((id, fds)),
                _ => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("the keeper said {msg:?}"),
                    ))
                }
            }
        }
    }
}

/// Tell the keeper of `dir`, if one runs, to exit (the daemon stops with nothing up).
pub fn stop(dir: &Path) {
    if let Ok(s) = connect(&socket(dir)) {
        let _ = send(&s, "exit", &[]);
        // It closes the connection as it exits.
        let _ = recv(&s);
    }
    let _ = std::fs::remove_file(socket(dir));
}

/// `cellvisord --keeper DIR`: detach, then hold descriptors on the listening socket at
/// descriptor 3 until told to exit.
pub fn run(dir: &Path) -> ! {
    // SAFETY: descriptor 3 is the listening socket the daemon handed over; nothing else
    // in this fresh process owns it.
    let listener = unsafe { OwnedFd::from_raw_fd(3) };
    // SAFETY: fork in a single-threaded process; the parent only leaves.
    match unsafe { libc::fork() } {
        0 => {}
        p if p > 0 => std::process::exit(0),
        _ => std::process::exit(1),
    }
    // SAFETY: F_SETFD on our own descriptor.
    unsafe { libc::fcntl(listener.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
    serve(&listener, &socket(dir));
    std::process::exit(0)
}

/// Answer daemons, one after the other, until one says `exit` (then `path` is removed).
pub fn serve(listener: &OwnedFd, path: &Path) {
    let mut held: BTreeMap<u64, [OwnedFd; 5]> = BTreeMap::new();
    let me = nix::unistd::getuid().as_raw();
    loop {
        let fd = match accept4(listener.as_raw_fd(), SockFlag::SOCK_CLOEXEC) {
            Ok(fd) => fd,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return,
        };
        // SAFETY: a new descriptor from accept4, owned here only.
        let conn = unsafe { OwnedFd::from_raw_fd(fd) };
        let peer = getsockopt(&conn, sockopt::PeerCredentials).map(|c| c.uid());
        if peer != Ok(me) {
            continue;
        }
        if answer(&conn, &mut held) {
            let _ = std::fs::remove_file(path);
            return;
        }
    }
}

/// One daemon's messages until it goes; true if it said `exit`.
fn answer(conn: &OwnedFd, held: &mut BTreeMap<u64, [OwnedFd; 5]>) -> bool {
    loop {
        let Ok((msg, fds)) = recv(conn) else {
            return false;
        };
        let (verb, arg) = msg.split_once(' ').unwrap_or((&msg, ""));
        match (verb, arg.parse::<u64>()) {
            ("put", Ok(id)) => {
                if let Some(fds) = five(fds) {
                    held.insert(id, fds);
                }
            }
            ("forget", Ok(id)) => {
                held.remove(&id);
            }
            ("list", _) => {
                for (id, fds) in held.iter() {
                    let raw = fds.each_ref().map(|f| f.as_raw_fd());
                    if send(conn, &format!("chan {id}"), &raw).is_err() {
                        return false;
                    }
                }
                if send(conn, "end", &[]).is_err() {
                    return false;
                }
            }
            ("exit", _) => return true,
            // The end of the connection (a daemon gone), or something no daemon says.
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A keeper on a thread of this process, served as the process would be.
    fn keeper(dir: &Path) -> std::thread::JoinHandle<()> {
        let path = socket(dir);
        let l = listening(&path).unwrap();
        std::thread::spawn(move || serve(&l, &path))
    }

    #[test]
    fn a_channel_outlives_the_daemon_that_opened_it() {
        let dir = tempfile::tempdir().unwrap();
        let t = keeper(dir.path());
        let (a, b) = channel::Channel::new(4096).unwrap();
        {
            // The first daemon keeps two channels, lets one go, and dies.
            let mut k = Keeper::new(dir.path(), Path::new("/nonexistent"));
            assert!(k.list().unwrap().is_empty());
            k.put(7, a.fds()).unwrap();
            k.put(8, a.fds()).unwrap();
            k.forget(8).unwrap();
            a.release();
        }
        // The next one gets channel 7 back, and it is the same channel.
        let mut k = Keeper::new(dir.path(), Path::new("/nonexistent"));
        let mut l = k.list().unwrap();
        assert_eq!(l.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [7]);
        let [m, d0, d1, s0, s1] = l.pop().unwrap().1;
        let back = channel::End::from_fds(0, m, [d0, d1], [s0, s1]).unwrap();
        back.send(b"still here", false).unwrap();
        let mut got = Vec::new();
        b.recv(&mut got, false).unwrap();
        assert_eq!(got, b"still here");
        // Garbage is not a message: the connection is dropped, the keeper goes on.
        drop(k);
        let s = connect(&socket(dir.path())).unwrap();
        send(&s, "put x", &[]).unwrap();
        assert_eq!(recv(&s).unwrap().0, "");
        stop(dir.path());
        t.join().unwrap();
        assert!(!socket(dir.path()).exists());
    }
}
