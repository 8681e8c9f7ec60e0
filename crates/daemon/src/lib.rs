//! cellvisord, the device platform's daemon: it loads a device profile, starts and stops its
//! domains, opens channels between them under the profile's policy (deny by default), moves
//! the foreground, moves the domains between cores (the scheduler), and answers a REST API
//! on a Unix socket. [`platform`] is the logic, [`scheduler`] the scheduler's part of it, [`memory`] what a
//! short device takes from the background,
//! [`server`] the sockets, [`keeper`] the process that holds the channels over a restart, [`backends`] each domain on the backend of its kind, [`client`] a
//! client of the API.

pub mod backends;
pub mod client;
pub mod keeper;
pub mod memory;
pub mod placement;
pub mod platform;
pub mod port;
pub mod scheduler;
pub mod server;
