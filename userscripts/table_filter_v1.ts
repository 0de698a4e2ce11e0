// Skip a list of source tables, written with the legacy v1 API (configureSource).
//
// The same filter as table_filter.ts, against "replicator@v1" (configureSource with
// dispatch/deletesTo), for setups that already use v1 scripts, such as MOLT Fetch's
// --replicator-flags "--userscript table_filter.ts". New scripts should prefer the v2
// version (table_filter.ts).
//
// Every table is routed to the target table of the same name, except the skipped ones,
// whose upserts and deletes are dropped.
//
// Check:  replicator script test --userscript table_filter_v1.ts \
//           --input table_filter_v1.input.ndjson --expect table_filter_v1.expected.ndjson
// Run:    replicator mylogical --sourceConn ... --targetConn ... \
//           --targetSchema defaultdb.public --userscript table_filter_v1.ts ...
import * as api from "replicator@v1";

// The target schema, exactly as passed to --targetSchema. For logical-replication sources
// (PostgreSQL, MySQL, Oracle) v1's source name is the target schema.
const TARGET_SCHEMA = "defaultdb.public";

// Source tables to skip, by exact (case-sensitive) name. Add or remove names here.
const SKIPPED_TABLES = new Set<string>(["audit_logs", "sessions"]);

// Sends a change to the same-named target table, or nowhere for a skipped table. v1 always
// routes explicitly: the result maps target table names to the documents to write there.
function route(doc: api.Document, meta: api.Metadata): Record<api.Table, api.Document[]> | null {
  if (SKIPPED_TABLES.has(meta.table)) return null;
  return { [meta.table]: [doc] };
}

api.configureSource(TARGET_SCHEMA, {
  dispatch: route,
  // Deletes arrive as a document of the primary-key columns and are routed the same way.
  deletesTo: route,
});
