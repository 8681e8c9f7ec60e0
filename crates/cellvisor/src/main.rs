//! `cellvisor`: the command line. Container verbs follow the OCI runtime CLI as runc and crun
//! spell it, so podman, containerd and Kubernetes can drive it.

mod bench;
mod oci;
mod platform;
mod profile;
mod vm;

use std::io::Write;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// What `--version` prints after the name, as runc does: the version, the commit it was
/// built from, the newest runtime-spec version it implements (`features`' ociVersionMax).
const VERSION: &str = concat!(
    "version ",
    env!("CARGO_PKG_VERSION"),
    "\ncommit: ",
    env!("CELLVISOR_COMMIT"),
    "\nspec: 1.2.0"
);

#[derive(Parser, Debug)]
#[command(
    name = "cellvisor",
    version = VERSION,
    about = "Lightweight virtualization for devices: isolated container domains (an OCI runtime)"
)]
pub struct Cli {
    /// Directory for container state
    #[arg(long, global = true, default_value = "/run/cellvisor")]
    pub root: PathBuf,
    /// Also write errors to this file
    #[arg(long, global = true)]
    pub log: Option<PathBuf>,
    /// Format of --log: text or json
    #[arg(long, global = true, default_value = "text")]
    pub log_format: String,
    /// Use systemd to manage cgroups: cgroupsPath is slice:prefix:name, the cgroup a transient unit
    #[arg(long, global = true)]
    pub systemd_cgroup: bool,
    /// More output (accepted for compatibility)
    #[arg(long, global = true)]
    pub debug: bool,
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand, Debug)]
#[allow(clippy::large_enum_variant)] // parsed once per process
pub enum Cmd {
    #[command(flatten)]
    Oci(oci::OciCmd),
    /// Benchmarks, side by side with native and peers: with no subcommand, the survey's
    /// Section 5 suite
    Bench(bench::BenchArgs),
    /// Device profiles: the domains of a device and the policy between them
    #[command(subcommand)]
    Profile(profile::ProfileCmd),
    #[command(flatten)]
    Platform(platform::PlatformCmd),
    /// MicroVMs on cellvisor's own KVM VMM
    #[command(subcommand)]
    Vm(vm::VmCmd),
}

fn log_error(cli: &Cli, msg: &str) {
    let Some(path) = &cli.log else { return };
    let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    else {
        return;
    };
    let line = if cli.log_format == "json" {
        serde_json::json!({"level": "error", "msg": msg, "time": container_time()}).to_string()
    } else {
        format!("error: {msg}")
    };
    let _ = writeln!(f, "{line}");
}

/// Now in RFC 3339, UTC, with nanoseconds (`2026-12-01T20:35:12.088329014Z`), as runc's
/// logrus lines have it: containerd reads the last line of the log when a create fails and
/// parses its `time` as a Go time.Time, and says its own parse error instead of ours otherwise.
fn container_time() -> String {
    container::util::rfc3339_now()
}

fn main() {
    container::timing::init();
    let cli = Cli::parse();
    // Verbs that print a report end quietly on a closed pipe, like other command-line tools.
    // The lifecycle verbs keep Rust's SIGPIPE-ignored, so no write to a vanished peer can kill
    // the runtime half-way through a change (the hooks and the sync socket also guard their
    // own writes; the container's program gets default dispositions back before exec).
    let prints = match &cli.cmd {
        Cmd::Oci(c) => matches!(
            c.name(),
            "state" | "list" | "ps" | "events" | "features" | "spec"
        ),
        Cmd::Bench(_) | Cmd::Profile(_) | Cmd::Platform(_) | Cmd::Vm(_) => true,
    };
    if prints {
        // SAFETY: setting the default disposition installs no handler code.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    let r = if cli.log_format != "text" && cli.log_format != "json" {
        Err(anyhow::anyhow!(
            "--log-format: {:?} is not text or json",
            cli.log_format
        ))
    } else {
        match &cli.cmd {
            Cmd::Oci(c) => oci::run(&cli, c),
            Cmd::Bench(c) => bench::run(c),
            Cmd::Profile(c) => profile::run(c),
            Cmd::Platform(c) => platform::run(c),
            Cmd::Vm(c) => vm::run(c),
        }
    };
    container::timing::flush(match &cli.cmd {
        Cmd::Oci(c) => c.name(),
        Cmd::Bench(_) => "bench",
        Cmd::Profile(_) => "profile",
        Cmd::Platform(c) => c.name(),
        Cmd::Vm(_) => "vm",
    });
    match r {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            // A profile's report keeps a line per error; nothing else in it drives the terminal.
            let msg = domain::printable(&format!("{e:#}"));
            log_error(&cli, &msg);
            eprintln!("cellvisor: {msg}");
            std::process::exit(1);
        }
    }
}
