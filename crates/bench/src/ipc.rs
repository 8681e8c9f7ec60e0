//! Channel round-trip latency and bandwidth, side by side with a pipe pair and a Unix socket
//! pair between the same two processes, pinned to one CPU and to two.

use std::os::fd::{FromRawFd, OwnedFd};

use agent::pingpong::{self, Case, Side};
use channel::Channel;
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

/// A close-on-exec pipe: (read end, write end).
pub(crate) fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let mut p = [0i32; 2];
    // SAFETY: pipe2 fills the array.
    if unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return crate::io(Err(std::io::Error::last_os_error()), || "pipe".into());
    }
    // SAFETY: two new descriptors, each owned once.
    Ok(unsafe { (OwnedFd::from_raw_fd(p[0]), OwnedFd::from_raw_fd(p[1])) })
}

/// Where the two sides run: one CPU, and two when there are.
pub(crate) fn placements() -> Vec<(&'static str, (usize, usize))> {
    let ncpu = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mut placements = vec![("same-cpu", (0, 0))];
    if ncpu > 1 {
        placements.push(("two-cpus", (0, 1)));
    }
    placements
}

fn err(e: String) -> Error {
    Error::Msg(e)
}

fn pair(t: Transport, msg: usize) -> Result<(Side, Side)> {
    let fds = |r: i32| -> Result<()> {
        if r < 0 {
            crate::io(Err(std::io::Error::last_os_error()), || {
                format!("{t:?} pair")
            })
        } else {
            Ok(())
        }
    };
    // SAFETY (for the from_raw_fd calls below): each descriptor was just created by the
    // syscall and is owned by exactly one File.
    match t {
        Transport::Channel => {
            let buffer = ((msg + 64) * 2).next_power_of_two().max(65536) as u64;
            let (a, b) = Channel::new(buffer)?;
            Ok((Side::Chan(a), Side::Chan(b)))
        }
        Transport::Pipe => {
            let ((p_rx, p_tx), (q_rx, q_tx)) = (pipe()?, pipe()?);
            Ok((
                Side::Stream {
                    rx: q_rx.into(),
                    tx: p_tx.into(),
                },
                Side::Stream {
                    rx: p_rx.into(),
                    tx: q_tx.into(),
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
    // SAFETY: cpu_set_t is plain data; sched_getaffinity fills it.
    let before = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set);
        set
    };
    let (mut a, mut b) = pair(t, msg)?;
    let case = Case { msg, iters, bulk };
    // SAFETY: the child only runs the echo loop and leaves with _exit.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        a.release();
        pin(cpus.1);
        let ok = pingpong::echo(&mut b, case).is_ok();
        drop(b);
        // SAFETY: leaving the forked child.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    b.release();
    pin(cpus.0);
    let (rtt, mibs) = pingpong::drive(&mut a, case).map_err(err)?;
    let mut status = 0;
    // SAFETY: waiting for our child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    if status != 0 {
        return Err(Error::Msg(format!("{t:?} echo child failed")));
    }
    // Back to the CPUs we had.
    // SAFETY: restoring a mask sched_getaffinity filled.
    unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &before) };
    Ok((rtt, mibs))
}

/// Run every transport, size and placement for `rounds` rounds (shuffled), report medians.
pub fn run(
    sizes: &[usize],
    rounds: usize,
    quick: bool,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<Row>> {
    let placements = placements();
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
