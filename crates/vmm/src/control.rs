//! The VMM's control socket (`--control PATH`): a Unix stream socket on which a host program
//! (`cellvisor vm balloon`, cellvisord) changes a running VM. One JSON request per line, one
//! JSON answer per line, then the VMM closes the connection:
//!
//! - `{"op":"balloon","size_mib":N}`: the balloon's new target → `{"target_mib":N}`
//! - `{"op":"balloon-stats"}`: the balloon's figures, with the guest's statistics refreshed
//!   first (waited for up to a second) → `{"guest_mib":..,"target_mib":..,"actual_mib":..,
//!   "inflated_mib":..,"reported_mib":..,"reports":..,"stats":{"free_memory":..,..},
//!   "stats_age_ms":..,"fault":null}` (`fault`: why the device failed, if the driver broke
//!   the rules)
//!
//! Anything else is answered `{"error":"one line"}`. The main thread serves it from its loop
//! (non-blocking, under its seccomp filter); the socket goes with the VMM as vsock's does.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::virtio::balloon::Figures;

/// Connections served at once: past that, a new one takes the slot of the oldest that has
/// not asked anything yet (a client that connects and says nothing holds no slot for long),
/// or waits in the listen queue while every slot waits for statistics.
const MAX_CONNS: usize = 16;
/// A request longer than this is refused.
const MAX_REQUEST: usize = 4096;
/// How long a statistics request waits for the guest's fresh figures.
const STATS_WAIT: Duration = Duration::from_secs(1);

/// A parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Balloon { size_mib: u64 },
    BalloonStats,
}

impl Request {
    /// One line of the protocol; Err is the one-line reason.
    pub fn parse(line: &str) -> Result<Request, String> {
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| format!("not a JSON request: {e}"))?;
        match v.get("op").and_then(|o| o.as_str()) {
            Some("balloon") => match v.get("size_mib").map(|s| s.as_u64()) {
                Some(Some(size_mib)) => Ok(Request::Balloon { size_mib }),
                _ => Err("balloon: size_mib is not a whole number of MiB".into()),
            },
            Some("balloon-stats") => Ok(Request::BalloonStats),
            Some(op) => Err(format!("no op {op:?} (balloon, balloon-stats)")),
            None => Err("a request has an \"op\"".into()),
        }
    }
}

/// The answer to a statistics request.
pub fn figures_json(f: &Figures) -> serde_json::Value {
    let stats: serde_json::Map<String, serde_json::Value> = f
        .stats
        .iter()
        .map(|(k, v)| (k.to_string(), (*v).into()))
        .collect();
    serde_json::json!({
        "guest_mib": f.guest_mib,
        "target_mib": f.target_mib,
        "actual_mib": f.actual_mib,
        "inflated_mib": f.inflated_pages / 256,
        "reported_mib": f.reported_bytes >> 20,
        "reports": f.reports,
        "stats": stats,
        "stats_age_ms": f.stats_at.map(|t| t.elapsed().as_millis() as u64),
        "fault": f.fault,
    })
}

pub(crate) fn error_json(e: &str) -> String {
    serde_json::json!({ "error": e }).to_string()
}

struct Conn {
    stream: UnixStream,
    since: Instant,
    buf: Vec<u8>,
    /// A statistics request waits for figures newer than this generation, until then.
    waiting: Option<(u64, Instant)>,
}

/// The listening socket and its connections.
pub(crate) struct Control {
    listener: UnixListener,
    path: PathBuf,
    /// The socket's directory, to remove it under the main thread's seccomp filter.
    dir: std::fs::File,
    conns: Vec<Option<Conn>>,
}

impl Control {
    /// Listen at `path`: a stale socket (nobody listening) is replaced, one in use refused.
    pub fn bind(path: &Path) -> crate::Result<Control> {
        let err = |e| crate::Error::Io {
            what: format!("control socket {}", path.display()),
            source: e,
        };
        if path.file_name().is_none() {
            return Err(crate::Error::Config(format!(
                "control socket {}: not a socket path",
                path.display()
            )));
        }
        if std::fs::symlink_metadata(path).is_ok() {
            if UnixStream::connect(path).is_ok() {
                return Err(crate::Error::Config(format!(
                    "control socket {}: in use by another VMM",
                    path.display()
                )));
            }
            std::fs::remove_file(path).map_err(err)?;
        }
        let parent = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let dir = std::fs::File::open(parent).map_err(err)?;
        let listener = UnixListener::bind(path).map_err(err)?;
        if let Err(e) = listener.set_nonblocking(true) {
            let _ = std::fs::remove_file(path);
            return Err(err(e));
        }
        Ok(Control {
            listener,
            path: path.to_path_buf(),
            dir,
            conns: Vec::new(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn fd(&self) -> RawFd {
        self.listener.as_raw_fd()
    }

    pub fn dir_fd(&self) -> RawFd {
        self.dir.as_raw_fd()
    }

    /// Take waiting connections; each new one's slot and descriptor, for the caller's epoll.
    pub fn accept(&mut self) -> Vec<(usize, RawFd)> {
        let mut out = Vec::new();
        loop {
            let mut free = self.conns.iter().position(Option::is_none);
            if free.is_none() && self.conns.len() >= MAX_CONNS {
                // The oldest silent one goes (closed: it leaves epoll by itself).
                free = self
                    .conns
                    .iter()
                    .enumerate()
                    .filter_map(|(i, c)| c.as_ref().map(|c| (i, c)))
                    .filter(|(_, c)| c.waiting.is_none())
                    .min_by_key(|(_, c)| c.since)
                    .map(|(i, _)| i);
                let Some(i) = free else {
                    return out;
                };
                self.conns[i] = None;
            }
            let Ok((stream, _)) = self.listener.accept() else {
                return out;
            };
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            let fd = stream.as_raw_fd();
            let c = Conn {
                stream,
                since: Instant::now(),
                buf: Vec::new(),
                waiting: None,
            };
            let slot = match free {
                Some(i) => {
                    self.conns[i] = Some(c);
                    i
                }
                None => {
                    self.conns.push(Some(c));
                    self.conns.len() - 1
                }
            };
            out.push((slot, fd));
        }
    }

    /// Connection `slot` is readable: its request, once a whole line has come. A connection
    /// that ends, fails or sends too much is closed (None).
    pub fn read(&mut self, slot: usize) -> Option<Result<Request, String>> {
        let c = self.conns.get_mut(slot)?.as_mut()?;
        let mut chunk = [0u8; 512];
        loop {
            match c.stream.read(&mut chunk) {
                Ok(0) => {
                    self.conns[slot] = None;
                    return None;
                }
                Ok(n) => c.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.conns[slot] = None;
                    return None;
                }
            }
        }
        let Some(end) = c.buf.iter().position(|&b| b == b'\n') else {
            if c.buf.len() > MAX_REQUEST {
                self.answer(slot, &error_json("a request is one line of at most 4 KiB"));
            }
            return None;
        };
        let line = String::from_utf8_lossy(&c.buf[..end]).into_owned();
        c.buf.clear();
        Some(Request::parse(&line))
    }

    /// Answer connection `slot` with `json` and close it.
    pub fn answer(&mut self, slot: usize, json: &str) {
        if let Some(mut c) = self.conns.get_mut(slot).and_then(Option::take) {
            // A small answer fits the socket's buffer; a client that does not read loses it.
            let _ = c.stream.write_all(format!("{json}\n").as_bytes());
        }
    }

    /// Whether a statistics request waits.
    pub fn any_waiting(&self) -> bool {
        self.conns.iter().flatten().any(|c| c.waiting.is_some())
    }

    /// Connection `slot` waits for statistics newer than `generation`.
    pub fn wait_stats(&mut self, slot: usize, generation: u64) {
        if let Some(Some(c)) = self.conns.get_mut(slot) {
            c.waiting = Some((generation, Instant::now() + STATS_WAIT));
        }
    }

    /// Answer the statistics requests the balloon's `figures` satisfy (newer, or waited for
    /// long enough). Returns how long until the next waiting one gives up, if any waits.
    pub fn answer_stats(&mut self, figures: Option<&Figures>) -> Option<Duration> {
        let now = Instant::now();
        let mut next: Option<Duration> = None;
        for slot in 0..self.conns.len() {
            let Some((generation, until)) = self.conns[slot].as_ref().and_then(|c| c.waiting)
            else {
                continue;
            };
            let fresh = figures.is_some_and(|f| f.stats_generation > generation);
            if fresh || now >= until || figures.is_none() {
                let json = match figures {
                    Some(f) => figures_json(f).to_string(),
                    None => error_json("this VM has no balloon"),
                };
                self.answer(slot, &json);
            } else {
                let left = until - now;
                next = Some(next.map_or(left, |n| n.min(left)));
            }
        }
        next
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        crate::reaper::unlink_in(&self.dir, &self.path);
    }
}

/// Send one request to the control socket at `path` and return its answer (a host program's
/// side). An `{"error":...}` answer is an Err with its text.
pub fn request(path: &Path, req: &serde_json::Value) -> Result<serde_json::Value, String> {
    let what = |e: std::io::Error| format!("control socket {}: {e}", path.display());
    let mut s = UnixStream::connect(path).map_err(what)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(what)?;
    s.write_all(format!("{req}\n").as_bytes()).map_err(what)?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(what)?;
    let v: serde_json::Value = serde_json::from_str(out.trim()).map_err(|e| {
        format!(
            "control socket {}: not an answer ({e}): {out:?}",
            path.display()
        )
    })?;
    match v.get("error").and_then(|e| e.as_str()) {
        Some(e) => Err(e.to_string()),
        None => Ok(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_or_say_why_not() {
        assert_eq!(
            Request::parse(r#"{"op":"balloon","size_mib":64}"#),
            Ok(Request::Balloon { size_mib: 64 })
        );
        assert_eq!(
            Request::parse(r#"{"op":"balloon-stats"}"#),
            Ok(Request::BalloonStats)
        );
        for (bad, why) in [
            ("", "not a JSON request"),
            ("{}", "has an \"op\""),
            (r#"{"op":"reboot"}"#, "no op \"reboot\""),
            (r#"{"op":"balloon","size_mib":-1}"#, "whole number"),
            (r#"{"op":"balloon"}"#, "whole number"),
        ] {
            let e = Request::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    /// Silent clients filling every slot do not lock the socket: the oldest gives way.
    #[test]
    fn silent_clients_give_way() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.sock");
        let mut c = Control::bind(&p).unwrap();
        let silent: Vec<UnixStream> = (0..MAX_CONNS + 4)
            .map(|_| UnixStream::connect(&p).unwrap())
            .collect();
        let mut slots = Vec::new();
        while slots.len() < MAX_CONNS + 4 {
            slots.extend(c.accept());
        }
        assert!(c.conns.len() <= MAX_CONNS);
        // The first four were closed for the last four.
        let mut b = [0u8; 1];
        for s in &silent[..4] {
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            assert_eq!(
                (&*s).read(&mut b).unwrap(),
                0,
                "an evicted client sees the end"
            );
        }
    }

    /// A request over the socket: answered and the connection closed; a second VMM cannot
    /// take the socket; the socket goes with its Control.
    #[test]
    fn the_socket_answers_and_goes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.sock");
        let mut c = Control::bind(&p).unwrap();
        let Err(e) = Control::bind(&p) else {
            panic!("a second VMM took the socket")
        };
        assert!(e.to_string().contains("in use by another VMM"), "{e}");
        let client = std::thread::spawn({
            let p = p.clone();
            move || request(&p, &serde_json::json!({"op": "balloon-stats"}))
        });
        // The refused second bind's probe connection comes first, and ends without a request.
        let mut slots = Vec::new();
        let (slot, req) = 'found: loop {
            slots.extend(c.accept().into_iter().map(|(s, _)| s));
            for &s in &slots {
                if let Some(r) = c.read(s) {
                    break 'found (s, r);
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        assert_eq!(req, Ok(Request::BalloonStats));
        c.wait_stats(slot, 0);
        assert_eq!(c.answer_stats(None), None);
        assert_eq!(
            client.join().unwrap().unwrap_err(),
            "this VM has no balloon"
        );
        drop(c);
        assert!(!p.exists());
    }
}
