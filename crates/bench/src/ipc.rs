//! Channel round-trip latency and bandwidth, side by side with a pipe pair and a Unix socket
//! pair between the same two processes, pinned to one CPU and to two.

use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::time::Instant;

use channel::{Channel, End};
use serde::Serialize;

use crate::stats::median;
use crate::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Channel,
    Pipe,
    Unix,
}

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub transport: Transport,
    /// "same-cpu" or "two-cpus".
    pub placement: &'static str,
    pub message_bytes: usize,
    /// Median round trip, µs.
    pub rtt_us: f64,
    /// Median one-way bandwidth, MiB/s (for the largest message size only).
    pub bandwidth_mib_s: Option<f64>,
}

/// Both sides of one transport, as seen by one process.
enum Side {
    Chan(End),
    Stream {
        rx: std::fs::File,
        tx: std::fs::File,
    },
}

impl Side {
    /// Drop this process's copy of the other process's side (after fork).
    fn release(self) {
        match self {
            Side::Chan(e) => e.release(),
            Side::Stream { .. } => {}
        }
    }

    fn send(&mut self, msg: &[u8]) -> Result<()> {
        match self {
            Side::Chan(e) => e.send(msg, true).map_err(|e| Error::Msg(e.to_string())),
            Side::Stream { tx, .. } => tx.write_all(msg).map_err(|e| Error::Msg(e.to_string())),
        }
    }
    /// Take delivery of a message: a channel hands it over in place (its one copy was the
    /// sender's into the ring), a stream must copy it out of the kernel.
    fn consume(&mut self, buf: &mut Vec<u8>, len: usize) -> Result<()> {
        match self {
            Side::Chan(e) => e
                .recv_with(true, |_, _| ())
                .map_err(|e| Error::Msg(e.to_string())),
            Side::Stream { .. } => self.recv(buf, len),
        }
    }

    fn recv(&mut self, buf: &mut Vec<u8>, len: usize) -> Result<()> {
        match self {
            Side::Chan(e) => e.recv(buf, true).map_err(|e| Error::Msg(e.to_string())),
            Side::Stream { rx, .. } => {
                buf.resize(len, 0);
                rx.read_exact(buf).map_err(|e| Error::Msg(e.to_string()))
            }
        }
    }
}

fn pair(t: Transport, msg: usize) -> Result<(Side, Side)> {
    let fds = |r: i32| -> Result<()> {
        if r < 0 {
            Err(Error::Msg(std::io::Error::last_os_error().to_string()))
        } else {
            Ok(())
        }
    };
    // SAFETY (for the from_raw_fd calls below): each descriptor was just created by the
    // syscall and is owned by exactly one File.
    match t {
        Transport::Channel => {
            let buffer = ((msg + 64) * 2).next_power_of_two().max(65536) as u64;
            let (a, b) = Channel::new(buffer).map_err(|e| Error::Msg(e.to_string()))?;
            Ok((Side::Chan(a), Side::Chan(b)))
        }
        Transport::Pipe => {
            let (mut p, mut q) = ([0i32; 2], [0i32; 2]);
            // SAFETY: pipe2 fills the arrays.
            fds(unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) })?;
            // SAFETY: as above.
            fds(unsafe { libc::pipe2(q.as_mut_ptr(), libc::O_CLOEXEC) })?;
            // SAFETY: see above.
            let f = |fd: i32| unsafe { std::fs::File::from(OwnedFd::from_raw_fd(fd)) };
            Ok((
                Side::Stream {
                    rx: f(q[0]),
                    tx: f(p[1]),
                },
                Side::Stream {
                    rx: f(p[0]),
                    tx: f(q[1]),
                },
            ))
        }
        Transport::Unix => {
            let mut s = [0i32; 2];
            // SAFETY: socketpair fills the array.
            fds(unsafe {
                libc::socketpair(
                    libc::AF_UNIX,
                    libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
                    0,
                    s.as_mut_ptr(),
                )
            })?;
            // SAFETY: see above; each socket is duplicated so both directions own a File.
            let f = |fd: i32| unsafe { std::fs::File::from(OwnedFd::from_raw_fd(fd)) };
            // SAFETY: dup of descriptors we own.
            let (a2, b2) = unsafe { (libc::dup(s[0]), libc::dup(s[1])) };
            Ok((
                Side::Stream {
                    rx: f(s[0]),
                    tx: f(a2),
                },
                Side::Stream {
                    rx: f(s[1]),
                    tx: f(b2),
                },
            ))
        }
    }
}

fn pin(cpu: usize) {
    // SAFETY: cpu_set_t is plain data; sched_setaffinity reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// One measurement: a child echoes `iters` round trips of `msg` bytes, then receives
/// `bulk` messages and acknowledges them. Returns (rtt µs, MiB/s).
fn measure(
    t: Transport,
    msg: usize,
    iters: usize,
    bulk: usize,
    cpus: (usize, usize),
) -> Result<(f64, f64)> {
    let (mut a, mut b) = pair(t, msg)?;
    // SAFETY: the child only runs the echo loop and leaves with _exit.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        a.release();
        pin(cpus.1);
        let mut buf = Vec::new();
        let mut ok = true;
        for _ in 0..iters {
            ok &= b.recv(&mut buf, msg).is_ok() && b.send(&buf).is_ok();
        }
        for _ in 0..bulk {
            ok &= b.consume(&mut buf, msg).is_ok();
        }
        ok &= b.send(&[1]).is_ok();
        drop(b);
        // SAFETY: leaving the forked child.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    b.release();
    pin(cpus.0);
    let payload = vec![0x5au8; msg];
    let mut buf = Vec::with_capacity(msg);
    // Warm up on the first round trip, then time the rest.
    a.send(&payload)?;
    a.recv(&mut buf, msg)?;
    let t0 = Instant::now();
    for _ in 1..iters {
        a.send(&payload)?;
        a.recv(&mut buf, msg)?;
    }
    let rtt = t0.elapsed().as_secs_f64() * 1e6 / (iters - 1).max(1) as f64;
    let t1 = Instant::now();
    for _ in 0..bulk {
        a.send(&payload)?;
    }
    a.recv(&mut buf, 1)?;
    let secs = t1.elapsed().as_secs_f64();
    let mibs = if bulk > 0 {
        (bulk * msg) as f64 / (1 << 20) as f64 / secs
    } else {
        0.0
    };
    let mut status = 0;
    // SAFETY: waiting for our child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    if status != 0 {
        return Err(Error::Msg(format!("{t:?} echo child failed")));
    }
    // Back to any CPU.
    // SAFETY: cpu_set_t is plain data.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for c in 0..std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
        {
            libc::CPU_SET(c, &mut set);
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
    Ok((rtt, mibs))
}

/// Run every transport, size and placement for `rounds` rounds (shuffled), report medians.
pub fn run(
    sizes: &[usize],
    rounds: usize,
    quick: bool,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<Row>> {
    let ncpu = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mut placements = vec![("same-cpu", (0, 0))];
    if ncpu > 1 {
        placements.push(("two-cpus", (0, 1)));
    }
    let transports = [Transport::Channel, Transport::Pipe, Transport::Unix];
    let largest = sizes.iter().copied().max().unwrap_or(0);
    let mut cases = Vec::new();
    for &(pl, cpus) in &placements {
        for &s in sizes {
            for &t in &transports {
                cases.push((t, pl, cpus, s));
            }
        }
    }
    let mut samples: Vec<(Vec<f64>, Vec<f64>)> = vec![(Vec::new(), Vec::new()); cases.len()];
    let mut rng = crate::stats::Rng::new(0xc4a7);
    let mut order: Vec<usize> = (0..cases.len()).collect();
    for round in 0..rounds {
        rng.shuffle(&mut order);
        for &i in &order {
            let (t, _, cpus, s) = cases[i];
            let iters = if s >= 1 << 20 {
                if quick {
                    20
                } else {
                    100
                }
            } else if quick {
                500
            } else {
                5000
            };
            let bulk = if s == largest {
                if quick {
                    50
                } else {
                    300
                }
            } else {
                0
            };
            let (rtt, bw) = measure(t, s, iters, bulk, cpus)?;
            samples[i].0.push(rtt);
            samples[i].1.push(bw);
        }
        progress(round + 1, rounds);
    }
    Ok(cases
        .iter()
        .zip(samples)
        .map(|(&(t, pl, _, s), (rtt, bw))| Row {
            transport: t,
            placement: pl,
            message_bytes: s,
            rtt_us: median(&rtt).unwrap_or(f64::NAN),
            bandwidth_mib_s: (s == largest).then(|| median(&bw).unwrap_or(f64::NAN)),
        })
        .collect())
}

/// Rows as a table, with ratios to the pipe (latency) and to the Unix socket (bandwidth).
pub fn table(rows: &[Row]) -> String {
    let mut s = format!(
        "{:<9} {:>9} {:<8} {:>10} {:>10} {:>12} {:>10}\n",
        "placement", "bytes", "via", "rtt µs", "rtt/pipe", "MiB/s", "bw/unix"
    );
    for r in rows {
        let find = |t: Transport| {
            rows.iter().find(|x| {
                x.transport == t && x.placement == r.placement && x.message_bytes == r.message_bytes
            })
        };
        let pipe = find(Transport::Pipe)
            .map(|p| r.rtt_us / p.rtt_us)
            .unwrap_or(f64::NAN);
        let bw = r
            .bandwidth_mib_s
            .map_or("-".to_string(), |b| format!("{b:.0}"));
        let bw_ratio = match (
            r.bandwidth_mib_s,
            find(Transport::Unix).and_then(|u| u.bandwidth_mib_s),
        ) {
            (Some(b), Some(u)) => format!("{:.2}", b / u),
            _ => "-".into(),
        };
        s += &format!(
            "{:<9} {:>9} {:<8} {:>10.2} {:>10.2} {:>12} {:>10}\n",
            r.placement,
            r.message_bytes,
            format!("{:?}", r.transport).to_lowercase(),
            r.rtt_us,
            pipe,
            bw,
            bw_ratio
        );
    }
    s
}
