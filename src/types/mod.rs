//! Value types shared across the pipeline: connection strings that keep their password
//! secret, the Go-style durations MOLT's flags use, and dotted names (`db.schema`).

pub mod civil;
pub mod duration;
pub mod json;
pub mod mutation;
pub mod name;
pub mod position;
pub mod secret;
pub mod value;

pub use secret::ConnString;
pub use value::{Name, Row, Value, new_row};
