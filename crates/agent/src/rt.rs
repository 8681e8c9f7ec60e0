//! The real-time benchmark's two sides inside the domains. [`probe`]: a periodic wake-up,
//! cyclictest's method — absolute `clock_nanosleep` on CLOCK_MONOTONIC at a fixed interval,
//! latency = the wake-up less the time asked for, memory locked — into a histogram of 1 µs
//! buckets. [`load`]: what the other domains do meanwhile, until killed: CPU hogs, a fork
//! storm, a message storm (hackbench's groups: 20 senders to 20 receivers over socket pairs),
//! memory and page-cache pressure, fsynced writes.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

/// Buckets of 1 µs up to here; beyond, only counted (and the maximum kept).
const HIST_US: usize = 20_000;

/// What one probe run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    pub samples: u64,
    pub interval_us: u64,
    /// Wake-up latency, ns.
    pub max_ns: u64,
    /// Samples per whole µs of latency; the last bucket holds everything above.
    pub hist: Vec<u64>,
    /// The policy the probe ran with, as the kernel says (`SCHED_FIFO 50`).
    pub policy: String,
}

impl Probe {
    /// The latency below which a `q` share of the samples fall, µs.
    pub fn quantile_us(&self, q: f64) -> u64 {
        let buckets = self.hist.iter().enumerate().map(|(us, n)| (us as u64, *n));
        quantile(buckets, self.samples, q).unwrap_or(self.max_ns / 1000)
    }

    /// One JSON line: the figures and the non-empty buckets as [µs, count].
    pub fn json(&self) -> String {
        let buckets: Vec<String> = self
            .hist
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(us, n)| format!("[{us},{n}]"))
            .collect();
        format!(
            r#"{{"rt":{{"samples":{},"interval_us":{},"policy":"{}","p50_us":{},"p99_us":{},"p999_us":{},"max_us":{:.1},"hist":[{}]}}}}"#,
            self.samples,
            self.interval_us,
            self.policy,
            self.quantile_us(0.5),
            self.quantile_us(0.99),
            self.quantile_us(0.999),
            self.max_ns as f64 / 1000.0,
            buckets.join(",")
        )
    }
}

/// The µs below which a `q` share of `samples` fall, from (µs, samples) buckets in order
/// (none when the buckets hold fewer).
pub fn quantile(
    buckets: impl IntoIterator<Item = (u64, u64)>,
    samples: u64,
    q: f64,
) -> Option<u64> {
    let want = ((q * samples as f64).ceil() as u64).max(1);
    let mut seen = 0;
    buckets.into_iter().find_map(|(us, n)| {
        seen += n;
        (seen >= want).then_some(us)
    })
}

fn now_ns() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime into a live timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// The calling thread's policy, as `SCHED_FIFO 50`.
pub fn policy_now() -> String {
    // SAFETY: sched_getscheduler and sched_getparam of this process, into a live struct.
    let (p, prio) = unsafe {
        let mut sp = libc::sched_param { sched_priority: 0 };
        libc::sched_getparam(0, &mut sp);
        (libc::sched_getscheduler(0), sp.sched_priority)
    };
    match p {
        libc::SCHED_FIFO => format!("SCHED_FIFO {prio}"),
        libc::SCHED_RR => format!("SCHED_RR {prio}"),
        6 => "SCHED_DEADLINE".into(),
        libc::SCHED_BATCH => "SCHED_BATCH".into(),
        libc::SCHED_IDLE => "SCHED_IDLE".into(),
        _ => "SCHED_OTHER".into(),
    }
}

/// Run SCHED_FIFO at `priority` (the native variant; in a domain, the profile says).
pub fn set_fifo(priority: i32) -> Result<(), String> {
    let sp = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: sched_setscheduler of this process with a live sched_param.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &sp) } < 0 {
        return Err(format!(
            "SCHED_FIFO {priority}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// `samples` wake-ups, every `interval_us` µs, memory locked.
pub fn probe(interval_us: u64, samples: u64) -> Result<Probe, String> {
    // SAFETY: mlockall with constant flags: no page of the probe is faulted in while it runs.
    if unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) } < 0 {
        return Err(format!("mlockall: {}", std::io::Error::last_os_error()));
    }
    let mut hist = vec![0u64; HIST_US + 1];
    let mut max_ns = 0;
    let step = interval_us * 1000;
    // A first period to settle, then the samples.
    let mut next = now_ns() + step;
    for _ in 0..samples {
        next += step;
        let t = libc::timespec {
            tv_sec: (next / 1_000_000_000) as libc::time_t,
            tv_nsec: (next % 1_000_000_000) as libc::c_long,
        };
        // SAFETY: an absolute sleep to a live timespec; no remainder is needed.
        let r = unsafe {
            libc::clock_nanosleep(
                libc::CLOCK_MONOTONIC,
                libc::TIMER_ABSTIME,
                &t,
                std::ptr::null_mut(),
            )
        };
        if r != 0 && r != libc::EINTR {
            return Err(format!(
                "clock_nanosleep: {}",
                std::io::Error::from_raw_os_error(r)
            ));
        }
        let late = now_ns().saturating_sub(next);
        max_ns = max_ns.max(late);
        hist[((late / 1000) as usize).min(HIST_US)] += 1;
        // Late by more than a period: the next wake-up is the first one still ahead.
        let now = now_ns();
        while next + step < now {
            next += step;
        }
    }
    Ok(Probe {
        samples,
        interval_us,
        max_ns,
        hist,
        policy: policy_now(),
    })
}

/// The loads a common domain runs during the benchmark.
pub const LOADS: [&str; 5] = ["cpu", "fork", "msg", "mem", "io"];

/// Run load `kind` with `threads` workers (CPU hogs, forking loops, message groups of `group`
/// senders and receivers, memory touchers, writers), until killed. "all" runs each kind, one
/// process each.
pub fn load(kind: &str, threads: usize, group: usize) -> Result<(), String> {
    GROUP.store(group.max(1), std::sync::atomic::Ordering::Relaxed);
    if kind == "all" {
        for k in LOADS {
            // SAFETY: the child runs only the load loop and never returns.
            match unsafe { libc::fork() } {
                0 => {
                    let _ = load(k, threads, group);
                    // SAFETY: leaving the child.
                    unsafe { libc::_exit(0) }
                }
                -1 => return Err(format!("fork: {}", std::io::Error::last_os_error())),
                _ => {}
            }
        }
        // The loads run until the domain is stopped.
        loop {
            std::thread::park();
        }
    }
    let work: fn() = match kind {
        "cpu" => spin,
        "fork" => forks,
        "msg" => messages,
        "mem" => memory,
        "io" => writes,
        _ => {
            return Err(format!(
                "load {kind:?}: not one of {} or all",
                LOADS.join(", ")
            ))
        }
    };
    let workers: Vec<_> = (0..threads.max(1))
        .map(|_| std::thread::spawn(work))
        .collect();
    for w in workers {
        let _ = w.join();
    }
    Ok(())
}

fn spin() {
    let mut x = 0u64;
    loop {
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
    }
}

fn forks() {
    loop {
        // SAFETY: the child leaves at once with _exit; the parent reaps it.
        match unsafe { libc::fork() } {
            // SAFETY: leaving the child.
            0 => unsafe { libc::_exit(0) },
            pid if pid > 0 => {
                // SAFETY: waiting for our own child.
                unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
            }
            _ => std::thread::sleep(std::time::Duration::from_millis(1)),
        }
    }
}

/// Senders (and receivers) in one message group: hackbench's 20 unless `load` is told less.
static GROUP: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(20);

fn messages() {
    // A hackbench group: each of GROUP senders writes 100-byte messages to each of GROUP
    // receivers, over a socket pair per receiver, every one a thread of its own: a storm of
    // wake-ups among many runnable tasks.
    let group = GROUP.load(std::sync::atomic::Ordering::Relaxed).max(1);
    let Ok(pairs) = (0..group)
        .map(|_| UnixStream::pair())
        .collect::<std::io::Result<Vec<_>>>()
    else {
        return;
    };
    let (ends, receivers): (Vec<_>, Vec<_>) = pairs.into_iter().unzip();
    for mut r in receivers {
        std::thread::spawn(move || {
            let mut buf = [0u8; 100];
            while r.read_exact(&mut buf).is_ok() {}
        });
    }
    let ends = std::sync::Arc::new(ends);
    let senders: Vec<_> = (0..group)
        .map(|_| {
            let ends = ends.clone();
            std::thread::spawn(move || {
                let buf = [7u8; 100];
                loop {
                    for mut e in ends.iter() {
                        if e.write_all(&buf).is_err() {
                            return;
                        }
                    }
                }
            })
        })
        .collect();
    for s in senders {
        let _ = s.join();
    }
}

fn memory() {
    // 64 MiB mapped, touched page by page, unmapped: page faults and zeroing, again and again;
    // with a file read through the page cache between rounds.
    const LEN: usize = 64 << 20;
    loop {
        // SAFETY: a private anonymous mapping, written within its length and then unmapped.
        unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                LEN,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            if p == libc::MAP_FAILED {
                std::thread::sleep(std::time::Duration::from_millis(10));
                continue;
            }
            for off in (0..LEN).step_by(4096) {
                *(p as *mut u8).add(off) = 1;
            }
            libc::munmap(p, LEN);
        }
        if let Ok(mut f) = std::fs::File::open("/bin/busybox") {
            let mut buf = Vec::new();
            let _ = f.read_to_end(&mut buf);
        }
    }
}

fn writes() {
    let path = format!("/tmp/rt-load-{}", std::process::id());
    let block = vec![0x5au8; 1 << 20];
    loop {
        if let Ok(mut f) = std::fs::File::create(&path) {
            for _ in 0..4 {
                let _ = f.write_all(&block);
            }
            let _ = f.sync_all();
        }
        let _ = std::fs::remove_file(&path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_come_from_the_histogram() {
        let mut hist = vec![0u64; HIST_US + 1];
        hist[3] = 90;
        hist[10] = 9;
        hist[200] = 1;
        let p = Probe {
            samples: 100,
            interval_us: 1000,
            max_ns: 200_400,
            hist,
            policy: "SCHED_OTHER".into(),
        };
        assert_eq!(p.quantile_us(0.5), 3);
        assert_eq!(p.quantile_us(0.95), 10);
        assert_eq!(p.quantile_us(0.999), 200);
        let j = p.json();
        assert!(j.contains(r#""p99_us":10"#) && j.contains("[200,1]"), "{j}");
    }
}
