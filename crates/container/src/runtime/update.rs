//! `update`: a running (or created, or paused) container's resources changed in place, as
//! `runc update` does — what the kubelet's UpdateContainerResources asks through the CRI.

use oci_spec::runtime::LinuxResources;

use crate::error::Result;
use crate::state::{Root, Verb};

/// Write `res` into container `id`'s cgroup: only what `res` sets (its device rules are not
/// touched); the kernel's refusal of a value is the error.
pub fn update(root: &Root, id: &str, res: &LinuxResources) -> Result<()> {
    let st = root.load(id)?;
    st.status_for(root, Verb::Update)?;
    st.cgroup()?.update(res)
}
