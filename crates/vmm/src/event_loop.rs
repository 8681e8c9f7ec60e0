//! The VMM's main thread once the vCPUs run: queue notifications (ioeventfds) and the
//! devices' host descriptors to their devices, console input to the serial port, until the
//! VM ends. It works under its own seccomp filter.

use vmm_sys_util::eventfd::EventFd;

use crate::{devices, seccomp, Shared};

/// In an event token: a device's host descriptor, not a queue.
const HOST_FD: u64 = 0x8000;
/// The event token of console input.
const INPUT: u64 = u64::MAX - 1;

/// The main thread's loop: queue notifications and host descriptors to their devices, until
/// `exit_evt`.
pub(crate) fn run(
    shared: &Shared,
    exit_evt: &EventFd,
    input: Option<std::os::fd::RawFd>,
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
    // From here on the main thread only works the queues, waits, kicks and tears down.
    let dirs: Vec<_> = shared
        .virtio
        .iter()
        .filter_map(|d| devices::lock(d).unlink_dir())
        .collect();
    seccomp::apply_main(&dirs).map_err(std::io::Error::other)?;
    let mut events = vec![EpollEvent::default(); 16];
    loop {
        let n = match epoll.wait(if paused { 50 } else { -1 }, &mut events) {
            Ok(0) if paused => {
                if let Some(fd) = input {
                    paused = false;
                    epoll.ctl(
                        ControlOperation::Modify,
                        fd,
                        EpollEvent::new(EventSet::IN, INPUT),
                    )?;
                }
                continue;
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
    }
}
