//! The scheduler benchmark's load: threads that each do a fixed amount of work every 10 ms
//! slot — as much as `duty` percent of a core gets done — and sleep out the rest of the
//! slot; a thread that falls behind works on without sleeping. The work is counted in
//! chunks (a fixed number of multiply-adds), calibrated by the thread's own CPU time (so a
//! busy core at start does not skew it), and the total is printed every 250 ms as
//! `work CHUNKS`: throughput is chunks per second. `duty` may change while it runs: a file
//! holding a percentage is read again every 100 ms.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Multiply-adds per chunk.
const CHUNK: u64 = 20_000;
const SLOT: Duration = Duration::from_millis(10);

fn chunk(x: u64) -> u64 {
    let mut x = x;
    for _ in 0..CHUNK {
        x = std::hint::black_box(
            x.wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407),
        );
    }
    x
}

fn thread_cpu() -> Duration {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// Chunks one core does per second, by this thread's CPU time over about 50 ms of work.
fn calibrate() -> f64 {
    let c0 = thread_cpu();
    let mut n = 0u64;
    let mut x = 1;
    while thread_cpu() - c0 < Duration::from_millis(50) {
        x = chunk(x);
        n += 1;
    }
    std::hint::black_box(x);
    n as f64 / (thread_cpu() - c0).as_secs_f64()
}

fn read_duty(path: &str) -> Option<u32> {
    std::fs::read_to_string(path)
        .ok()?
        .trim()
        .parse()
        .ok()
        .filter(|d| *d <= 100)
}

/// Work at `duty` percent of a core on each of `threads` threads until killed (`duty_file`,
/// when it holds a percentage, overrides it), printing the chunks done.
pub fn run(duty: u32, threads: usize, duty_file: Option<String>) -> Result<(), String> {
    if duty > 100 {
        return Err(format!("--duty {duty}: a percentage, at most 100"));
    }
    let duty = Arc::new(AtomicU32::new(duty));
    let done = Arc::new(AtomicU64::new(0));
    for _ in 0..threads.max(1) {
        let (duty, done) = (duty.clone(), done.clone());
        std::thread::spawn(move || {
            let rate = calibrate();
            let mut x = 1;
            let mut slot = Instant::now();
            let mut owed = 0.0f64;
            loop {
                owed += rate * SLOT.as_secs_f64() * f64::from(duty.load(Ordering::Relaxed)) / 100.0;
                while owed >= 1.0 {
                    x = chunk(x);
                    owed -= 1.0;
                    done.fetch_add(1, Ordering::Relaxed);
                }
                slot += SLOT;
                let now = Instant::now();
                if slot > now {
                    std::thread::sleep(slot - now);
                } else if now - slot > SLOT * 10 {
                    // Far behind (starved): do not try to catch up more than ten slots.
                    slot = now - SLOT * 10;
                }
                std::hint::black_box(x);
            }
        });
    }
    let mut last_read = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(250));
        if let Some(f) = &duty_file {
            if last_read.elapsed() >= Duration::from_millis(100) {
                if let Some(d) = read_duty(f) {
                    duty.store(d, Ordering::Relaxed);
                }
                last_read = Instant::now();
            }
        }
        println!("work {}", done.load(Ordering::Relaxed));
    }
}
