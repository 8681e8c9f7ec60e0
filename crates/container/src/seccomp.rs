//! OCI seccomp profiles compiled to classic BPF by our own small compiler, and installed.
//!
//! Layout of the program: check the architecture, load the syscall number, then a binary
//! search over the numbers the profile names (so a large profile costs ~log2(n) comparisons
//! per syscall), each leaf holding that syscall's rules in profile order: argument checks,
//! then the rule's action. Anything unmatched gets the default action.

use std::collections::BTreeMap;
use std::str::FromStr;

use oci_spec::runtime::{
    LinuxSeccomp, LinuxSeccompAction, LinuxSeccompFilterFlag, LinuxSeccompOperator,
};

/// One classic BPF instruction (`struct sock_filter`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

// BPF opcodes used here.
const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const JGT_K: u16 = 0x25;
const JGE_K: u16 = 0x35;
const JA: u16 = 0x05;
const AND_K: u16 = 0x54; // BPF_ALU | BPF_AND | BPF_K
const RET_K: u16 = 0x06;

const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const fn off_arg_lo(i: u32) -> u32 {
    16 + 8 * i
}
const fn off_arg_hi(i: u32) -> u32 {
    16 + 8 * i + 4
}

pub const RET_KILL_PROCESS: u32 = 0x8000_0000;
pub const RET_ALLOW: u32 = 0x7fff_0000;

#[cfg(target_arch = "x86_64")]
const NATIVE_ARCH: u32 = 0xc000_003e;
#[cfg(target_arch = "aarch64")]
const NATIVE_ARCH: u32 = 0xc000_00b7;
#[cfg(target_arch = "x86_64")]
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// A jump target while assembling.
#[derive(Debug, Clone, Copy)]
enum T {
    Next,
    L(usize),
}

#[derive(Debug)]
enum Op {
    Insn(Insn),
    Jmp { code: u16, k: u32, jt: T, jf: T },
    Ja(usize),
    Label(usize),
}

#[derive(Default)]
struct Asm {
    ops: Vec<Op>,
    labels: usize,
}

impl Asm {
    fn label(&mut self) -> usize {
        self.labels += 1;
        self.labels - 1
    }
    fn bind(&mut self, l: usize) {
        self.ops.push(Op::Label(l));
    }
    fn ld(&mut self, off: u32) {
        self.ops.push(Op::Insn(Insn {
            code: LD_W_ABS,
            jt: 0,
            jf: 0,
            k: off,
        }));
    }
    fn and(&mut self, k: u32) {
        self.ops.push(Op::Insn(Insn {
            code: AND_K,
            jt: 0,
            jf: 0,
            k,
        }));
    }
    fn ret(&mut self, k: u32) {
        self.ops.push(Op::Insn(Insn {
            code: RET_K,
            jt: 0,
            jf: 0,
            k,
        }));
    }
    fn jmp(&mut self, code: u16, k: u32, jt: T, jf: T) {
        self.ops.push(Op::Jmp { code, k, jt, jf });
    }
    fn ja(&mut self, l: usize) {
        self.ops.push(Op::Ja(l));
    }

    fn finish(self) -> Result<Vec<Insn>, String> {
        let mut pos = vec![0usize; self.labels];
        let mut n = 0;
        for op in &self.ops {
            match op {
                Op::Label(l) => pos[*l] = n,
                _ => n += 1,
            }
        }
        let mut out = Vec::with_capacity(n);
        for op in self.ops {
            let here = out.len();
            let rel = |t: T| -> Result<u8, String> {
                match t {
                    T::Next => Ok(0),
                    T::L(l) => u8::try_from(pos[l] - here - 1)
                        .map_err(|_| "a rule is too long for a BPF jump".to_string()),
                }
            };
            match op {
                Op::Label(_) => {}
                Op::Insn(i) => out.push(i),
                Op::Jmp { code, k, jt, jf } => out.push(Insn {
                    code,
                    jt: rel(jt)?,
                    jf: rel(jf)?,
                    k,
                }),
                Op::Ja(l) => out.push(Insn {
                    code: JA,
                    jt: 0,
                    jf: 0,
                    k: (pos[l] - here - 1) as u32,
                }),
            }
        }
        if out.len() > 4096 {
            return Err(format!(
                "the profile compiles to {} instructions (at most 4096)",
                out.len()
            ));
        }
        Ok(out)
    }
}

fn action(a: LinuxSeccompAction, errno: Option<u32>) -> Result<u32, String> {
    let errno = errno.map(|e| e & 0xffff).or(Some(libc::EPERM as u32));
    Ok(match a {
        LinuxSeccompAction::ScmpActErrno | LinuxSeccompAction::ScmpActTrace => a.as_u32(errno),
        // SCMP_ACT_KILL kills the thread in libseccomp's terms (SECCOMP_RET_KILL_THREAD = 0).
        _ => a.as_u32(None),
    })
}

/// One argument condition.
#[derive(Debug, Clone)]
struct Cond {
    index: u32,
    op: LinuxSeccompOperator,
    value: u64,
    value_two: u64,
}

#[derive(Debug, Clone)]
struct Rule {
    conds: Vec<Cond>,
    ret: u32,
}

/// Emit the test of one condition: fall through when it holds, jump to `fail` when not.
fn emit_cond(a: &mut Asm, c: &Cond, fail: usize) {
    use LinuxSeccompOperator as O;
    let (hi, lo) = ((c.value >> 32) as u32, c.value as u32);
    let f = T::L(fail);
    match c.op {
        O::ScmpCmpEq => {
            a.ld(off_arg_hi(c.index));
            a.jmp(JEQ_K, hi, T::Next, f);
            a.ld(off_arg_lo(c.index));
            a.jmp(JEQ_K, lo, T::Next, f);
        }
        O::ScmpCmpNe => {
            let ok = a.label();
            a.ld(off_arg_hi(c.index));
            a.jmp(JEQ_K, hi, T::Next, T::L(ok));
            a.ld(off_arg_lo(c.index));
            a.jmp(JEQ_K, lo, f, T::Next);
            a.bind(ok);
        }
        O::ScmpCmpMaskedEq => {
            let (mhi, mlo) = (hi, lo);
            let (ehi, elo) = ((c.value_two >> 32) as u32, c.value_two as u32);
            a.ld(off_arg_hi(c.index));
            a.and(mhi);
            a.jmp(JEQ_K, ehi, T::Next, f);
            a.ld(off_arg_lo(c.index));
            a.and(mlo);
            a.jmp(JEQ_K, elo, T::Next, f);
        }
        // Unsigned 64-bit comparisons: decide on the high word, then the low word.
        O::ScmpCmpGt | O::ScmpCmpGe | O::ScmpCmpLt | O::ScmpCmpLe => {
            let ok = a.label();
            let greater = matches!(c.op, O::ScmpCmpGt | O::ScmpCmpGe);
            let (above, below) = if greater {
                (T::L(ok), f)
            } else {
                (f, T::L(ok))
            };
            a.ld(off_arg_hi(c.index));
            a.jmp(JGT_K, hi, above, T::Next);
            a.jmp(JEQ_K, hi, T::Next, below);
            a.ld(off_arg_lo(c.index));
            match c.op {
                O::ScmpCmpGt => a.jmp(JGT_K, lo, T::Next, f),
                O::ScmpCmpGe => a.jmp(JGE_K, lo, T::Next, f),
                O::ScmpCmpLt => a.jmp(JGE_K, lo, f, T::Next),
                _ => a.jmp(JGT_K, lo, f, T::Next),
            }
            a.bind(ok);
        }
    }
}

/// The rules of one syscall, then the default action.
fn emit_leaf(a: &mut Asm, rules: &[Rule], default: u32) {
    for r in rules {
        let next = a.label();
        for c in &r.conds {
            emit_cond(a, c, next);
        }
        a.ret(r.ret);
        a.bind(next);
    }
    a.ret(default);
}

/// Binary search over sorted syscall numbers; the accumulator holds the number throughout.
fn emit_tree(a: &mut Asm, nrs: &[(u32, Vec<Rule>)], default: u32) {
    if nrs.len() <= 3 {
        for (nr, rules) in nrs {
            let skip = a.label();
            a.jmp(JEQ_K, *nr, T::Next, T::L(skip));
            emit_leaf(a, rules, default);
            // Every leaf ends in a return, so only the skip path gets here, with the
            // syscall number still in the accumulator.
            a.bind(skip);
        }
        a.ret(default);
        return;
    }
    let mid = nrs.len() / 2;
    let right = a.label();
    // nr >= nrs[mid] → right half (through a long jump); else fall into the left half.
    let left = a.label();
    a.jmp(JGE_K, nrs[mid].0, T::Next, T::L(left));
    a.ja(right);
    a.bind(left);
    emit_tree(a, &nrs[..mid], default);
    a.bind(right);
    emit_tree(a, &nrs[mid..], default);
}

/// Syscall number of a name on this architecture, if it exists here.
pub fn syscall_nr(name: &str) -> Option<u32> {
    syscalls::Sysno::from_str(name).ok().map(|s| s.id() as u32)
}

/// A compiled filter and the flags to install it with.
#[derive(Debug, Clone)]
pub struct Filter {
    pub prog: Vec<Insn>,
    pub flags: libc::c_ulong,
    /// Where the notify descriptor goes, when a rule says SCMP_ACT_NOTIFY.
    pub listener: Option<Listener>,
}

/// The seccomp agent of `linux.seccomp.listenerPath` (see [`crate::notify`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub path: std::path::PathBuf,
    pub metadata: Option<String>,
}

/// SECCOMP_FILTER_FLAG_NEW_LISTENER: the filter's install returns a notify descriptor.
const FLAG_NEW_LISTENER: libc::c_ulong = 8;

/// Compile an OCI seccomp section. Syscall names unknown on this architecture are skipped
/// (profiles list names of every architecture), as libseccomp does.
pub fn compile(sc: &LinuxSeccomp) -> Result<Filter, String> {
    if sc.default_action() == LinuxSeccompAction::ScmpActNotify {
        // As runc: the runtime's own last calls (and the agent's hand-over) would wait on it.
        return Err("SCMP_ACT_NOTIFY cannot be the default action".into());
    }
    let default = action(sc.default_action(), sc.default_errno_ret())?;
    let notifies = sc
        .syscalls()
        .as_deref()
        .unwrap_or_default()
        .iter()
        .any(|s| s.action() == LinuxSeccompAction::ScmpActNotify && !s.names().is_empty());
    let listener = match (notifies, sc.listener_path()) {
        (false, _) => None,
        (true, None) => {
            return Err("SCMP_ACT_NOTIFY needs listenerPath, the seccomp agent's socket".into())
        }
        (true, Some(p)) if !p.is_absolute() => {
            return Err(format!(
                "listenerPath {}: not an absolute path",
                p.display()
            ))
        }
        (true, Some(p)) => Some(Listener {
            path: p.clone(),
            metadata: sc.listener_metadata().clone(),
        }),
    };
    let mut by_nr: BTreeMap<u32, Vec<Rule>> = BTreeMap::new();
    for (i, s) in sc
        .syscalls()
        .as_deref()
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let ret = action(s.action(), s.errno_ret()).map_err(|e| format!("syscalls[{i}]: {e}"))?;
        let mut conds = Vec::new();
        for arg in s.args().as_deref().unwrap_or_default() {
            if arg.index() > 5 {
                return Err(format!(
                    "syscalls[{i}]: argument index {} is above 5",
                    arg.index()
                ));
            }
            conds.push(Cond {
                index: arg.index() as u32,
                op: arg.op(),
                value: arg.value(),
                value_two: arg.value_two().unwrap_or(0),
            });
        }
        if ret == default && conds.is_empty() {
            continue;
        }
        for name in s.names() {
            if let Some(nr) = syscall_nr(name) {
                by_nr.entry(nr).or_default().push(Rule {
                    conds: conds.clone(),
                    ret,
                });
            }
        }
    }
    let mut a = Asm::default();
    // Only native syscalls are described by the profile: any other architecture is killed.
    a.ld(OFF_ARCH);
    let arch_ok = a.label();
    a.jmp(JEQ_K, NATIVE_ARCH, T::L(arch_ok), T::Next);
    a.ret(RET_KILL_PROCESS);
    a.bind(arch_ok);
    a.ld(OFF_NR);
    #[cfg(target_arch = "x86_64")]
    {
        // x32 syscalls share the x86_64 audit arch; they are not part of the profile.
        let not_x32 = a.label();
        a.jmp(JGE_K, X32_SYSCALL_BIT, T::Next, T::L(not_x32));
        a.ret(LinuxSeccompAction::ScmpActErrno.as_u32(Some(libc::ENOSYS as u32)));
        a.bind(not_x32);
    }
    let list: Vec<(u32, Vec<Rule>)> = by_nr.into_iter().collect();
    emit_tree(&mut a, &list, default);
    let prog = a.finish()?;
    let mut flags = 0;
    for f in sc.flags().as_deref().unwrap_or_default() {
        flags |= match f {
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => 1,
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => 2,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => 4,
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => 32,
        };
    }
    if listener.is_some() {
        flags |= FLAG_NEW_LISTENER;
    }
    Ok(Filter {
        prog,
        flags,
        listener,
    })
}

/// Install a compiled filter on the calling thread; with [`FLAG_NEW_LISTENER`] in its flags,
/// the notify descriptor it returns.
pub fn install(f: &Filter) -> std::io::Result<Option<std::os::fd::OwnedFd>> {
    #[repr(C)]
    struct SockFprog {
        len: u16,
        filter: *const Insn,
    }
    let prog = SockFprog {
        len: f.prog.len() as u16,
        filter: f.prog.as_ptr(),
    };
    // SAFETY: `prog` points at a live, correctly laid out filter for the duration of the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            1, /* SECCOMP_SET_MODE_FILTER */
            f.flags,
            &prog as *const SockFprog,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if f.flags & FLAG_NEW_LISTENER == 0 {
        return Ok(None);
    }
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(Some(unsafe {
        std::os::fd::FromRawFd::from_raw_fd(r as i32)
    }))
}

/// A classic-BPF interpreter for seccomp programs, to test what a compiled filter decides.
pub fn run(prog: &[Insn], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
    let mut data = [0u8; 64];
    data[0..4].copy_from_slice(&nr.to_ne_bytes());
    data[4..8].copy_from_slice(&arch.to_ne_bytes());
    for (i, a) in args.iter().enumerate() {
        data[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_ne_bytes());
    }
    let (mut acc, mut pc) = (0u32, 0usize);
    loop {
        let i = prog[pc];
        pc += 1;
        match i.code {
            LD_W_ABS => {
                let o = i.k as usize;
                acc = u32::from_ne_bytes(data[o..o + 4].try_into().unwrap());
            }
            AND_K => acc &= i.k,
            RET_K => return i.k,
            JA => pc += i.k as usize,
            JEQ_K | JGT_K | JGE_K => {
                let c = match i.code {
                    JEQ_K => acc == i.k,
                    JGT_K => acc > i.k,
                    _ => acc >= i.k,
                };
                pc += if c { i.jt } else { i.jf } as usize;
            }
            c => panic!("unexpected opcode {c:#x}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(j: &str) -> Filter {
        compile(&serde_json::from_str(j).unwrap()).unwrap()
    }
    const EPERM: u32 = 0x0005_0001;
    fn nr(n: &str) -> u32 {
        syscall_nr(n).unwrap()
    }

    #[test]
    fn allow_list_with_errno_default() {
        let f = profile(
            r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read","write","exit_group"],"action":"SCMP_ACT_ALLOW"}]}"#,
        );
        assert_eq!(run(&f.prog, NATIVE_ARCH, nr("read"), [0; 6]), RET_ALLOW);
        assert_eq!(
            run(&f.prog, NATIVE_ARCH, nr("exit_group"), [0; 6]),
            RET_ALLOW
        );
        assert_eq!(run(&f.prog, NATIVE_ARCH, nr("mkdir"), [0; 6]), EPERM);
        assert_eq!(
            run(&f.prog, 0x4000_0003, nr("read"), [0; 6]),
            RET_KILL_PROCESS
        );
    }

    #[test]
    fn many_syscalls_binary_search() {
        // Every syscall number from 0 to 299 that exists, each with its own errno.
        let names: Vec<String> = (0..300u32)
            .filter_map(|n| syscalls::Sysno::new(n as usize).map(|s| s.name().to_string()))
            .collect();
        let rules: Vec<String> = names
            .iter()
            .map(|n| {
                format!(
                    r#"{{"names":["{n}"],"action":"SCMP_ACT_ERRNO","errnoRet":{}}}"#,
                    nr(n) + 1
                )
            })
            .collect();
        let f = profile(&format!(
            r#"{{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{}]}}"#,
            rules.join(",")
        ));
        for n in &names {
            assert_eq!(
                run(&f.prog, NATIVE_ARCH, nr(n), [0; 6]),
                0x0005_0000 | (nr(n) + 1),
                "{n}"
            );
        }
        assert_eq!(run(&f.prog, NATIVE_ARCH, 400, [0; 6]), RET_ALLOW);
        assert!(f.prog.len() < 2000);
    }

    #[test]
    fn argument_comparisons_are_64_bit() {
        let f = profile(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
              {"names":["personality"],"action":"SCMP_ACT_ERRNO","args":[{"index":0,"value":4294967296,"op":"SCMP_CMP_GT"}]},
              {"names":["socket"],"action":"SCMP_ACT_ERRNO","args":[{"index":0,"value":16,"op":"SCMP_CMP_EQ"},{"index":2,"value":9,"op":"SCMP_CMP_NE"}]},
              {"names":["clone"],"action":"SCMP_ACT_ERRNO","args":[{"index":0,"value":2114060288,"valueTwo":0,"op":"SCMP_CMP_MASKED_EQ"}]},
              {"names":["setuid"],"action":"SCMP_ACT_ERRNO","args":[{"index":0,"value":1000,"op":"SCMP_CMP_LT"}]},
              {"names":["setgid"],"action":"SCMP_ACT_ERRNO","args":[{"index":0,"value":1000,"op":"SCMP_CMP_LE"}]},
              {"names":["setreuid"],"action":"SCMP_ACT_ERRNO","args":[{"index":1,"value":1000,"op":"SCMP_CMP_GE"}]}
            ]}"#,
        );
        let r = |n: &str, args: [u64; 6]| run(&f.prog, NATIVE_ARCH, nr(n), args);
        assert_eq!(r("personality", [4294967297, 0, 0, 0, 0, 0]), EPERM);
        assert_eq!(r("personality", [4294967296, 0, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(r("personality", [0xffff_ffff, 0, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(r("socket", [16, 0, 0, 0, 0, 0]), EPERM);
        assert_eq!(r("socket", [16, 0, 9, 0, 0, 0]), RET_ALLOW);
        assert_eq!(r("socket", [16 | (1 << 32), 0, 0, 0, 0, 0]), RET_ALLOW);
        // MASKED_EQ: no namespace flag set → matched (errno), a flag set → allowed.
        assert_eq!(r("clone", [0x11, 0, 0, 0, 0, 0]), EPERM);
        assert_eq!(r("clone", [0x2000_0000, 0, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(r("setuid", [999, 0, 0, 0, 0, 0]), EPERM);
        assert_eq!(r("setuid", [1000, 0, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(r("setuid", [1 << 33, 0, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(r("setgid", [1000, 0, 0, 0, 0, 0]), EPERM);
        assert_eq!(r("setgid", [1001, 0, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(r("setreuid", [0, 1000, 0, 0, 0, 0]), EPERM);
        assert_eq!(r("setreuid", [0, 999, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(r("setreuid", [0, 1 << 40, 0, 0, 0, 0]), EPERM);
    }

    #[test]
    fn unknown_names_are_skipped() {
        let f = profile(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["no_such_call"],"action":"SCMP_ACT_KILL"}]}"#,
        );
        assert_eq!(run(&f.prog, NATIVE_ARCH, 0, [0; 6]), RET_ALLOW);
    }

    #[test]
    fn notify_needs_a_listener_and_asks_for_a_notify_descriptor() {
        let err = |j: &str| compile(&serde_json::from_str(j).unwrap()).unwrap_err();
        assert!(
            err(r#"{"defaultAction":"SCMP_ACT_NOTIFY","listenerPath":"/a"}"#)
                .contains("cannot be the default action")
        );
        let rule = r#""syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_NOTIFY"}]"#;
        assert!(
            err(&format!(r#"{{"defaultAction":"SCMP_ACT_ALLOW",{rule}}}"#))
                .contains("needs listenerPath")
        );
        assert!(err(&format!(
            r#"{{"defaultAction":"SCMP_ACT_ALLOW","listenerPath":"rel.sock",{rule}}}"#
        ))
        .contains("not an absolute path"));
        let f = profile(&format!(
            r#"{{"defaultAction":"SCMP_ACT_ALLOW","listenerPath":"/run/agent.sock","listenerMetadata":"m=1",{rule}}}"#
        ));
        assert_eq!(f.flags & FLAG_NEW_LISTENER, FLAG_NEW_LISTENER);
        let l = f.listener.unwrap();
        assert_eq!(l.path, std::path::Path::new("/run/agent.sock"));
        assert_eq!(l.metadata.as_deref(), Some("m=1"));
        let mkdir = syscall_nr("mkdirat").unwrap();
        let f = profile(&format!(
            r#"{{"defaultAction":"SCMP_ACT_ALLOW","listenerPath":"/a",{rule}}}"#
        ));
        assert_eq!(
            run(&f.prog, NATIVE_ARCH, mkdir, [0; 6]),
            libc::SECCOMP_RET_USER_NOTIF
        );
        // Without a notify rule the path is ignored, as the spec says.
        let f = profile(r#"{"defaultAction":"SCMP_ACT_ALLOW","listenerPath":"/a"}"#);
        assert!(f.listener.is_none());
        assert_eq!(f.flags & FLAG_NEW_LISTENER, 0);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn x32_is_refused() {
        let f = profile(r#"{"defaultAction":"SCMP_ACT_ALLOW"}"#);
        assert_eq!(
            run(&f.prog, NATIVE_ARCH, X32_SYSCALL_BIT | 1, [0; 6]),
            0x0005_0000 | libc::ENOSYS as u32
        );
    }
}
