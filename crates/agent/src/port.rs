//! The domain side of the port: one JSON request line out, one JSON answer line back (with
//! the channel end's descriptors when one is handed over). The daemon knows which domain asks
//! by the socket it came in on: each domain sees only its own port.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
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

/// One exchange with the port: the answer line and any descriptors.
pub fn ask(port: &Path, request: &str) -> Result<(String, Vec<OwnedFd>), String> {
    let mut s = UnixStream::connect(port).map_err(|e| format!("{}: {e}", port.display()))?;
    s.write_all(format!("{request}\n").as_bytes())
        .map_err(|e| format!("{}: {e}", port.display()))?;
    let mut buf = vec![0u8; 65536];
    let (n, fds) = channel::handoff::recv(s.as_raw_fd(), &mut buf)
        .map_err(|e| format!("{}: {e}", port.display()))?;
    let mut answer = buf[..n].to_vec();
    while !answer.ends_with(b"\n") {
        let k = s.read(&mut buf).map_err(|e| e.to_string())?;
        if k == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..k]);
    }
    let text = String::from_utf8_lossy(&answer).trim().to_string();
    if text.is_empty() {
        return Err("the daemon closed the port without an answer".into());
    }
    if let Some(e) = field(&text, "error") {
        return Err(e);
    }
    Ok((text, fds))
}

/// The channels this domain is an end of, as the daemon's JSON.
pub fn list(port: &Path) -> Result<String, String> {
    ask(port, r#"{"op":"ls"}"#).map(|(t, _)| t)
}

/// This domain's side of channel `name` (to `peer`), waiting up to `wait` for it to be opened.
/// Returns the end and the daemon's description of it.
pub fn get(
    port: &Path,
    name: &str,
    peer: Option<&str>,
    wait: Duration,
) -> Result<(End, String), String> {
    let req = format!(
        r#"{{"op":"get","channel":{}{},"wait_ms":{}}}"#,
        quote(name),
        peer.map(|p| format!(r#","peer":{}"#, quote(p)))
            .unwrap_or_default(),
        wait.as_millis()
    );
    // The daemon holds the answer until the channel is open (or the wait is over).
    let (text, fds) = ask(port, &req)?;
    let side: usize = field(&text, "side")
        .and_then(|s| s.parse().ok())
        .ok_or("the daemon's answer has no side")?;
    let [m, d0, d1, s0, s1]: [OwnedFd; 5] = fds
        .try_into()
        .map_err(|_| "the daemon sent the wrong descriptors".to_string())?;
    let end = End::from_fds(side, m, [d0, d1], [s0, s1]).map_err(|e| e.to_string())?;
    Ok((end, text))
}
