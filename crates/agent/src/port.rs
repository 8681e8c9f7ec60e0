//! The domain side of the port: one JSON request line out, one JSON answer line back (with
//! the channel end's descriptors when one is handed over). The daemon knows which domain asks
//! by the socket it came in on: each domain sees only its own port. Inside a microVM the port
//! is the host's vsock port 1024; the daemon then carries the channel over that stream.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use channel::End;

/// Where a domain finds its port.
pub const PORT: &str = "/run/cellvisor/port";

/// Escape a string for a JSON request.
fn quote(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// The value of `"key":` in a flat JSON answer (a string or a number), unescaped enough for
/// what the daemon sends.
pub fn field(json: &str, key: &str) -> Option<String> {
    let at = json.find(&format!("\"{key}\":"))? + key.len() + 3;
    let rest = json[at..].trim_start();
    if let Some(s) = rest.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = s.chars();
        while let Some(c) = chars.next() {
            match c {
                '"' => return Some(out),
                '\\' => out.push(chars.next()?),
                c => out.push(c),
            }
        }
        None
    } else {
        let end = rest.find([',', '}', ']']).unwrap_or(rest.len());
        Some(rest[..end].trim().to_string())
    }
}

/// Where a domain's port is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Port {
    /// A Unix socket: a container domain's port (ends come as descriptors), or a microVM's
    /// port socket on the host (the channel comes as a stream).
    Unix(PathBuf),
    /// Inside a microVM: the host's vsock port [`channel::stream::VSOCK_PORT`].
    Vsock,
}

impl Port {
    /// A container domain's port if there is one, the host's vsock port inside a microVM.
    pub fn here() -> Port {
        if !Path::new(PORT).exists() && Path::new("/dev/vsock").exists() {
            Port::Vsock
        } else {
            Port::Unix(PORT.into())
        }
    }

    /// `vsock`, or a socket's path.
    pub fn parse(s: &str) -> Port {
        if s == "vsock" {
            Port::Vsock
        } else {
            Port::Unix(s.into())
        }
    }

    fn name(&self) -> String {
        match self {
            Port::Unix(p) => p.display().to_string(),
            Port::Vsock => format!("vsock port {}", channel::stream::VSOCK_PORT),
        }
    }

    fn connect(&self) -> Result<File, String> {
        match self {
            Port::Unix(p) => UnixStream::connect(p)
                .map(|s| File::from(OwnedFd::from(s)))
                .map_err(|e| format!("{}: {e}", p.display())),
            Port::Vsock => crate::vsock::connect_host(channel::stream::VSOCK_PORT),
        }
    }
}

/// One exchange with the port: the answer line, any descriptors, the connection, and what
/// came on it after the answer (the first frames of a channel carried as a stream).
fn exchange(port: &Port, request: &str) -> Result<(String, Vec<OwnedFd>, File, Vec<u8>), String> {
    let here = |e: std::io::Error| format!("{}: {e}", port.name());
    let mut s = port.connect()?;
    s.write_all(format!("{request}\n").as_bytes())
        .map_err(here)?;
    let mut buf = vec![0u8; 65536];
    let (n, fds) = channel::handoff::recv(s.as_raw_fd(), &mut buf).map_err(here)?;
    let mut answer = buf[..n].to_vec();
    while !answer.contains(&b'\n') {
        let k = s.read(&mut buf).map_err(here)?;
        if k == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..k]);
    }
    let rest = match answer.iter().position(|&b| b == b'\n') {
        Some(i) => answer.split_off(i + 1),
        None => Vec::new(),
    };
    let text = String::from_utf8_lossy(&answer).trim().to_string();
    if text.is_empty() {
        return Err("the daemon closed the port without an answer".into());
    }
    if let Some(e) = field(&text, "error") {
        return Err(e);
    }
    Ok((text, fds, s, rest))
}

/// The channels this domain is an end of, as the daemon's JSON.
pub fn list(port: &Port) -> Result<String, String> {
    exchange(port, r#"{"op":"ls"}"#).map(|(t, ..)| t)
}

/// A descriptor of this domain's device of `class` (display, input, camera, ...), opened by
/// the daemon: exclusive ones only while the domain is in front. Its host node and the
/// descriptor.
pub fn device(port: &Port, class: &str) -> Result<(String, OwnedFd), String> {
    let (text, fds, ..) = exchange(
        port,
        &format!(r#"{{"op":"device","class":{}}}"#, quote(class)),
    )?;
    let node = field(&text, "node").unwrap_or_default();
    let fd = fds
        .into_iter()
        .next()
        .ok_or("the daemon sent no descriptor")?;
    Ok((node, fd))
}

/// A domain's side of a channel: the shared-memory end itself (a container domain), or a
/// stream the daemon carries it over (a microVM).
pub enum Link {
    Chan(End),
    Stream {
        rx: std::io::Chain<std::io::Cursor<Vec<u8>>, File>,
        tx: File,
        max: usize,
        frame: Vec<u8>,
    },
}

impl Link {
    /// Send one message, waiting for room.
    pub fn send(&mut self, msg: &[u8]) -> Result<(), String> {
        match self {
            Link::Chan(e) => e.send(msg, true).map_err(|e| e.to_string()),
            Link::Stream { tx, max, frame, .. } => {
                if msg.len() > *max {
                    return Err(channel::Error::TooBig {
                        len: msg.len(),
                        cap: *max + 4,
                    }
                    .to_string());
                }
                channel::stream::write_frame(tx, frame, [msg, &[]]).map_err(|e| match e.kind() {
                    std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset => {
                        channel::Error::Closed.to_string()
                    }
                    _ => e.to_string(),
                })
            }
        }
    }

    /// Receive one message into `buf`, waiting for it; false once the channel is closed.
    pub fn recv(&mut self, buf: &mut Vec<u8>) -> Result<bool, String> {
        match self {
            Link::Chan(e) => match e.recv(buf, true) {
                Ok(()) => Ok(true),
                Err(channel::Error::Closed) => Ok(false),
                Err(err) => Err(err.to_string()),
            },
            Link::Stream { rx, max, .. } => {
                channel::stream::read_frame(rx, buf, *max).map_err(|e| e.to_string())
            }
        }
    }

    /// Let go of the link leaving the channel open (only the daemon closes channels).
    pub fn keep(self) {
        match self {
            Link::Chan(e) => e.release(),
            Link::Stream { .. } => {}
        }
    }
}

/// This domain's side of channel `name` (to `peer`), waiting up to `wait` for it to be opened.
/// Returns the link and the daemon's description of it.
pub fn get(
    port: &Port,
    name: &str,
    peer: Option<&str>,
    wait: Duration,
) -> Result<(Link, String), String> {
    let req = format!(
        r#"{{"op":"get","channel":{}{},"wait_ms":{}}}"#,
        quote(name),
        peer.map(|p| format!(r#","peer":{}"#, quote(p)))
            .unwrap_or_default(),
        wait.as_millis()
    );
    // The daemon holds the answer until the channel is open (or the wait is over).
    let (text, fds, conn, rest) = exchange(port, &req)?;
    if field(&text, "stream").as_deref() == Some("true") {
        let buffer: usize = field(&text, "buffer")
            .and_then(|s| s.parse().ok())
            .ok_or("the daemon's answer has no buffer")?;
        let tx = conn.try_clone().map_err(|e| e.to_string())?;
        return Ok((
            Link::Stream {
                rx: std::io::Cursor::new(rest).chain(conn),
                tx,
                max: buffer.saturating_sub(4),
                frame: Vec::new(),
            },
            text,
        ));
    }
    let side: usize = field(&text, "side")
        .and_then(|s| s.parse().ok())
        .ok_or("the daemon's answer has no side")?;
    let [m, d0, d1, s0, s1]: [OwnedFd; 5] = fds
        .try_into()
        .map_err(|_| "the daemon sent the wrong descriptors".to_string())?;
    let end = End::from_fds(side, m, [d0, d1], [s0, s1]).map_err(|e| e.to_string())?;
    Ok((Link::Chan(end), text))
}
