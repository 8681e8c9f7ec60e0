//! The cgroup v2 device allow-list: v2 has no devices.allow file; access to device nodes is
//! decided by an eBPF program (BPF_PROG_TYPE_CGROUP_DEVICE) attached to the cgroup. We
//! generate it from the same rules v1 writes, load it and attach it.
//!
//! The program reads the request (type, access, major, minor), walks the rules from last to
//! first, and returns the first match's verdict (1 allow, 0 deny); no match denies.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use super::plan::DevRule;
use crate::error::{Context, Error, Result};

/// One eBPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    pub code: u8,
    /// dst in the low nibble, src in the high nibble.
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

const LDX_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
const AND32_K: u8 = 0x54; // BPF_ALU | BPF_AND | BPF_K
const RSH32_K: u8 = 0x74; // BPF_ALU | BPF_RSH | BPF_K
const MOV64_X: u8 = 0xbf; // BPF_ALU64 | BPF_MOV | BPF_X
const MOV64_K: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K
const JNE_K: u8 = 0x55; // BPF_JMP | BPF_JNE | BPF_K
const JEQ_K: u8 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const EXIT: u8 = 0x95;

const fn i(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: dst | (src << 4),
        off,
        imm,
    }
}

/// Registers: r2 device type, r3 requested access, r4 major, r5 minor; r1 scratch.
pub fn program(rules: &[DevRule]) -> Vec<Insn> {
    let mut p = vec![
        i(LDX_W, 2, 1, 0, 0),
        i(AND32_K, 2, 0, 0, 0xffff),
        i(LDX_W, 3, 1, 0, 0),
        i(RSH32_K, 3, 0, 0, 16),
        i(LDX_W, 4, 1, 4, 0),
        i(LDX_W, 5, 1, 8, 0),
    ];
    for r in rules.iter().rev() {
        let mut block = Vec::new();
        // Each check jumps past the rest of the block when it fails; offsets are filled in
        // once the block's length is known (`off` holds the index of the check for now).
        match r.kind {
            'b' => block.push(i(JNE_K, 2, 0, 0, 1)),
            'c' => block.push(i(JNE_K, 2, 0, 0, 2)),
            'a' => {}
            // Other types (fifos) are never device-checked by the kernel.
            _ => continue,
        }
        if r.allow {
            // Allow only when every requested bit is granted: (req & !rule) == 0.
            block.push(i(MOV64_X, 1, 3, 0, 0));
            block.push(i(AND32_K, 1, 0, 0, !(r.access as i32) & 0x7));
            block.push(i(JNE_K, 1, 0, 0, 0));
        } else {
            // Deny when any requested bit is denied: (req & rule) != 0.
            block.push(i(MOV64_X, 1, 3, 0, 0));
            block.push(i(AND32_K, 1, 0, 0, r.access as i32));
            block.push(i(JEQ_K, 1, 0, 0, 0));
        }
        if let Some(m) = r.major {
            block.push(i(JNE_K, 4, 0, 0, m as i32));
        }
        if let Some(m) = r.minor {
            block.push(i(JNE_K, 5, 0, 0, m as i32));
        }
        block.push(i(MOV64_K, 0, 0, 0, r.allow as i32));
        block.push(i(EXIT, 0, 0, 0, 0));
        let len = block.len();
        for (k, ins) in block.iter_mut().enumerate() {
            if ins.code == JNE_K || ins.code == JEQ_K {
                ins.off = (len - k - 1) as i16;
            }
        }
        p.extend(block);
    }
    p.push(i(MOV64_K, 0, 0, 0, 0));
    p.push(i(EXIT, 0, 0, 0, 0));
    p
}

/// Run the program on one request, the way the kernel would (for tests).
pub fn eval(prog: &[Insn], kind: u32, access: u32, major: u32, minor: u32) -> u64 {
    let ctx = [kind | (access << 16), major, minor];
    let mut r = [0u64; 11];
    let mut pc = 0;
    loop {
        let ins = prog[pc];
        let (dst, src) = ((ins.regs & 0xf) as usize, (ins.regs >> 4) as usize);
        pc += 1;
        match ins.code {
            LDX_W => r[dst] = ctx[ins.off as usize / 4] as u64,
            AND32_K => r[dst] = (r[dst] as u32 & ins.imm as u32) as u64,
            RSH32_K => r[dst] = ((r[dst] as u32) >> ins.imm) as u64,
            MOV64_X => r[dst] = r[src],
            MOV64_K => r[dst] = ins.imm as i64 as u64,
            JNE_K if r[dst] != ins.imm as i64 as u64 => pc += ins.off as usize,
            JEQ_K if r[dst] == ins.imm as i64 as u64 => pc += ins.off as usize,
            JNE_K | JEQ_K => {}
            EXIT => return r[0],
            c => panic!("unexpected opcode {c:#x}"),
        }
    }
}

#[repr(C)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
}

#[repr(C)]
struct ProgAttach {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_DETACH: libc::c_long = 9;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_PROG_QUERY: libc::c_long = 16;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

fn load(prog: &[Insn], log_level: u32, log: &mut [u8]) -> std::io::Result<i32> {
    let license = c"Apache-2.0";
    let attr = ProgLoad {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: prog.len() as u32,
        insns: prog.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level,
        log_size: log.len() as u32,
        log_buf: log.as_mut_ptr() as u64,
        kern_version: 0,
        prog_flags: 0,
    };
    // SAFETY: the attribute points at live buffers (program, license, log) of the sizes given.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            &attr as *const ProgLoad,
            std::mem::size_of::<ProgLoad>(),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(fd as i32)
}

/// Load the filter for `rules` and attach it to the cgroup directory `dir`. The cgroup keeps
/// the program alive after this process exits.
pub fn attach(dir: &Path, rules: &[DevRule]) -> Result<()> {
    let prog = program(rules);
    let fd = load(&prog, 0, &mut []).or_else(|_| {
        // Load again with the verifier's log, for the error message.
        let mut log = vec![0u8; 1 << 16];
        load(&prog, 1, &mut log).map_err(|e| {
            let log = String::from_utf8_lossy(&log);
            let last = log
                .trim_matches(char::from(0))
                .lines()
                .last()
                .unwrap_or("")
                .to_string();
            Error::Msg(format!(
                "loading the device filter for {}: {e}: {last}",
                dir.display()
            ))
        })
    })?;
    // SAFETY: bpf returned a new descriptor that nothing else owns.
    let prog_fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let cg: OwnedFd = std::fs::File::open(dir)
        .ctx(|| format!("opening cgroup {}", dir.display()))?
        .into();
    let at = ProgAttach {
        target_fd: cg.as_raw_fd() as u32,
        attach_bpf_fd: prog_fd.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
    };
    // SAFETY: the attribute is a valid, fully initialised struct of the size given.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_ATTACH,
            &at as *const ProgAttach,
            std::mem::size_of::<ProgAttach>(),
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error())
            .ctx(|| format!("attaching the device filter to {}", dir.display()));
    }
    Ok(())
}

#[repr(C)]
struct ProgQuery {
    target_fd: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
    _pad: u32,
}

#[repr(C)]
struct GetFdById {
    prog_id: u32,
    next_id: u32,
    open_flags: u32,
}

fn bpf<T>(cmd: libc::c_long, attr: &T) -> std::io::Result<i64> {
    // SAFETY: `attr` is a fully initialised bpf_attr variant of the size passed; any pointers
    // in it point at live buffers of the sizes it states.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *const T,
            std::mem::size_of::<T>(),
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// The ids of the device programs attached to the cgroup `cg`.
fn attached(cg: &OwnedFd) -> std::io::Result<Vec<u32>> {
    let mut ids = [0u32; 64];
    let q = ProgQuery {
        target_fd: cg.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        query_flags: 0,
        attach_flags: 0,
        prog_ids: ids.as_mut_ptr() as u64,
        prog_cnt: ids.len() as u32,
        _pad: 0,
    };
    bpf(BPF_PROG_QUERY, &q)?;
    Ok(ids[..(q.prog_cnt as usize).min(ids.len())].to_vec())
}

/// The ids of the device programs attached to the cgroup directory `dir`.
pub fn attached_ids(dir: &Path) -> Result<Vec<u32>> {
    let cg: OwnedFd = std::fs::File::open(dir)
        .ctx(|| format!("opening cgroup {}", dir.display()))?
        .into();
    attached(&cg).ctx(|| format!("listing the device filters of {}", dir.display()))
}

/// Replace the device filter of the cgroup directory `dir` with one for `rules`: the new
/// program is attached first, then the old ones are detached, so that no device is ever
/// allowed by neither (programs attached together must all allow an access).
pub fn replace(dir: &Path, rules: &[DevRule]) -> Result<()> {
    let cg: OwnedFd = std::fs::File::open(dir)
        .ctx(|| format!("opening cgroup {}", dir.display()))?
        .into();
    let old = attached(&cg).ctx(|| format!("listing the device filters of {}", dir.display()))?;
    attach(dir, rules)?;
    for id in old {
        let fd = bpf(
            BPF_PROG_GET_FD_BY_ID,
            &GetFdById {
                prog_id: id,
                next_id: 0,
                open_flags: 0,
            },
        )
        .ctx(|| format!("device filter {id} of {}", dir.display()))?;
        // SAFETY: bpf returned a new descriptor that nothing else owns.
        let prog = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        let d = ProgAttach {
            target_fd: cg.as_raw_fd() as u32,
            attach_bpf_fd: prog.as_raw_fd() as u32,
            attach_type: BPF_CGROUP_DEVICE,
            attach_flags: 0,
        };
        bpf(BPF_PROG_DETACH, &d)
            .ctx(|| format!("detaching device filter {id} of {}", dir.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::plan::{device_rules, ACC_MKNOD, ACC_READ, ACC_WRITE};
    use super::*;

    const CHR: u32 = 2;
    const BLK: u32 = 1;

    #[test]
    fn default_rules_allow_the_default_devices_only() {
        let res: oci_spec::runtime::LinuxResources =
            serde_json::from_str(r#"{"devices":[{"allow":false,"access":"rwm"},{"allow":true,"type":"c","major":10,"minor":200,"access":"rw"}]}"#).unwrap();
        let p = program(&device_rules(Some(&res)));
        let rw = (ACC_READ | ACC_WRITE) as u32;
        assert_eq!(eval(&p, CHR, rw, 1, 3), 1, "/dev/null");
        assert_eq!(eval(&p, CHR, rw, 136, 4), 1, "a pty");
        assert_eq!(eval(&p, CHR, rw, 10, 200), 1, "/dev/net/tun, configured");
        assert_eq!(
            eval(&p, CHR, ACC_MKNOD as u32, 10, 200),
            1,
            "mknod is allowed for any char device"
        );
        assert_eq!(eval(&p, CHR, rw, 1, 1), 0, "/dev/mem");
        assert_eq!(eval(&p, BLK, ACC_READ as u32, 8, 0), 0, "a disk");
        assert_eq!(eval(&p, BLK, ACC_MKNOD as u32, 8, 0), 1);
    }

    #[test]
    fn later_rules_win_and_partial_access_is_checked() {
        let res: oci_spec::runtime::LinuxResources = serde_json::from_str(
            r#"{"devices":[{"allow":true,"access":"rwm"},{"allow":false,"type":"b","major":8,"access":"w"},{"allow":true,"type":"c","major":4,"minor":1,"access":"r"}]}"#,
        )
        .unwrap();
        let p = program(&device_rules(Some(&res)));
        assert_eq!(
            eval(&p, BLK, ACC_READ as u32, 8, 1),
            1,
            "read of a disk: only write is denied"
        );
        assert_eq!(
            eval(&p, BLK, (ACC_READ | ACC_WRITE) as u32, 8, 1),
            0,
            "read+write of a disk"
        );
        assert_eq!(eval(&p, CHR, ACC_READ as u32, 4, 1), 1);
        assert_eq!(
            eval(&p, CHR, (ACC_READ | ACC_WRITE) as u32, 4, 1),
            1,
            "the first rule allows all"
        );
    }

    /// Attach to a real cgroup2 directory and check the kernel enforces it (root only).
    #[test]
    fn kernel_enforces_the_filter() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let Some(root) = mi.lines().find_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            post.starts_with("cgroup2 ")
                .then(|| pre.split(' ').nth(4).unwrap().to_string())
        }) else {
            eprintln!("skipped: no cgroup2 mounted");
            return;
        };
        let dir = Path::new(&root).join(format!("cellvisor-devtest-{}", std::process::id()));
        std::fs::create_dir(&dir).unwrap();
        // Deny everything but /dev/zero.
        let rules = [DevRule {
            allow: true,
            kind: 'c',
            major: Some(1),
            minor: Some(5),
            access: ACC_READ,
        }];
        attach(&dir, &rules).unwrap();
        let first = probe(&dir);
        // Replaced: now /dev/null only.
        let rules = [DevRule {
            allow: true,
            kind: 'c',
            major: Some(1),
            minor: Some(3),
            access: ACC_READ | ACC_WRITE,
        }];
        replace(&dir, &rules).unwrap();
        let second = probe(&dir);
        let cg: OwnedFd = std::fs::File::open(&dir).unwrap().into();
        let left = attached(&cg).unwrap().len();
        drop(cg);
        std::fs::remove_dir(&dir).unwrap();
        assert_eq!(
            first,
            (false, true),
            "/dev/null must be denied, /dev/zero allowed"
        );
        assert_eq!(
            second,
            (true, false),
            "after replace: /dev/null allowed, /dev/zero denied"
        );
        assert_eq!(left, 1, "the old filter must be detached");
    }

    /// Can a process in cgroup `dir` open (/dev/null for writing, /dev/zero for reading)?
    fn probe(dir: &Path) -> (bool, bool) {
        let procs = std::ffi::CString::new(dir.join("cgroup.procs").to_str().unwrap()).unwrap();
        // SAFETY: the child only makes async-signal-safe calls before _exit.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: plain syscalls on valid C strings in the forked child.
            unsafe {
                let f = libc::open(procs.as_ptr(), libc::O_WRONLY);
                if f < 0 || libc::write(f, b"0".as_ptr().cast(), 1) != 1 {
                    libc::_exit(10);
                }
                let null_ok = libc::open(c"/dev/null".as_ptr(), libc::O_WRONLY) >= 0;
                let zero_ok = libc::open(c"/dev/zero".as_ptr(), libc::O_RDONLY) >= 0;
                libc::_exit(null_ok as i32 | (zero_ok as i32) << 1);
            }
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        let code = libc::WEXITSTATUS(status);
        assert!(code < 4, "the probe could not join the cgroup ({code})");
        (code & 1 != 0, code & 2 != 0)
    }
}
