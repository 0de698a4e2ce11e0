//! The userscript host: TypeScript compiled in-process, run in an embedded engine.
pub mod compile;
