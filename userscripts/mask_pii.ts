// Mask personal data (e-mails, card and phone numbers, SSNs) but keep the columns.
//
// For a staging or analytics copy: "jane.doe@example.com" -> "j***@example.com",
// "4111111111111111" -> "************1111", "123-45-6789" -> "***".
//
// The masks are deterministic (same input, same output) and use no crypto, so they are
// not anonymisation: the domain, last digits and lengths remain visible. Masking is applied
// to upserts and to deletes alike. Do not mask primary-key columns: different values can
// mask to the same text ("jane@x.io" and "joe@x.io" both give "j***@x.io"). NULL stays
// NULL and absent columns stay absent. Other tables and columns pass through.
//
// Check:  replicator script test --userscript mask_pii.ts \
//           --input mask_pii.input.ndjson --expect mask_pii.expected.ndjson
// Run:    replicator pglogical --sourceConn ... --targetConn ... \
//           --targetSchema defaultdb.public --userscript mask_pii.ts ...
import * as api from "replicator@v2";

// The target schema, exactly as passed to --targetSchema.
const TARGET_SCHEMA = "defaultdb.public";

// How to mask a value:
//   "email": keep the first character and the domain    jane.doe@example.com -> j***@example.com
//   "last4": keep the last 4 characters, star the rest   +1 555 0100 -> *******0100
//   "full":  replace the whole value                      anything -> ***
type Mask = "email" | "last4" | "full";

// Source table -> { column: mask }. The target columns must be text columns.
const MASKED_COLUMNS: Record<string, Record<string, Mask>> = {
  customers: { email: "email", phone: "last4", credit_card_number: "last4", ssn: "full" },
};

const HIDDEN = "***";

function maskValue(value: api.RowValue, mask: Mask): api.RowValue {
  if (value === null) return null;
  if (typeof value !== "string") return HIDDEN;
  switch (mask) {
    case "email": {
      const at = value.lastIndexOf("@");
      if (at < 1) return HIDDEN; // not an address: hide it all
      return value.charAt(0) + HIDDEN + value.slice(at);
    }
    case "last4":
      if (value.length <= 4) return HIDDEN; // too short to keep anything
      return "*".repeat(value.length - 4) + value.slice(-4);
    case "full":
      return HIDDEN;
  }
}

function maskRow(row: api.Row, meta: api.Metadata): api.Row {
  if (!Object.prototype.hasOwnProperty.call(MASKED_COLUMNS, meta.table)) return row;
  const masks = MASKED_COLUMNS[meta.table];
  const out: api.Row = {};
  for (const [column, value] of Object.entries(row)) {
    out[column] = Object.prototype.hasOwnProperty.call(masks, column) ? maskValue(value, masks[column]) : value;
  }
  return out;
}

api.configureTargetSchema(TARGET_SCHEMA, {
  onRowUpsert: maskRow,
  onRowDelete: maskRow,
});
