//! The port protocol a domain speaks (its `/run/cellvisor/port`, or a microVM's vsock port):
//! one JSON line, `{"op":"ls"}`, `{"op":"get","channel":NAME,"peer":DOMAIN,"wait_ms":N}` or
//! `{"op":"device","class":CLASS}`, at most [`MAX_LINE`] bytes. Parsed here, with no I/O, into what the server does, or the
//! one-line error it answers with; fuzzed by `fuzz/fuzz_targets/port_request.rs` and a
//! proptest.

use std::time::Duration;

use serde::Deserialize;

/// The longest request line a port reads.
pub const MAX_LINE: usize = 4096;

/// The longest a `get` waits for its channel to be opened.
pub const MAX_WAIT: Duration = Duration::from_secs(600);

/// A request as the domain writes it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    op: String,
    channel: Option<String>,
    peer: Option<String>,
    /// For `get`: how long to wait for the channel to be opened (at most ten minutes).
    wait_ms: Option<u64>,
    /// For `device`: which of its device classes.
    class: Option<String>,
}

/// What a domain asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortOp {
    /// The channels it is an end of.
    Ls,
    /// Its end of `channel` (with `peer`, if it has several of that name), waiting up to
    /// `wait` for it to be opened.
    Get {
        channel: String,
        peer: Option<String>,
        wait: Duration,
    },
    /// A descriptor of its device of `class`, opened by the daemon.
    Device { class: String },
}

/// Parse the bytes a domain sent up to its newline (or [`MAX_LINE`] of them, or all it sent
/// before hanging up).
pub fn parse(line: &[u8]) -> Result<PortOp, String> {
    let body = line.strip_suffix(b"\n").unwrap_or(line);
    if body.len() >= MAX_LINE {
        return Err(format!("bad request: longer than {MAX_LINE} bytes"));
    }
    let body = std::str::from_utf8(body).map_err(|e| format!("bad request: {e}"))?;
    // serde quotes the unknown key as it was written (a newline in it, too).
    let req: Request = serde_json::from_str(body.trim())
        .map_err(|e| domain::one_line(&format!("bad request: {e}")))?;
    match (req.op.as_str(), req.channel) {
        ("ls", _) => Ok(PortOp::Ls),
        ("device", _) => match req.class {
            Some(class) => Ok(PortOp::Device { class }),
            None => Err("device needs a class".into()),
        },
        ("get", Some(channel)) => Ok(PortOp::Get {
            channel,
            peer: req.peer,
            wait: Duration::from_millis(req.wait_ms.unwrap_or(0)).min(MAX_WAIT),
        }),
        ("get", None) => Err("get needs a channel".into()),
        (op, _) => Err(format!("unknown op {op:?}")),
    }
}

/// The fuzz targets' and the proptest's check: whatever the bytes, an op or one line.
pub fn fuzz(data: &[u8]) {
    match parse(data) {
        Ok(PortOp::Get { wait, .. }) => assert!(wait <= MAX_WAIT),
        Ok(PortOp::Ls | PortOp::Device { .. }) => {}
        Err(e) => assert!(!e.contains('\n'), "a refusal of more than one line: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn requests_parse_and_garbage_is_refused_in_one_line() {
        assert_eq!(parse(b"{\"op\":\"ls\"}\n"), Ok(PortOp::Ls));
        assert_eq!(
            parse(br#"{"op":"device","class":"display"}"#),
            Ok(PortOp::Device {
                class: "display".into()
            })
        );
        assert_eq!(
            parse(br#"{"op":"get","channel":"m","wait_ms":99999999999}"#),
            Ok(PortOp::Get {
                channel: "m".into(),
                peer: None,
                wait: MAX_WAIT
            })
        );
        for (bad, says) in [
            (&b"\xff\xfe"[..], "bad request: invalid utf-8"),
            (b"{\"op\":\"get\"}", "get needs a channel"),
            (b"{\"op\":\"device\"}", "device needs a class"),
            (b"{\"op\":\"rm\"}", "unknown op \"rm\""),
            (b"{\"op\":\"ls\",\"x\":1}", "bad request: unknown field `x`"),
            // Found by the fuzzer: a key with a newline escaped in it.
            (
                b"{\"op\":\"ls\",\"a\\nb\":1}",
                "bad request: unknown field `a\\nb`",
            ),
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.starts_with(says), "{e}");
        }
        assert!(parse(&vec![b' '; MAX_LINE])
            .unwrap_err()
            .contains("longer than"));
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]
        #[test]
        fn no_line_breaks_the_port(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            fuzz(&data);
        }

        #[test]
        fn nor_a_json_one(op in "(ls|get|device|x)", ch in proptest::option::of("[a-z\\x00-\\x1f\"]{0,8}"),
                          wait in proptest::option::of(any::<u64>())) {
            let mut v = serde_json::json!({"op": op});
            if let Some(c) = ch { v["channel"] = c.clone().into(); v["class"] = c.into(); }
            if let Some(w) = wait { v["wait_ms"] = w.into(); }
            fuzz(v.to_string().as_bytes());
        }
    }
}
