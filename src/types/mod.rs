//! Value types shared across the pipeline: mutations and source transactions, positions,
//! exact values and rows, JSON read with exact numbers, the Go-style durations MOLT's flags
//! use, civil dates, and dotted names (`db.schema`). They import no other module of the crate.

pub mod civil;
pub mod duration;
pub mod json;
pub mod mutation;
pub mod name;
pub mod position;
pub mod value;

pub use value::{Name, Row, Value, new_row};
