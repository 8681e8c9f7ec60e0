//! Domains as containers: the [`domain::Backend`] of the device platform. A domain becomes a
//! container whose root is an overlay of the profile's shared base with the domain's private
//! layer (Cells' layout), whose limits come from the profile, and whose state lives under the
//! backend's directory: `<dir>/domains/<name>/` (layer, bundle) and `<dir>/oci/` (runtime state).

use std::path::{Path, PathBuf};

use domain::{Backend, BackendError, Domain, DomainStatus};
use serde_json::json;

use crate::layers::Layered;
use crate::runtime::{self, CreateOpts};
use crate::state::{Root, Status};

pub struct ContainerBackend {
    dir: PathBuf,
    /// Prefix of the container ids (and so of the cgroup paths) of this backend's domains.
    prefix: String,
}

fn err(e: impl std::fmt::Display) -> BackendError {
    BackendError(e.to_string())
}

/// The OCI config of a domain: its command, a private hostname, network, pid, ipc, uts, mount
/// and cgroup namespaces, the default capabilities, and its limits.
pub fn oci_config(d: &Domain, rootfs: &Path) -> Result<serde_json::Value, BackendError> {
    let mut c = runtime::default_spec(false);
    c["process"]["terminal"] = json!(false);
    c["process"]["args"] = json!(d.command);
    c["hostname"] = json!(d.name);
    c["root"] = json!({"path": rootfs, "readonly": false});
    c["annotations"] = json!({"io.cellvisor.domain": d.name, "io.cellvisor.role": format!("{:?}", d.role).to_lowercase()});
    let mut res = json!({});
    res["cpu"] = json!({"shares": crate::cgroups::plan::weight_to_shares(d.cpu_weight.into())});
    if let Some(cpus) = &d.cpus {
        res["cpu"]["cpus"] = json!(cpus);
    }
    if let Some(m) = d.memory_bytes {
        res["memory"] = json!({"limit": m, "swap": m});
    }
    if let Some(p) = d.pids {
        res["pids"] = json!({"limit": p});
    }
    let (mut devices, mut rules) = (Vec::new(), vec![json!({"allow": false, "access": "rwm"})]);
    for p in &d.passthrough {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let m = std::fs::metadata(p).map_err(|e| {
            err(format!(
                "domain {}: passthrough {}: {e}",
                d.name,
                p.display()
            ))
        })?;
        let typ = if m.file_type().is_char_device() {
            "c"
        } else if m.file_type().is_block_device() {
            "b"
        } else {
            return Err(err(format!(
                "domain {}: passthrough {} is not a device node",
                d.name,
                p.display()
            )));
        };
        let (major, minor) = (libc::major(m.rdev()), libc::minor(m.rdev()));
        devices.push(json!({"path": p, "type": typ, "major": major, "minor": minor, "fileMode": m.mode() & 0o777}));
        rules.push(
            json!({"allow": true, "type": typ, "major": major, "minor": minor, "access": "rwm"}),
        );
    }
    res["devices"] = json!(rules);
    c["linux"]["resources"] = res;
    c["linux"]["devices"] = json!(devices);
    Ok(c)
}

impl ContainerBackend {
    /// A backend keeping its state in `dir`; its containers are named `<prefix>-<domain>`.
    pub fn new(dir: &Path, prefix: &str) -> Self {
        ContainerBackend {
            dir: dir.to_path_buf(),
            prefix: prefix.to_string(),
        }
    }

    /// The container id of a domain.
    pub fn container_id(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }

    fn root(&self) -> Root {
        Root(self.dir.join("oci"))
    }

    /// The domain's output (stdout and stderr of its command).
    pub fn log_path(&self, name: &str) -> PathBuf {
        self.domain_dir(name).join("log")
    }

    fn domain_dir(&self, name: &str) -> PathBuf {
        self.dir.join("domains").join(name)
    }

    fn layer(&self, name: &str, base: &Path) -> Layered {
        Layered::new(base, &self.domain_dir(name).join("layer"))
    }
}

impl Backend for ContainerBackend {
    fn up(&self, d: &Domain, base: Option<&Path>) -> Result<(), BackendError> {
        if crate::state::exists(&self.root(), &self.container_id(&d.name)) {
            return Err(err(format!("domain {} is already up", d.name)));
        }
        let dd = self.domain_dir(&d.name);
        let bundle = dd.join("bundle");
        std::fs::create_dir_all(&bundle)
            .map_err(|e| err(format!("creating {}: {e}", bundle.display())))?;
        let (rootfs, layer) = match (&d.rootfs, base) {
            (Some(r), _) => (r.clone(), None),
            (None, Some(b)) => {
                let l = self.layer(&d.name, b);
                (l.prepare().map_err(|e| err(e.chain()))?, Some(l))
            }
            (None, None) => {
                return Err(err(format!(
                    "domain {}: no rootfs and no shared base",
                    d.name
                )))
            }
        };
        let r = (|| {
            let cfg = oci_config(d, &rootfs)?;
            std::fs::write(bundle.join("config.json"), cfg.to_string())
                .map_err(|e| err(format!("writing the bundle: {e}")))?;
            let o = CreateOpts {
                id: self.container_id(&d.name),
                bundle: bundle.clone(),
                log: Some(dd.join("log")),
                ..Default::default()
            };
            runtime::create(&self.root(), &o)
                .map_err(|e| err(format!("domain {}: {}", d.name, e.chain())))?;
            runtime::start(&self.root(), &o.id).map_err(|e| {
                let _ = runtime::delete(&self.root(), &o.id, true);
                err(format!("domain {}: {}", d.name, e.chain()))
            })
        })();
        if r.is_err() {
            if let Some(l) = layer {
                let _ = l.unmount();
            }
        }
        r
    }

    fn down(&self, name: &str) -> Result<(), BackendError> {
        let id = self.container_id(name);
        runtime::delete(&self.root(), &id, true).map_err(|e| err(e.chain()))?;
        // The base path is not needed to unmount.
        self.layer(name, Path::new("/"))
            .unmount()
            .map_err(|e| err(e.chain()))
    }

    fn destroy(&self, name: &str) -> Result<(), BackendError> {
        self.down(name)?;
        let dd = self.domain_dir(name);
        match std::fs::remove_dir_all(&dd) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(err(format!("removing {}: {e}", dd.display()))),
        }
    }

    fn status(&self, name: &str) -> Result<DomainStatus, BackendError> {
        let root = self.root();
        match root.load(&self.container_id(name)) {
            Ok(st) => Ok(match st.status(&root) {
                Status::Paused => DomainStatus::Frozen,
                Status::Stopped => DomainStatus::Stopped,
                _ => DomainStatus::Running,
            }),
            Err(crate::Error::NotFound(_)) => Ok(DomainStatus::Stopped),
            Err(e) => Err(err(e.chain())),
        }
    }

    fn freeze(&self, name: &str, frozen: bool) -> Result<(), BackendError> {
        runtime::set_paused(&self.root(), &self.container_id(name), frozen)
            .map_err(|e| err(e.chain()))
    }

    fn set_cpu_weight(&self, name: &str, weight: u32) -> Result<(), BackendError> {
        if !(1..=10000).contains(&weight) {
            return Err(err(format!("cpu weight {weight} is outside 1..10000")));
        }
        let st = self
            .root()
            .load(&self.container_id(name))
            .map_err(|e| err(e.chain()))?;
        st.cgroup()
            .and_then(|c| c.set_cpu_weight(weight))
            .map_err(|e| err(e.chain()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_domain_becomes_an_oci_config() {
        let p =
            domain::profile::parse(domain::DEFAULT_PROFILE, "phone.toml", Path::new("/x")).unwrap();
        let d = p.domain("modem").unwrap();
        let c = oci_config(d, Path::new("/r")).unwrap();
        assert_eq!(c["hostname"], "modem");
        assert_eq!(c["linux"]["resources"]["cpu"]["cpus"], "1");
        assert_eq!(c["linux"]["resources"]["memory"]["limit"], 32 << 20);
        assert_eq!(c["linux"]["resources"]["pids"]["limit"], 32);
        assert_eq!(c["process"]["args"][0], "/bin/sh");
        // The config is one the runtime accepts.
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("rootfs")).unwrap();
        let mut c = c;
        c["root"]["path"] = json!("rootfs");
        let spec: oci_spec::runtime::Spec = serde_json::from_value(c).unwrap();
        crate::config::from_spec(spec, dir.path().into()).unwrap();
    }
}
