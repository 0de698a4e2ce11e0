// Split one source table into several target tables by ranges of a numeric column.
//
// For example events_0 for ids below 1000, events_1 below 2000, the rest in
// events_overflow.
//
// Upserts and deletes go through the same routing, so a delete reaches the table its row
// was written to as long as the delete carries the partition column (use a primary-key
// column, as here with id). Other tables pass through. Every target table must exist.
// MOLT Fetch cannot split a table: load the partitions with separate filtered runs or SQL.
//
// Check:  replicator script test --userscript route_partitions.ts \
//           --input route_partitions.input.ndjson --expect route_partitions.expected.ndjson
// Run:    replicator pglogical --sourceConn ... --targetConn ... \
//           --targetSchema defaultdb.public --userscript route_partitions.ts ...
import * as api from "replicator@v2";

// The target schema, exactly as passed to --targetSchema.
const TARGET_SCHEMA = "defaultdb.public";

// The source table to split.
const PARTITIONED_TABLE = "events";

// The numeric column that decides the partition (best a primary-key column).
const PARTITION_COLUMN = "id";

// Partitions in ascending order: rows with PARTITION_COLUMN < below go to table.
const PARTITIONS: { below: number; table: string }[] = [
  { below: 1000, table: "events_0" },
  { below: 2000, table: "events_1" },
];

// Where rows beyond the last bound go (also rows whose value is missing or not a number).
const OVERFLOW_TABLE = "events_overflow";

function partition(row: api.Row, meta: api.Metadata): api.Row | api.RoutedRows {
  if (meta.table !== PARTITIONED_TABLE) return row;
  // Numbers arrive as strings; Number("") and Number(null) are 0, so check the type first.
  const raw = row[PARTITION_COLUMN];
  const value = typeof raw === "string" && raw !== "" ? Number(raw) : NaN;
  for (const p of PARTITIONS) {
    if (value < p.below) return { [p.table]: [row] };
  }
  return { [OVERFLOW_TABLE]: [row] };
}

api.configureTargetSchema(TARGET_SCHEMA, {
  onRowUpsert: partition,
  onRowDelete: partition,
});
