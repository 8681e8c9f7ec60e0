//! The OCI runtime verbs (runc/crun-compatible flags) mapped onto the `container` crate.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context as _, Result};
use clap::{Args, Subcommand};
use container::runtime::{self, CreateOpts, ExecOpts};
use container::state::Root;
use oci_spec::runtime::Process;

use crate::Cli;

#[derive(Args, Debug, Clone)]
pub struct CreateArgs {
    /// Path to the bundle (the directory holding config.json)
    #[arg(short, long, default_value = ".")]
    pub bundle: PathBuf,
    /// Unix socket to send the pseudo-terminal master to (process.terminal: true)
    #[arg(long)]
    pub console_socket: Option<PathBuf>,
    /// Write the container's host pid here
    #[arg(long)]
    pub pid_file: Option<PathBuf>,
    /// Pass this many descriptors beyond stdio (3, 4, ...) to the container
    #[arg(long, default_value_t = 0)]
    pub preserve_fds: i32,
    /// Do not use pivot_root (for a root on ramfs)
    #[arg(long)]
    pub no_pivot: bool,
    /// Accepted for compatibility: no session keyring is created
    #[arg(long)]
    pub no_new_keyring: bool,
    /// Container id
    pub id: String,
}

#[derive(Subcommand, Debug)]
pub enum OciCmd {
    /// Create a container: set it up and leave it waiting for `start`
    Create(CreateArgs),
    /// Start a created container's process
    Start { id: String },
    /// Create and start a container; wait for it unless --detach
    Run {
        #[command(flatten)]
        create: CreateArgs,
        /// Return once the container has started
        #[arg(short, long)]
        detach: bool,
        /// Accepted for compatibility
        #[arg(long)]
        keep: bool,
    },
    /// Print a container's state (OCI state JSON)
    State { id: String },
    /// Send a signal to a container (default SIGTERM)
    Kill {
        /// Signal every process of the container, not just its init
        #[arg(short, long)]
        all: bool,
        id: String,
        #[arg(default_value = "SIGTERM")]
        signal: String,
    },
    /// Delete a container and everything it left behind
    Delete {
        /// Kill it first if it still runs
        #[arg(short, long)]
        force: bool,
        id: String,
    },
    /// List containers
    List {
        /// table or json
        #[arg(short, long, default_value = "table")]
        format: String,
        /// Only ids
        #[arg(short, long)]
        quiet: bool,
    },
    /// Processes of a container
    /// Without an id: the device platform's domains (asks cellvisord)
    Ps {
        /// table or json
        #[arg(short, long, default_value = "table")]
        format: String,
        #[command(flatten)]
        daemon: crate::platform::Daemon,
        id: Option<String>,
        /// Accepted for compatibility (options for ps)
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        ps_args: Vec<String>,
    },
    /// Run another process in a running container
    Exec(ExecArgs),
    /// Freeze every process of a container
    Pause { id: String },
    /// Thaw a paused container
    Resume { id: String },
    /// Resource statistics of a container
    Events {
        /// Print statistics once and exit
        #[arg(long)]
        stats: bool,
        /// Interval between statistics
        #[arg(long, default_value = "5s")]
        interval: String,
        id: String,
    },
    /// Change a container's resources in place (as `runc update`)
    Update(UpdateArgs),
    /// What this runtime supports (OCI features JSON)
    Features,
    /// Write a default config.json into the bundle directory
    Spec {
        #[arg(short, long, default_value = ".")]
        bundle: PathBuf,
        /// A config for running without root (user namespace)
        #[arg(long)]
        rootless: bool,
    },
}

#[derive(Args, Debug)]
pub struct ExecArgs {
    #[arg(long)]
    pub console_socket: Option<PathBuf>,
    /// Working directory inside the container
    #[arg(long)]
    pub cwd: Option<PathBuf>,
    /// NAME=value to add to the environment
    #[arg(short, long)]
    pub env: Vec<String>,
    /// Allocate a pseudo-terminal
    #[arg(short, long)]
    pub tty: bool,
    /// uid[:gid]
    #[arg(short, long)]
    pub user: Option<String>,
    /// Additional gids
    #[arg(short = 'g', long)]
    pub additional_gids: Vec<u32>,
    /// A process.json describing the process (instead of the arguments)
    #[arg(short, long)]
    pub process: Option<PathBuf>,
    /// Return once the process has started
    #[arg(short, long)]
    pub detach: bool,
    #[arg(long)]
    pub pid_file: Option<PathBuf>,
    /// Set no_new_privileges
    #[arg(long)]
    pub no_new_privs: bool,
    /// Add a capability (CAP_...)
    #[arg(short, long)]
    pub cap: Vec<String>,
    #[arg(long, default_value_t = 0)]
    pub preserve_fds: i32,
    /// Accepted for compatibility
    #[arg(long)]
    pub process_label: Option<String>,
    /// Accepted for compatibility
    #[arg(long)]
    pub apparmor: Option<String>,
    /// Container id
    pub id: String,
    /// Command and its arguments
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

impl OciCmd {
    /// The verb, as typed.
    pub fn name(&self) -> &'static str {
        match self {
            OciCmd::Create(_) => "create",
            OciCmd::Start { .. } => "start",
            OciCmd::Run { .. } => "run",
            OciCmd::State { .. } => "state",
            OciCmd::Kill { .. } => "kill",
            OciCmd::Delete { .. } => "delete",
            OciCmd::List { .. } => "list",
            OciCmd::Ps { .. } => "ps",
            OciCmd::Exec(_) => "exec",
            OciCmd::Pause { .. } => "pause",
            OciCmd::Resume { .. } => "resume",
            OciCmd::Events { .. } => "events",
            OciCmd::Update(_) => "update",
            OciCmd::Features => "features",
            OciCmd::Spec { .. } => "spec",
        }
    }
}

/// `update`'s flags, runc's.
#[derive(clap::Args, Debug)]
pub struct UpdateArgs {
    /// A LinuxResources JSON document (the runtime-spec's linux.resources), from FILE or `-`
    /// for standard input; the flags below apply on top of it
    #[arg(short = 'r', long = "resources")]
    pub resources: Option<String>,
    /// Memory limit: bytes, or with K, M, G; -1 for none
    #[arg(long, allow_hyphen_values = true)]
    pub memory: Option<String>,
    /// Memory and swap together (as runc): bytes, or with K, M, G; -1 for no limit
    #[arg(long, allow_hyphen_values = true)]
    pub memory_swap: Option<String>,
    /// Memory soft limit: bytes, or with K, M, G
    #[arg(long)]
    pub memory_reservation: Option<String>,
    /// CPU shares (relative weight)
    #[arg(long = "cpu-shares", alias = "cpu-share")]
    pub cpu_shares: Option<u64>,
    /// CFS quota per period, µs; -1 for none
    #[arg(long, allow_hyphen_values = true)]
    pub cpu_quota: Option<i64>,
    /// CFS period, µs
    #[arg(long)]
    pub cpu_period: Option<u64>,
    /// Real-time runtime per period, µs (cgroup v1)
    #[arg(long)]
    pub cpu_rt_runtime: Option<i64>,
    /// Real-time period, µs (cgroup v1)
    #[arg(long)]
    pub cpu_rt_period: Option<u64>,
    /// CPUs it may run on, e.g. 0-1,3
    #[arg(long)]
    pub cpuset_cpus: Option<String>,
    /// Memory nodes it may use
    #[arg(long)]
    pub cpuset_mems: Option<String>,
    /// Most processes at once; -1 for no limit
    #[arg(long, allow_hyphen_values = true)]
    pub pids_limit: Option<i64>,
    /// Block I/O weight, 10..1000
    #[arg(long)]
    pub blkio_weight: Option<u16>,
    pub id: String,
}

/// A size flag: -1 (no limit), bytes, or a size with K, M or G.
fn size_flag(name: &str, v: &str) -> Result<i64> {
    if let Ok(n) = v.trim().parse::<i64>() {
        return Ok(n);
    }
    domain::profile::parse_size(v)
        .and_then(|b| i64::try_from(b).ok())
        .ok_or_else(|| anyhow!("--{name} {v:?}: not a size like 512M or -1"))
}

/// The resources `update` writes: the -r document with the flags on top, checked as the
/// runtime-spec's LinuxResources.
fn update_resources(a: &UpdateArgs) -> Result<oci_spec::runtime::LinuxResources> {
    use serde_json::{json, Value};
    let mut doc: Value = match a.resources.as_deref() {
        None => json!({}),
        Some(src) => {
            let text = if src == "-" {
                domain::read_bounded(std::io::stdin(), domain::MAX_DOCUMENT)
                    .context("reading the resources from standard input")?
            } else {
                domain::read_document(std::path::Path::new(src))
                    .with_context(|| format!("reading {src}"))?
            };
            serde_json::from_slice(&text).map_err(|e| anyhow!("--resources {src}: {e}"))?
        }
    };
    if !doc.is_object() {
        bail!("--resources: not a JSON object (the runtime-spec's linux.resources)");
    }
    let mut set = |section: &str, key: &str, v: Value| {
        if !doc[section].is_object() {
            doc[section] = json!({});
        }
        doc[section][key] = v;
    };
    if let Some(v) = &a.memory {
        set("memory", "limit", json!(size_flag("memory", v)?));
    }
    if let Some(v) = &a.memory_swap {
        set("memory", "swap", json!(size_flag("memory-swap", v)?));
    }
    if let Some(v) = &a.memory_reservation {
        set(
            "memory",
            "reservation",
            json!(size_flag("memory-reservation", v)?),
        );
    }
    if let Some(v) = a.cpu_shares {
        set("cpu", "shares", json!(v));
    }
    if let Some(v) = a.cpu_quota {
        set("cpu", "quota", json!(v));
    }
    if let Some(v) = a.cpu_period {
        set("cpu", "period", json!(v));
    }
    if let Some(v) = a.cpu_rt_runtime {
        set("cpu", "realtimeRuntime", json!(v));
    }
    if let Some(v) = a.cpu_rt_period {
        set("cpu", "realtimePeriod", json!(v));
    }
    if let Some(v) = &a.cpuset_cpus {
        set("cpu", "cpus", json!(v));
    }
    if let Some(v) = &a.cpuset_mems {
        set("cpu", "mems", json!(v));
    }
    if let Some(v) = a.pids_limit {
        set("pids", "limit", json!(v));
    }
    if let Some(v) = a.blkio_weight {
        set("blockIO", "weight", json!(v));
    }
    if doc.as_object().is_some_and(|o| o.is_empty()) {
        bail!("update: nothing to change (give --resources or a flag such as --memory)");
    }
    serde_json::from_value(doc).map_err(|e| anyhow!("the resources: {e}"))
}

fn create_opts(a: &CreateArgs, systemd_cgroup: bool) -> CreateOpts {
    CreateOpts {
        id: a.id.clone(),
        bundle: a.bundle.clone(),
        pid_file: a.pid_file.clone(),
        console_socket: a.console_socket.clone(),
        own_terminal: false,
        preserve_fds: a.preserve_fds,
        listen_fds: container::runtime::listen_fds(
            std::env::var("LISTEN_FDS").ok().as_deref(),
            std::env::var("LISTEN_PID").ok().as_deref(),
            std::process::id(),
        ),
        no_pivot: a.no_pivot,
        log: None,
        systemd_cgroup,
    }
}

fn print_json(v: &serde_json::Value) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, v)?;
    writeln!(out)?;
    Ok(())
}

fn parse_duration(s: &str) -> Result<std::time::Duration> {
    let (num, unit) = s.split_at(
        s.find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(s.len()),
    );
    let n: f64 = num
        .parse()
        .map_err(|_| anyhow!("--interval: {s:?} is not a duration like 5s"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        _ => return Err(anyhow!("--interval: unknown unit in {s:?}")),
    };
    Ok(std::time::Duration::from_secs_f64(secs))
}

fn exec_process(root: &Root, a: &ExecArgs) -> Result<Process> {
    if let Some(p) = &a.process {
        let data = domain::read_document(p).with_context(|| format!("reading {}", p.display()))?;
        return Ok(container::config::parse_process(
            &data,
            &format!("process {}", p.display()),
        )?);
    }
    if a.command.is_empty() {
        return Err(anyhow!("exec: a command (or --process) is required"));
    }
    let mut p = runtime::exec_process(root, &a.id)?;
    p.set_args(Some(a.command.clone()));
    p.set_terminal(Some(a.tty));
    if let Some(cwd) = &a.cwd {
        p.set_cwd(cwd.clone());
    }
    if !a.env.is_empty() {
        let mut env = p.env().clone().unwrap_or_default();
        for kv in &a.env {
            let key = kv.split('=').next().unwrap_or("");
            env.retain(|e| e.split('=').next() != Some(key));
            env.push(kv.clone());
        }
        p.set_env(Some(env));
    }
    if let Some(u) = &a.user {
        let (uid, gid) = match u.split_once(':') {
            Some((u, g)) => (u.parse()?, g.parse()?),
            None => (u.parse()?, 0),
        };
        p.user_mut().set_uid(uid);
        p.user_mut().set_gid(gid);
    }
    if !a.additional_gids.is_empty() {
        p.user_mut()
            .set_additional_gids(Some(a.additional_gids.clone()));
    }
    if a.no_new_privs {
        p.set_no_new_privileges(Some(true));
    }
    if !a.cap.is_empty() {
        let mut caps = p.capabilities().clone().unwrap_or_default();
        let add: oci_spec::runtime::Capabilities = a
            .cap
            .iter()
            .map(|c| {
                serde_json::from_value(serde_json::Value::String(c.clone()))
                    .map_err(|_| anyhow!("unknown capability {c:?}"))
            })
            .collect::<Result<_>>()?;
        let merge = |s: &Option<oci_spec::runtime::Capabilities>| {
            let mut s = s.clone().unwrap_or_default();
            s.extend(add.iter().copied());
            Some(s)
        };
        caps.set_bounding(merge(caps.bounding()));
        caps.set_effective(merge(caps.effective()));
        caps.set_permitted(merge(caps.permitted()));
        p.set_capabilities(Some(caps));
    }
    Ok(p)
}

pub fn run(cli: &Cli, cmd: &OciCmd) -> Result<i32> {
    let root = Root(cli.root.clone());
    match cmd {
        OciCmd::Create(a) => {
            runtime::create(&root, &create_opts(a, cli.systemd_cgroup)).map_err(chain)?;
        }
        OciCmd::Start { id } => runtime::start(&root, id).map_err(chain)?,
        OciCmd::Run { create, detach, .. } => {
            return runtime::run(&root, &create_opts(create, cli.systemd_cgroup), *detach)
                .map_err(chain);
        }
        OciCmd::State { id } => print_json(&runtime::state(&root, id).map_err(chain)?)?,
        OciCmd::Kill { all, id, signal } => {
            let sig = runtime::parse_signal(signal).map_err(chain)?;
            runtime::kill_container(&root, id, sig, *all).map_err(chain)?;
        }
        OciCmd::Delete { force, id } => runtime::delete(&root, id, *force).map_err(chain)?,
        OciCmd::List { format, quiet } => {
            let list = runtime::list(&root);
            if *quiet {
                for e in &list {
                    println!("{}", e.id);
                }
            } else if format == "json" {
                println!("{}", serde_json::to_string(&list)?);
            } else if format == "table" {
                println!(
                    "{:<24} {:<8} {:<10} {:<40} {:<32} OWNER",
                    "ID", "PID", "STATUS", "BUNDLE", "CREATED"
                );
                for e in &list {
                    println!(
                        "{:<24} {:<8} {:<10} {:<40} {:<32} {}",
                        e.id,
                        e.pid,
                        e.status,
                        e.bundle.display(),
                        e.created,
                        e.owner
                    );
                }
            } else {
                return Err(anyhow!("--format: {format:?} is not table or json"));
            }
        }
        OciCmd::Ps {
            format,
            id: None,
            daemon,
            ..
        } => return crate::platform::ps(daemon, format == "json"),
        OciCmd::Ps {
            format,
            id: Some(id),
            ..
        } => {
            let pids = runtime::ps(&root, id).map_err(chain)?;
            if format == "json" {
                println!("{}", serde_json::to_string(&pids)?);
            } else {
                println!("{:>8} CMD", "PID");
                for p in pids {
                    let cmd = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
                    let cmd: String = String::from_utf8_lossy(&cmd).replace('\0', " ");
                    println!("{p:>8} {}", cmd.trim());
                }
            }
        }
        OciCmd::Exec(a) => {
            let process = exec_process(&root, a)?;
            let o = ExecOpts {
                id: a.id.clone(),
                process,
                console_socket: a.console_socket.clone(),
                pid_file: a.pid_file.clone(),
                detach: a.detach,
                preserve_fds: a.preserve_fds,
            };
            return runtime::exec(&root, &o).map_err(chain);
        }
        OciCmd::Pause { id } => runtime::set_paused(&root, id, true).map_err(chain)?,
        OciCmd::Resume { id } => runtime::set_paused(&root, id, false).map_err(chain)?,
        OciCmd::Events {
            stats,
            interval,
            id,
        } => {
            let every = parse_duration(interval)?;
            loop {
                match runtime::stats(&root, id) {
                    Ok(s) => println!("{s}"),
                    Err(e) if !*stats && matches!(e, container::Error::BadState { .. }) => break,
                    Err(e) => return Err(chain(e)),
                }
                if *stats {
                    break;
                }
                std::thread::sleep(every);
            }
        }
        OciCmd::Update(a) => {
            let res = update_resources(a)?;
            runtime::update(&root, &a.id, &res).map_err(chain)?;
        }
        OciCmd::Features => print_json(&runtime::features())?,
        OciCmd::Spec { bundle, rootless } => {
            let path = bundle.join("config.json");
            if path.exists() {
                return Err(anyhow!("{} already exists", path.display()));
            }
            let text = serde_json::to_string_pretty(&runtime::default_spec(*rootless))?;
            std::fs::write(&path, text + "\n")
                .with_context(|| format!("writing {}", path.display()))?;
        }
    }
    Ok(0)
}

/// The container error with its causes on one line.
fn chain(e: container::Error) -> anyhow::Error {
    anyhow!(e.chain())
}
