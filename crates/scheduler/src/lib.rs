//! The scheduler that moves whole domains between cores (the survey's Figure 5): when one
//! core is loaded and another idle it moves work across (`balance`); when the load is light
//! it packs the domains onto few cores and leaves the others idle (`power`); or it leaves
//! every domain where its profile put it (`fixed`). In three parts, read and tested apart:
//! - [`sample`]: each core's load from /proc/stat and each domain's CPU use per core from
//!   its cgroup's counters, smoothed as decaying averages (the parsing and smoothing pure,
//!   one function that reads /proc/stat);
//! - [`policy`]: loads in, placements out — no I/O, so the same code runs on the device
//!   and against [`sim`], a simulated machine driven by demand traces;
//! - the actuators live with the daemon (a domain's cpuset, through its backend).
//!
//! The realtime domains' cores are never the scheduler's: they are not among the cores it is
//! given, and no placement it makes holds one.

pub mod policy;
pub mod sample;
pub mod sim;

pub use domain::profile::{SchedParams as Params, SchedPolicy as Policy};
pub use policy::{decide, Core, DomainView, Move};
