//! A cellvisord of a benchmark: started on a profile in a work directory of its own, spoken
//! to over its API, its domains stopped and purged and the daemon stopped when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use daemon::client::request;
use serde_json::Value;

use crate::{io, Error, Result};

pub struct Device {
    pub name: String,
    pub dir: PathBuf,
    pub sock: PathBuf,
    /// Its domains' container ids (and cgroups) start with this and `-`.
    pub prefix: String,
    child: Option<Child>,
}

impl Device {
    /// Start cellvisord (the one beside this program) on `profile`, in `work`/`name`, with
    /// the in-domain `agent`; wait for its API.
    pub fn start(name: &str, work: &Path, profile: &str, agent: &Path) -> Result<Device> {
        let dir = work.join(name);
        io(std::fs::create_dir_all(&dir), || {
            format!("creating {}", dir.display())
        })?;
        let file = dir.join("profile.toml");
        io(std::fs::write(&file, profile), || {
            format!("writing {}", file.display())
        })?;
        let sock = dir.join("api.sock");
        let me = io(std::env::current_exe(), || "finding this program".into())?;
        let daemon = me.with_file_name("cellvisord");
        let prefix = format!("bench{name}-{}", std::process::id());
        let child = io(
            Command::new(&daemon)
                .arg("--profile")
                .arg(&file)
                .arg("--state")
                .arg(dir.join("state"))
                .arg("--socket")
                .arg(&sock)
                .arg("--agent")
                .arg(agent)
                .arg("--prefix")
                .arg(&prefix)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn(),
            || format!("starting {}", daemon.display()),
        )?;
        let mut dev = Device {
            name: name.to_string(),
            dir,
            sock,
            prefix,
            child: Some(child),
        };
        let end = Instant::now() + Duration::from_secs(10);
        while std::os::unix::net::UnixStream::connect(&dev.sock).is_err() {
            if Instant::now() > end {
                dev.stop();
                return Err(Error::Msg(format!("cellvisord ({name}) did not start")));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(dev)
    }

    /// A request that must succeed: its answer, or the daemon's error as ours.
    pub fn api(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        let (s, v) = request(&self.sock, method, path, body)?;
        if s >= 400 {
            return Err(Error::Msg(format!(
                "{method} {path} ({}): {}",
                self.name,
                v["error"].as_str().unwrap_or("refused")
            )));
        }
        Ok(v)
    }

    /// The daemon's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// The host directory a domain sees at /run/cellvisor.
    pub fn run_dir(&self, domain: &str) -> PathBuf {
        self.dir.join("state").join("run").join(domain)
    }

    pub fn stop(&mut self) {
        let _ = request(&self.sock, "POST", "/v1/down?purge=true", None);
        if let Some(mut c) = self.child.take() {
            // SAFETY: SIGTERM to our own child.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        self.stop();
    }
}
