//! The loops of the channel benchmark: one side drives (round trips, then a bulk transfer),
//! the other echoes. The same loops run over a channel, a pipe pair or a Unix socket, between
//! two processes or two domains, so the figures compare like with like.

use std::io::{Read, Write};
use std::time::Instant;

use channel::End;

/// One side of a transport, as one process holds it.
pub enum Side {
    Chan(End),
    Stream {
        rx: std::fs::File,
        tx: std::fs::File,
    },
}

fn s(e: impl std::fmt::Display) -> String {
    e.to_string()
}

impl Side {
    /// Drop this process's copy of the other process's side (after fork) without telling the
    /// peer the channel closed.
    pub fn release(self) {
        match self {
            Side::Chan(e) => e.release(),
            Side::Stream { .. } => {}
        }
    }

    pub fn send(&mut self, msg: &[u8]) -> Result<(), String> {
        match self {
            Side::Chan(e) => e.send(msg, true).map_err(s),
            Side::Stream { tx, .. } => tx.write_all(msg).map_err(s),
        }
    }

    /// Take delivery of a message: a channel hands it over in place (its one copy was the
    /// sender's into the ring), a stream must copy it out of the kernel.
    pub fn consume(&mut self, buf: &mut Vec<u8>, len: usize) -> Result<(), String> {
        match self {
            Side::Chan(e) => e.recv_with(true, |_, _| ()).map_err(s),
            Side::Stream { .. } => self.recv(buf, len),
        }
    }

    pub fn recv(&mut self, buf: &mut Vec<u8>, len: usize) -> Result<(), String> {
        match self {
            Side::Chan(e) => e.recv(buf, true).map_err(s),
            Side::Stream { rx, .. } => {
                buf.resize(len, 0);
                rx.read_exact(buf).map_err(s)
            }
        }
    }
}

/// One measurement: `iters` round trips of `msg` bytes, then `bulk` one-way messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Case {
    pub msg: usize,
    pub iters: usize,
    pub bulk: usize,
}

/// The echoing side of a case.
pub fn echo(side: &mut Side, c: Case) -> Result<(), String> {
    let mut buf = Vec::new();
    for _ in 0..c.iters {
        side.recv(&mut buf, c.msg)?;
        side.send(&buf)?;
    }
    for _ in 0..c.bulk {
        side.consume(&mut buf, c.msg)?;
    }
    side.send(&[1])
}

/// The driving side of a case: (median-free) mean round trip in µs over all but the first
/// (warm-up) trip, and bandwidth in MiB/s (0 without bulk).
pub fn drive(side: &mut Side, c: Case) -> Result<(f64, f64), String> {
    let payload = vec![0x5au8; c.msg];
    let mut buf = Vec::with_capacity(c.msg);
    side.send(&payload)?;
    side.recv(&mut buf, c.msg)?;
    let t0 = Instant::now();
    for _ in 1..c.iters {
        side.send(&payload)?;
        side.recv(&mut buf, c.msg)?;
    }
    let rtt = t0.elapsed().as_secs_f64() * 1e6 / (c.iters.max(2) - 1) as f64;
    let t1 = Instant::now();
    for _ in 0..c.bulk {
        side.send(&payload)?;
    }
    side.recv(&mut buf, 1)?;
    let secs = t1.elapsed().as_secs_f64();
    let mibs = if c.bulk > 0 {
        (c.bulk * c.msg) as f64 / (1 << 20) as f64 / secs
    } else {
        0.0
    };
    Ok((rtt, mibs))
}
