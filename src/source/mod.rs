//! Sources: where changes come from. One module per protocol.

pub mod mysql;
pub mod postgres;
