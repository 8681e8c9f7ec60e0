//! LMbench-style microbenchmarks, written here (LMbench's licence forbids publishing results
//! of modified copies, so this reimplements its method, not its code): each operation runs in
//! a loop scaled until one timing takes a fixed interval, after a warm-up, and the figure is
//! the median of 11 timings. Run inside a domain by `cellvisor bench` (and natively beside
//! it); prints one JSON object.
//!
//! - null syscall (getppid), 1-byte read of /dev/zero, 1-byte write to /dev/null
//! - fork+exit, fork+exec (of this static program, or `--exec PROG`), fork+sh (`/bin/sh -c`
//!   the same)
//! - pipe and Unix-socket latency: a 1-byte round trip between two processes
//! - context switch among 2, 8, 16 processes passing a token round a ring of pipes, less the
//!   cost of the pipe operations themselves (measured in one process), as lat_ctx reports it
//! - pipe bandwidth: 64 KiB writes from one process to another, MiB/s
//! - with `--host-fds R,W`: the guest/host switch, a 1-byte round trip with a process on the
//!   host over a pipe pair (the host echoes), both pinned to CPU 0 and both free; in a microVM
//!   (`--host-vsock PORT`) the same over a vsock stream to the host's PORT
//! - with `--exit-port` (a microVM guest, x86_64): the exit round trip, a write to I/O port
//!   0x80 that traps to the VMM and back

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// Timings per figure (LMbench's TRIES).
pub const TRIES: usize = 11;

/// How long each timing runs and what to measure.
pub struct Opts {
    pub interval: Duration,
    /// What fork+exec runs (a program and its arguments; fork+sh runs it through
    /// `/bin/sh -c`): this program's `hello`, or the cross-check's LMbench hello.
    pub exec: Vec<String>,
    /// Descriptors to the host's echo (read, write), for the guest/host switch.
    pub host: Option<(RawFd, RawFd)>,
    /// Time the exit round trip to the VMM (only inside a microVM).
    pub exit_port: bool,
    /// Where everything runs (and every child forked, which inherits it): one CPU, as
    /// LMBENCH_SCHED=SINGLE places LMbench, or wherever the scheduler puts it.
    pub cpu: Option<usize>,
}

/// One figure: its samples (per operation, in `unit`) and their median.
pub struct Figure {
    pub name: String,
    pub unit: &'static str,
    pub samples: Vec<f64>,
}

impl Figure {
    pub fn median(&self) -> f64 {
        let mut v = self.samples.clone();
        v.sort_by(|a, b| a.total_cmp(b));
        let n = v.len();
        if n == 0 {
            f64::NAN
        } else if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        }
    }
}

fn os<T: PartialOrd + Default>(r: T, what: &str) -> Result<T, String> {
    if r < T::default() {
        Err(format!("{what}: {}", std::io::Error::last_os_error()))
    } else {
        Ok(r)
    }
}

/// Time `op(n)` (which does n operations) as LMbench does: warm up, grow n until one run takes
/// the interval, then TRIES runs; per-operation microseconds.
pub fn measure(
    interval: Duration,
    mut op: impl FnMut(u64) -> Result<(), String>,
) -> Result<Vec<f64>, String> {
    let mut n: u64 = 1;
    let warm = Instant::now();
    loop {
        let t = Instant::now();
        op(n)?;
        let took = t.elapsed();
        if took >= interval / 2 && warm.elapsed() >= interval {
            // Scale to the interval from the last run.
            let per = took.as_secs_f64() / n as f64;
            n = ((interval.as_secs_f64() / per).ceil() as u64).max(1);
            break;
        }
        n = n.saturating_mul(2);
    }
    let mut out = Vec::with_capacity(TRIES);
    for _ in 0..TRIES {
        let t = Instant::now();
        op(n)?;
        out.push(t.elapsed().as_secs_f64() * 1e6 / n as f64);
    }
    Ok(out)
}

/// A close-on-exec pipe: (read end, write end).
pub fn pipe() -> Result<(OwnedFd, OwnedFd), String> {
    let mut p = [0i32; 2];
    // SAFETY: pipe2 fills the array.
    let r = unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) };
    os(r, "pipe")?;
    // SAFETY: two new descriptors owned here.
    Ok(unsafe { (OwnedFd::from_raw_fd(p[0]), OwnedFd::from_raw_fd(p[1])) })
}

fn socketpair() -> Result<(OwnedFd, OwnedFd), String> {
    let mut p = [0i32; 2];
    os(
        // SAFETY: socketpair fills the array.
        unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
                0,
                p.as_mut_ptr(),
            )
        },
        "socketpair",
    )?;
    // SAFETY: two new descriptors owned here.
    Ok(unsafe { (OwnedFd::from_raw_fd(p[0]), OwnedFd::from_raw_fd(p[1])) })
}

fn put(fd: RawFd, b: &[u8]) -> Result<(), String> {
    let mut off = 0;
    while off < b.len() {
        // SAFETY: writes from a valid slice.
        let r = unsafe { libc::write(fd, b[off..].as_ptr().cast(), b.len() - off) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(format!("write: {e}"));
        }
        if r == 0 {
            return Err("write: nothing written".into());
        }
        off += r as usize;
    }
    Ok(())
}

/// Read exactly `b.len()` bytes; false at end of file.
fn get(fd: RawFd, b: &mut [u8]) -> Result<bool, String> {
    let mut off = 0;
    while off < b.len() {
        // SAFETY: reads into a valid slice.
        let r = unsafe { libc::read(fd, b[off..].as_mut_ptr().cast(), b.len() - off) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(format!("read: {e}"));
        }
        if r == 0 {
            return Ok(false);
        }
        off += r as usize;
    }
    Ok(true)
}

/// Fork a child that runs `f` and leaves with `_exit`; its pid. With `keep`, the child first
/// closes every other descriptor above 2 (so that a pipe it does not use reaches end of file
/// when its other holders close it).
fn fork(keep: Option<&[RawFd]>, f: impl FnOnce() -> i32) -> Result<libc::pid_t, String> {
    // SAFETY: the child only runs `f` (plain syscalls) and leaves with _exit.
    let pid = os(unsafe { libc::fork() }, "fork")?;
    if pid == 0 {
        if let Some(keep) = keep {
            for fd in 3..1024 {
                if !keep.contains(&fd) {
                    // SAFETY: closing descriptors of this child only.
                    unsafe { libc::close(fd) };
                }
            }
        }
        let code = f();
        // SAFETY: leaving the child without running the parent's destructors.
        unsafe { libc::_exit(code) };
    }
    Ok(pid)
}

fn reap(pid: libc::pid_t) -> Result<(), String> {
    let mut st = 0;
    // SAFETY: waiting for our own child.
    os(unsafe { libc::waitpid(pid, &mut st, 0) }, "waitpid")?;
    if libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0 {
        Ok(())
    } else {
        Err(format!("a benchmark child failed (status {st:#x})"))
    }
}

/// Run on CPU `cpu` only (None: on every CPU).
pub fn pin(cpu: Option<usize>) {
    // SAFETY: cpu_set_t is plain data; sched_setaffinity reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        match cpu {
            Some(c) => libc::CPU_SET(c, &mut set),
            None => {
                for c in 0..libc::CPU_SETSIZE as usize {
                    libc::CPU_SET(c, &mut set);
                }
            }
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// A child that echoes every byte on `rx` back on `tx` until end of file.
fn echo_child(rx: RawFd, tx: RawFd) -> Result<libc::pid_t, String> {
    fork(Some(&[rx, tx]), move || {
        let mut b = [0u8; 1];
        while let Ok(true) = get(rx, &mut b) {
            if put(tx, &b).is_err() {
                return 1;
            }
        }
        0
    })
}

/// 1-byte round trips over (tx to the echo, rx from it).
fn round_trips(tx: RawFd, rx: RawFd, n: u64) -> Result<(), String> {
    let mut b = [1u8];
    for _ in 0..n {
        put(tx, &b)?;
        if !get(rx, &mut b)? {
            return Err("the echo hung up".into());
        }
    }
    Ok(())
}

fn exec_args(exec: &[String], sh: bool) -> Vec<std::ffi::CString> {
    let c = |s: &str| std::ffi::CString::new(s).unwrap_or_default();
    if sh {
        vec![c("/bin/sh"), c("-c"), c(&exec.join(" "))]
    } else {
        exec.iter().map(|a| c(a)).collect()
    }
}

/// fork, then exec `args` with stdout on /dev/null, and wait.
fn spawn_and_wait(args: &[std::ffi::CString], devnull: RawFd) -> Result<(), String> {
    let mut ptrs: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    let env: [*const libc::c_char; 1] = [std::ptr::null()];
    let pid = fork(None, || {
        // SAFETY: dup2 onto stdout, then execve with NUL-terminated arrays built above.
        unsafe {
            libc::dup2(devnull, 1);
            libc::execve(ptrs[0], ptrs.as_ptr(), env.as_ptr());
        }
        127
    })?;
    reap(pid)
}

/// Figures as they are measured, each announced to `progress`.
pub struct Figures<'a> {
    pub out: Vec<Figure>,
    progress: &'a mut dyn FnMut(&str),
}

impl<'a> Figures<'a> {
    pub fn new(progress: &'a mut dyn FnMut(&str)) -> Self {
        Figures {
            out: Vec::new(),
            progress,
        }
    }

    pub fn add(&mut self, name: &str, unit: &'static str, samples: Vec<f64>) {
        (self.progress)(name);
        self.out.push(Figure {
            name: name.into(),
            unit,
            samples,
        });
    }
}

/// Every microbenchmark, in order.
pub fn run(o: &Opts, progress: &mut dyn FnMut(&str)) -> Result<Vec<Figure>, String> {
    let iv = o.interval;
    if o.cpu.is_some() {
        pin(o.cpu);
    }
    let mut figs = Figures::new(progress);
    let mut fig = |name: &str, unit: &'static str, samples: Vec<f64>| figs.add(name, unit, samples);
    fig(
        "null_syscall",
        "us",
        measure(iv, |n| {
            for _ in 0..n {
                // SAFETY: getppid has no arguments; the raw syscall avoids any caching.
                unsafe { libc::syscall(libc::SYS_getppid) };
            }
            Ok(())
        })?,
    );
    let zero = std::fs::File::open("/dev/zero").map_err(|e| format!("/dev/zero: {e}"))?;
    let null = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .map_err(|e| format!("/dev/null: {e}"))?;
    let mut b = [0u8; 1];
    fig(
        "null_read",
        "us",
        measure(iv, |n| {
            for _ in 0..n {
                // SAFETY: reads one byte into a valid buffer.
                unsafe { libc::read(zero.as_raw_fd(), b.as_mut_ptr().cast(), 1) };
            }
            Ok(())
        })?,
    );
    fig(
        "null_write",
        "us",
        measure(iv, |n| {
            for _ in 0..n {
                // SAFETY: writes one byte from a valid buffer.
                unsafe { libc::write(null.as_raw_fd(), b.as_ptr().cast(), 1) };
            }
            Ok(())
        })?,
    );
    fig(
        "fork_exit",
        "us",
        measure(iv, |n| {
            for _ in 0..n {
                // The child leaves through the C library's exit, as LMbench's does (its exit
                // handlers and stdio flush touch, and so copy, a few pages).
                // SAFETY: exit in the forked child ends it; nothing of the parent runs there.
                reap(fork(None, || unsafe { libc::exit(0) })?)?;
            }
            Ok(())
        })?,
    );
    for (name, sh) in [("fork_exec", false), ("fork_sh", true)] {
        let args = exec_args(&o.exec, sh);
        fig(
            name,
            "us",
            measure(iv, |n| {
                for _ in 0..n {
                    spawn_and_wait(&args, null.as_raw_fd())?;
                }
                Ok(())
            })?,
        );
    }
    for (name, unix) in [("pipe_latency", false), ("unix_latency", true)] {
        let ((a_rx, b_tx), (b_rx, a_tx)) = if unix {
            let (x, y) = socketpair()?;
            let (x2, y2) = (
                x.try_clone().map_err(|e| e.to_string())?,
                y.try_clone().map_err(|e| e.to_string())?,
            );
            ((x, y), (y2, x2))
        } else {
            (pipe()?, pipe()?)
        };
        // The echo reads what we send on a_tx (its b_rx) and answers on b_tx (our a_rx).
        let pid = echo_child(b_rx.as_raw_fd(), b_tx.as_raw_fd())?;
        drop((b_rx, b_tx));
        let s = measure(iv, |n| round_trips(a_tx.as_raw_fd(), a_rx.as_raw_fd(), n));
        drop((a_tx, a_rx));
        let _ = reap(pid);
        fig(name, "us", s?);
    }
    let ovr = ctx_overhead(iv)?;
    for procs in [2usize, 8, 16] {
        let s = ctx_ring(iv, procs)?;
        fig(
            &format!("ctx_{procs}"),
            "us",
            s.iter().map(|t| (t - ovr).max(0.0)).collect(),
        );
    }
    fig("pipe_bandwidth", "MiB/s", pipe_bandwidth(iv)?);
    if let Some((rx, tx)) = o.host {
        for (name, cpu) in [("host_switch_pinned", Some(0)), ("host_switch_free", None)] {
            // Tell the host's echo where to run ('P': CPU 0, 'F': anywhere), then time.
            let mut ctl = [if cpu.is_some() { b'P' } else { b'F' }];
            put(tx, &ctl)?;
            get(rx, &mut ctl)?;
            pin(cpu);
            let s = measure(iv, |n| round_trips(tx, rx, n))?;
            fig(name, "us", s);
        }
        pin(o.cpu);
    }
    if o.exit_port {
        fig("vm_exit", "us", exit_round_trip(iv)?);
    }
    Ok(figs.out)
}

/// The port the exit round trip writes: the legacy POST/delay port, which a VMM answers by
/// doing nothing (cellvisor's ignores it).
#[cfg(target_arch = "x86_64")]
const EXIT_PORT: u16 = 0x80;

/// A microVM's exit round trip: each 1-byte write to [`EXIT_PORT`] leaves the guest for the
/// VMM's vCPU thread and comes back (a guest kernel needs root for ioperm).
#[cfg(target_arch = "x86_64")]
fn exit_round_trip(iv: Duration) -> Result<Vec<f64>, String> {
    // SAFETY: ioperm grants this process one I/O port; no memory is involved.
    let r = unsafe { libc::ioperm(EXIT_PORT.into(), 1, 1) };
    os(
        r,
        "ioperm (the exit round trip needs root in a microVM guest)",
    )?;
    measure(iv, |n| {
        for _ in 0..n {
            // SAFETY: a port write the process was granted above; it touches no memory.
            unsafe {
                std::arch::asm!("out dx, al", in("dx") EXIT_PORT, in("al") 0u8,
                                options(nomem, nostack, preserves_flags));
            }
        }
        Ok(())
    })
}

#[cfg(not(target_arch = "x86_64"))]
fn exit_round_trip(_iv: Duration) -> Result<Vec<f64>, String> {
    Err("the exit round trip is measured on x86_64 guests only".into())
}

/// What one hop of the ring costs besides the switch: a 1-byte write and read on a pipe, in
/// one process.
fn ctx_overhead(iv: Duration) -> Result<f64, String> {
    let (rx, tx) = pipe()?;
    let s = measure(iv, |n| {
        let mut b = [0u8];
        for _ in 0..n {
            put(tx.as_raw_fd(), &b)?;
            get(rx.as_raw_fd(), &mut b)?;
        }
        Ok(())
    })?;
    let f = Figure {
        name: String::new(),
        unit: "us",
        samples: s,
    };
    Ok(f.median())
}

/// `procs` processes in a ring of pipes passing a 1-byte token; per hop microseconds. We are
/// member 0; members 1.. are children that forward the token until end of file.
fn ctx_ring(iv: Duration, procs: usize) -> Result<Vec<f64>, String> {
    let mut pipes = Vec::new();
    for _ in 0..procs {
        pipes.push(pipe()?);
    }
    // Member i reads pipes[i] and writes pipes[(i + 1) % procs].
    let mut kids = Vec::new();
    for i in 1..procs {
        let rx = pipes[i].0.as_raw_fd();
        let tx = pipes[(i + 1) % procs].1.as_raw_fd();
        kids.push(echo_child(rx, tx)?);
    }
    let (rx, tx) = (pipes[0].0.as_raw_fd(), pipes[1 % procs].1.as_raw_fd());
    let s = measure(iv, |n| {
        let mut b = [0u8];
        for _ in 0..n {
            put(tx, &b)?;
            get(rx, &mut b)?;
        }
        Ok(())
    });
    // Closing our write ends lets each child see end of file in turn.
    drop(pipes);
    for k in kids {
        let _ = reap(k);
    }
    Ok(s?.into_iter().map(|t| t / procs as f64).collect())
}

/// 64 KiB writes from a child to us through a pipe; MiB/s per timing.
fn pipe_bandwidth(iv: Duration) -> Result<Vec<f64>, String> {
    const CHUNK: usize = 64 << 10;
    let (rx, tx) = pipe()?;
    let (ctl_rx, ctl_tx) = pipe()?;
    // The child writes `n` chunks whenever it reads n (a u64) on the control pipe.
    let pid = fork(Some(&[tx.as_raw_fd(), ctl_rx.as_raw_fd()]), || {
        let buf = vec![7u8; CHUNK];
        let mut n = [0u8; 8];
        while let Ok(true) = get(ctl_rx.as_raw_fd(), &mut n) {
            for _ in 0..u64::from_le_bytes(n) {
                if put(tx.as_raw_fd(), &buf).is_err() {
                    return 1;
                }
            }
        }
        0
    })?;
    drop((tx, ctl_rx));
    let mut buf = vec![0u8; CHUNK];
    let s = measure(iv, |n| {
        put(ctl_tx.as_raw_fd(), &n.to_le_bytes())?;
        for _ in 0..n {
            if !get(rx.as_raw_fd(), &mut buf)? {
                return Err("the writer hung up".into());
            }
        }
        Ok(())
    });
    drop(ctl_tx);
    let _ = reap(pid);
    // µs per 64 KiB chunk → MiB/s.
    Ok(s?
        .into_iter()
        .map(|us| 64.0 / 1024.0 / (us / 1e6))
        .collect())
}

/// The host's side of the guest/host switch: echo bytes from `rx` to `tx` until end of file,
/// moving to CPU 0 on 'P' and anywhere on 'F' (answered like any byte).
pub fn host_echo(rx: RawFd, tx: RawFd) {
    let mut b = [0u8];
    while let Ok(true) = get(rx, &mut b) {
        match b[0] {
            b'P' => pin(Some(0)),
            b'F' => pin(None),
            _ => {}
        }
        if put(tx, &b).is_err() {
            break;
        }
    }
    pin(None);
}

/// Wait until `from`, then count loop iterations until `to` (milliseconds since the epoch):
/// the work a busy domain gets done in a window all domains share.
pub fn spin(from: u64, to: u64) -> u64 {
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(u64::MAX)
    };
    let t = now();
    if from > t {
        std::thread::sleep(Duration::from_millis(from - t));
    }
    spin_until(|| now() >= to)
}

/// Count loop iterations until `done()` (asked every 4096 iterations).
fn spin_until(mut done: impl FnMut() -> bool) -> u64 {
    let mut count: u64 = 0;
    while !done() {
        for _ in 0..4096 {
            count = std::hint::black_box(count + 1);
        }
    }
    count
}

/// A busy domain whose clock is not the host's (a microVM guest): wait for one byte on
/// `link` (the host's go), count loop iterations for `ms` milliseconds, and answer the count
/// as a decimal line.
pub fn spin_on_signal(link: &std::fs::File, ms: u64) -> Result<u64, String> {
    let mut b = [0u8];
    if !get(link.as_raw_fd(), &mut b)? {
        return Err("the host hung up before the start".into());
    }
    let end = Instant::now() + Duration::from_millis(ms);
    let count = spin_until(|| Instant::now() >= end);
    put(link.as_raw_fd(), format!("{count}\n").as_bytes())?;
    Ok(count)
}

/// The figures as one JSON object (the agent has no serde).
pub fn json(figs: &[Figure]) -> String {
    let rows: Vec<String> = figs
        .iter()
        .map(|f| {
            format!(
                r#"{{"name":"{}","unit":"{}","median":{:.6},"samples":[{}]}}"#,
                f.name,
                f.unit,
                f.median(),
                f.samples
                    .iter()
                    .map(|s| format!("{s:.6}"))
                    .collect::<Vec<_>>()
                    .join(",")
            )
        })
        .collect();
    format!(r#"{{"micro":[{}]}}"#, rows.join(","))
}
