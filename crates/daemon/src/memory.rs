//! Memory when the device runs short (the profile's `[memory]`): every period the host's
//! memory pressure (PSI, the share of time some task waited for memory over the last 10 s)
//! is held against the profile's; at or over it, each background container domain is capped
//! to its share of what it uses then (reclaim takes from it first), and below half of it the
//! caps go. The domain that comes to the front loses its cap at once, the one that leaves it
//! gets one while the device is short; a domain started while the device is short is capped
//! at the next shrink. What is capped is saved, so a restarted daemon gives the memory back
//! as well. A microVM domain with a balloon (`balloon = true`) is shrunk through it: its guest
//! is asked to give back all but its cap (it keeps what it cannot give, and deflates before
//! it runs out); one without keeps its guest's memory.

use domain::{Backend, Role};

use crate::platform::Platform;

impl<B: Backend> Platform<B> {
    /// Is domain `name` one whose memory the policy caps while it is in the background?
    fn cappable(&self, name: &str) -> bool {
        self.profile
            .domain(name)
            .is_some_and(|d| self.cappable_domain(d))
    }

    /// [`Self::cappable`] for a domain at hand (no lookup by name).
    fn cappable_domain(&self, d: &domain::Domain) -> bool {
        d.role != Role::Realtime
            && d.vm().is_none_or(|v| v.balloon)
            && self.foreground() != Some(d.name.as_str())
    }

    /// Cap `name` to its share of what it uses now; its cap, or why not.
    fn cap(&mut self, name: &str) -> Result<u64, String> {
        let Some(policy) = self.profile.memory else {
            return Err("no memory policy".into());
        };
        let used = self
            .backend
            .stats(name)
            .map_err(|e| domain::chain(&e))?
            .memory_bytes;
        let cap = policy.cap(used);
        self.backend
            .set_memory_cap(name, Some(cap))
            .map_err(|e| domain::chain(&e))?;
        self.saved.memory_caps.insert(name.to_string(), cap);
        Ok(cap)
    }

    fn uncap(&mut self, name: &str) -> Result<(), String> {
        if self.saved.memory_caps.remove(name).is_some() {
            self.backend
                .set_memory_cap(name, None)
                .map_err(|e| domain::chain(&e))?;
        }
        Ok(())
    }

    /// One period, the host's memory pressure now (percent). Changes are logged on stderr.
    pub fn memory_tick(&mut self, pressure_pct: f64) {
        let Some(policy) = self.profile.memory else {
            return;
        };
        let Some(shrink) = policy.next(pressure_pct, self.saved.memory_shrunk) else {
            return;
        };
        let mut said = Vec::new();
        if shrink {
            // Each domain asked on its own: one whose status cannot be read is left out.
            let up: Vec<String> = self
                .profile
                .domains
                .iter()
                .filter(|d| {
                    // A microVM is shrunk by its guest, which must be running.
                    self.cappable_domain(d)
                        && self.status(&d.name).is_ok_and(|s| match d.vm() {
                            Some(_) => s == domain::DomainStatus::Running,
                            None => s != domain::DomainStatus::Stopped,
                        })
                })
                .map(|d| d.name.clone())
                .collect();
            for name in &up {
                match self.cap(name) {
                    Ok(c) => said.push(format!("{name} {:.1} MiB", c as f64 / 1048576.0)),
                    Err(e) => said.push(format!("{name} not capped: {e}")),
                }
            }
            eprintln!(
                "cellvisord: memory: pressure {pressure_pct:.1}% (at least {}%): background capped: {}",
                policy.pressure_pct,
                if said.is_empty() { "none".to_string() } else { said.join(", ") }
            );
        } else {
            let capped: Vec<String> = self.saved.memory_caps.keys().cloned().collect();
            for name in capped {
                if let Err(e) = self.uncap(&name) {
                    said.push(format!("{name}: {e}"));
                }
            }
            eprintln!(
                "cellvisord: memory: pressure {pressure_pct:.1}% (under {}%): caps removed{}",
                policy.pressure_pct / 2.0,
                if said.is_empty() {
                    String::new()
                } else {
                    format!(" but {}", said.join(", "))
                }
            );
        }
        self.saved.memory_shrunk = shrink;
        if let Err(e) = self.save() {
            eprintln!("cellvisord: memory: saving the state: {e}");
        }
    }

    /// A switch from `old` to `new` happened: `new` loses its cap at once, and `old` gets
    /// one while the device is short. Best effort: a cap that cannot be set is said, and the
    /// switch stands. Saved when something changed.
    pub(crate) fn memory_switched(&mut self, old: Option<&str>, new: &str) {
        if self.profile.memory.is_none() {
            return;
        }
        let mut changed = false;
        // Written whatever the state says: a cap a killed daemon set and never saved goes too.
        match self.backend.set_memory_cap(new, None) {
            Ok(()) => changed |= self.saved.memory_caps.remove(new).is_some(),
            Err(e) => eprintln!("cellvisord: memory: {}", domain::chain(&e)),
        }
        if let Some(old) = old.filter(|o| self.saved.memory_shrunk && self.cappable(o)) {
            match self.cap(old) {
                Ok(_) => changed = true,
                Err(e) => eprintln!("cellvisord: memory: domain {old} not capped: {e}"),
            }
        }
        if changed {
            if let Err(e) = self.save() {
                eprintln!("cellvisord: memory: saving the state: {e}");
            }
        }
    }

    /// Domain `name` went down: nothing of it to give back.
    pub(crate) fn memory_forget(&mut self, name: &str) {
        self.saved.memory_caps.remove(name);
    }
}
