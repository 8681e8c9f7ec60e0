//! The VMM's main thread once the vCPUs run: queue notifications (ioeventfds) and the
//! devices' host descriptors to their devices, console input to the serial port, the control
//! socket's requests, until the VM ends. It works under its own seccomp filter.

use std::time::{Duration, Instant};

use vmm_sys_util::eventfd::EventFd;

use crate::control::{error_json, Control, Request};
use crate::{devices, seccomp, Shared};

/// In an event token: a device's host descriptor, not a queue.
const HOST_FD: u64 = 0x8000;
/// The event token of console input.
const INPUT: u64 = u64::MAX - 1;
/// The event token of the control socket's listener.
const CONTROL: u64 = u64::MAX - 2;
/// An event token with this bit, and not the top one: a control connection (its slot below).
const CONTROL_CONN: u64 = 1 << 62;

/// The balloon's transport, if the VM has one.
fn balloon(shared: &Shared) -> Option<usize> {
    shared
        .virtio
        .iter()
        .position(|t| devices::lock(t).balloon().is_some())
}

/// Answer (or start answering) one control request from connection `slot`; `balloon` is
/// the balloon's transport.
fn serve(
    shared: &Shared,
    balloon: Option<usize>,
    control: &mut Control,
    slot: usize,
    req: Result<Request, String>,
) {
    let Some(d) = balloon else {
        control.answer(slot, &error_json("this VM has no balloon"));
        return;
    };
    let mut t = devices::lock(&shared.virtio[d]);
    let answer = match req {
        Err(e) => error_json(&e),
        Ok(Request::Balloon { size_mib }) => {
            let set = t.balloon().map(|b| b.set_target(size_mib));
            match set {
                Some(Ok(())) => {
                    t.config_changed();
                    serde_json::json!({ "target_mib": size_mib }).to_string()
                }
                Some(Err(e)) => error_json(&e),
                None => error_json("this VM has no balloon"),
            }
        }
        Ok(Request::BalloonStats) => {
            let generation = t.balloon().map_or(0, |b| b.figures().stats_generation);
            t.request_balloon_stats(&shared.mem);
            control.wait_stats(slot, generation);
            return;
        }
    };
    control.answer(slot, &answer);
}

/// The main thread's loop: queue notifications and host descriptors to their devices, until
/// `exit_evt`.
pub(crate) fn run(
    shared: &Shared,
    exit_evt: &EventFd,
    input: Option<std::os::fd::RawFd>,
    mut control: Option<Control>,
) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
    let epoll = Epoll::new()?;
    epoll.ctl(
        ControlOperation::Add,
        exit_evt.as_raw_fd(),
        EpollEvent::new(EventSet::IN, u64::MAX),
    )?;
    for (d, t) in shared.virtio.iter().enumerate() {
        let t = devices::lock(t);
        for q in 0..t.queue_count() {
            let token = ((d as u64) << 16) | q as u64;
            epoll.ctl(
                ControlOperation::Add,
                t.notify_evt(q).as_raw_fd(),
                EpollEvent::new(EventSet::IN, token),
            )?;
        }
        // The device's own descriptor (a tap), edge-triggered: the device drains it.
        if let Some(fd) = t.fd() {
            let token = ((d as u64) << 16) | HOST_FD;
            epoll.ctl(
                ControlOperation::Add,
                fd,
                EpollEvent::new(EventSet::IN | EventSet::EDGE_TRIGGERED, token),
            )?;
        }
    }
    // Input waits in its pipe or terminal while the guest cannot take it (then the loop looks
    // again every 50 ms). A descriptor epoll cannot watch (/dev/null, a file) is no input.
    let mut input = input.filter(|&fd| {
        epoll
            .ctl(
                ControlOperation::Add,
                fd,
                EpollEvent::new(EventSet::IN, INPUT),
            )
            .is_ok()
    });
    let mut paused = false;
    if let Some(c) = &control {
        epoll.ctl(
            ControlOperation::Add,
            c.fd(),
            EpollEvent::new(EventSet::IN, CONTROL),
        )?;
    }
    // The balloon's statistics, refreshed every so often if asked.
    let balloon_at = balloon(shared);
    let stats_every = balloon_at
        .and_then(|d| {
            devices::lock(&shared.virtio[d])
                .balloon()
                .map(|b| b.stats_secs())
        })
        .filter(|&s| s > 0)
        .map(|s| Duration::from_secs(u64::from(s)));
    let mut next_stats = stats_every.map(|p| Instant::now() + p);
    // From here on the main thread only works the queues, waits, kicks and tears down.
    let mut dirs: Vec<_> = shared
        .virtio
        .iter()
        .filter_map(|d| devices::lock(d).unlink_dir())
        .collect();
    dirs.extend(control.as_ref().map(Control::dir_fd));
    seccomp::apply_main(&dirs).map_err(std::io::Error::other)?;
    let mut events = vec![EpollEvent::default(); 16];
    let mut waits_for: Option<Duration> = None;
    loop {
        let now = Instant::now();
        if let (Some(at), Some(d), Some(every)) = (next_stats, balloon_at, stats_every) {
            if now >= at {
                devices::lock(&shared.virtio[d]).request_balloon_stats(&shared.mem);
                next_stats = Some(now + every);
            }
        }
        let timeout = [
            paused.then_some(Duration::from_millis(50)),
            waits_for,
            next_stats.map(|t| t.saturating_duration_since(now)),
        ]
        .into_iter()
        .flatten()
        .min()
        .map_or(-1, |d| d.as_millis().min(60_000) as i32 + 1);
        let n = match epoll.wait(timeout, &mut events) {
            Ok(0) if paused => {
                if let Some(fd) = input {
                    paused = false;
                    epoll.ctl(
                        ControlOperation::Modify,
                        fd,
                        EpollEvent::new(EventSet::IN, INPUT),
                    )?;
                }
                0
            }
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        for ev in &events[..n] {
            let token = ev.data();
            if token == u64::MAX {
                let _ = exit_evt.read();
                return Ok(());
            }
            if let Some(c) = control.as_mut() {
                if token == CONTROL {
                    for (slot, fd) in c.accept() {
                        let token = CONTROL_CONN | slot as u64;
                        epoll.ctl(
                            ControlOperation::Add,
                            fd,
                            EpollEvent::new(EventSet::IN, token),
                        )?;
                    }
                    continue;
                }
                if token >> 62 == 1 {
                    // A closed connection leaves epoll by itself.
                    let slot = (token & !CONTROL_CONN) as usize;
                    if let Some(req) = c.read(slot) {
                        serve(shared, balloon_at, c, slot, req);
                    }
                    continue;
                }
            }
            if token == INPUT {
                let Some(fd) = input else { continue };
                let room = shared.legacy.input_room().min(64);
                if room == 0 {
                    paused = true;
                    epoll.ctl(
                        ControlOperation::Modify,
                        fd,
                        EpollEvent::new(EventSet::empty(), INPUT),
                    )?;
                    continue;
                }
                let mut buf = [0u8; 64];
                // SAFETY: read(2) into a live local buffer of at least `room` bytes.
                let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), room) };
                if n <= 0 {
                    // End of input (or an error): no more of it.
                    let _ = epoll.ctl(ControlOperation::Delete, fd, EpollEvent::default());
                    input = None;
                } else {
                    shared.legacy.input(&buf[..n as usize]);
                }
                continue;
            }
            let d = (token >> 16) as usize;
            if token & HOST_FD != 0 {
                devices::lock(&shared.virtio[d]).event(&shared.mem);
                continue;
            }
            let q = (token & 0xffff) as usize;
            devices::lock(&shared.virtio[d]).notified(q, &shared.mem);
        }
        // Statistics requests answered once the guest's fresh figures came (or it took too
        // long).
        waits_for = None;
        if let Some(c) = control.as_mut().filter(|c| c.any_waiting()) {
            let figures =
                balloon_at.and_then(|d| devices::lock(&shared.virtio[d]).balloon_figures());
            waits_for = c.answer_stats(figures.as_ref());
        }
    }
}
