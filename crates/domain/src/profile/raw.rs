//! A profile as TOML spells it, every value with its place in the file (for the errors);
//! nothing here is checked yet but the types (check.rs does the rest).

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use super::{BackendKind, BackgroundMode, Role};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Profile {
    pub name: Spanned<String>,
    pub base: Option<Spanned<String>>,
    #[serde(default)]
    pub foreground: Option<Foreground>,
    #[serde(default, rename = "domain")]
    pub domains: Vec<Domain>,
    #[serde(default, rename = "allow")]
    pub allow: Vec<Allow>,
    #[serde(default)]
    pub device_nodes: BTreeMap<Spanned<String>, Spanned<String>>,
    pub scheduler: Option<Spanned<Scheduler>>,
    pub memory: Option<Spanned<Memory>>,
}

/// `[memory]`: `pressure = 10` (percent), `background_share = 0.5`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Memory {
    pub pressure: Spanned<f64>,
    pub background_share: Option<Spanned<f64>>,
}

/// `[scheduler]`: `policy = "balance"`, `period = "1s"`, `spread = 0.25`, `threshold = 0.8`,
/// `margin = 0.1`, `min_residency = "5s"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Scheduler {
    pub policy: Option<Spanned<String>>,
    pub period: Option<Spanned<String>>,
    pub spread: Option<Spanned<f64>>,
    pub threshold: Option<Spanned<f64>>,
    pub margin: Option<Spanned<f64>>,
    pub min_residency: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Foreground {
    pub initial: Spanned<String>,
    #[serde(default)]
    pub background: BackgroundMode,
    pub background_cpu_weight: Option<Spanned<u32>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct Devices {
    #[serde(default)]
    pub exclusive: Vec<Spanned<String>>,
    #[serde(default)]
    pub shared: Vec<Spanned<String>>,
    #[serde(default)]
    pub passthrough: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Domain {
    pub name: Spanned<String>,
    pub role: Role,
    #[serde(default = "container")]
    pub backend: Spanned<BackendKind>,
    pub rootfs: Option<Spanned<String>>,
    pub command: Option<Spanned<Vec<String>>>,
    pub kernel: Option<Spanned<String>>,
    pub initrd: Option<Spanned<String>>,
    pub cmdline: Option<Spanned<String>>,
    pub vcpus: Option<Spanned<u8>>,
    pub disks: Option<Spanned<Vec<String>>>,
    pub merge: Option<Spanned<bool>>,
    pub balloon: Option<Spanned<bool>>,
    pub cpus: Option<Spanned<String>>,
    pub cpu_weight: Option<Spanned<u32>>,
    pub memory: Option<Spanned<String>>,
    pub pids: Option<Spanned<i64>>,
    #[serde(default)]
    pub devices: Devices,
    pub realtime: Option<Spanned<Realtime>>,
    /// The entry stands for this many alike domains, NAME-1 ... NAME-N.
    pub replicas: Option<Spanned<i64>>,
}

/// A realtime domain's scheduling: `{ policy = "fifo", priority = 50, budget = "100ms/1s" }`
/// or `{ policy = "deadline", runtime = "2ms", deadline = "5ms", period = "10ms" }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Realtime {
    pub policy: Spanned<String>,
    pub priority: Option<Spanned<i64>>,
    pub budget: Option<Spanned<String>>,
    pub runtime: Option<Spanned<String>>,
    pub deadline: Option<Spanned<String>>,
    pub period: Option<Spanned<String>>,
}

fn container() -> Spanned<BackendKind> {
    Spanned::new(0..0, BackendKind::Container)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Allow {
    pub from: Spanned<String>,
    pub to: Spanned<String>,
    pub channel: Spanned<String>,
    pub buffer: Spanned<String>,
}
