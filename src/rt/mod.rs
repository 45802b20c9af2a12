//! The runtime's own facilities, below everything else: the wall clock and adaptive busy
//! polling. Modules of every layer use them, so they import nothing of the gateway's.

pub mod busy_poll;
pub mod clock;
