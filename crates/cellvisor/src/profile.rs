//! `cellvisor profile`: check a device profile, and ask its policy.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};
use clap::Subcommand;
use domain::profile::{self, Profile};
use domain::Decision;

#[derive(Subcommand, Debug)]
pub enum ProfileCmd {
    /// Validate a profile (default: the embedded examples/phone.toml) and summarize it
    Check {
        /// The profile file
        file: Option<PathBuf>,
    },
    /// Would the policy let FROM open CHANNEL to TO?
    Allows {
        from: String,
        to: String,
        channel: String,
        /// Buffer size asked for (e.g. 16K); default: the rule's
        #[arg(long)]
        buffer: Option<String>,
        /// The profile file (default: the embedded one)
        #[arg(long)]
        file: Option<PathBuf>,
    },
}

/// The profile, checked against `host` (its CPUs, the real-time time it grants).
fn load(file: &Option<PathBuf>, host: &domain::profile::Host) -> Result<Profile> {
    let r = match file {
        Some(f) => profile::load_on(f, host),
        None => profile::parse_on(
            domain::DEFAULT_PROFILE,
            "examples/phone.toml (embedded)",
            Path::new("."),
            host,
        ),
    };
    Ok(r?)
}

/// `SCHED_FIFO priority 50, budget 100000 µs per 1000000 µs` (on `host`).
fn realtime(rt: &domain::profile::RtPolicy, host: &domain::profile::Host) -> String {
    use domain::profile::RtPolicy;
    match rt {
        RtPolicy::Fifo { priority, budget } | RtPolicy::Rr { priority, budget } => format!(
            "{} priority {priority}, budget {} µs per {} µs{}",
            if matches!(rt, RtPolicy::Fifo { .. }) { "SCHED_FIFO" } else { "SCHED_RR" },
            budget.runtime_us,
            budget.period_us,
            if host.rt_group_budgets {
                ""
            } else {
                " (not the domain's own here: this host has no real-time group scheduling, only the host-wide kernel.sched_rt_runtime_us)"
            }
        ),
        RtPolicy::Deadline {
            runtime_ns,
            deadline_ns,
            period_ns,
        } => format!(
            "SCHED_DEADLINE runtime {runtime_ns} ns, deadline {deadline_ns} ns, period {period_ns} ns"
        ),
    }
}

pub fn run(cmd: &ProfileCmd) -> Result<i32> {
    match cmd {
        ProfileCmd::Check { file } => {
            let host = container::cgroups::rt::host();
            let p = match load(file, &host) {
                Ok(p) => p,
                Err(e) => {
                    // One line per problem, then a count.
                    let text = e.to_string();
                    let n = text.lines().count();
                    return Err(anyhow!(
                        "{text}\n{n} problem{} in the profile",
                        if n == 1 { "" } else { "s" }
                    ));
                }
            };
            println!(
                "profile {:?}: {} domains, {} channel rules (everything else denied)",
                p.name,
                p.domains.len(),
                p.policy.len()
            );
            for d in &p.domains {
                let mem = d
                    .memory_bytes
                    .map_or("-".to_string(), |b| format!("{}M", b >> 20));
                println!(
                    "  {:<12} {:<9} {:<10} cpus {:<6} weight {:<5} memory {:<6} exclusive [{}] shared [{}]",
                    d.name,
                    d.role.name(),
                    d.backend().name(),
                    d.cpus.as_deref().unwrap_or("any"),
                    d.cpu_weight,
                    mem,
                    d.exclusive_devices.join(","),
                    d.shared_devices.join(",")
                );
                if let Some(rt) = &d.realtime {
                    let how = if d.vm().is_some() || !host.exclusive_cpus {
                        "kept off by cellvisor's placement"
                    } else if host.cpuset_v1 {
                        "by the kernel too: an exclusive cpuset"
                    } else {
                        "by the kernel too: an isolated cpuset partition"
                    };
                    println!(
                        "    realtime: {}; cpus {} its own ({how})",
                        realtime(rt, &host),
                        d.cpus.as_deref().unwrap_or("-")
                    );
                }
            }
            if let Some(f) = &p.foreground {
                println!(
                    "  foreground: {f}; background: {:?} (weight {})",
                    p.background, p.background_cpu_weight
                );
            }
            if let Some(m) = &p.memory {
                println!(
                    "  memory: at {}% pressure, each background container domain capped to {:.0}% of its use",
                    m.pressure_pct,
                    m.background_share * 100.0
                );
            }
            Ok(0)
        }
        ProfileCmd::Allows {
            from,
            to,
            channel,
            buffer,
            file,
        } => {
            let p = load(file, &container::cgroups::rt::host())?;
            let buf = match buffer {
                Some(b) => Some(
                    profile::parse_size(b)
                        .ok_or_else(|| anyhow!("--buffer: {b:?} is not a size like 16K"))?,
                ),
                None => None,
            };
            match p.policy.check(from, to, channel, buf) {
                Decision::Allow { buffer } => {
                    println!("allowed: {from} → {to} channel {channel:?}, buffer {buffer} bytes");
                    Ok(0)
                }
                Decision::Deny(why) => Err(anyhow!("denied: {why}")),
            }
        }
    }
}
