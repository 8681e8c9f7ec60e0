//! A client of cellvisord's REST API on its Unix socket: one HTTP/1.1 request, one JSON
//! answer. What the `cellvisor` verbs and the benchmarks that drive a daemon use.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot reach cellvisord at {} (is it running? start it with `cellvisord`)", .socket.display())]
    Connect {
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// The answer is not the HTTP/1.1 and JSON the daemon speaks.
    #[error("cellvisord sent {0}")]
    Malformed(&'static str),
    #[error("cellvisord sent a body that is not JSON")]
    Json(#[source] serde_json::Error),
}

/// One request to the API: (status, JSON body).
pub fn request(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<(u16, Value), Error> {
    let mut s = UnixStream::connect(socket).map_err(|source| Error::Connect {
        socket: socket.to_path_buf(),
        source,
    })?;
    let io = |what: String| move |source| Error::Io { what, source };
    // Bringing every domain of a device up or down runs them one after the other (some
    // 40 ms each): a profile of thousands takes minutes; anything else answers in seconds.
    let whole_device =
        method == "POST" && (path.starts_with("/v1/up") || path.starts_with("/v1/down"));
    let wait = Duration::from_secs(if whole_device { 3600 } else { 120 });
    s.set_read_timeout(Some(wait))
        .map_err(io("a read timeout".into()))?;
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: cellvisord\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .map_err(io(format!("sending {method} {path} to cellvisord")))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(io(format!(
        "reading cellvisord's answer to {method} {path}"
    )))?;
    parse_response(&raw)
}

/// An HTTP/1.1 response: status and JSON body (plain or chunked).
pub fn parse_response(raw: &[u8]) -> Result<(u16, Value), Error> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or(Error::Malformed("a malformed answer"))?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or(Error::Malformed("a malformed status line"))?;
    let chunked = lines.any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    if chunked {
        let mut out = Vec::new();
        let mut rest = &body[..];
        while let Some(p) = rest.windows(2).position(|w| w == b"\r\n") {
            let size = usize::from_str_radix(String::from_utf8_lossy(&rest[..p]).trim(), 16)
                .map_err(|_| Error::Malformed("a malformed chunk size"))?;
            if size == 0 || rest.len() < p + 2 + size {
                break;
            }
            out.extend_from_slice(&rest[p + 2..p + 2 + size]);
            rest = &rest[(p + 4 + size).min(rest.len())..];
        }
        body = out;
    }
    let v = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body).map_err(Error::Json)?
    };
    Ok((status, v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_parse_plain_and_chunked() {
        let (s, v) =
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n{\"a\":1}\n").unwrap();
        assert_eq!((s, v["a"].as_i64()), (200, Some(1)));
        let (s, v) = parse_response(
            b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"e\":\r\n3\r\n\"x\"\r\n1\r\n}\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!((s, v["e"].as_str()), (404, Some("x")));
        assert!(parse_response(b"garbage").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n\r\nnot json").is_err());
    }
}
