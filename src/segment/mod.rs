//! Segments: the boot header and the create/open handshake.

pub mod boot;
pub(crate) mod grow;
pub(crate) mod open;
