//! A seccomp agent for the tests, as a user's would be: it listens on a unix socket, takes the
//! container process state and the notify descriptor of each connection, and answers every
//! notification with success (return value 0) without the call being made.

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

pub struct Agent {
    pub path: PathBuf,
    /// Each connection's state document, in order.
    states: Arc<Mutex<Vec<Value>>>,
    /// The syscall numbers answered.
    answered: Arc<Mutex<Vec<i32>>>,
}

impl Agent {
    pub fn start(dir: &Path) -> Agent {
        let path = dir.join("agent.sock");
        let l = UnixListener::bind(&path).unwrap();
        let states = Arc::new(Mutex::new(Vec::new()));
        let answered = Arc::new(Mutex::new(Vec::new()));
        let (s, a) = (states.clone(), answered.clone());
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(conn) = conn else { return };
                let (state, fd) = receive(conn);
                s.lock().unwrap().push(state);
                let a = a.clone();
                std::thread::spawn(move || answer(fd, &a));
            }
        });
        Agent {
            path,
            states,
            answered,
        }
    }

    /// The state documents received so far.
    pub fn states(&self) -> Vec<Value> {
        self.states.lock().unwrap().clone()
    }

    /// The syscalls answered so far.
    pub fn answered(&self) -> Vec<i32> {
        self.answered.lock().unwrap().clone()
    }

    /// Wait until `n` states have come (a connection is handled on the agent's thread).
    pub fn wait_for_states(&self, n: usize) -> Vec<Value> {
        let end = Instant::now() + Duration::from_secs(30);
        while self.states().len() < n && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.states()
    }
}

/// One connection: the descriptor with the first bytes, then the document to EOF.
fn receive(conn: UnixStream) -> (Value, OwnedFd) {
    let mut buf = vec![0u8; 1 << 16];
    let (n, fds) = container::util::recv_with_fds(conn.as_raw_fd(), &mut buf).unwrap();
    let mut doc = buf[..n].to_vec();
    (&conn).read_to_end(&mut doc).unwrap();
    (
        serde_json::from_slice(&doc).unwrap(),
        fds.into_iter()
            .next()
            .expect("no descriptor came with the state"),
    )
}

/// Answer every notification on `fd` with success until no process uses the filter.
fn answer(fd: OwnedFd, answered: &Mutex<Vec<i32>>) {
    loop {
        let mut p = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&mut p, 1, -1) } < 0 || p.revents & libc::POLLIN == 0 {
            return;
        }
        // SAFETY: the kernel wants a zeroed seccomp_notif and fills it.
        let mut req: libc::seccomp_notif = unsafe { std::mem::zeroed() };
        // SAFETY: the ioctl writes one seccomp_notif.
        if unsafe { libc::ioctl(fd.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_RECV, &mut req) } < 0 {
            continue;
        }
        let resp = libc::seccomp_notif_resp {
            id: req.id,
            val: 0,
            error: 0,
            flags: 0,
        };
        // SAFETY: the ioctl reads one seccomp_notif_resp.
        if unsafe { libc::ioctl(fd.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_SEND, &resp) } == 0 {
            answered.lock().unwrap().push(req.data.nr);
        }
    }
}
