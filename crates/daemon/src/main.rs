//! `cellvisord`: run the device platform for one profile until SIGTERM. Domains outlive it; a
//! new daemon on the same state directory adopts them.

use std::path::PathBuf;

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "cellvisord",
    version,
    about = "The cellvisor device platform daemon"
)]
struct Args {
    /// The device profile (TOML); the embedded phone profile if absent.
    #[arg(long)]
    profile: Option<PathBuf>,
    /// Where the daemon keeps its state and its domains'.
    #[arg(long, default_value = "/run/cellvisord")]
    state: PathBuf,
    /// The API socket.
    #[arg(long, default_value = "/run/cellvisord.sock")]
    socket: PathBuf,
    /// A group whose members may use the API besides root (name or number).
    #[arg(long)]
    group: Option<String>,
    /// The in-domain agent (a static binary), offered to every domain at /run/cellvisor/agent;
    /// by default `cellvisor-agent` beside this program, if it is there.
    #[arg(long)]
    agent: Option<PathBuf>,
    /// Prefix of the domains' container ids and cgroups.
    #[arg(long, default_value = "cv")]
    prefix: String,
    /// Run as the channels' keeper of state directory DIR (started by the daemon itself).
    #[arg(long, value_name = "DIR", hide = true)]
    keeper: Option<PathBuf>,
}

fn group_id(g: &str) -> Result<u32, String> {
    if let Ok(n) = g.parse() {
        return Ok(n);
    }
    let text = std::fs::read_to_string("/etc/group").map_err(|e| format!("/etc/group: {e}"))?;
    text.lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() >= 3 && f[0] == g)
                .then(|| f[2].parse().ok())
                .flatten()
        })
        .ok_or_else(|| format!("no group {g:?}"))
}

/// Descriptors the daemon holds besides one port per domain: its API listener and clients,
/// the keeper's connection, a start's pipes and lock, channel ends in passing.
const SPARE_FDS: u64 = 256;

/// The descriptors a profile of `domains` and `rules` channel rules needs (a port per domain,
/// five per open channel, each allowed channel open at once at most): the soft limit raised
/// as far as that (never lowered), the hard one too where the process may; one line if it
/// cannot be had.
fn enough_descriptors(domains: usize, rules: usize) -> Result<(), String> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let need = domains as u64 + 5 * rules as u64 + SPARE_FDS;
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(|e| format!("getrlimit: {e}"))?;
    if soft >= need {
        return Ok(());
    }
    if hard >= need {
        return setrlimit(Resource::RLIMIT_NOFILE, need, hard)
            .map_err(|e| format!("setrlimit: {e}"));
    }
    // Raising the hard limit needs CAP_SYS_RESOURCE (and the kernel's fs.nr_open).
    setrlimit(Resource::RLIMIT_NOFILE, need, need).map_err(|_| {
        format!(
            "the profile's {domains} domains and {rules} channel rules need about {need} descriptors; this process may open {hard} (ulimit -Hn)"
        )
    })
}

fn main() {
    let a = Args::parse();
    if let Some(dir) = &a.keeper {
        daemon::keeper::run(dir);
    }
    let r = (|| {
        // Checked against this host: its CPUs, the real-time time it grants.
        let host = container::cgroups::rt::host();
        let profile = match &a.profile {
            Some(p) => domain::profile::load_on(
                &std::fs::canonicalize(p).map_err(|e| format!("{}: {e}", p.display()))?,
                &host,
            ),
            None => domain::profile::parse_on(
                domain::DEFAULT_PROFILE,
                "phone.toml",
                &std::env::current_dir().unwrap_or_default(),
                &host,
            ),
        }
        .map_err(|e| e.to_string())?;
        enough_descriptors(profile.domains.len(), profile.policy.len())?;
        if profile.memory.is_some() && scheduler::sample::memory_pressure().is_none() {
            eprintln!("cellvisord: [memory]: this host has no memory pressure figure (/proc/pressure/memory, PSI): the background is never capped");
        }
        let group = a.group.as_deref().map(group_id).transpose()?;
        let agent = a.agent.clone().or_else(|| {
            let p = std::env::current_exe()
                .ok()?
                .with_file_name("cellvisor-agent");
            p.exists().then_some(p)
        });
        if let Some(ag) = &agent {
            if !ag.is_file() {
                return Err(format!("agent {}: not a file", ag.display()));
            }
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(daemon::server::run(daemon::server::Config {
            state_dir: a.state.clone(),
            socket: a.socket.clone(),
            group,
            profile,
            agent,
            prefix: a.prefix.clone(),
        }))
    })();
    if let Err(e) = r {
        eprintln!("cellvisord: {e}");
        std::process::exit(1);
    }
}
