//! PostgreSQL and CockroachDB targets: value codec and the userscript's view of the target
//! transaction. (The applier and introspection arrive with the replication core.)

pub mod apply;
pub mod codec;
pub mod introspect;
mod script_host;

pub use script_host::{PgScriptHost, Writer, row_writer};

/// `"name"`, with embedded quotes doubled.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(super::quote_ident("orders"), "\"orders\"");
        assert_eq!(super::quote_ident("we\"ird"), "\"we\"\"ird\"");
    }
}
