//! The device platform's core, with no I/O of its own beyond its state file: which domains are
//! up, which one is in the foreground, which channels are open. Every request the API takes
//! lands in one method here; the policy is checked in [`Platform::open_channel`] and nowhere
//! else can a channel be made. Intent is written to disk before it is carried out, so a daemon
//! killed half-way finishes (or undoes) the job when it comes back ([`Platform::open`]).

use std::collections::BTreeMap;
use std::os::fd::{OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::Instant;

use channel::{Channel, End};
use domain::profile::BackgroundMode;
use domain::{Backend, Decision, DomainStatus, Profile, Role, UpOpts};
use serde::{Deserialize, Serialize};

use crate::keeper::EndStore;

/// An error as the API reports it: a kind (its HTTP status) and one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> u16 {
        match self {
            ApiError::BadRequest(_) => 400,
            ApiError::Forbidden(_) => 403,
            ApiError::NotFound(_) => 404,
            ApiError::Conflict(_) => 409,
            ApiError::Internal(_) => 500,
        }
    }
}

type Result<T> = std::result::Result<T, ApiError>;

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::Internal(e.to_string())
}

/// A backend's error as the API says it: the whole chain, on one line.
fn backend_err(e: domain::BackendError) -> ApiError {
    use domain::BackendError as E;
    let line = domain::chain(&e);
    match e {
        E::AlreadyUp(_) | E::NotRunning(_) => ApiError::Conflict(line),
        E::Invalid { .. } | E::Failed { .. } => ApiError::Internal(line),
    }
}

/// One open channel, as it is saved and listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelInfo {
    pub id: u64,
    pub channel: String,
    pub from: String,
    pub to: String,
    /// Bytes per direction.
    pub buffer: u64,
    /// Opened before a restart that lost the keeper: the domains keep the ends they took,
    /// but the daemon no longer holds one to hand out.
    #[serde(default)]
    pub adopted: bool,
}

/// One domain, as `ps` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DomainInfo {
    pub name: String,
    pub role: String,
    pub backend: String,
    /// running, frozen or stopped; unknown when the backend cannot tell (see `error`).
    pub status: String,
    /// Why the backend cannot tell the domain's status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub foreground: bool,
    pub pid: Option<i32>,
    /// The CPU weight the domain has now (its own in the foreground, the background one when
    /// throttled).
    pub cpu_weight: u32,
    /// The exclusive device classes it holds now.
    pub devices: Vec<String>,
}

/// What a foreground switch did.
#[derive(Debug, Clone, Serialize)]
pub struct Switch {
    pub previous: Option<String>,
    pub foreground: String,
    /// From the request to the new foreground holding its devices and the old one in the
    /// background, µs.
    pub switch_us: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Saved {
    profile: String,
    foreground: Option<String>,
    channels: Vec<ChannelInfo>,
    next_channel: u64,
    /// Where the scheduler (or a request) put each domain not on its profile's cores.
    #[serde(default)]
    pub(crate) placement: BTreeMap<String, Vec<u32>>,
    /// The policy switched to live, kept over a restart.
    #[serde(default)]
    pub(crate) policy: Option<domain::profile::SchedPolicy>,
    /// The device is short of memory: the background is capped (the profile's `[memory]`).
    #[serde(default)]
    pub(crate) memory_shrunk: bool,
    /// The memory caps put on background domains, bytes.
    #[serde(default)]
    pub(crate) memory_caps: BTreeMap<String, u64>,
}

/// The platform: a profile, a backend, and the state of both.
pub struct Platform<B: Backend> {
    pub profile: Profile,
    pub(crate) backend: B,
    dir: PathBuf,
    agent: Option<PathBuf>,
    pub(crate) saved: Saved,
    pub(crate) sched: crate::scheduler::Sched,
    /// One end of every open channel, handed out on request (each domain gets the side it is
    /// on); dropping it closes the channel for both domains.
    ends: BTreeMap<u64, End>,
    /// Where the ends are kept beyond this daemon's life (the keeper), so that the next one
    /// can still hand them out.
    store: Option<Box<dyn EndStore>>,
    /// A copy of every device descriptor handed out on a port, by domain: the same open file
    /// as the domain's, so a switch revokes through it even a descriptor the domain has not
    /// received yet, and gives a DRM card's master back only to a file that had it.
    handed: BTreeMap<String, Vec<Handed>>,
}

/// Is `node` a DRM card's primary node (what has a master)?
fn is_drm_card(node: &Path) -> bool {
    container::backend::device_node(node)
        .is_ok_and(|(k, major, minor, _)| container::revoke::port_only(k, major, minor))
}

/// A device descriptor handed to a domain, as the daemon keeps it.
struct Handed {
    node: PathBuf,
    copy: OwnedFd,
    /// A DRM file that was master when handed out (the only kind given master back).
    master: bool,
}

impl<B: Backend> Drop for Platform<B> {
    fn drop(&mut self) {
        self.detach();
    }
}

fn status_name(s: DomainStatus) -> &'static str {
    match s {
        DomainStatus::Running => "running",
        DomainStatus::Frozen => "frozen",
        DomainStatus::Stopped => "stopped",
    }
}

impl<B: Backend> Platform<B> {
    /// Open the platform kept in `dir`, re-adopting what an earlier daemon left: domains that
    /// still run are kept (and put back in the foreground or background the saved state
    /// says, on the cores the scheduler gave them); half-made domains are removed; the
    /// channels between running domains are taken back from `store` (listed as adopted, ends
    /// no longer handed out, when it does not hold them). `online` is the host's CPUs.
    pub fn open(
        profile: Profile,
        backend: B,
        dir: &Path,
        agent: Option<PathBuf>,
        online: Vec<u32>,
        store: Option<Box<dyn EndStore>>,
    ) -> Result<Self> {
        std::fs::create_dir_all(dir.join("run"))
            .map_err(|e| internal(format!("creating {}: {e}", dir.display())))?;
        let saved: Saved = match std::fs::read(dir.join("platform.json")) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| internal(format!("{}/platform.json: {e}", dir.display())))?,
            Err(_) => Saved::default(),
        };
        let sched = crate::scheduler::Sched::new(profile.scheduler, online);
        let mut p = Platform {
            profile,
            backend,
            dir: dir.to_path_buf(),
            agent,
            saved,
            sched,
            ends: BTreeMap::new(),
            store,
            handed: BTreeMap::new(),
        };
        // A domain an earlier daemon was bringing up when it died is up, or not, first.
        for d in &p.profile.domains {
            p.backend.settle(&d.name);
        }
        let up: Vec<String> = p.running()?;
        if !p.saved.profile.is_empty() && p.saved.profile != p.profile.name && !up.is_empty() {
            return Err(ApiError::Conflict(format!(
                "domains of profile {:?} are still up ({}); start with that profile, or stop them first",
                p.saved.profile,
                up.join(", ")
            )));
        }
        p.saved.profile = p.profile.name.clone();
        // Half-made or exited domains: remove what is left of them.
        for d in p.profile.domains.clone() {
            if p.backend.exists(&d.name) && !up.contains(&d.name) {
                p.backend.down(&d.name).map_err(backend_err)?;
            }
        }
        for c in &mut p.saved.channels {
            c.adopted = true;
        }
        p.saved
            .channels
            .retain(|c| up.contains(&c.from) && up.contains(&c.to));
        p.take_back_ends();
        if p.saved.foreground.as_ref().is_some_and(|f| !up.contains(f)) {
            p.saved.foreground = None;
        }
        p.save()?;
        p.sched_readopt(&up)?;
        // Finish a switch the earlier daemon may have been killed in.
        for name in &up {
            p.place(name)?;
        }
        Ok(p)
    }

    /// Let go of the channels without closing them, as a daemon that stops does: the domains
    /// keep running, and the store holds the ends for the next daemon. (Without a store, the
    /// ends are dropped: the channels close.)
    pub fn detach(&mut self) {
        if self.store.take().is_some() {
            for (_, e) in std::mem::take(&mut self.ends) {
                e.release();
            }
        }
    }

    /// Take back from the store the ends of the saved channels; what it holds of a channel no
    /// longer saved (closed, or its domains gone, before the last daemon died) is closed.
    fn take_back_ends(&mut self) {
        let Some(store) = self.store.as_mut() else {
            return;
        };
        let kept = store.list().unwrap_or_else(|e| {
            eprintln!("cellvisord: the channels' keeper: {e}; open channels stay adopted");
            Vec::new()
        });
        for (id, [m, d0, d1, s0, s1]) in kept {
            let end = End::from_fds(0, m, [d0, d1], [s0, s1]);
            match (self.saved.channels.iter_mut().find(|c| c.id == id), end) {
                (Some(c), Ok(end)) => {
                    c.adopted = false;
                    self.ends.insert(id, end);
                }
                // Dropping the end tells the domains holding the other side it is closed.
                (_, end) => {
                    let _ = store.forget(id);
                    drop(end);
                }
            }
        }
    }

    pub(crate) fn save(&self) -> Result<()> {
        let data = serde_json::to_vec_pretty(&self.saved).map_err(internal)?;
        container::util::write_atomic(&self.dir.join("platform.json"), &data).map_err(internal)
    }

    pub(crate) fn domain(&self, name: &str) -> Result<domain::Domain> {
        self.profile.domain(name).cloned().ok_or_else(|| {
            ApiError::NotFound(format!(
                "no domain {name:?} in profile {:?}",
                self.profile.name
            ))
        })
    }

    /// The backend's word on a domain; an error is said, never taken for "stopped".
    pub(crate) fn status(&self, name: &str) -> Result<DomainStatus> {
        self.backend.status(name).map_err(backend_err)
    }

    /// Names of the domains that are up (running or frozen).
    pub fn running(&self) -> Result<Vec<String>> {
        let mut up = Vec::new();
        for d in &self.profile.domains {
            if self.status(&d.name)? != DomainStatus::Stopped {
                up.push(d.name.clone());
            }
        }
        Ok(up)
    }

    pub fn foreground(&self) -> Option<&str> {
        self.saved.foreground.as_deref()
    }

    /// The directory a domain sees at `/run/cellvisor`: its channel port and the agent.
    pub fn run_dir(&self, name: &str) -> PathBuf {
        self.dir.join("run").join(name)
    }

    /// The exclusive device nodes `d` holds in the foreground (those the host has).
    fn exclusive_nodes(&self, d: &domain::Domain) -> Vec<PathBuf> {
        self.profile
            .exclusive_nodes(d)
            .into_iter()
            .filter(|n| n.exists())
            .collect()
    }

    pub fn info(&self, name: &str) -> Result<DomainInfo> {
        let d = self.domain(name)?;
        let (st, error) = match self.status(name) {
            Ok(st) => (Some(st), None),
            Err(e) => (None, Some(e.to_string())),
        };
        let fg = self.foreground() == Some(name);
        let up = st.is_some_and(|s| s != DomainStatus::Stopped);
        Ok(DomainInfo {
            name: d.name.clone(),
            role: d.role.name().into(),
            backend: d.backend().name().into(),
            status: st.map_or("unknown", status_name).into(),
            error,
            foreground: fg,
            pid: self.backend.pid(name),
            cpu_weight: self.weight_now(&d, up),
            devices: if fg && up {
                d.exclusive_devices.clone()
            } else {
                Vec::new()
            },
        })
    }

    /// The CPU weight domain `d` has now: its own in the foreground (and as a realtime
    /// domain), the background one when throttled there.
    pub(crate) fn weight_now(&self, d: &domain::Domain, up: bool) -> u32 {
        let background =
            up && self.foreground() != Some(d.name.as_str()) && d.role != Role::Realtime;
        if background && self.profile.background == BackgroundMode::Throttle {
            self.profile.background_cpu_weight
        } else {
            d.cpu_weight
        }
    }

    pub fn list(&self) -> Vec<DomainInfo> {
        self.profile
            .domains
            .iter()
            .filter_map(|d| self.info(&d.name).ok())
            .collect()
    }

    /// Bring a domain up: in the foreground if it is the profile's initial one and nothing
    /// else is, in the background otherwise.
    pub fn up(&mut self, name: &str) -> Result<DomainInfo> {
        let d = self.domain(name)?;
        if self.status(name)? != DomainStatus::Stopped {
            return Err(ApiError::Conflict(format!("domain {name} is already up")));
        }
        if self.backend.exists(name) {
            self.backend.down(name).map_err(backend_err)?;
        }
        let run = self.run_dir(name);
        std::fs::create_dir_all(&run)
            .map_err(|e| internal(format!("creating {}: {e}", run.display())))?;
        if let Some(agent) = &self.agent {
            let dst = run.join("agent");
            if !dst.exists() {
                std::fs::copy(agent, &dst)
                    .map_err(|e| internal(format!("copying the agent {}: {e}", agent.display())))?;
            }
        }
        container::crash::point("up:dir");
        // It starts on its profile's cores.
        self.sched_forget(name)?;
        let becomes_fg =
            self.saved.foreground.is_none() && self.profile.foreground.as_deref() == Some(name);
        let mut devices: Vec<PathBuf> = self
            .profile
            .shared_nodes(&d)
            .into_iter()
            .filter(|n| n.exists())
            .collect();
        if becomes_fg {
            devices.extend(self.exclusive_nodes(&d));
        }
        let o = UpOpts {
            base: self.profile.base.as_deref(),
            run_dir: Some(&run),
            devices,
            fds: Vec::new(),
        };
        self.backend.up(&d, &o).map_err(backend_err)?;
        container::crash::point("up:started");
        if becomes_fg {
            self.saved.foreground = Some(name.to_string());
            self.save()?;
        }
        container::crash::point("up:saved");
        if let Err(e) = self.place(name) {
            let _ = self.backend.down(name);
            return Err(e);
        }
        self.info(name)
    }

    /// Put a running domain where the saved state says: foreground (thawed, its own weight,
    /// its devices) or background (no exclusive devices, throttled or frozen). Realtime
    /// domains keep their weight and are never frozen. Idempotent.
    fn place(&mut self, name: &str) -> Result<()> {
        let d = self.domain(name)?;
        let be = backend_err;
        if d.role == Role::Realtime {
            return Ok(());
        }
        let frozen = self.status(name)? == DomainStatus::Frozen;
        let throttle = self.profile.background == BackgroundMode::Throttle;
        if self.foreground() == Some(name) {
            if frozen {
                self.backend.freeze(name, false).map_err(be)?;
            }
            if throttle {
                // Back from the background weight (freezing never changes it).
                self.backend
                    .set_cpu_weight(name, d.cpu_weight)
                    .map_err(be)?;
            }
            for n in self.exclusive_nodes(&d) {
                self.backend.set_device(name, &n, true).map_err(be)?;
                self.handed_devices(name, &n, true)?;
            }
        } else {
            if frozen {
                // Devices can only be taken from a thawed domain's view; a frozen one holds none.
                return Ok(());
            }
            for n in self.exclusive_nodes(&d) {
                self.backend.set_device(name, &n, false).map_err(be)?;
                self.handed_devices(name, &n, false)?;
            }
            match self.profile.background {
                BackgroundMode::Throttle => self
                    .backend
                    .set_cpu_weight(name, self.profile.background_cpu_weight)
                    .map_err(be)?,
                BackgroundMode::Freeze => self.backend.freeze(name, true).map_err(be)?,
            }
        }
        Ok(())
    }

    /// Stop a domain (and close its channels); `purge` also removes its private layer and log.
    pub fn down(&mut self, name: &str, purge: bool) -> Result<DomainInfo> {
        self.domain(name)?;
        if !self.backend.exists(name) {
            if purge {
                self.backend.destroy(name).map_err(backend_err)?;
                return self.info(name);
            }
            return Err(ApiError::Conflict(format!("domain {name} is not up")));
        }
        let ids: Vec<u64> = self
            .saved
            .channels
            .iter()
            .filter(|c| c.from == name || c.to == name)
            .map(|c| c.id)
            .collect();
        for id in ids {
            self.close_channel(id)?;
        }
        container::crash::point("down:channels");
        // Its loads, its memory cap and the device descriptors it was handed go with it.
        self.memory_forget(name);
        self.handed.remove(name);
        self.sched_forget(name)?;
        if self.foreground() == Some(name) {
            self.saved.foreground = None;
            self.save()?;
        }
        container::crash::point("down:saved");
        if purge {
            self.backend.destroy(name).map_err(backend_err)?;
        } else {
            self.backend.down(name).map_err(backend_err)?;
        }
        container::crash::point("down:stopped");
        self.sched_forget(name)?;
        self.info(name)
    }

    /// Make `name` the foreground domain.
    pub fn set_foreground(&mut self, name: &str) -> Result<Switch> {
        let d = self.domain(name)?;
        if d.role == Role::Realtime {
            return Err(ApiError::Conflict(format!(
                "domain {name} is a realtime domain and cannot be in the foreground"
            )));
        }
        if self.status(name)? == DomainStatus::Stopped {
            return Err(ApiError::Conflict(format!("domain {name} is not up")));
        }
        let t0 = Instant::now();
        let previous = self.saved.foreground.clone();
        if previous.as_deref() != Some(name) {
            // Asked before the intent is saved: a status that cannot be read stops the switch
            // before anything moved.
            let old_up = match &previous {
                Some(old) => self.status(old)? != DomainStatus::Stopped,
                None => false,
            };
            self.saved.foreground = Some(name.to_string());
            self.save()?;
            container::crash::point("fg:saved");
            if let (Some(old), true) = (&previous, old_up) {
                self.place(old)?;
            }
            container::crash::point("fg:old-placed");
            self.place(name)?;
            self.memory_switched(previous.as_deref(), name);
        } else {
            // Asked again for the one in front: a switch that failed half-way (a device that
            // could not be taken) is finished now; every domain is placed again, as after a
            // restart (placing is idempotent).
            for d in self.running()? {
                self.place(&d)?;
            }
        }
        Ok(Switch {
            previous,
            foreground: name.to_string(),
            switch_us: t0.elapsed().as_micros() as u64,
        })
    }

    pub fn channels(&self) -> &[ChannelInfo] {
        &self.saved.channels
    }

    /// Open a channel from `from` to `to`, if and only if the policy allows it.
    pub fn open_channel(
        &mut self,
        from: &str,
        to: &str,
        name: &str,
        buffer: Option<u64>,
    ) -> Result<ChannelInfo> {
        self.domain(from)?;
        self.domain(to)?;
        let buffer = match self.profile.policy.check(from, to, name, buffer) {
            Decision::Allow { buffer } => buffer,
            Decision::Deny(why) => return Err(ApiError::Forbidden(why)),
        };
        for d in [from, to] {
            if self.status(d)? == DomainStatus::Stopped {
                return Err(ApiError::Conflict(format!("domain {d} is not up")));
            }
        }
        if self
            .saved
            .channels
            .iter()
            .any(|c| c.from == from && c.to == to && c.channel == name)
        {
            return Err(ApiError::Conflict(format!(
                "channel {name:?} from {from} to {to} is already open"
            )));
        }
        let (a, b) = Channel::new(buffer).map_err(internal)?;
        // The daemon keeps one end; its descriptors serve both sides.
        b.release();
        let id = self.saved.next_channel + 1;
        // Kept before it is saved: a saved channel is one the next daemon can hand out.
        if let Some(store) = self.store.as_mut() {
            store
                .put(id, a.fds())
                .map_err(|e| internal(format!("keeping channel {id}: {e}")))?;
        }
        container::crash::point("channel-open:kept");
        self.saved.next_channel = id;
        let info = ChannelInfo {
            id,
            channel: name.to_string(),
            from: from.to_string(),
            to: to.to_string(),
            buffer,
            adopted: false,
        };
        self.saved.channels.push(info.clone());
        if let Err(e) = self.save() {
            self.saved.channels.pop();
            self.saved.next_channel -= 1;
            if let Some(store) = self.store.as_mut() {
                let _ = store.forget(id);
            }
            return Err(e);
        }
        container::crash::point("channel-open:saved");
        self.ends.insert(info.id, a);
        Ok(info)
    }

    /// Close a channel: both domains see it closed.
    pub fn close_channel(&mut self, id: u64) -> Result<()> {
        let Some(i) = self.saved.channels.iter().position(|c| c.id == id) else {
            return Err(ApiError::NotFound(format!("no channel {id}")));
        };
        let c = self.saved.channels.remove(i);
        self.save()
            .inspect_err(|_| self.saved.channels.insert(i, c))?;
        container::crash::point("channel-close:saved");
        if let Some(store) = self.store.as_mut() {
            // Should the keeper not hear it, the next daemon closes what it holds unsaved.
            let _ = store.forget(id);
        }
        // Dropping the daemon's end marks the channel closed and wakes both domains.
        self.ends.remove(&id);
        Ok(())
    }

    /// Hand domain `who` a descriptor of its device of `class`, opened by the daemon (as
    /// logind's TakeDevice): a shared device while it runs, an exclusive one while it is in
    /// front. Its node and the descriptor. The way a DRM card reaches a domain at all (it is
    /// never a node in its /dev); a switch takes it back as it takes back what the domain
    /// opened itself.
    pub fn take_device(&mut self, who: &str, class: &str) -> Result<(PathBuf, OwnedFd)> {
        let d = self.domain(who)?;
        let exclusive = d.exclusive_devices.iter().any(|c| c == class);
        if !exclusive && !d.shared_devices.iter().any(|c| c == class) {
            return Err(ApiError::Forbidden(format!(
                "domain {who} has no device {class:?}"
            )));
        }
        if exclusive && self.foreground() != Some(who) {
            return Err(ApiError::Forbidden(format!(
                "domain {who} is not in front: {class} is the foreground's"
            )));
        }
        let node = self
            .profile
            .device_nodes
            .get(class)
            .filter(|n| n.exists())
            .ok_or_else(|| ApiError::NotFound(format!("no {class} device on this host")))?
            .clone();
        let fd = self.backend.open_device(who, &node).map_err(backend_err)?;
        let copy = fd
            .try_clone()
            .map_err(|e| ApiError::Internal(format!("{}: a copy: {e}", node.display())))?;
        let master = is_drm_card(&node) && container::revoke::is_master(&copy);
        self.handed
            .entry(who.to_string())
            .or_default()
            .push(Handed {
                node: node.clone(),
                copy,
                master,
            });
        Ok((node, fd))
    }

    /// What a switch does to the descriptors handed to `name` for `node`: taken back
    /// (`present == false`: revoked, a DRM file's master dropped) or given back (a DRM file
    /// that was master is master again). One line of log per change.
    fn handed_devices(&mut self, name: &str, node: &Path, present: bool) -> Result<()> {
        // Most switches hand nothing back and forth: no stat of the node for them.
        let Some(kept) = self
            .handed
            .get_mut(name)
            .filter(|k| k.iter().any(|h| h.node == node))
        else {
            return Ok(());
        };
        let how = match container::backend::device_node(node) {
            Ok((kind, major, minor, _)) => container::revoke::revocation(kind, major, minor),
            Err(_) => return Ok(()),
        };
        let fail = |e: std::io::Error| {
            ApiError::Internal(format!("domain {name}: {}: {e}", node.display()))
        };
        let mut changed = 0;
        for h in kept.iter().filter(|h| h.node == node) {
            let done = if present {
                h.master && container::revoke::restore_master(&h.copy).map_err(fail)?
            } else {
                container::revoke::revoke_copy(&h.copy, how).map_err(fail)?
            };
            changed += usize::from(done);
        }
        if !present && how == container::revoke::Revocation::Revoke {
            // Revoked for good: nothing more to do with them.
            kept.retain(|h| h.node != node);
        }
        if changed > 0 {
            let what = if present {
                "given back to"
            } else {
                "taken from"
            };
            eprintln!(
                "cellvisord: {} {what} {name}: {changed} descriptor(s) handed out on its port",
                node.display()
            );
        }
        Ok(())
    }

    /// Hand domain `who` its side of channel `name` (with `peer`, if it has several of that
    /// name): the side number and the descriptors to send it. Only the two domains a channel
    /// joins can get it, and each only its own side.
    pub fn take_end(
        &self,
        who: &str,
        name: &str,
        peer: Option<&str>,
    ) -> Result<(ChannelInfo, usize, [RawFd; 5])> {
        let mine: Vec<&ChannelInfo> = self
            .saved
            .channels
            .iter()
            .filter(|c| c.channel == name && (c.from == who || c.to == who))
            .filter(|c| peer.is_none_or(|p| (if c.from == who { &c.to } else { &c.from }) == p))
            .collect();
        let c = match mine.as_slice() {
            [] => {
                return Err(ApiError::NotFound(format!(
                    "no open channel {name:?} for domain {who}{}",
                    peer.map(|p| format!(" with {p}")).unwrap_or_default()
                )))
            }
            [c] => *c,
            _ => {
                return Err(ApiError::BadRequest(format!(
                    "domain {who} has several channels {name:?}; name the peer"
                )))
            }
        };
        let Some(end) = self.ends.get(&c.id) else {
            return Err(ApiError::Conflict(format!(
                "channel {} was opened before the daemon restarted; close and reopen it",
                c.id
            )));
        };
        let side = if c.from == who { 0 } else { 1 };
        Ok((c.clone(), side, end.fds()))
    }

    /// Per-domain resource use of the running domains.
    pub fn stats(&self) -> Result<Vec<(String, domain::DomainStats)>> {
        self.running()?
            .into_iter()
            .map(|n| self.backend.stats(&n).map(|s| (n, s)).map_err(backend_err))
            .collect()
    }

    /// The domain's output from byte `offset` on, and the offset after it.
    pub fn logs(&self, name: &str, offset: u64) -> Result<(String, u64)> {
        self.domain(name)?;
        let Some(p) = self.backend.log_path(name) else {
            return Ok((String::new(), offset));
        };
        let data = match std::fs::read(&p) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(internal(format!("{}: {e}", p.display()))),
        };
        let start = (offset as usize).min(data.len());
        Ok((
            String::from_utf8_lossy(&data[start..]).into_owned(),
            data.len() as u64,
        ))
    }

    /// Domain `name`'s balloon (a microvm domain with `balloon = true`, running): with
    /// `size_mib`, its new size; its figures and the guest's memory statistics.
    pub fn balloon(&self, name: &str, size_mib: Option<u64>) -> Result<serde_json::Value> {
        let d = self.domain(name)?;
        if !d.vm().is_some_and(|v| v.balloon) {
            return Err(ApiError::Conflict(format!(
                "domain {name} has no balloon (a microvm domain with balloon = true has one)"
            )));
        }
        match self.status(name)? {
            DomainStatus::Stopped => {
                return Err(ApiError::Conflict(format!("domain {name} is not up")))
            }
            DomainStatus::Frozen => {
                return Err(ApiError::Conflict(format!(
                    "domain {name} is frozen in the background: its VMM answers once it is in front"
                )))
            }
            _ => {}
        }
        let text = self.backend.balloon(name, size_mib).map_err(|e| match e {
            // The VMM refused the request (a size past the guest's memory).
            domain::BackendError::Invalid { .. } => ApiError::BadRequest(domain::chain(&e)),
            e => backend_err(e),
        })?;
        serde_json::from_str(&text).map_err(|e| internal(format!("the VMM's answer: {e}")))
    }

    /// Is the platform empty: nothing up, nothing kept?
    pub fn is_idle(&self) -> bool {
        self.profile
            .domains
            .iter()
            .all(|d| !self.backend.exists(&d.name))
    }

    /// Does the backend hold anything of this domain?
    pub fn backend_exists(&self, name: &str) -> bool {
        self.backend.exists(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::{BackendError, DomainStats};

    /// A backend that cannot read common's state; trusted runs, the rest is stopped.
    struct Unreadable;

    impl Backend for Unreadable {
        fn up(&self, _: &domain::Domain, _: &UpOpts) -> std::result::Result<(), BackendError> {
            Ok(())
        }
        fn down(&self, _: &str) -> std::result::Result<(), BackendError> {
            Ok(())
        }
        fn destroy(&self, _: &str) -> std::result::Result<(), BackendError> {
            Ok(())
        }
        fn status(&self, name: &str) -> std::result::Result<DomainStatus, BackendError> {
            if name == "common" {
                let cause = std::io::Error::from_raw_os_error(libc::EACCES);
                return Err(BackendError::failed(name, "reading its state", cause));
            }
            Ok(match name {
                "trusted" => DomainStatus::Running,
                _ => DomainStatus::Stopped,
            })
        }
        fn freeze(&self, _: &str, _: bool) -> std::result::Result<(), BackendError> {
            Ok(())
        }
        fn set_cpu_weight(&self, _: &str, _: u32) -> std::result::Result<(), BackendError> {
            Ok(())
        }
        fn set_device(&self, _: &str, _: &Path, _: bool) -> std::result::Result<(), BackendError> {
            Ok(())
        }
        fn stats(&self, _: &str) -> std::result::Result<DomainStats, BackendError> {
            Ok(DomainStats::default())
        }
        fn set_cpus(&self, _: &str, _: &[u32]) -> std::result::Result<(), BackendError> {
            Ok(())
        }
        fn cpu_time(&self, _: &str) -> std::result::Result<domain::CpuTime, BackendError> {
            Ok(domain::CpuTime::Total(0))
        }
        fn pid(&self, _: &str) -> Option<i32> {
            None
        }
        fn exists(&self, _: &str) -> bool {
            false
        }
        fn log_path(&self, _: &str) -> Option<PathBuf> {
            None
        }
        fn open_device(
            &self,
            name: &str,
            node: &Path,
        ) -> std::result::Result<OwnedFd, BackendError> {
            std::fs::File::open(node)
                .map(OwnedFd::from)
                .map_err(|e| BackendError::failed(name, "opening", e))
        }
    }

    /// A running platform on [`Unreadable`], nothing saved, state in `dir`.
    fn on_unreadable(profile: Profile, dir: &Path) -> Platform<Unreadable> {
        Platform {
            profile,
            backend: Unreadable,
            dir: dir.to_path_buf(),
            agent: None,
            saved: Saved::default(),
            sched: crate::scheduler::Sched::new(Default::default(), vec![0, 1]),
            ends: BTreeMap::new(),
            store: None,
            handed: BTreeMap::new(),
        }
    }

    /// The port's `device`: an exclusive device to the foreground only, a shared one to any
    /// domain that lists it, nothing of another domain's classes or of a class with no node.
    #[test]
    fn devices_are_handed_to_the_foreground_only() {
        let dir = tempfile::tempdir().unwrap();
        let text = domain::DEFAULT_PROFILE
            .replace("display = \"/dev/vcs1\"", "display = \"/dev/null\"")
            .replace("input = \"/dev/tty1\"", "input = \"/dev/zero\"")
            .replace(
                "camera = \"/dev/vcsa1\"",
                "camera = \"/dev/cellvisor-no-camera\"",
            )
            .replace("[device_nodes]", "[device_nodes]\naudio = \"/dev/full\"");
        let profile = domain::profile::parse(&text, "phone.toml", Path::new("/")).unwrap();
        let mut p = on_unreadable(profile, dir.path());
        p.saved.foreground = Some("trusted".into());
        let (node, _) = p.take_device("trusted", "display").unwrap();
        assert_eq!(node, Path::new("/dev/null"));
        assert_eq!(
            p.take_device("common", "audio").unwrap().0,
            Path::new("/dev/full")
        );
        for (who, class, says) in [
            (
                "common",
                "display",
                "domain common is not in front: display is the foreground's",
            ),
            (
                "trusted",
                "camera",
                "domain trusted has no device \"camera\"",
            ),
            (
                "common",
                "camera",
                "domain common is not in front: camera is the foreground's",
            ),
            ("modem", "audio", "domain modem has no device \"audio\""),
            ("ghost", "audio", "no domain \"ghost\" in profile \"phone\""),
        ] {
            let e = p.take_device(who, class).err().unwrap();
            assert_eq!(e.to_string(), says);
        }
        p.saved.foreground = Some("common".into());
        let e = p.take_device("common", "camera").err().unwrap();
        assert_eq!(
            e,
            ApiError::NotFound("no camera device on this host".into())
        );
    }

    #[test]
    fn a_status_the_backend_cannot_read_is_said_not_taken_for_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let profile =
            domain::profile::parse(domain::DEFAULT_PROFILE, "phone.toml", Path::new("/")).unwrap();
        // A daemon cannot start on domains it cannot see.
        let e = Platform::open(
            profile.clone(),
            Unreadable,
            dir.path(),
            None,
            vec![0, 1],
            None,
        )
        .err()
        .unwrap();
        assert_eq!(
            e,
            ApiError::Internal(
                "domain common: reading its state: Permission denied (os error 13)".into()
            )
        );
        // Once running, `ps` says which domain and why; `up` of it refuses.
        let mut p = on_unreadable(profile, dir.path());
        let info = p.info("common").unwrap();
        assert_eq!(info.status, "unknown");
        assert!(info.error.unwrap().contains("Permission denied"));
        assert_eq!(p.info("trusted").unwrap().status, "running");
        assert_eq!(p.info("modem").unwrap().status, "stopped");
        assert!(p.up("common").is_err());
        assert!(p.running().is_err());
        // A switch away from a foreground it cannot see stops before anything moved.
        p.saved.foreground = Some("common".into());
        assert!(p.set_foreground("trusted").is_err());
        assert_eq!(p.foreground(), Some("common"));
    }
}
