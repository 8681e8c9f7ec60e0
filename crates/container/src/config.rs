//! Loading and validating a bundle's `config.json`: every check that can be made before any
//! syscall, so a bad config is refused with one line and nothing is created.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxIdMapping, LinuxNamespaceType, Spec};

use crate::config_err;
use crate::error::{Error, Result};
use crate::namespaces::Namespaces;

/// A loaded, validated config with its bundle and absolute rootfs.
#[derive(Debug, Clone)]
pub struct Config {
    pub spec: Spec,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub namespaces: Namespaces,
    /// linux.seccomp, compiled (validating it compiles it).
    pub seccomp: Option<crate::seccomp::Filter>,
}

/// Parse JSON into a `Spec`, with the place of the error in the message.
pub fn parse_spec(json: &[u8], what: &str) -> Result<Spec> {
    fn process(v: &mut serde_json::Value) -> Option<&mut serde_json::Value> {
        v.get_mut("process")
    }
    parse_with_spec_names(json, what, process)
}

/// Parse an `exec` process.json.
pub fn parse_process(json: &[u8], what: &str) -> Result<oci_spec::runtime::Process> {
    fn whole(v: &mut serde_json::Value) -> Option<&mut serde_json::Value> {
        Some(v)
    }
    parse_with_spec_names(json, what, whole)
}

/// Parse `json` as a `T`; where that fails only because a process's scheduler flags carry the
/// runtime spec's names (which oci-spec 0.10 refuses, see sched::spec_flag_names), parse it
/// again with them renamed. An error keeps its place in the text when it has one.
fn parse_with_spec_names<T: serde::de::DeserializeOwned>(
    json: &[u8],
    what: &str,
    process: fn(&mut serde_json::Value) -> Option<&mut serde_json::Value>,
) -> Result<T> {
    refuse_nul(json, what)?;
    let first = match serde_json::from_slice(json) {
        Ok(t) => return Ok(t),
        Err(e) => e,
    };
    // serde quotes what the document says (an unknown key, a bad value) as it was written.
    let said = |e: &serde_json::Error| domain::one_line(&e.to_string());
    let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(json) else {
        return Err(config_err!("{what}: {}", said(&first)));
    };
    let before = v.clone();
    if let Some(p) = process(&mut v) {
        crate::sched::spec_flag_names(p);
    }
    if v == before {
        return Err(config_err!("{what}: {}", said(&first)));
    }
    serde_json::from_value(v).map_err(|e| config_err!("{what}: {}", said(&e)))
}

/// Refuse a document with a NUL byte in any string (a key or a value): no such string reaches
/// a syscall intact (execve, a path, a sysctl would be cut at it), so none is accepted. JSON
/// can carry one only as the escape `\u0000`, so documents without it are not parsed twice.
fn refuse_nul(json: &[u8], what: &str) -> Result<()> {
    if !json.windows(6).any(|w| w.eq_ignore_ascii_case(b"\\u0000")) {
        return Ok(());
    }
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(json) else {
        return Ok(());
    };
    match nul_at(&v, String::new()) {
        Some(at) => Err(config_err!("{what}: {at}: contains a NUL byte")),
        None => Ok(()),
    }
}

/// The place (`process.env[1]`) of the first string in `v` holding a NUL byte.
pub fn nul_at(v: &serde_json::Value, at: String) -> Option<String> {
    let join = |k: &str| {
        if at.is_empty() {
            k.to_string()
        } else {
            format!("{at}.{k}")
        }
    };
    match v {
        serde_json::Value::String(s) if s.contains('\0') => {
            Some(if at.is_empty() { "a string".into() } else { at })
        }
        serde_json::Value::Array(a) => a
            .iter()
            .enumerate()
            .find_map(|(i, x)| nul_at(x, format!("{at}[{i}]"))),
        serde_json::Value::Object(o) => o.iter().find_map(|(k, x)| {
            if k.contains('\0') {
                Some(format!("{} (a key)", join(&k.replace('\0', "\\0"))))
            } else {
                nul_at(x, join(k))
            }
        }),
        _ => None,
    }
}

/// The fuzz target's check (`fuzz/fuzz_targets/oci_config.rs`) and a proptest's: whatever the
/// bytes, config.json becomes a validated config or is refused in one line, and process.json
/// (`exec --process`) the same; no file is read, nothing is made.
pub fn fuzz(data: &[u8]) {
    let one_line = |e: Error| {
        let m = e.to_string();
        assert!(!m.contains('\n'), "a refusal of more than one line: {m}");
    };
    if let Err(e) = parse_spec(data, "config.json").and_then(|s| from_spec(s, "/bundle".into())) {
        one_line(e);
    }
    if let Err(e) = parse_process(data, "process.json").and_then(|p| validate_process(&p)) {
        one_line(e);
    }
}

/// Load `<bundle>/config.json`, validate it, and resolve the rootfs.
pub fn load(bundle: &Path) -> Result<Config> {
    let bundle = std::fs::canonicalize(bundle)
        .map_err(|e| Error::Msg(format!("bundle {}: {e}", bundle.display())))?;
    let path = bundle.join("config.json");
    let json = domain::read_document(&path)
        .map_err(|e| Error::Msg(format!("cannot read {}: {e}", path.display())))?;
    let spec = parse_spec(&json, "config.json")?;
    from_spec(spec, bundle)
}

/// Validate a parsed spec for the bundle directory `bundle`.
pub fn from_spec(spec: Spec, bundle: PathBuf) -> Result<Config> {
    if !spec.version().starts_with("1.") {
        return Err(config_err!(
            "ociVersion {:?} is not supported (want 1.x)",
            spec.version()
        ));
    }
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| config_err!("root: missing"))?;
    let rootfs = if root.path().is_absolute() {
        root.path().clone()
    } else {
        bundle.join(root.path())
    };
    if !rootfs.is_dir() {
        return Err(config_err!(
            "root.path: rootfs {} does not exist or is not a directory",
            rootfs.display()
        ));
    }
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| config_err!("process: missing"))?;
    validate_process(process)?;
    let linux = spec
        .linux()
        .as_ref()
        .ok_or_else(|| config_err!("linux: missing"))?;
    let namespaces = Namespaces::from_spec(linux.namespaces().as_deref().unwrap_or_default())?;

    // User namespace and id mappings.
    let uid = linux.uid_mappings().as_deref().unwrap_or_default();
    let gid = linux.gid_mappings().as_deref().unwrap_or_default();
    if namespaces.creates(LinuxNamespaceType::User) {
        validate_mappings("linux.uidMappings", uid)?;
        validate_mappings("linux.gidMappings", gid)?;
    } else if !uid.is_empty() || !gid.is_empty() {
        return Err(config_err!(
            "linux.uidMappings/gidMappings: given, but no new user namespace is requested"
        ));
    }

    for (i, m) in spec
        .mounts()
        .as_deref()
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        if !m.destination().is_absolute() {
            return Err(config_err!(
                "mounts[{i}].destination: {:?} is not an absolute path",
                m.destination()
            ));
        }
        crate::mounts::MountOptions::parse(m.options().as_deref().unwrap_or_default())
            .map_err(|e| config_err!("mounts[{i}].options: {e}"))?;
        let typ = m.typ().as_deref().unwrap_or("bind");
        let opts = m.options().as_deref().unwrap_or_default();
        if (typ == "bind" || opts.iter().any(|o| o == "bind" || o == "rbind"))
            && m.source().is_none()
        {
            return Err(config_err!("mounts[{i}]: a bind mount needs a source"));
        }
    }

    if spec.hostname().as_deref().is_some_and(|h| !h.is_empty())
        && !namespaces.isolates(LinuxNamespaceType::Uts)
    {
        return Err(config_err!(
            "hostname: cannot set a hostname without the container's own UTS namespace"
        ));
    }
    if let Some(sysctl) = linux.sysctl() {
        for key in sysctl.keys() {
            validate_sysctl(key, &namespaces)?;
        }
    }
    if let Some(res) = linux.resources() {
        crate::cgroups::validate(res)?;
    }
    if crate::cgroups::exclusive::asked(spec.annotations().as_ref())?
        != crate::cgroups::exclusive::Want::No
        && crate::cgroups::cpus_of(linux.resources().as_ref()).is_empty()
    {
        return Err(config_err!(
            "annotations.{}: needs linux.resources.cpu.cpus, the cores to hold",
            crate::cgroups::exclusive::ANNOTATION
        ));
    }
    if let Some(p) = linux.cgroups_path() {
        crate::cgroups::validate_path(p)?;
    }
    if linux.time_offsets().as_ref().is_some_and(|o| !o.is_empty())
        && !namespaces.creates(LinuxNamespaceType::Time)
    {
        return Err(config_err!(
            "linux.timeOffsets: needs a new time namespace (linux.namespaces: {{\"type\": \"time\"}})"
        ));
    }
    crate::namespaces::timens_offsets(linux.time_offsets().as_ref())?;
    // Asked for and not done would be worse than refused: say so before anything is made.
    if linux.net_devices().as_ref().is_some_and(|d| !d.is_empty()) {
        return Err(config_err!(
            "linux.netDevices: moving host network devices into the container is not supported (give the container a network namespace set up beforehand, by path)"
        ));
    }
    if linux.intel_rdt().is_some() {
        return Err(config_err!(
            "linux.intelRdt: Intel RDT (resctrl) is not supported"
        ));
    }
    if let Some(p) = linux.personality() {
        if let Some(f) = p.flags().as_deref().filter(|f| !f.is_empty()) {
            return Err(config_err!(
                "linux.personality.flags: {f:?}: no flags are defined for a personality"
            ));
        }
    }
    let seccomp = linux
        .seccomp()
        .as_ref()
        .map(crate::seccomp::compile)
        .transpose()
        .map_err(|e| config_err!("linux.seccomp: {e}"))?;
    if let Some(hooks) = spec.hooks() {
        let all = [
            ("prestart", hooks.prestart()),
            ("createRuntime", hooks.create_runtime()),
            ("createContainer", hooks.create_container()),
            ("startContainer", hooks.start_container()),
            ("poststart", hooks.poststart()),
            ("poststop", hooks.poststop()),
        ];
        for (name, list) in all {
            for (i, h) in list.as_deref().unwrap_or_default().iter().enumerate() {
                if !h.path().is_absolute() {
                    return Err(config_err!(
                        "hooks.{name}[{i}].path: {:?} is not absolute",
                        h.path()
                    ));
                }
            }
        }
    }
    if let Some(prop) = linux.rootfs_propagation() {
        if !prop.is_empty() && crate::mounts::propagation_flag(prop).is_none() {
            return Err(config_err!(
                "linux.rootfsPropagation: unknown mode {prop:?}"
            ));
        }
    }
    let cfg = Config {
        rootfs,
        bundle,
        namespaces,
        seccomp,
        spec,
    };
    crate::devices::plan(&cfg, false)?;
    Ok(cfg)
}

/// Checks that apply to the container's process and to `exec`'s process.json alike.
pub fn validate_process(p: &oci_spec::runtime::Process) -> Result<()> {
    if p.args().as_deref().unwrap_or_default().is_empty() {
        return Err(config_err!("process.args: must not be empty"));
    }
    if !p.cwd().is_absolute() {
        return Err(config_err!(
            "process.cwd: {:?} is not an absolute path",
            p.cwd()
        ));
    }
    let mut seen = HashSet::new();
    for r in p.rlimits().as_deref().unwrap_or_default() {
        if !seen.insert(format!("{:?}", r.typ())) {
            return Err(config_err!("process.rlimits: {} given twice", r.typ()));
        }
        if r.soft() > r.hard() {
            return Err(config_err!(
                "process.rlimits: {} soft limit {} is above its hard limit {}",
                r.typ(),
                r.soft(),
                r.hard()
            ));
        }
    }
    for e in p.env().as_deref().unwrap_or_default() {
        if !e.contains('=') {
            return Err(config_err!("process.env: {e:?} is not NAME=value"));
        }
    }
    if let Some(s) = p.scheduler() {
        crate::sched::plan(s)?;
    }
    if let Some(io) = p.io_priority() {
        crate::sched::io_priority(io)?;
    }
    Ok(())
}

/// Mappings must be non-empty, of non-zero size, and not overlap on either side.
pub fn validate_mappings(field: &str, maps: &[LinuxIdMapping]) -> Result<()> {
    if maps.is_empty() {
        return Err(config_err!(
            "{field}: a new user namespace needs at least one mapping"
        ));
    }
    if maps.len() > 340 {
        return Err(config_err!("{field}: at most 340 mappings"));
    }
    for (i, m) in maps.iter().enumerate() {
        if m.size() == 0 {
            return Err(config_err!("{field}[{i}]: size must not be 0"));
        }
        for (what, start) in [("containerID", m.container_id()), ("hostID", m.host_id())] {
            if start.checked_add(m.size()).is_none() {
                return Err(config_err!("{field}[{i}]: {what} + size overflows"));
            }
        }
        for (j, o) in maps.iter().enumerate().skip(i + 1) {
            let overlap = |a: u32, b: u32| a < b + o.size() && b < a + m.size();
            if overlap(m.container_id(), o.container_id()) || overlap(m.host_id(), o.host_id()) {
                return Err(config_err!("{field}[{i}] and [{j}] overlap"));
            }
        }
    }
    Ok(())
}

/// A sysctl is allowed only when it belongs to a namespace the container has on its own.
pub fn validate_sysctl(key: &str, ns: &Namespaces) -> Result<()> {
    if key.contains('/') || key.contains("..") || key.is_empty() {
        return Err(config_err!("linux.sysctl: {key:?} is not a sysctl name"));
    }
    let need = if key.starts_with("net.") {
        LinuxNamespaceType::Network
    } else if key.starts_with("fs.mqueue.")
        || key.starts_with("kernel.msg")
        || key.starts_with("kernel.shm")
        || key == "kernel.sem"
    {
        LinuxNamespaceType::Ipc
    } else if key == "kernel.hostname" || key == "kernel.domainname" {
        LinuxNamespaceType::Uts
    } else {
        return Err(config_err!(
            "linux.sysctl: {key:?} is not namespaced and cannot be set for a container"
        ));
    };
    if !ns.isolates(need) {
        return Err(config_err!(
            "linux.sysctl: {key:?} needs the container's own {need} namespace"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 300, ..Default::default() })]
        /// The default spec with a few bytes changed: near enough to reach the validation.
        #[test]
        fn no_config_json_breaks_the_validation(edits in proptest::collection::vec((0usize..8000, proptest::prelude::any::<u8>()), 0..6)) {
            let mut b = crate::runtime::default_spec(false).to_string().into_bytes();
            for (at, v) in edits {
                let n = b.len();
                b[at % n] = v;
            }
            fuzz(&b);
        }
    }

    #[test]
    fn a_nul_anywhere_is_refused_at_its_place() {
        let e = refuse_nul(
            br#"{"process": {"env": ["A=1", "B=x\u0000y"]}}"#,
            "config.json",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("config.json: process.env[1]: contains a NUL byte"),
            "{e}"
        );
        let e = refuse_nul(br#"{"linux": {"sysctl": {"a\u0000b": "1"}}}"#, "c")
            .unwrap_err()
            .to_string();
        assert!(e.contains("linux.sysctl.a\\0b (a key)"), "{e}");
        // An escaped backslash before u0000 is text, not a NUL.
        assert!(refuse_nul(br#"{"a": "\\u0000"}"#, "c").is_ok());
        assert!(refuse_nul(br#"{"a": "plain"}"#, "c").is_ok());
    }

    fn bundle_with(json: &str) -> (tempfile::TempDir, Result<Config>) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("rootfs")).unwrap();
        std::fs::write(dir.path().join("config.json"), json).unwrap();
        let r = load(dir.path());
        (dir, r)
    }

    fn minimal(extra_linux: &str, extra_top: &str) -> String {
        format!(
            r#"{{"ociVersion":"1.0.2","root":{{"path":"rootfs"}},
            "process":{{"args":["/bin/true"],"cwd":"/","user":{{"uid":0,"gid":0}}}},
            {extra_top}
            "linux":{{"namespaces":[{{"type":"pid"}},{{"type":"mount"}}]{extra_linux}}}}}"#
        )
    }

    fn err(json: &str) -> String {
        match bundle_with(json).1 {
            Ok(_) => panic!("accepted: {json}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn minimal_config_is_accepted() {
        let (_d, r) = bundle_with(&minimal("", ""));
        let c = r.unwrap();
        assert!(c.rootfs.ends_with("rootfs"));
        assert!(c.namespaces.creates(LinuxNamespaceType::Pid));
    }

    #[test]
    fn malformed_json_names_the_place() {
        let e = err("{\"ociVersion\": ");
        assert!(e.contains("config.json") && e.contains("line 1"), "{e}");
    }

    #[test]
    fn unknown_namespace_type() {
        let e = err(&minimal("", "").replace("\"mount\"", "\"bogus\""));
        assert!(e.contains("bogus"), "{e}");
    }

    #[test]
    fn missing_rootfs() {
        let e = err(&minimal("", "").replace("\"rootfs\"", "\"nope\""));
        assert!(e.contains("does not exist"), "{e}");
    }

    #[test]
    fn relative_mount_destination() {
        let e = err(&minimal(
            "",
            r#""mounts":[{"destination":"proc","type":"proc","source":"proc"}],"#,
        ));
        assert!(e.contains("mounts[0].destination"), "{e}");
    }

    #[test]
    fn bad_id_mapping() {
        let base = minimal(
            r#","uidMappings":[{"containerID":0,"hostID":1000,"size":0}],"gidMappings":[{"containerID":0,"hostID":1000,"size":10}]"#,
            "",
        )
        .replace(r#"{"type":"mount"}"#, r#"{"type":"mount"},{"type":"user"}"#);
        assert!(err(&base).contains("size must not be 0"));
        let overlap = minimal(
            r#","uidMappings":[{"containerID":0,"hostID":1000,"size":10},{"containerID":5,"hostID":5000,"size":10}],"gidMappings":[{"containerID":0,"hostID":1000,"size":10}]"#,
            "",
        )
        .replace(r#"{"type":"mount"}"#, r#"{"type":"mount"},{"type":"user"}"#);
        assert!(err(&overlap).contains("overlap"));
        let no_userns = minimal(
            r#","uidMappings":[{"containerID":0,"hostID":1000,"size":10}]"#,
            "",
        );
        assert!(err(&no_userns).contains("no new user namespace"));
    }

    #[test]
    fn invalid_cgroup_values() {
        let e = err(&minimal(r#","resources":{"cpu":{"shares":1}}"#, ""));
        assert!(e.contains("shares"), "{e}");
        let e = err(&minimal(r#","resources":{"cpu":{"cpus":"0-x"}}"#, ""));
        assert!(e.contains("cpus"), "{e}");
        let e = err(&minimal(
            r#","resources":{"memory":{"limit":1048576,"swap":1000}}"#,
            "",
        ));
        assert!(e.contains("swap"), "{e}");
    }

    #[test]
    fn hostname_needs_uts() {
        let e = err(&minimal("", r#""hostname":"x","#));
        assert!(e.contains("UTS"), "{e}");
    }

    #[test]
    fn sysctl_rules() {
        let ns = Namespaces::from_spec(&[]).unwrap();
        assert!(validate_sysctl("net.ipv4.ip_forward", &ns).is_err());
        assert!(validate_sysctl("vm.swappiness", &ns).is_err());
    }

    #[test]
    fn rlimit_soft_above_hard() {
        let e = err(&minimal("", "").replace(
            r#""cwd":"/""#,
            r#""cwd":"/","rlimits":[{"type":"RLIMIT_NOFILE","soft":10,"hard":5}]"#,
        ));
        assert!(e.contains("soft limit"), "{e}");
    }
}
