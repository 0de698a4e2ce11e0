//! The userscript templates `replicator script new` writes out, embedded in the binary.
//!
//! Each template is `userscripts/NAME.ts` with `NAME.input.ndjson` and `NAME.expected.ndjson`:
//! `replicator script test --userscript NAME.ts --input NAME.input.ndjson --expect
//! NAME.expected.ndjson` passes on them as written (the test suite checks it). Every template
//! writes to the target schema `defaultdb.public`, which `script new --targetSchema` replaces.

/// The schema every template names; `script new --targetSchema` replaces it.
pub const TEMPLATE_SCHEMA: &str = "defaultdb.public";

/// One embedded template.
#[derive(Debug, Clone, Copy)]
pub struct Template {
    /// Its name, e.g. `table_filter`.
    pub name: &'static str,
    /// The TypeScript source.
    pub script: &'static str,
    /// Input fixture for `script test`.
    pub input: &'static str,
    /// Expected output of `script test` on the input.
    pub expected: &'static str,
}

macro_rules! template {
    ($name:literal) => {
        Template {
            name: $name,
            script: include_str!(concat!("../../userscripts/", $name, ".ts")),
            input: include_str!(concat!("../../userscripts/", $name, ".input.ndjson")),
            expected: include_str!(concat!("../../userscripts/", $name, ".expected.ndjson")),
        }
    };
}

/// Every template, in the order `script new --list` prints them.
pub const TEMPLATES: &[Template] = &[
    template!("filter_table"),
    template!("table_filter"),
    template!("table_filter_v1"),
    template!("soft_delete"),
    template!("drop_columns"),
    template!("rename_columns"),
    template!("rename_primary_keys"),
    template!("route_partitions"),
    template!("rename_tables"),
    template!("computed_column"),
    template!("soft_delete_pii"),
    template!("dead_letter_queue"),
    template!("mask_pii"),
    template!("audit_columns"),
];

impl Template {
    /// The template by name.
    pub fn find(name: &str) -> Option<&'static Template> {
        TEMPLATES.iter().find(|t| t.name == name)
    }

    /// The one-line description: the script's first comment line.
    pub fn description(&self) -> &'static str {
        self.script.lines().find_map(|l| l.trim().strip_prefix("//")).map(str::trim).unwrap_or("")
    }

    /// Which API module the script imports: `replicator@v1` or `replicator@v2`.
    pub fn api_module(&self) -> &'static str {
        if self.script.contains("\"replicator@v1\"") { "replicator@v1" } else { "replicator@v2" }
    }
}
