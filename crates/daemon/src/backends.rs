//! The platform's domains on their backends: a container domain on the container backend,
//! a microvm domain on the microVM backend. One [`domain::Backend`] in front of both, so the
//! platform speaks to a single one; which backend holds a domain is decided once, from the
//! profile.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use domain::{Backend, BackendError, BackendKind, Domain, DomainStats, DomainStatus, UpOpts};

/// Each domain on the backend of its kind.
pub struct Backends<C, M> {
    container: C,
    microvm: M,
    kinds: HashMap<String, BackendKind>,
}

impl<C: Backend, M: Backend> Backends<C, M> {
    /// The domains of `profile` on `container` and `microvm`.
    pub fn new(profile: &domain::Profile, container: C, microvm: M) -> Self {
        Backends {
            container,
            microvm,
            kinds: profile
                .domains
                .iter()
                .map(|d| (d.name.clone(), d.backend()))
                .collect(),
        }
    }

    /// The backend that holds domain `name` (a name the profile does not have: the
    /// container backend, which has nothing of it).
    fn of(&self, name: &str) -> &dyn Backend {
        match self.kinds.get(name) {
            Some(BackendKind::Microvm) => &self.microvm,
            _ => &self.container,
        }
    }
}

impl<C: Backend, M: Backend> Backend for Backends<C, M> {
    fn up(&self, d: &Domain, o: &UpOpts) -> Result<(), BackendError> {
        match d.backend() {
            BackendKind::Container => self.container.up(d, o),
            BackendKind::Microvm => self.microvm.up(d, o),
        }
    }
    fn down(&self, name: &str) -> Result<(), BackendError> {
        self.of(name).down(name)
    }
    fn destroy(&self, name: &str) -> Result<(), BackendError> {
        self.of(name).destroy(name)
    }
    fn status(&self, name: &str) -> Result<DomainStatus, BackendError> {
        self.of(name).status(name)
    }
    fn freeze(&self, name: &str, frozen: bool) -> Result<(), BackendError> {
        self.of(name).freeze(name, frozen)
    }
    fn set_cpu_weight(&self, name: &str, weight: u32) -> Result<(), BackendError> {
        self.of(name).set_cpu_weight(name, weight)
    }
    fn set_device(&self, name: &str, node: &Path, present: bool) -> Result<(), BackendError> {
        self.of(name).set_device(name, node, present)
    }
    fn open_device(&self, name: &str, node: &Path) -> Result<std::os::fd::OwnedFd, BackendError> {
        self.of(name).open_device(name, node)
    }
    fn set_memory_cap(&self, name: &str, cap: Option<u64>) -> Result<(), BackendError> {
        self.of(name).set_memory_cap(name, cap)
    }
    fn balloon(&self, name: &str, size_mib: Option<u64>) -> Result<String, BackendError> {
        self.of(name).balloon(name, size_mib)
    }
    fn stats(&self, name: &str) -> Result<DomainStats, BackendError> {
        self.of(name).stats(name)
    }
    fn set_cpus(&self, name: &str, cpus: &[u32]) -> Result<(), BackendError> {
        self.of(name).set_cpus(name, cpus)
    }
    fn cpu_time(&self, name: &str) -> Result<domain::CpuTime, BackendError> {
        self.of(name).cpu_time(name)
    }
    fn pid(&self, name: &str) -> Option<i32> {
        self.of(name).pid(name)
    }
    fn exists(&self, name: &str) -> bool {
        self.of(name).exists(name)
    }
    fn log_path(&self, name: &str) -> Option<PathBuf> {
        self.of(name).log_path(name)
    }
    fn settle(&self, name: &str) {
        self.of(name).settle(name)
    }
}
