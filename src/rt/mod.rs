//! The runtime's own facilities, below everything else: the wall clock, adaptive busy
//! polling and the data directory. Modules of every layer use them, so they import
//! nothing of the gateway's.

pub mod background;
pub mod busy_poll;
pub mod clock;
pub mod data_dir;
pub mod deferred;
pub mod worker;
