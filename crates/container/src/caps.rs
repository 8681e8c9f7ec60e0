//! Linux capabilities: the five sets of an OCI process, applied in the order the kernel
//! allows (bounding first, then, after the user switch, permitted/inheritable/effective,
//! then ambient).

use std::collections::HashSet;
use std::str::FromStr;

use caps::{CapSet, Capability, CapsHashSet};
use oci_spec::runtime::{Capabilities, LinuxCapabilities};

use crate::error::{Error, Result};

fn to_caps(set: &Option<Capabilities>) -> CapsHashSet {
    set.iter()
        .flatten()
        .filter_map(|c| Capability::from_str(&format!("CAP_{c}")).ok())
        .collect()
}

/// The five sets as the caps crate's types.
#[derive(Debug, Clone, Default)]
pub struct CapSets {
    pub bounding: CapsHashSet,
    pub effective: CapsHashSet,
    pub inheritable: CapsHashSet,
    pub permitted: CapsHashSet,
    pub ambient: CapsHashSet,
}

impl CapSets {
    pub fn from_spec(c: Option<&LinuxCapabilities>) -> Self {
        let Some(c) = c else {
            return CapSets::default();
        };
        CapSets {
            bounding: to_caps(c.bounding()),
            effective: to_caps(c.effective()),
            inheritable: to_caps(c.inheritable()),
            permitted: to_caps(c.permitted()),
            ambient: to_caps(c.ambient()),
        }
    }
}

/// Drop everything not in the bounding set. Needs CAP_SETPCAP, so it runs before the user
/// switch.
pub fn drop_bounding(sets: &CapSets) -> Result<()> {
    let have = caps::read(None, CapSet::Bounding)
        .map_err(|e| Error::Msg(format!("reading capabilities: {e}")))?;
    for c in have.difference(&sets.bounding) {
        caps::drop(None, CapSet::Bounding, *c)
            .map_err(|e| Error::Msg(format!("dropping {c} from the bounding set: {e}")))?;
    }
    Ok(())
}

/// Set permitted, inheritable, effective and ambient. A capability this process does not have
/// itself (root here may lack some, e.g. CAP_SYS_RESOURCE) cannot be granted and is skipped.
pub fn apply(sets: &CapSets) -> Result<()> {
    let have: HashSet<Capability> = caps::read(None, CapSet::Permitted).unwrap_or_default();
    let permitted: CapsHashSet = sets.permitted.intersection(&have).copied().collect();
    let effective: CapsHashSet = sets.effective.intersection(&permitted).copied().collect();
    let inheritable: CapsHashSet = sets.inheritable.intersection(&have).copied().collect();
    let err = |what: &str, e: caps::errors::CapsError| {
        Error::Msg(format!("setting {what} capabilities: {e}"))
    };
    // Order matters, as crun has it: inheritable first, while the permitted set (and
    // CAP_SETPCAP in the effective one) still cover it — the kernel checks a new inheritable
    // set against the old permitted one, so one outside the new permitted set (inheritable
    // CAP_SYS_ADMIN, permitted empty) fails after; then effective, within permitted at every
    // step, then permitted.
    caps::set(None, CapSet::Inheritable, &inheritable).map_err(|e| err("inheritable", e))?;
    caps::set(None, CapSet::Effective, &effective).map_err(|e| err("effective", e))?;
    caps::set(None, CapSet::Permitted, &permitted).map_err(|e| err("permitted", e))?;
    caps::clear(None, CapSet::Ambient).map_err(|e| err("ambient", e))?;
    for c in sets.ambient.iter() {
        if permitted.contains(c) && inheritable.contains(c) {
            caps::raise(None, CapSet::Ambient, *c).map_err(|e| err("ambient", e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oci_names_map_to_kernel_caps() {
        let c: LinuxCapabilities = serde_json::from_str(
            r#"{"bounding":["CAP_KILL","CAP_NET_BIND_SERVICE"],"effective":["CAP_KILL"]}"#,
        )
        .unwrap();
        let s = CapSets::from_spec(Some(&c));
        assert_eq!(s.bounding.len(), 2);
        assert!(s.bounding.contains(&Capability::CAP_NET_BIND_SERVICE));
        assert!(s.effective.contains(&Capability::CAP_KILL));
        assert!(s.ambient.is_empty());
    }
}
