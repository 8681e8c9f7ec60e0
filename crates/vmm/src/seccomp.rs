//! Seccomp filters for the VMM's threads (seccompiler), installed once a thread is done
//! setting up: from then on a vCPU thread may only run its vCPU (KVM_RUN, and read its
//! registers for an exit report), move bytes to and from the console and its eventfds, and
//! manage its own memory and signals; the main thread may additionally wait for device
//! notifications, read and write its disks and taps, take and make Unix-socket connections
//! for vsock, sleep and kick vCPU threads. Anything else — opening files, sockets, new processes or threads, other
//! ioctls — kills the VMM.

use std::collections::BTreeMap;
use std::convert::TryInto;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use crate::{Error, Result};

const KVMIO: u32 = 0xAE;
vmm_sys_util::ioctl_io_nr!(KVM_RUN, KVMIO, 0x80);
vmm_sys_util::ioctl_ior_nr!(KVM_GET_REGS, KVMIO, 0x81, kvm_bindings::kvm_regs);
vmm_sys_util::ioctl_iowr_nr!(KVM_TRANSLATE, KVMIO, 0x85, kvm_bindings::kvm_translation);

/// Which thread a filter is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Thread {
    Vcpu,
    Main,
}

fn arch() -> Result<TargetArch> {
    std::env::consts::ARCH
        .try_into()
        .map_err(|e| Error::Config(format!("seccomp: {e:?}")))
}

fn err(e: impl std::fmt::Debug) -> Error {
    Error::boot("building the seccomp filter", format!("{e:?}"))
}

/// The filter of one kind of thread.
pub fn filter(t: Thread) -> Result<BpfProgram> {
    filter_with(t, &[])
}

/// An argument-equality rule: argument `arg` (32 bits) is `v`.
fn arg_is(arg: u8, v: u64) -> Result<SeccompRule> {
    SeccompRule::new(vec![SeccompCondition::new(
        arg,
        SeccompCmpArgLen::Dword,
        SeccompCmpOp::Eq,
        v,
    )
    .map_err(err)?])
    .map_err(err)
}

/// The filter of `t`; the main thread may also unlinkat through the directories `dirs`.
fn filter_with(t: Thread, dirs: &[std::os::fd::RawFd]) -> Result<BpfProgram> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    let common = [
        libc::SYS_read,
        libc::SYS_write,
        libc::SYS_futex,
        libc::SYS_rt_sigreturn,
        libc::SYS_rt_sigprocmask,
        libc::SYS_sigaltstack,
        libc::SYS_mmap,
        libc::SYS_munmap,
        libc::SYS_mprotect,
        libc::SYS_madvise,
        libc::SYS_brk,
        libc::SYS_close,
        libc::SYS_sched_yield,
        libc::SYS_clock_gettime,
        libc::SYS_clock_nanosleep,
        libc::SYS_nanosleep,
        libc::SYS_restart_syscall,
        libc::SYS_exit,
        libc::SYS_exit_group,
    ];
    for s in common {
        rules.insert(s, vec![]);
    }
    // Only F_GETFD: the standard library checks a descriptor is open before it closes it
    // (in debug builds).
    rules.insert(libc::SYS_fcntl, vec![arg_is(1, libc::F_GETFD as u64)?]);
    match t {
        Thread::Vcpu => {
            // c_ulong is u64 here but u32 on 32-bit ARM.
            #[allow(clippy::useless_conversion)]
            let ioctl = |nr: libc::c_ulong| arg_is(1, u64::from(nr));
            rules.insert(
                libc::SYS_ioctl,
                vec![
                    ioctl(KVM_RUN())?,
                    ioctl(KVM_GET_REGS())?,
                    ioctl(KVM_TRANSLATE())?,
                ],
            );
            // Its own affinity only: a pinned vCPU moves to its core after its first run.
            rules.insert(libc::SYS_sched_setaffinity, vec![arg_is(0, 0)?]);
        }
        Thread::Main => {
            rules.insert(libc::SYS_tgkill, vec![]);
            // The device loop: wait for notifications, move disk data.
            rules.insert(libc::SYS_epoll_wait, vec![]);
            rules.insert(libc::SYS_epoll_pwait, vec![]);
            rules.insert(libc::SYS_pread64, vec![]);
            rules.insert(libc::SYS_pwrite64, vec![]);
            rules.insert(libc::SYS_fdatasync, vec![]);
            rules.insert(libc::SYS_getpid, vec![]);
            rules.insert(libc::SYS_gettid, vec![]);
            // Reaping the vsock socket's reaper at the end.
            rules.insert(libc::SYS_wait4, vec![]);
            // vsock's host side: Unix sockets only (made non-blocking with FIONBIO), its own
            // epoll set.
            rules.insert(libc::SYS_ioctl, vec![arg_is(1, libc::FIONBIO)?]);
            rules.insert(libc::SYS_socket, vec![arg_is(0, libc::AF_UNIX as u64)?]);
            for s in [
                libc::SYS_connect,
                libc::SYS_accept4,
                libc::SYS_epoll_ctl,
                libc::SYS_shutdown,
                libc::SYS_recvfrom,
                libc::SYS_sendto,
            ] {
                rules.insert(s, vec![]);
            }
            // Removing the vsock socket at the end: through its directory's descriptor only.
            if !dirs.is_empty() {
                let r = dirs
                    .iter()
                    .map(|&d| arg_is(0, d as u64))
                    .collect::<Result<_>>()?;
                rules.insert(libc::SYS_unlinkat, r);
            }
        }
    }
    let f = SeccompFilter::new(
        rules,
        SeccompAction::KillProcess,
        SeccompAction::Allow,
        arch()?,
    )
    .map_err(err)?;
    f.try_into().map_err(err)
}

/// Install the main thread's filter on the calling thread (`dirs`: see `filter_with`).
pub fn apply_main(dirs: &[std::os::fd::RawFd]) -> Result<()> {
    install(&filter_with(Thread::Main, dirs)?)
}

/// Install the filter for `t` on the calling thread.
pub fn apply(t: Thread) -> Result<()> {
    install(&filter(t)?)
}

fn install(p: &BpfProgram) -> Result<()> {
    seccompiler::apply_filter(p).map_err(|e| Error::boot("installing the seccomp filter", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_are_the_kernels() {
        assert_eq!(KVM_RUN(), 0xae80);
        assert_eq!(KVM_GET_REGS(), 0x8090_ae81);
        assert_eq!(KVM_TRANSLATE(), 0xc018_ae85);
        assert!(filter(Thread::Vcpu).unwrap().len() > 10);
        assert!(filter(Thread::Main).unwrap().len() > 10);
    }

    /// In a forked child: install `t`'s filter, then make one syscall; how the child ended.
    fn child_with_filter(t: Thread, call: fn()) -> i32 {
        // Built before the fork: the child of a threaded test must not allocate.
        let p = filter(t).unwrap();
        // SAFETY: the child only installs a filter, makes one syscall and _exits.
        match unsafe { libc::fork() } {
            0 => {
                if seccompiler::apply_filter(&p).is_err() {
                    // SAFETY: leaving the forked child.
                    unsafe { libc::_exit(2) };
                }
                call();
                // SAFETY: leaving the forked child.
                unsafe { libc::_exit(0) }
            }
            pid => {
                let mut st = 0;
                // SAFETY: waiting for our own child.
                unsafe { libc::waitpid(pid, &mut st, 0) };
                st
            }
        }
    }

    #[test]
    fn forbidden_calls_kill_allowed_ones_pass() {
        // Opening a file is not a vCPU's business: SIGSYS kills the process.
        let st = child_with_filter(Thread::Vcpu, || {
            // SAFETY: a plain open(2) of a constant path.
            unsafe { libc::open(c"/etc/hostname".as_ptr(), libc::O_RDONLY) };
        });
        assert!(
            libc::WIFSIGNALED(st) && libc::WTERMSIG(st) == libc::SIGSYS,
            "{st:#x}"
        );
        // Nor is an ioctl other than the vCPU's own.
        let st = child_with_filter(Thread::Vcpu, || {
            // SAFETY: an ioctl on stdin; it is to be refused before it runs.
            unsafe { libc::ioctl(0, libc::TIOCGWINSZ, 0) };
        });
        assert!(
            libc::WIFSIGNALED(st) && libc::WTERMSIG(st) == libc::SIGSYS,
            "{st:#x}"
        );
        // Writing and reading the clock are.
        let st = child_with_filter(Thread::Main, || {
            let mut ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: clock_gettime into a local.
            unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        });
        assert!(libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0, "{st:#x}");
    }
}
