//! cellvisord, the device platform's daemon: it loads a device profile, starts and stops its
//! domains, opens channels between them under the profile's policy (deny by default), moves
//! the foreground, and answers a REST API on a Unix socket. [`platform`] is the logic,
//! [`server`] the sockets, [`backends`] each domain on the backend of its kind, [`client`] a
//! client of the API.

pub mod backends;
pub mod client;
pub mod placement;
pub mod platform;
pub mod server;
