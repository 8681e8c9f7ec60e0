//! Where the VMM's threads run and how its vCPU threads are scheduled: a realtime domain's
//! vCPUs each on a core of their own with a real-time policy, the VMM's other threads (the
//! device loop, its helpers) on the shared cores. Linux's per-thread calls: affinity and
//! policy given with pid 0 apply to the calling thread only.

use std::fmt;
use std::str::FromStr;

/// A real-time policy for the vCPU threads, at a priority in 1..99.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VcpuSched {
    Fifo(u8),
    Rr(u8),
}

impl FromStr for VcpuSched {
    type Err = String;

    /// `fifo:50`, `rr:5`.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not fifo:PRIORITY or rr:PRIORITY (1..99)");
        let (p, prio) = s.split_once(':').ok_or_else(bad)?;
        let prio: u8 = prio.parse().map_err(|_| bad())?;
        if !(1..=99).contains(&prio) {
            return Err(bad());
        }
        match p {
            "fifo" => Ok(VcpuSched::Fifo(prio)),
            "rr" => Ok(VcpuSched::Rr(prio)),
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for VcpuSched {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            VcpuSched::Fifo(p) => write!(f, "fifo:{p}"),
            VcpuSched::Rr(p) => write!(f, "rr:{p}"),
        }
    }
}

/// A CPU list as the VMM's arguments take it: numbers separated by commas, in order (vCPU i
/// is the i-th).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuList(pub Vec<u32>);

impl FromStr for CpuList {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        s.split(',')
            .map(|c| {
                c.trim()
                    .parse()
                    .map_err(|_| format!("{s:?} is not a list of CPU numbers like 2,3"))
            })
            .collect::<Result<_, _>>()
            .map(CpuList)
    }
}

pub fn cpus_arg(cpus: &[u32]) -> String {
    cpus.iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Run the calling thread on `cpus` only.
pub fn set_affinity(cpus: &[u32]) -> std::io::Result<()> {
    // SAFETY: a zeroed cpu_set_t is the empty set; CPU_SET writes inside it for CPUs below
    // CPU_SETSIZE (larger ones are refused first).
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus {
        if c as usize >= libc::CPU_SETSIZE as usize {
            return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
        }
        // SAFETY: see above; c is in range.
        unsafe { libc::CPU_SET(c as usize, &mut set) };
    }
    // SAFETY: pid 0 is the calling thread; the set is a live cpu_set_t of the size given.
    if unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Give the calling thread the real-time policy `s`; threads it makes start without it.
pub fn set_sched(s: VcpuSched) -> std::io::Result<()> {
    let (policy, prio) = match s {
        VcpuSched::Fifo(p) => (libc::SCHED_FIFO, p),
        VcpuSched::Rr(p) => (libc::SCHED_RR, p),
    };
    let policy = policy | libc::SCHED_RESET_ON_FORK;
    let param = libc::sched_param {
        sched_priority: prio.into(),
    };
    // SAFETY: pid 0 is the calling thread; the parameter is a live sched_param.
    if unsafe { libc::sched_setscheduler(0, policy, &param) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_and_cpu_lists_read_back() {
        for s in ["fifo:50", "rr:1", "fifo:99"] {
            assert_eq!(s.parse::<VcpuSched>().unwrap().to_string(), s);
        }
        for s in ["fifo", "fifo:0", "rr:100", "deadline:5", "fifo:x"] {
            assert!(s.parse::<VcpuSched>().is_err(), "{s}");
        }
        assert_eq!("2,3".parse::<CpuList>().unwrap().0, vec![2, 3]);
        assert_eq!(cpus_arg(&[2, 3]), "2,3");
        assert!("0-1".parse::<CpuList>().is_err());
    }
}
