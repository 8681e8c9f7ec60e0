//! One thread per vCPU: KVM_RUN, then the exit handled (port I/O to the legacy devices) or the
//! VM ended with the exit described. The main thread stops a vCPU with a signal whose handler
//! does nothing: KVM_RUN returns EINTR, and the loop sees the stop flag.

use std::os::unix::thread::JoinHandleExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;

use kvm_ioctls::{VcpuExit, VcpuFd};
use vm_memory::{Bytes, GuestAddress};

use crate::{Error, Exit, Result, Shared};

fn kick_signal() -> i32 {
    libc::SIGRTMIN()
}

extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

/// Install the (empty) handler of the kick signal, once per process.
pub fn install_kick_handler() -> Result<()> {
    // The errno, kept for later callers (an error is not Clone).
    static ONCE: std::sync::OnceLock<std::result::Result<(), i32>> = std::sync::OnceLock::new();
    ONCE.get_or_init(|| {
        vmm_sys_util::signal::register_signal_handler(kick_signal(), on_kick).map_err(|e| e.errno())
    })
    .map_err(|errno| Error::Io {
        what: "installing the vCPU kick handler".into(),
        source: std::io::Error::from_raw_os_error(errno),
    })
}

/// The eventfd that ends the running VM, for the SIGTERM/SIGINT handler (-1: none).
static STOP_FD: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);
/// The signal that stopped the VM (0: none).
static STOPPED_BY: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

extern "C" fn on_stop(sig: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    STOPPED_BY.store(sig, Ordering::SeqCst);
    let fd = STOP_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        let one: u64 = 1;
        // SAFETY: write(2) is async-signal-safe; 8 bytes from a live u64 to an eventfd.
        unsafe { libc::write(fd, (&one as *const u64).cast(), 8) };
    }
}

/// SIGTERM and SIGINT end the VM through `evt` (the guest stops where it is, the VMM
/// tears down and exits) instead of killing the process half-way.
pub fn stop_on_signals(evt: &vmm_sys_util::eventfd::EventFd) -> Result<()> {
    use std::os::fd::AsRawFd;
    STOPPED_BY.store(0, Ordering::SeqCst);
    STOP_FD.store(evt.as_raw_fd(), Ordering::SeqCst);
    for sig in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: sigaction with a handler that only does async-signal-safe work.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_stop as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO;
            libc::sigemptyset(&mut sa.sa_mask);
            if libc::sigaction(sig, &sa, std::ptr::null_mut()) < 0 {
                return Err(Error::Io {
                    what: format!("installing the handler of signal {sig}"),
                    source: std::io::Error::last_os_error(),
                });
            }
        }
    }
    Ok(())
}

/// The VM is over: the handler no longer has an eventfd to write.
pub fn stop_on_signals_done() {
    STOP_FD.store(-1, Ordering::SeqCst);
}

pub fn stopped_by() -> i32 {
    STOPPED_BY.load(Ordering::SeqCst)
}

/// Interrupt a vCPU thread's KVM_RUN.
pub fn kick(t: &JoinHandle<()>) {
    // SAFETY: pthread_kill on a thread that has not been joined yet (its handle is alive).
    unsafe { libc::pthread_kill(t.as_pthread_t(), kick_signal()) };
}

/// The guest's registers and the code bytes at RIP, for an exit report.
fn describe(vcpu: &VcpuFd, s: &Shared) -> String {
    let Ok(regs) = vcpu.get_regs() else {
        return "registers unavailable".into();
    };
    let code = vcpu
        .translate_gva(regs.rip)
        .ok()
        .filter(|t| t.valid != 0)
        .and_then(|t| {
            let mut b = [0u8; 16];
            s.mem
                .read_slice(&mut b, GuestAddress(t.physical_address))
                .ok()
                .map(|_| b)
        })
        .map(|b| {
            b.iter()
                .map(|x| format!("{x:02x}"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|| "unreadable".into());
    format!(
        "rip={:#x} rsp={:#x} rflags={:#x} rax={:#x}; code at rip: {code}",
        regs.rip, regs.rsp, regs.rflags, regs.rax
    )
}

/// Where a vCPU thread runs and how it is scheduled.
#[derive(Debug, Clone, Copy)]
pub struct Place {
    pub cpu: Option<u32>,
    pub sched: Option<crate::pin::VcpuSched>,
}

/// Give the calling vCPU thread its policy (before its seccomp filter, which does not allow
/// the call). Its core it takes after its first run ([`move_to`]): that run makes KVM's
/// worker thread of the VM (kvm-nx-lpage-recovery), which starts where its maker runs and
/// belongs on the VMM's shared cores; the policy is reset for it (SCHED_RESET_ON_FORK).
fn take(place: Place) -> std::result::Result<(), String> {
    if let Some(p) = place.sched {
        crate::pin::set_sched(p).map_err(|e| {
            let hint = if e.raw_os_error() == Some(libc::EPERM) {
                " (it needs RLIMIT_RTPRIO or CAP_SYS_NICE, and with cgroup v1 real-time group scheduling a real-time budget in its cgroup)"
            } else {
                ""
            };
            format!("taking real-time policy {p}: {e}{hint}")
        })?;
    }
    Ok(())
}

/// Move the calling vCPU thread to its own core.
fn move_to(cpu: u32) -> std::result::Result<(), String> {
    crate::pin::set_affinity(&[cpu]).map_err(|e| format!("running on cpu {cpu}: {e}"))
}

fn run(id: usize, mut vcpu: VcpuFd, s: Arc<Shared>, place: Place) {
    if let Err(e) = take(place) {
        s.end(Exit::Error(format!("vcpu {id}: {e}")));
        return;
    }
    if let Err(e) = crate::seccomp::apply(crate::seccomp::Thread::Vcpu) {
        s.end(Exit::Error(format!("vcpu {id}: {}", crate::chain(&e))));
        return;
    }
    let mut to_move = place.cpu;
    while !s.stop.load(Ordering::SeqCst) {
        let ran = vcpu.run();
        if let Some(c) = to_move.take() {
            if let Err(e) = move_to(c) {
                s.end(Exit::Error(format!("vcpu {id}: {e}")));
                return;
            }
        }
        let why = match ran {
            Ok(VcpuExit::IoOut(port, data)) => match s.legacy.write(port, data) {
                None => continue,
                Some(end) => end,
            },
            Ok(VcpuExit::IoIn(port, data)) => {
                s.legacy.read(port, data);
                continue;
            }
            Ok(VcpuExit::MmioRead(addr, data)) => {
                match s.mmio_device(addr) {
                    Some((d, off)) => crate::devices::lock(&s.virtio[d]).read(off, data),
                    // No device there: reads as all ones, like an empty bus.
                    None => data.fill(0xff),
                }
                continue;
            }
            Ok(VcpuExit::MmioWrite(addr, data)) => {
                if let Some((d, off)) = s.mmio_device(addr) {
                    crate::devices::lock(&s.virtio[d]).write(off, data);
                }
                continue;
            }
            Ok(VcpuExit::Hlt) => Exit::Shutdown(format!("vcpu {id} halted")),
            Ok(VcpuExit::Shutdown) => Exit::Shutdown(format!(
                "vcpu {id} shut down (triple fault?): {}",
                describe(&vcpu, &s)
            )),
            Ok(VcpuExit::SystemEvent(kind, data)) => match kind {
                kvm_bindings::KVM_SYSTEM_EVENT_RESET => Exit::Reset,
                kvm_bindings::KVM_SYSTEM_EVENT_SHUTDOWN => Exit::Poweroff,
                _ => Exit::Error(format!("vcpu {id}: system event {kind} {data:?}")),
            },
            Ok(VcpuExit::FailEntry(reason, cpu)) => Exit::Error(format!(
                "vcpu {id}: KVM_EXIT_FAIL_ENTRY (hardware reason {reason:#x}, cpu {cpu}): {}",
                describe(&vcpu, &s)
            )),
            Ok(VcpuExit::InternalError) => {
                let (sub, data) = {
                    let r = vcpu.get_kvm_run();
                    // SAFETY: KVM filled the `internal` member of the exit union for this exit.
                    let i = unsafe { r.__bindgen_anon_1.internal };
                    (i.suberror, i.data[..(i.ndata as usize).min(16)].to_vec())
                };
                Exit::Error(format!(
                    "vcpu {id}: KVM_EXIT_INTERNAL_ERROR (suberror {sub}, data {data:x?}): {}",
                    describe(&vcpu, &s)
                ))
            }
            Ok(other) => {
                let what = format!("{other:?}");
                Exit::Error(format!(
                    "vcpu {id}: unhandled exit {what}: {}",
                    describe(&vcpu, &s)
                ))
            }
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => continue,
            Err(e) => Exit::Error(format!("vcpu {id}: KVM_RUN: {e}")),
        };
        s.end(why);
        return;
    }
}

pub fn spawn(
    id: usize,
    vcpu: VcpuFd,
    s: Arc<Shared>,
    place: Place,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("vcpu{id}"))
        .spawn(move || run(id, vcpu, s, place))
}
