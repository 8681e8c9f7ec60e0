//! Device profiles: TOML in, a validated [`Profile`] out. Every problem is reported, one line
//! each, as `FILE:LINE:COL: what is wrong`.

use std::collections::{BTreeMap, HashSet};
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::policy::{Policy, Rule};

/// How a domain is isolated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// OS-level virtualization (namespaces, cgroups): the `container` crate.
    Container,
    /// Hardware-assisted full virtualization: a microVM whose VMM runs jailed in a container.
    Microvm,
}

/// What a domain is for, which decides how it is scheduled and what it may own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Banking, messages: the preinstalled, protected applications.
    Trusted,
    /// Third-party applications.
    Common,
    /// Latency-bound work (a modem stack): pinned cores, never throttled or frozen.
    Realtime,
}

/// What happens to domains in the background.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BackgroundMode {
    /// Lower CPU weight; they keep running.
    #[default]
    Throttle,
    /// Frozen: no CPU at all, memory kept.
    Freeze,
}

/// Devices that only the foreground domain holds.
pub const EXCLUSIVE_DEVICES: [&str; 3] = ["display", "input", "camera"];
/// Devices every domain that lists them shares.
pub const SHARED_DEVICES: [&str; 2] = ["audio", "network"];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    name: Spanned<String>,
    base: Option<Spanned<String>>,
    #[serde(default)]
    foreground: Option<RawForeground>,
    #[serde(default, rename = "domain")]
    domains: Vec<RawDomain>,
    #[serde(default, rename = "allow")]
    allow: Vec<RawAllow>,
    #[serde(default)]
    device_nodes: BTreeMap<Spanned<String>, Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawForeground {
    initial: Spanned<String>,
    #[serde(default)]
    background: BackgroundMode,
    background_cpu_weight: Option<Spanned<u32>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDevices {
    #[serde(default)]
    exclusive: Vec<Spanned<String>>,
    #[serde(default)]
    shared: Vec<Spanned<String>>,
    #[serde(default)]
    passthrough: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDomain {
    name: Spanned<String>,
    role: Role,
    #[serde(default = "container")]
    backend: Spanned<BackendKind>,
    rootfs: Option<Spanned<String>>,
    command: Option<Spanned<Vec<String>>>,
    kernel: Option<Spanned<String>>,
    initrd: Option<Spanned<String>>,
    cmdline: Option<Spanned<String>>,
    vcpus: Option<Spanned<u8>>,
    disks: Option<Spanned<Vec<String>>>,
    cpus: Option<Spanned<String>>,
    cpu_weight: Option<Spanned<u32>>,
    memory: Option<Spanned<String>>,
    pids: Option<Spanned<i64>>,
    #[serde(default)]
    devices: RawDevices,
}

fn container() -> Spanned<BackendKind> {
    Spanned::new(0..0, BackendKind::Container)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAllow {
    from: Spanned<String>,
    to: Spanned<String>,
    channel: Spanned<String>,
    buffer: Spanned<String>,
}

/// One domain of a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Domain {
    pub name: String,
    pub role: Role,
    pub backend: BackendKind,
    /// The domain's root: the shared base (with a private writable layer) unless given.
    pub rootfs: Option<PathBuf>,
    pub command: Vec<String>,
    pub cpus: Option<String>,
    pub cpu_weight: u32,
    pub memory_bytes: Option<u64>,
    pub pids: Option<i64>,
    pub exclusive_devices: Vec<String>,
    pub shared_devices: Vec<String>,
    pub passthrough: Vec<PathBuf>,
    /// What a microvm domain boots (its VMM runs jailed in a container domain).
    pub vm: Option<VmSpec>,
}

/// The guest of a microvm domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmSpec {
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    /// The kernel command line (the VMM's default when absent).
    pub cmdline: Option<String>,
    pub vcpus: u8,
    /// Raw disk images, in order: read-write, `,ro`, or `,cow` (read-only, shared by every VM
    /// that names it, under a private copy-on-write layer).
    pub disks: Vec<(PathBuf, DiskMode)>,
}

/// How a microvm domain sees one of its disks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskMode {
    ReadWrite,
    ReadOnly,
    CopyOnWrite,
}

/// The guest memory of a microvm domain without `memory`.
pub const DEFAULT_VM_MEMORY: u64 = 128 << 20;

/// A validated device profile.
#[derive(Debug, Clone)]
pub struct Profile {
    pub name: String,
    /// The read-only base root filesystem shared by every domain (Cells' layout).
    pub base: Option<PathBuf>,
    pub domains: Vec<Domain>,
    pub foreground: Option<String>,
    pub background: BackgroundMode,
    pub background_cpu_weight: u32,
    pub policy: Policy,
    /// The host device node behind each device class (`display`, `input`, ...). A class
    /// without a node is owned on paper only.
    pub device_nodes: BTreeMap<String, PathBuf>,
}

impl Profile {
    pub fn domain(&self, name: &str) -> Option<&Domain> {
        self.domains.iter().find(|d| d.name == name)
    }

    /// The host nodes of `d`'s exclusive devices (those the profile maps to a node).
    pub fn exclusive_nodes(&self, d: &Domain) -> Vec<PathBuf> {
        d.exclusive_devices
            .iter()
            .filter_map(|c| self.device_nodes.get(c).cloned())
            .collect()
    }

    /// The host nodes of `d`'s shared devices.
    pub fn shared_nodes(&self, d: &Domain) -> Vec<PathBuf> {
        d.shared_devices
            .iter()
            .filter_map(|c| self.device_nodes.get(c).cloned())
            .collect()
    }
}

/// Where a device class is found on a typical phone, when the profile does not say.
pub const DEFAULT_DEVICE_NODES: [(&str, &str); 4] = [
    ("display", "/dev/fb0"),
    ("input", "/dev/input/event0"),
    ("camera", "/dev/video0"),
    ("audio", "/dev/snd/pcmC0D0p"),
];

/// Every problem found in a profile, one line each.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.join("\n"))]
pub struct Errors(pub Vec<String>);

/// `64K`, `128M`, `1G`, or plain bytes.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => {
            let unit = s[i..].to_ascii_uppercase();
            let m: u64 = match unit.trim_end_matches("IB").trim_end_matches('B') {
                "" => 1,
                "K" => 1 << 10,
                "M" => 1 << 20,
                "G" => 1 << 30,
                _ => return None,
            };
            (&s[..i], m)
        }
        None => (s, 1),
    };
    num.trim().parse::<u64>().ok()?.checked_mul(mult)
}

fn is_cpu_list(s: &str) -> bool {
    !s.is_empty()
        && s.split(',').all(|p| match p.split_once('-') {
            Some((a, b)) => {
                matches!((a.parse::<u32>(), b.parse::<u32>()), (Ok(a), Ok(b)) if a <= b)
            }
            None => p.parse::<u32>().is_ok(),
        })
}

struct Report<'a> {
    file: &'a str,
    text: &'a str,
    errors: Vec<String>,
}

impl Report<'_> {
    fn at(&mut self, span: Range<usize>, msg: impl std::fmt::Display) {
        let upto = &self.text[..span.start.min(self.text.len())];
        let line = upto.matches('\n').count() + 1;
        let col = upto.len() - upto.rfind('\n').map_or(0, |i| i + 1) + 1;
        self.errors
            .push(format!("{}:{line}:{col}: {msg}", self.file));
    }
}

/// Parse and validate profile text; `file` names it in errors, `dir` anchors relative paths.
pub fn parse(text: &str, file: &str, dir: &Path) -> Result<Profile, Errors> {
    let mut r = Report {
        file,
        text,
        errors: Vec::new(),
    };
    let raw: RawProfile = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(e) => {
            let msg = e.message().trim().to_string();
            match e.span() {
                Some(s) => r.at(s, msg),
                None => r.errors.push(format!("{file}: {msg}")),
            }
            return Err(Errors(r.errors));
        }
    };
    let mut names = HashSet::new();
    let mut domains = Vec::new();
    for d in &raw.domains {
        let name = d.name.get_ref();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            r.at(
                d.name.span(),
                format!("domain name {name:?}: use letters, digits, - and _"),
            );
        }
        if !names.insert(name.clone()) {
            r.at(d.name.span(), format!("domain {name:?} is defined twice"));
        }
        let vm = if *d.backend.get_ref() == BackendKind::Microvm {
            if let Some(c) = &d.command {
                r.at(c.span(), format!("domain {name:?}: a microvm domain boots its kernel: no command (put what the guest runs in its initrd or cmdline)"));
            }
            if let Some(dev) = d.devices.exclusive.first() {
                r.at(
                    dev.span(),
                    format!("domain {name:?}: a microvm domain cannot own exclusive devices yet"),
                );
            }
            if let Some(v) = &d.vcpus {
                if !(1..=32).contains(v.get_ref()) {
                    r.at(
                        v.span(),
                        format!("domain {name:?}: vcpus {} is outside 1..32", v.get_ref()),
                    );
                }
            }
            let mut disks = Vec::new();
            for disk in d.disks.iter().flat_map(|v| v.get_ref()) {
                let (path, mode) = match disk.rsplit_once(',') {
                    None => (disk.as_str(), DiskMode::ReadWrite),
                    Some((p, "rw")) => (p, DiskMode::ReadWrite),
                    Some((p, "ro")) => (p, DiskMode::ReadOnly),
                    Some((p, "cow")) => (p, DiskMode::CopyOnWrite),
                    Some(_) => {
                        let sp = d.disks.as_ref().map_or(0..0, |v| v.span());
                        r.at(
                            sp,
                            format!("domain {name:?}: disk {disk:?}: PATH, PATH,ro or PATH,cow"),
                        );
                        continue;
                    }
                };
                disks.push((dir.join(path), mode));
            }
            match &d.kernel {
                Some(k) => Some(VmSpec {
                    kernel: dir.join(k.get_ref()),
                    initrd: d.initrd.as_ref().map(|i| dir.join(i.get_ref())),
                    cmdline: d.cmdline.as_ref().map(|c| c.get_ref().clone()),
                    vcpus: d.vcpus.as_ref().map_or(1, |v| *v.get_ref()),
                    disks,
                }),
                None => {
                    r.at(
                        d.name.span(),
                        format!("domain {name:?}: a microvm domain needs a kernel"),
                    );
                    None
                }
            }
        } else {
            for (field, span) in [
                ("kernel", d.kernel.as_ref().map(|x| x.span())),
                ("initrd", d.initrd.as_ref().map(|x| x.span())),
                ("cmdline", d.cmdline.as_ref().map(|x| x.span())),
                ("vcpus", d.vcpus.as_ref().map(|x| x.span())),
                ("disks", d.disks.as_ref().map(|x| x.span())),
            ] {
                if let Some(sp) = span {
                    r.at(
                        sp,
                        format!("domain {name:?}: {field} is for microvm domains"),
                    );
                }
            }
            match &d.command {
                Some(c) if c.get_ref().is_empty() => r.at(
                    c.span(),
                    format!("domain {name:?}: command must not be empty"),
                ),
                None => r.at(
                    d.name.span(),
                    format!("domain {name:?}: command is missing"),
                ),
                Some(_) => {}
            }
            None
        };
        if let Some(c) = &d.cpus {
            if !is_cpu_list(c.get_ref()) {
                r.at(
                    c.span(),
                    format!(
                        "domain {name:?}: cpus {:?} is not a list like \"0-1,3\"",
                        c.get_ref()
                    ),
                );
            }
        } else if d.role == Role::Realtime {
            r.at(
                d.name.span(),
                format!("domain {name:?}: a realtime domain needs its own cpus"),
            );
        }
        if let Some(w) = &d.cpu_weight {
            if !(1..=10000).contains(w.get_ref()) {
                r.at(
                    w.span(),
                    format!(
                        "domain {name:?}: cpu_weight {} is outside 1..10000",
                        w.get_ref()
                    ),
                );
            }
        }
        let memory_bytes = match &d.memory {
            Some(m) => match parse_size(m.get_ref()) {
                Some(b) if b >= 4 << 20 => Some(b),
                Some(_) => {
                    r.at(
                        m.span(),
                        format!("domain {name:?}: memory {:?} is below 4M", m.get_ref()),
                    );
                    None
                }
                None => {
                    r.at(
                        m.span(),
                        format!(
                            "domain {name:?}: memory {:?} is not a size like 64M",
                            m.get_ref()
                        ),
                    );
                    None
                }
            },
            None => None,
        };
        if let Some(p) = &d.pids {
            if *p.get_ref() < 1 {
                r.at(
                    p.span(),
                    format!("domain {name:?}: pids must be at least 1"),
                );
            }
        }
        for dev in &d.devices.exclusive {
            if !EXCLUSIVE_DEVICES.contains(&dev.get_ref().as_str()) {
                r.at(
                    dev.span(),
                    format!(
                        "domain {name:?}: {:?} is not an exclusive device ({})",
                        dev.get_ref(),
                        EXCLUSIVE_DEVICES.join(", ")
                    ),
                );
            }
        }
        for dev in &d.devices.shared {
            if !SHARED_DEVICES.contains(&dev.get_ref().as_str()) {
                r.at(
                    dev.span(),
                    format!(
                        "domain {name:?}: {:?} is not a shared device ({})",
                        dev.get_ref(),
                        SHARED_DEVICES.join(", ")
                    ),
                );
            }
        }
        for dev in &d.devices.passthrough {
            let p = Path::new(dev.get_ref());
            if !p.starts_with("/dev/")
                || p.components().any(|c| c == std::path::Component::ParentDir)
            {
                r.at(
                    dev.span(),
                    format!(
                        "domain {name:?}: passthrough {:?} is not a path under /dev",
                        dev.get_ref()
                    ),
                );
            }
        }
        if d.role == Role::Realtime && !d.devices.exclusive.is_empty() {
            r.at(d.devices.exclusive[0].span(), format!("domain {name:?}: a realtime domain never holds the foreground, so it cannot own exclusive devices"));
        }
        domains.push(Domain {
            name: name.clone(),
            role: d.role,
            backend: *d.backend.get_ref(),
            rootfs: d.rootfs.as_ref().map(|p| dir.join(p.get_ref())),
            command: d
                .command
                .as_ref()
                .map(|c| c.get_ref().clone())
                .unwrap_or_default(),
            cpus: d.cpus.as_ref().map(|c| c.get_ref().clone()),
            cpu_weight: d.cpu_weight.as_ref().map_or(100, |w| *w.get_ref()),
            memory_bytes,
            pids: d.pids.as_ref().map(|p| *p.get_ref()),
            exclusive_devices: d
                .devices
                .exclusive
                .iter()
                .map(|s| s.get_ref().clone())
                .collect(),
            shared_devices: d
                .devices
                .shared
                .iter()
                .map(|s| s.get_ref().clone())
                .collect(),
            passthrough: d
                .devices
                .passthrough
                .iter()
                .map(|s| PathBuf::from(s.get_ref()))
                .collect(),
            vm,
        });
    }
    if raw.domains.is_empty() {
        r.at(raw.name.span(), "the profile has no [[domain]]");
    }
    if raw.base.is_none() && raw.domains.iter().any(|d| d.rootfs.is_none()) {
        r.at(
            raw.name.span(),
            "a domain without rootfs needs the profile's shared base",
        );
    }
    let (mut foreground, mut background, mut bg_weight) = (None, BackgroundMode::default(), 10);
    if let Some(f) = &raw.foreground {
        match domains.iter().find(|d| d.name == *f.initial.get_ref()) {
            None => r.at(
                f.initial.span(),
                format!("foreground.initial: no domain {:?}", f.initial.get_ref()),
            ),
            Some(d) if d.role == Role::Realtime => r.at(
                f.initial.span(),
                format!(
                    "foreground.initial: {:?} is a realtime domain and cannot be in the foreground",
                    d.name
                ),
            ),
            Some(_) => foreground = Some(f.initial.get_ref().clone()),
        }
        background = f.background;
        if let Some(w) = &f.background_cpu_weight {
            if !(1..=10000).contains(w.get_ref()) {
                r.at(
                    w.span(),
                    format!(
                        "foreground.background_cpu_weight {} is outside 1..10000",
                        w.get_ref()
                    ),
                );
            }
            bg_weight = *w.get_ref();
        }
    } else if domains.iter().any(|d| !d.exclusive_devices.is_empty()) {
        r.at(
            raw.name.span(),
            "exclusive devices need a [foreground] section naming the initial foreground domain",
        );
    }
    let mut rules = Vec::new();
    let mut seen = BTreeMap::new();
    for a in &raw.allow {
        for end in [&a.from, &a.to] {
            if !names.contains(end.get_ref()) {
                r.at(end.span(), format!("allow: no domain {:?}", end.get_ref()));
            }
        }
        if a.from.get_ref() == a.to.get_ref() {
            r.at(
                a.to.span(),
                format!("allow: a channel from {:?} to itself", a.to.get_ref()),
            );
        }
        let ch = a.channel.get_ref();
        if ch.is_empty()
            || !ch
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        {
            r.at(
                a.channel.span(),
                format!("allow: channel name {ch:?}: use letters, digits, - _ ."),
            );
        }
        let buffer = match parse_size(a.buffer.get_ref()) {
            Some(b) if b.is_power_of_two() && (4096..=64 << 20).contains(&b) => b,
            _ => {
                r.at(
                    a.buffer.span(),
                    format!(
                        "allow: buffer {:?} must be a power of two from 4K to 64M",
                        a.buffer.get_ref()
                    ),
                );
                0
            }
        };
        let key = (a.from.get_ref().clone(), a.to.get_ref().clone(), ch.clone());
        if seen.insert(key, ()).is_some() {
            r.at(
                a.channel.span(),
                format!(
                    "allow: channel {ch:?} from {:?} to {:?} is allowed twice",
                    a.from.get_ref(),
                    a.to.get_ref()
                ),
            );
        }
        rules.push(Rule {
            from: a.from.get_ref().clone(),
            to: a.to.get_ref().clone(),
            channel: ch.clone(),
            buffer,
        });
    }
    let mut device_nodes: BTreeMap<String, PathBuf> = DEFAULT_DEVICE_NODES
        .iter()
        .map(|(c, p)| (c.to_string(), PathBuf::from(p)))
        .collect();
    let mut entries: Vec<_> = raw.device_nodes.iter().collect();
    entries.sort_by_key(|(c, _)| c.span().start);
    for (class, node) in entries {
        let c = class.get_ref();
        if c == "network"
            || !(EXCLUSIVE_DEVICES.contains(&c.as_str()) || SHARED_DEVICES.contains(&c.as_str()))
        {
            r.at(
                class.span(),
                format!("device_nodes: {c:?} is not a device class with a node (display, input, camera, audio)"),
            );
            continue;
        }
        let p = Path::new(node.get_ref());
        if !p.starts_with("/dev/") || p.components().any(|c| c == std::path::Component::ParentDir) {
            r.at(
                node.span(),
                format!(
                    "device_nodes: {:?} is not a path under /dev",
                    node.get_ref()
                ),
            );
            continue;
        }
        device_nodes.insert(c.clone(), p.to_path_buf());
    }
    if !r.errors.is_empty() {
        return Err(Errors(r.errors));
    }
    Ok(Profile {
        device_nodes,
        name: raw.name.into_inner(),
        base: raw.base.map(|b| dir.join(b.get_ref())),
        domains,
        foreground,
        background,
        background_cpu_weight: bg_weight,
        policy: Policy::new(rules),
    })
}

/// Load a profile file.
pub fn load(path: &Path) -> Result<Profile, Errors> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Errors(vec![format!("{}: {e}", path.display())]))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    parse(&text, &path.display().to_string(), dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errs(text: &str) -> Vec<String> {
        match parse(text, "p.toml", Path::new("/x")) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(Errors(e)) => e,
        }
    }

    const OK: &str = r#"
name = "t"
base = "rootfs"
[foreground]
initial = "a"
[[domain]]
name = "a"
role = "trusted"
command = ["/bin/sh"]
devices.exclusive = ["display"]
[[domain]]
name = "b"
role = "realtime"
cpus = "1"
command = ["/bin/sh"]
[[allow]]
from = "a"
to = "b"
channel = "ctl"
buffer = "64K"
"#;

    #[test]
    fn the_embedded_phone_profile_is_valid() {
        let p = parse(crate::DEFAULT_PROFILE, "phone.toml", Path::new("/x")).unwrap();
        assert!(p.domains.len() >= 3);
        assert!(p.domains.iter().any(|d| d.role == Role::Realtime));
        assert!(p.foreground.is_some());
    }

    #[test]
    fn a_valid_profile_parses() {
        let p = parse(OK, "p.toml", Path::new("/x")).unwrap();
        assert_eq!(p.base, Some(PathBuf::from("/x/rootfs")));
        assert_eq!(p.domain("a").unwrap().exclusive_devices, ["display"]);
        assert_eq!(p.domain("b").unwrap().cpu_weight, 100);
        assert_eq!(p.foreground.as_deref(), Some("a"));
    }

    #[test]
    fn syntax_errors_have_a_place() {
        let e = errs("name = \"t\"\n[[domain]\n");
        assert_eq!(e.len(), 1);
        assert!(e[0].starts_with("p.toml:2:"), "{e:?}");
    }

    #[test]
    fn unknown_fields_and_roles_are_refused_with_a_place() {
        let e = errs(&OK.replace("role = \"trusted\"", "role = \"boss\""));
        assert!(
            e[0].starts_with("p.toml:8:") && e[0].contains("boss"),
            "{e:?}"
        );
        let e = errs(&OK.replace("cpus = \"1\"", "cpus = \"1\"\ncolour = 3"));
        assert!(e[0].contains("colour"), "{e:?}");
    }

    #[test]
    fn every_semantic_error_is_reported_on_its_line() {
        let bad = OK
            .replace("initial = \"a\"", "initial = \"nobody\"")
            .replace("to = \"b\"", "to = \"ghost\"")
            .replace("buffer = \"64K\"", "buffer = \"3000\"")
            .replace("cpus = \"1\"", "cpus = \"x\"")
            .replace(
                "devices.exclusive = [\"display\"]",
                "devices.exclusive = [\"printer\"]",
            );
        let e = errs(&bad);
        assert_eq!(e.len(), 5, "{e:#?}");
        assert!(
            e.iter()
                .any(|l| l.starts_with("p.toml:5:") && l.contains("nobody")),
            "{e:#?}"
        );
        assert!(
            e.iter()
                .any(|l| l.starts_with("p.toml:18:") && l.contains("ghost")),
            "{e:#?}"
        );
        assert!(
            e.iter()
                .any(|l| l.starts_with("p.toml:20:") && l.contains("power of two")),
            "{e:#?}"
        );
        assert!(
            e.iter()
                .any(|l| l.starts_with("p.toml:14:") && l.contains("cpus")),
            "{e:#?}"
        );
        assert!(
            e.iter()
                .any(|l| l.starts_with("p.toml:10:") && l.contains("printer")),
            "{e:#?}"
        );
    }

    #[test]
    fn structural_rules() {
        // Twice the same domain; a realtime domain without cpus, or in the foreground.
        let e = errs(&OK.replace("name = \"b\"", "name = \"a\""));
        assert!(e.iter().any(|l| l.contains("defined twice")), "{e:?}");
        let e = errs(&OK.replace("cpus = \"1\"\n", ""));
        assert!(e.iter().any(|l| l.contains("needs its own cpus")), "{e:?}");
        let e = errs(&OK.replace("initial = \"a\"", "initial = \"b\""));
        assert!(
            e.iter().any(|l| l.contains("cannot be in the foreground")),
            "{e:?}"
        );
        let e = errs(&OK.replace("to = \"b\"", "to = \"a\""));
        assert!(e.iter().any(|l| l.contains("to itself")), "{e:?}");
    }

    #[test]
    fn device_nodes_map_classes_to_host_nodes() {
        let p = parse(
            &format!("{OK}[device_nodes]\ndisplay = \"/dev/vcs1\"\n"),
            "p.toml",
            Path::new("/x"),
        )
        .unwrap();
        assert_eq!(p.device_nodes["display"], PathBuf::from("/dev/vcs1"));
        // Unset classes keep a phone's usual node.
        assert_eq!(p.device_nodes["camera"], PathBuf::from("/dev/video0"));
        assert_eq!(
            p.exclusive_nodes(p.domain("a").unwrap()),
            [PathBuf::from("/dev/vcs1")]
        );
        let e = errs(&format!("{OK}[device_nodes]\nprinter = \"/dev/lp0\"\nnetwork = \"/dev/x\"\ninput = \"/etc/passwd\"\n"));
        assert_eq!(e.len(), 3, "{e:?}");
        assert!(
            e[0].starts_with("p.toml:22:") && e[0].contains("printer"),
            "{e:?}"
        );
        assert!(e.iter().any(|l| l.contains("network")), "{e:?}");
        assert!(
            e.iter()
                .any(|l| l.starts_with("p.toml:24:") && l.contains("not a path under /dev")),
            "{e:?}"
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64K"), Some(65536));
        assert_eq!(parse_size("128M"), Some(128 << 20));
        assert_eq!(parse_size("1GiB"), Some(1 << 30));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("12Q"), None);
        assert_eq!(parse_size("M"), None);
    }
}
