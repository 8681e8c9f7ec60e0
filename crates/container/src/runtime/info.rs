//! The verbs that only read: `state`, `list`, `ps`, `events --stats`.

use std::path::PathBuf;

use crate::error::Result;
use crate::state::{Root, Status, Verb};

/// The OCI state document of a container.
pub fn state(root: &Root, id: &str) -> Result<serde_json::Value> {
    let st = root.load(id)?;
    Ok(st.oci(st.status(root)))
}

/// One row of `list`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ListEntry {
    pub id: String,
    pub pid: i32,
    pub status: String,
    pub bundle: PathBuf,
    pub created: String,
    pub owner: String,
}

pub fn list(root: &Root) -> Vec<ListEntry> {
    root.ids()
        .into_iter()
        .filter_map(|id| root.load(&id).ok())
        .map(|st| {
            let status = st.status(root);
            ListEntry {
                pid: if status == Status::Stopped { 0 } else { st.pid },
                status: status.to_string(),
                id: st.id,
                bundle: st.bundle,
                created: st.created,
                owner: st.owner,
            }
        })
        .collect()
}

/// Host pids of the container's processes.
pub fn ps(root: &Root, id: &str) -> Result<Vec<i32>> {
    let st = root.load(id)?;
    st.cgroup()?.pids()
}

/// `events --stats`: one statistics document.
pub fn stats(root: &Root, id: &str) -> Result<serde_json::Value> {
    let st = root.load(id)?;
    st.status_for(root, Verb::Stats)?;
    Ok(serde_json::json!({"type": "stats", "id": id, "data": st.cgroup()?.stats()}))
}
