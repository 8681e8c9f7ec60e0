//! Container state on disk: `<root>/<id>/state.json`, written atomically, read by every verb.
//! The status is not stored: it is derived from the init process and the exec fifo each time,
//! so it is right even after the runtime process that wrote the file crashed.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cgroups::{Cgroup, Hierarchy};
use crate::error::{Context, Error, Result};
use crate::util::{proc_stat, write_atomic};

/// What the runtime remembers about one container.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    pub oci_version: String,
    pub id: String,
    /// Host pid of the container's init process.
    pub pid: i32,
    /// Its start time in clock ticks since boot, to detect a reused pid.
    pub pid_start: u64,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    #[serde(default)]
    pub annotations: HashMap<String, String>,
    pub created: String,
    pub owner: String,
    /// Relative cgroup path and the hierarchies it was made in.
    pub cgroup_path: PathBuf,
    pub cgroup_v2: bool,
    /// With the systemd cgroup driver: the container's transient unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub systemd_unit: Option<String>,
    /// Without a mount namespace of its own, the container's mounts are the host's: the ids of
    /// the mounts at or under the rootfs before it was created, so delete removes the rest.
    #[serde(default)]
    pub host_mounts_before: Option<Vec<u32>>,
    /// The config, kept for exec, the poststop hooks and delete.
    pub config: oci_spec::runtime::Spec,
}

/// The runtime-spec statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Creating,
    Created,
    Running,
    Paused,
    Stopped,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        })
    }
}

/// The verbs that act on a container only in some statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Start,
    Kill,
    Delete,
    Pause,
    Resume,
    Exec,
    Stats,
    Update,
}

impl Verb {
    /// What the user is told when the container's status does not allow the verb.
    fn refusal(self) -> &'static str {
        match self {
            Verb::Start => "only a created container can be started",
            Verb::Kill => "cannot signal a stopped container",
            Verb::Delete => "stop it first, or use delete --force",
            Verb::Pause => "only a running container can be paused",
            Verb::Resume => "only a paused container can be resumed",
            Verb::Exec => "exec needs a running container",
            Verb::Stats => "no statistics for a stopped container",
            Verb::Update => "a stopped container's resources cannot be updated",
        }
    }
}

impl Status {
    /// May `verb` act on a container in this status? The runtime spec's lifecycle (youki's
    /// `can_start`, `can_kill`, ... in one table).
    pub fn allows(self, verb: Verb) -> bool {
        match verb {
            Verb::Start => self == Status::Created,
            Verb::Kill | Verb::Stats | Verb::Update => self != Status::Stopped,
            Verb::Delete => self == Status::Stopped,
            Verb::Pause | Verb::Exec => self == Status::Running,
            Verb::Resume => self == Status::Paused,
        }
    }
}

/// The directory holding all containers' state.
#[derive(Debug, Clone)]
pub struct Root(pub PathBuf);

/// Container ids are used in paths: keep them to a safe alphabet.
pub fn validate_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 1024
        && id != "."
        && id != ".."
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-+".contains(c));
    if !ok {
        return Err(Error::Msg(format!(
            "invalid container id {id:?}: use letters, digits and . _ - +"
        )));
    }
    Ok(())
}

impl Root {
    pub fn dir(&self, id: &str) -> PathBuf {
        self.0.join(id)
    }

    pub fn ensure(&self) -> Result<()> {
        fs::create_dir_all(&self.0).ctx(|| format!("creating state root {}", self.0.display()))?;
        use std::os::unix::fs::PermissionsExt;
        let _ = fs::set_permissions(&self.0, fs::Permissions::from_mode(0o700));
        Ok(())
    }

    /// Load a container's state, with a clear error for an unknown id.
    pub fn load(&self, id: &str) -> Result<State> {
        validate_id(id)?;
        let p = self.dir(id).join("state.json");
        let data = match fs::read(&p) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotFound(id.to_string()))
            }
            Err(e) => return Err(e).ctx(|| format!("reading {}", p.display())),
        };
        serde_json::from_slice(&data)
            .map_err(|e| Error::Msg(format!("corrupt state {}: {e}", p.display())))
    }

    /// Ids of every container with a state directory, sorted.
    pub fn ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = fs::read_dir(&self.0)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().join("state.json").exists())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        ids.sort();
        ids
    }
}

impl State {
    pub fn save(&self, root: &Root) -> Result<()> {
        let data = serde_json::to_vec(self).map_err(|e| Error::Msg(e.to_string()))?;
        write_atomic(&root.dir(&self.id).join("state.json"), &data)
    }

    pub fn fifo(&self, root: &Root) -> PathBuf {
        root.dir(&self.id).join("exec.fifo")
    }

    /// Is the init process alive (and the same process we started)?
    pub fn init_alive(&self) -> bool {
        self.pid > 0
            && proc_stat(self.pid).is_some_and(|(state, start)| {
                start == self.pid_start && state != 'Z' && state != 'X'
            })
    }

    pub fn cgroup(&self) -> Result<Cgroup> {
        let h = crate::cgroups::hierarchies()?;
        let h: Vec<Hierarchy> = if self.cgroup_v2 {
            h.into_iter()
                .filter(|h| matches!(h, Hierarchy::Unified(_)))
                .collect()
        } else {
            h.into_iter()
                .filter(|h| matches!(h, Hierarchy::V1 { .. }))
                .collect()
        };
        Ok(Cgroup::new(&self.cgroup_path, h))
    }

    pub fn status(&self, root: &Root) -> Status {
        if !self.init_alive() {
            return Status::Stopped;
        }
        if self.fifo(root).exists() {
            return Status::Created;
        }
        if self.cgroup().map(|c| c.is_frozen()).unwrap_or(false) {
            return Status::Paused;
        }
        Status::Running
    }

    /// The container's status, when `verb` may act on it; otherwise the error that says why
    /// not.
    pub fn status_for(&self, root: &Root, verb: Verb) -> Result<Status> {
        let status = self.status(root);
        if !status.allows(verb) {
            return Err(Error::BadState {
                id: self.id.clone(),
                status: status.to_string(),
                msg: verb.refusal().into(),
            });
        }
        Ok(status)
    }

    /// The runtime-spec state document (what `state` prints and hooks read on stdin).
    pub fn oci(&self, status: Status) -> serde_json::Value {
        serde_json::json!({
            "ociVersion": self.oci_version,
            "id": self.id,
            "status": status.to_string(),
            "pid": if status == Status::Stopped { 0 } else { self.pid },
            "bundle": self.bundle,
            "rootfs": self.rootfs,
            "created": self.created,
            "owner": self.owner,
            "annotations": self.annotations,
        })
    }
}

/// The state directory of a container being created; removed on drop unless kept.
pub struct NewDir {
    pub path: PathBuf,
    keep: bool,
}

impl NewDir {
    pub fn create(root: &Root, id: &str) -> Result<Self> {
        root.ensure()?;
        let path = root.dir(id);
        match fs::create_dir(&path) {
            Ok(()) => Ok(NewDir { path, keep: false }),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(Error::Exists(id.to_string()))
            }
            Err(e) => Err(e).ctx(|| format!("creating {}", path.display())),
        }
    }
    pub fn keep(mut self) {
        self.keep = true;
    }
}

impl Drop for NewDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

pub fn remove_dir(root: &Root, id: &str) -> Result<()> {
    let p = root.dir(id);
    match fs::remove_dir_all(&p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).ctx(|| format!("removing {}", p.display())),
    }
}

pub fn exists(root: &Root, id: &str) -> bool {
    Path::new(&root.dir(id)).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked() {
        assert!(validate_id("web-1.a_b+c").is_ok());
        for bad in ["", ".", "..", "a/b", "a b", "x\0"] {
            assert!(validate_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn new_dir_is_removed_unless_kept() {
        let t = tempfile::tempdir().unwrap();
        let root = Root(t.path().join("r"));
        {
            let d = NewDir::create(&root, "a").unwrap();
            assert!(d.path.is_dir());
            assert!(matches!(NewDir::create(&root, "a"), Err(Error::Exists(_))));
        }
        assert!(!root.dir("a").exists());
        NewDir::create(&root, "b").unwrap().keep();
        assert!(root.dir("b").exists());
        assert!(matches!(
            root.load("b"),
            Err(Error::Msg(_)) | Err(Error::NotFound(_))
        ));
        assert!(matches!(root.load("zzz"), Err(Error::NotFound(_))));
    }

    #[test]
    fn each_verb_applies_in_the_statuses_of_the_lifecycle() {
        use Status::*;
        let all = [Creating, Created, Running, Paused, Stopped];
        let allowed =
            |v: Verb| -> Vec<Status> { all.iter().copied().filter(|s| s.allows(v)).collect() };
        assert_eq!(allowed(Verb::Start), [Created]);
        assert_eq!(allowed(Verb::Kill), [Creating, Created, Running, Paused]);
        assert_eq!(allowed(Verb::Stats), [Creating, Created, Running, Paused]);
        assert_eq!(allowed(Verb::Delete), [Stopped]);
        assert_eq!(allowed(Verb::Pause), [Running]);
        assert_eq!(allowed(Verb::Exec), [Running]);
        assert_eq!(allowed(Verb::Resume), [Paused]);
    }
}
