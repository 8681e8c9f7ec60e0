//! A real systemd to test the systemd cgroup driver against: this machine's own root (its
//! Debian, with systemd, dbus and podman installed) under a throw-away overlay, booted with
//! systemd as PID 1 in a container domain of cellvisor's. Commands run inside it with
//! `exec`; the cellvisor binary and a work directory are bound in at their own paths.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::json;

use super::{bundle, config, rootfs, stderr, stdout, Bundle, BIN};

pub struct SystemdHost {
    pub b: Bundle,
    pub id: String,
    /// The overlay's tmpfs (upper layer) and the merged root.
    layers: PathBuf,
    merged: PathBuf,
    /// Bound in at the same path: the tests' files, visible on both sides.
    pub work: tempfile::TempDir,
}

/// What the host needs: systemd and the D-Bus daemon (scripts/deps.sh installs them).
pub fn available() -> bool {
    let ok =
        Path::new("/lib/systemd/systemd").exists() && Path::new("/usr/bin/dbus-daemon").exists();
    if !ok {
        eprintln!("skipped: systemd or dbus-daemon not installed (make test installs them)");
    }
    ok
}

fn mount(args: &[&str]) {
    let o = Command::new("mount").args(args).output().unwrap();
    assert!(o.status.success(), "mount {args:?}: {}", stderr(&o));
}

impl SystemdHost {
    /// Boot it and wait until systemd says the system is up.
    pub fn boot(id: &str) -> SystemdHost {
        let layers = tempfile::tempdir().unwrap().keep();
        let merged = layers.join("merged");
        mount(&["-t", "tmpfs", "tmpfs", layers.to_str().unwrap()]);
        for d in ["up", "work", "merged"] {
            std::fs::create_dir(layers.join(d)).unwrap();
        }
        let opts = format!(
            "lowerdir=/,upperdir={0}/up,workdir={0}/work",
            layers.display()
        );
        mount(&[
            "-t",
            "overlay",
            "overlay",
            "-o",
            &opts,
            merged.to_str().unwrap(),
        ]);
        let work = tempfile::tempdir().unwrap();
        // basic.target: dbus and the journal, not the host's own services.
        let mut c = config(&["/lib/systemd/systemd", "--unit=basic.target"]);
        c["root"] = json!({"path": merged, "readonly": false});
        c["process"]["env"] = json!(["container=cellvisor", "PATH=/usr/sbin:/usr/bin:/sbin:/bin"]);
        c["process"]["noNewPrivileges"] = json!(false);
        let features = Command::new(BIN).arg("features").output().unwrap();
        let features: serde_json::Value = serde_json::from_slice(&features.stdout).unwrap();
        let all = features["linux"]["capabilities"].clone();
        c["process"]["capabilities"] = json!({"bounding": all, "effective": all, "permitted": all});
        let linux = c["linux"].as_object_mut().unwrap();
        for k in ["maskedPaths", "readonlyPaths", "seccomp"] {
            linux.remove(k);
        }
        let mounts = c["mounts"].as_array_mut().unwrap();
        mounts.retain(|m| m["destination"] != "/sys/fs/cgroup" && m["destination"] != "/sys");
        mounts.extend([
            json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev"]}),
            json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "rw"]}),
            json!({"destination": "/run", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=755"]}),
            json!({"destination": BIN, "type": "bind", "source": BIN, "options": ["bind", "ro"]}),
            json!({"destination": work.path(), "type": "bind", "source": work.path(), "options": ["rbind", "rw"]}),
            json!({"destination": rootfs(), "type": "bind", "source": rootfs(), "options": ["bind", "ro"]}),
        ]);
        let b = bundle(&c);
        let (ok, err) = b.cv_bg(&["run", "-d", id]);
        let h = SystemdHost {
            b,
            id: id.to_string(),
            layers,
            merged,
            work,
        };
        assert!(ok, "booting systemd: {err}");
        let end = Instant::now() + Duration::from_secs(90);
        loop {
            let o = h.sh("systemctl is-system-running");
            let s = stdout(&o);
            if s.trim() == "running" || s.trim() == "degraded" {
                break;
            }
            assert!(
                Instant::now() < end,
                "systemd did not come up: {s}{}",
                stderr(&o)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        h
    }

    /// A shell command inside, as root.
    pub fn sh(&self, script: &str) -> Output {
        self.b.cv(&["exec", &self.id, "/bin/sh", "-c", script])
    }
}

impl Drop for SystemdHost {
    fn drop(&mut self) {
        let _ = self.b.cv(&["delete", "-f", &self.id]);
        let _ = Command::new("umount").arg("-l").arg(&self.merged).status();
        let _ = Command::new("umount").arg("-l").arg(&self.layers).status();
        let _ = std::fs::remove_dir_all(&self.layers);
    }
}
