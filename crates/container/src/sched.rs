//! `process.scheduler` (runtime-spec 1.2): sched_setattr(2)'s fields. [`plan`] checks them
//! without a syscall (what the kernel would refuse is refused here, with its field named);
//! [`apply`] sets them on the calling process, and says why when the kernel refuses.

use oci_spec::runtime::{LinuxSchedulerFlag, LinuxSchedulerPolicy, Scheduler};

use crate::config_err;
use crate::error::{Context, Result};

const SCHED_OTHER: u32 = 0;
const SCHED_FIFO: u32 = 1;
const SCHED_RR: u32 = 2;
const SCHED_BATCH: u32 = 3;
const SCHED_IDLE: u32 = 5;
const SCHED_DEADLINE: u32 = 6;

const SCHED_FLAG_RESET_ON_FORK: u64 = 0x01;
const SCHED_FLAG_RECLAIM: u64 = 0x02;
const SCHED_FLAG_DL_OVERRUN: u64 = 0x04;
const SCHED_FLAG_KEEP_POLICY: u64 = 0x08;
const SCHED_FLAG_KEEP_PARAMS: u64 = 0x10;

/// The smallest SCHED_DEADLINE runtime the kernel takes (2^DL_SCALE ns).
const DL_MIN_RUNTIME_NS: u64 = 1 << 10;

/// `struct sched_attr` (its first version, 48 bytes; glibc has no wrapper for the call).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Attr {
    size: u32,
    pub policy: u32,
    pub flags: u64,
    pub nice: i32,
    pub priority: u32,
    pub runtime: u64,
    pub deadline: u64,
    pub period: u64,
}

fn policy_name(p: LinuxSchedulerPolicy) -> &'static str {
    match p {
        LinuxSchedulerPolicy::SchedOther => "SCHED_OTHER",
        LinuxSchedulerPolicy::SchedFifo => "SCHED_FIFO",
        LinuxSchedulerPolicy::SchedRr => "SCHED_RR",
        LinuxSchedulerPolicy::SchedBatch => "SCHED_BATCH",
        LinuxSchedulerPolicy::SchedIso => "SCHED_ISO",
        LinuxSchedulerPolicy::SchedIdle => "SCHED_IDLE",
        LinuxSchedulerPolicy::SchedDeadline => "SCHED_DEADLINE",
    }
}

/// The attributes `s` asks for, or the first thing in it the kernel would refuse.
pub fn plan(s: &Scheduler) -> Result<Attr> {
    let name = policy_name(*s.policy());
    let policy = match s.policy() {
        LinuxSchedulerPolicy::SchedOther => SCHED_OTHER,
        LinuxSchedulerPolicy::SchedFifo => SCHED_FIFO,
        LinuxSchedulerPolicy::SchedRr => SCHED_RR,
        LinuxSchedulerPolicy::SchedBatch => SCHED_BATCH,
        LinuxSchedulerPolicy::SchedIdle => SCHED_IDLE,
        LinuxSchedulerPolicy::SchedDeadline => SCHED_DEADLINE,
        LinuxSchedulerPolicy::SchedIso => {
            return Err(config_err!(
                "process.scheduler.policy: SCHED_ISO is not a Linux policy"
            ))
        }
    };
    let mut a = Attr {
        size: std::mem::size_of::<Attr>() as u32,
        policy,
        ..Attr::default()
    };
    let priority = s.priority().unwrap_or(0);
    match policy {
        SCHED_FIFO | SCHED_RR => {
            if !(1..=99).contains(&priority) {
                return Err(config_err!(
                    "process.scheduler.priority: {name} needs a priority in 1..99, not {priority}"
                ));
            }
            a.priority = priority as u32;
        }
        _ if priority != 0 => {
            return Err(config_err!(
                "process.scheduler.priority: {name} takes no priority (0), not {priority}"
            ))
        }
        _ => {}
    }
    if let Some(nice) = *s.nice() {
        if !(-20..=19).contains(&nice) {
            return Err(config_err!(
                "process.scheduler.nice: {nice} is outside -20..19"
            ));
        }
        a.nice = nice;
    }
    let (runtime, deadline, period) = (
        s.runtime().unwrap_or(0),
        s.deadline().unwrap_or(0),
        s.period().unwrap_or(0),
    );
    if policy == SCHED_DEADLINE {
        if runtime < DL_MIN_RUNTIME_NS {
            return Err(config_err!(
                "process.scheduler.runtime: SCHED_DEADLINE needs a runtime of at least {DL_MIN_RUNTIME_NS} ns, not {runtime}"
            ));
        }
        // A deadline of 0 is the period (as chrt takes it); a period of 0 the deadline.
        let deadline = if deadline == 0 { period } else { deadline };
        if deadline < runtime || (period != 0 && period < deadline) || deadline >> 63 != 0 {
            return Err(config_err!(
                "process.scheduler: SCHED_DEADLINE needs runtime <= deadline <= period (ns), not {runtime} <= {deadline} <= {period}"
            ));
        }
        (a.runtime, a.deadline, a.period) = (runtime, deadline, period);
    } else if runtime != 0 || deadline != 0 || period != 0 {
        return Err(config_err!(
            "process.scheduler: runtime, deadline and period are for SCHED_DEADLINE, not {name}"
        ));
    }
    for f in s.flags().as_deref().unwrap_or_default() {
        a.flags |= match f {
            LinuxSchedulerFlag::SchedResetOnFork => SCHED_FLAG_RESET_ON_FORK,
            LinuxSchedulerFlag::SchedFlagReclaim => SCHED_FLAG_RECLAIM,
            LinuxSchedulerFlag::SchedFlagDLOverrun => SCHED_FLAG_DL_OVERRUN,
            LinuxSchedulerFlag::SchedFlagKeepPolicy => SCHED_FLAG_KEEP_POLICY,
            LinuxSchedulerFlag::SchedFlagKeepParams => SCHED_FLAG_KEEP_PARAMS,
            LinuxSchedulerFlag::SchedFlagUtilClampMin | LinuxSchedulerFlag::SchedFlagUtilClampMax => {
                return Err(config_err!(
                    "process.scheduler.flags: the utilization clamps need values the runtime spec does not give"
                ))
            }
        };
    }
    Ok(a)
}

/// Give the calling process (and the threads it will make) the attributes `a`.
pub fn apply(a: &Attr) -> Result<()> {
    // SAFETY: sched_setattr(0 = this thread, a live sched_attr of its declared size, no flags).
    let r = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, a as *const Attr, 0) };
    if r == 0 {
        return Ok(());
    }
    let e = nix::Error::last();
    let hint = match (a.policy, e) {
        (SCHED_FIFO | SCHED_RR, nix::Error::EPERM) => {
            " (with cgroup v1 real-time group scheduling, the container's cgroup needs a budget: linux.resources.cpu.realtimeRuntime)"
        }
        (SCHED_DEADLINE, nix::Error::EPERM | nix::Error::EBUSY) => {
            " (SCHED_DEADLINE needs the container's CPUs to be a root domain of their own: an exclusive cpuset)"
        }
        _ => "",
    };
    Err(e).ctx(|| format!("process.scheduler: setting {}{hint}", describe(a)))
}

/// Can a process with `a` run on `cpus` (empty: every CPU) of this host's `online` ones?
/// SCHED_DEADLINE's admission control needs the task's CPUs to cover a root domain: on fewer
/// than all CPUs they must be made one, which cgroup v2's isolated partition does (the
/// container's exclusive cores) and cgroup v1 does only when the root cpuset stops balancing
/// the whole host.
pub fn check_cpus(a: &Attr, cpus: &[u32], online: &[u32], v2: bool, exclusive: bool) -> Result<()> {
    let all = cpus.is_empty() || online.iter().all(|c| cpus.contains(c));
    if a.policy != SCHED_DEADLINE || all || (v2 && exclusive) {
        return Ok(());
    }
    use domain::profile::cpu_list_string as list;
    let on = format!("cpus {} (of {})", list(cpus), list(online));
    Err(if v2 {
        config_err!(
            "process.scheduler: SCHED_DEADLINE on {on} needs them as a root domain of their own: add the annotation {}=true",
            crate::cgroups::exclusive::ANNOTATION
        )
    } else {
        config_err!(
            "process.scheduler: SCHED_DEADLINE on {on} needs them as a root domain of their own, which cgroup v1 makes only when the root cpuset stops balancing the whole host (cellvisor does not do that); use cgroup v2 with {}=true, or every CPU",
            crate::cgroups::exclusive::ANNOTATION
        )
    })
}

/// `SCHED_FIFO priority 50`, `SCHED_DEADLINE runtime 1000000 ns ...`.
pub fn describe(a: &Attr) -> String {
    match a.policy {
        SCHED_FIFO => format!("SCHED_FIFO priority {}", a.priority),
        SCHED_RR => format!("SCHED_RR priority {}", a.priority),
        SCHED_DEADLINE => format!(
            "SCHED_DEADLINE runtime {} deadline {} period {} ns",
            a.runtime, a.deadline, a.period
        ),
        SCHED_BATCH => format!("SCHED_BATCH nice {}", a.nice),
        SCHED_IDLE => "SCHED_IDLE".into(),
        _ => format!("SCHED_OTHER nice {}", a.nice),
    }
}

/// The runtime spec's names of two scheduler flags, as oci-spec 0.10 spells them: its
/// `LinuxSchedulerFlag` (de)serializes `SCHED_FLAG_RESET_ON_FORK` as `SCHED_RESET_ON_FORK` and
/// `SCHED_FLAG_DL_OVERRUN` as `SCHED_FLAG_D_L_OVERRUN`, and refuses the spec's own spelling.
/// Applied to a process (config.json's or exec's process.json) before oci-spec reads it.
pub fn spec_flag_names(process: &mut serde_json::Value) {
    let Some(flags) = process
        .pointer_mut("/scheduler/flags")
        .and_then(|f| f.as_array_mut())
    else {
        return;
    };
    for f in flags {
        let theirs = match f.as_str() {
            Some("SCHED_FLAG_RESET_ON_FORK") => "SCHED_RESET_ON_FORK",
            Some("SCHED_FLAG_DL_OVERRUN") => "SCHED_FLAG_D_L_OVERRUN",
            _ => continue,
        };
        *f = serde_json::Value::from(theirs);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_on_some_cpus_needs_them_exclusive_on_v2() {
        let dl = sched(serde_json::json!({"policy": "SCHED_DEADLINE", "runtime": 1_000_000, "period": 10_000_000})).unwrap();
        let fifo = sched(serde_json::json!({"policy": "SCHED_FIFO", "priority": 5})).unwrap();
        let on = [0, 1];
        // Every CPU (or none named): the root domain is all of them.
        assert!(check_cpus(&dl, &[], &on, false, false).is_ok());
        assert!(check_cpus(&dl, &[0, 1], &on, false, false).is_ok());
        assert!(check_cpus(&fifo, &[1], &on, false, false).is_ok());
        assert!(check_cpus(&dl, &[1], &on, true, true).is_ok());
        let e = check_cpus(&dl, &[1], &on, true, false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("cpus 1 (of 0-1)") && e.contains("io.cellvisor.cpus.exclusive=true"),
            "{e}"
        );
        let e = check_cpus(&dl, &[1], &on, false, true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("cgroup v1"), "{e}");
    }

    fn sched(json: serde_json::Value) -> Result<Attr> {
        let mut p = serde_json::json!({ "scheduler": json });
        spec_flag_names(&mut p);
        let s: Scheduler = serde_json::from_value(p["scheduler"].clone()).unwrap();
        plan(&s)
    }

    fn refused(json: serde_json::Value, want: &str) {
        let e = sched(json.clone()).unwrap_err().to_string();
        assert!(e.contains(want), "{json}: {e}");
    }

    #[test]
    fn the_specs_policies_become_sched_attr() {
        let a = sched(serde_json::json!({"policy": "SCHED_FIFO", "priority": 50})).unwrap();
        assert_eq!((a.policy, a.priority, a.size), (SCHED_FIFO, 50, 48));
        let a = sched(serde_json::json!({"policy": "SCHED_OTHER", "nice": -5})).unwrap();
        assert_eq!((a.policy, a.nice), (SCHED_OTHER, -5));
        let a = sched(serde_json::json!({"policy": "SCHED_DEADLINE",
            "runtime": 1_000_000, "deadline": 2_000_000, "period": 4_000_000}))
        .unwrap();
        assert_eq!(
            (a.policy, a.runtime, a.deadline, a.period),
            (SCHED_DEADLINE, 1_000_000, 2_000_000, 4_000_000)
        );
        // No deadline: the period's.
        let a = sched(serde_json::json!({"policy": "SCHED_DEADLINE",
            "runtime": 1_000_000, "period": 4_000_000}))
        .unwrap();
        assert_eq!(a.deadline, 4_000_000);
    }

    #[test]
    fn the_specs_flag_names_are_taken() {
        let a = sched(serde_json::json!({"policy": "SCHED_RR", "priority": 1,
            "flags": ["SCHED_FLAG_RESET_ON_FORK", "SCHED_FLAG_DL_OVERRUN", "SCHED_FLAG_RECLAIM"]}))
        .unwrap();
        assert_eq!(
            a.flags,
            SCHED_FLAG_RESET_ON_FORK | SCHED_FLAG_DL_OVERRUN | SCHED_FLAG_RECLAIM
        );
    }

    #[test]
    fn what_the_kernel_would_refuse_is_refused_with_its_field() {
        refused(
            serde_json::json!({"policy": "SCHED_FIFO"}),
            "priority in 1..99",
        );
        refused(
            serde_json::json!({"policy": "SCHED_RR", "priority": 100}),
            "not 100",
        );
        refused(
            serde_json::json!({"policy": "SCHED_OTHER", "priority": 5}),
            "takes no priority",
        );
        refused(
            serde_json::json!({"policy": "SCHED_BATCH", "nice": 20}),
            "-20..19",
        );
        refused(
            serde_json::json!({"policy": "SCHED_ISO"}),
            "not a Linux policy",
        );
        refused(
            serde_json::json!({"policy": "SCHED_DEADLINE", "runtime": 10}),
            "at least 1024",
        );
        refused(
            serde_json::json!({"policy": "SCHED_DEADLINE", "runtime": 5000, "deadline": 4000, "period": 10000}),
            "runtime <= deadline <= period",
        );
        refused(
            serde_json::json!({"policy": "SCHED_DEADLINE", "runtime": 5000, "deadline": 8000, "period": 6000}),
            "runtime <= deadline <= period",
        );
        refused(
            serde_json::json!({"policy": "SCHED_FIFO", "priority": 1, "period": 1000}),
            "are for SCHED_DEADLINE",
        );
        refused(
            serde_json::json!({"policy": "SCHED_OTHER", "flags": ["SCHED_FLAG_UTIL_CLAMP_MIN"]}),
            "clamps",
        );
    }
}

/// `process.ioPriority` (runtime-spec 1.2) as ioprio_set(2) takes it: the class in the top
/// bits (IOPRIO_CLASS_SHIFT 13), the level 0 (highest) to 7 below.
pub fn io_priority(p: &oci_spec::runtime::LinuxIOPriority) -> Result<u32> {
    use oci_spec::runtime::IOPriorityClass as C;
    let class = match p.class() {
        C::IoprioClassRt => 1,
        C::IoprioClassBe => 2,
        C::IoprioClassIdle => 3,
    };
    if !(0..=7).contains(&p.priority()) {
        return Err(config_err!(
            "process.ioPriority.priority: {} is not a level from 0 (highest) to 7",
            p.priority()
        ));
    }
    Ok((class << 13) | p.priority() as u32)
}

/// Set the calling process's I/O priority to `value` (see [`io_priority`]).
pub fn apply_io_priority(value: u32) -> Result<()> {
    // SAFETY: ioprio_set takes integers only (IOPRIO_WHO_PROCESS 1, pid 0: ourselves).
    if unsafe { libc::syscall(libc::SYS_ioprio_set, 1, 0, value) } < 0 {
        let e = nix::Error::last();
        let hint = if e == nix::Error::EPERM {
            " (the realtime class needs CAP_SYS_ADMIN)"
        } else {
            ""
        };
        return Err(crate::error::Error::Msg(format!(
            "setting process.ioPriority{hint}: {e}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod io_tests {
    use super::*;

    #[test]
    fn io_priorities_are_class_and_level() {
        let p =
            |j: &str| -> oci_spec::runtime::LinuxIOPriority { serde_json::from_str(j).unwrap() };
        assert_eq!(
            io_priority(&p(r#"{"class": "IOPRIO_CLASS_BE", "priority": 4}"#)).unwrap(),
            (2 << 13) | 4
        );
        assert_eq!(
            io_priority(&p(r#"{"class": "IOPRIO_CLASS_IDLE", "priority": 0}"#)).unwrap(),
            3 << 13
        );
        let e = io_priority(&p(r#"{"class": "IOPRIO_CLASS_RT", "priority": 8}"#)).unwrap_err();
        assert!(
            e.to_string().contains("process.ioPriority.priority: 8"),
            "{e}"
        );
    }
}
