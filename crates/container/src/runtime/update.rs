//! `update`: a running (or created, or paused) container's resources changed in place, as
//! `runc update` does — what the kubelet's UpdateContainerResources asks through the CRI.
//! What was written is kept in the container's saved config too, so later verbs (and a
//! second `update`) start from the resources the container has now.

use oci_spec::runtime::LinuxResources;

use crate::error::{Error, Result};
use crate::state::{Root, Verb};

/// Write `res` into container `id`'s cgroup: only what `res` sets (its device rules are not
/// touched); the kernel's refusal of a value is the error.
pub fn update(root: &Root, id: &str, res: &LinuxResources) -> Result<()> {
    let mut st = root.load(id)?;
    st.status_for(root, Verb::Update)?;
    if let Some(unit) = &st.systemd_unit {
        // systemd keeps the unit's properties and would write its old limits back.
        let props =
            crate::cgroups::systemd::properties(Some(res), st.cgroup_v2, &Default::default())
                .map_err(Error::Config)?;
        crate::cgroups::systemd::bus::Systemd::connect()?.set_properties(unit, &props)?;
    }
    st.cgroup()?.update(res)?;
    let saved = st
        .config
        .linux()
        .as_ref()
        .and_then(|l| l.resources().clone())
        .unwrap_or_default();
    let merged = merge(&saved, res)?;
    if let Some(l) = st.config.linux_mut() {
        l.set_resources(Some(merged));
    }
    st.save(root)
}

/// `old` with every field `new` sets taken from `new` (objects merged key by key; a list,
/// such as the device rules, replaced whole).
pub fn merge(old: &LinuxResources, new: &LinuxResources) -> Result<LinuxResources> {
    let to = |r: &LinuxResources| serde_json::to_value(r).map_err(|e| Error::Msg(e.to_string()));
    let mut a = to(old)?;
    merge_json(&mut a, to(new)?);
    serde_json::from_value(a).map_err(|e| Error::Msg(e.to_string()))
}

fn merge_json(a: &mut serde_json::Value, b: serde_json::Value) {
    match (a, b) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
            for (k, v) in b {
                if v.is_null() {
                    continue;
                }
                match a.get_mut(&k) {
                    Some(old) if old.is_object() && v.is_object() => merge_json(old, v),
                    _ => {
                        a.insert(k, v);
                    }
                }
            }
        }
        (a, b) => *a = b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(j: &str) -> LinuxResources {
        serde_json::from_str(j).unwrap()
    }

    #[test]
    fn an_update_keeps_what_it_does_not_set() {
        let old = res(
            r#"{"memory": {"limit": 100, "swap": 200}, "cpu": {"shares": 512, "cpus": "0-1"}, "pids": {"limit": 10}}"#,
        );
        let m = merge(
            &old,
            &res(r#"{"memory": {"limit": 50}, "cpu": {"cpus": "1"}}"#),
        )
        .unwrap();
        let mem = m.memory().as_ref().unwrap();
        assert_eq!((mem.limit(), mem.swap()), (Some(50), Some(200)));
        let cpu = m.cpu().as_ref().unwrap();
        assert_eq!(cpu.shares(), Some(512));
        assert_eq!(cpu.cpus().as_deref(), Some("1"));
        assert_eq!(m.pids().as_ref().unwrap().limit(), 10);
        // Nothing before: the update is the whole of it.
        let m = merge(
            &LinuxResources::default(),
            &res(r#"{"pids": {"limit": 5}}"#),
        )
        .unwrap();
        assert_eq!(m.pids().as_ref().unwrap().limit(), 5);
    }
}
