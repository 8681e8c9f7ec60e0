//! `pause` and `resume`: the container's cgroup frozen or thawed.

use crate::error::Result;
use crate::state::{Root, Verb};

/// `pause` / `resume`.
pub fn set_paused(root: &Root, id: &str, paused: bool) -> Result<()> {
    let st = root.load(id)?;
    st.status_for(root, if paused { Verb::Pause } else { Verb::Resume })?;
    st.cgroup()?.freeze(paused)
}
