/**
 * Typings for the `replicator@v2` userscript module.
 *
 * A userscript is a TypeScript (or JavaScript) ES module loaded once at startup. At load
 * time it registers handlers with {@link configureTargetSchema} and
 * {@link configureTargetTables}; the replicator then calls those handlers for every change
 * it replicates:
 *
 *     source change ─► schema-level handlers ─► staging ─► table-level handlers
 *                   ─► onWrite (or the default write) ─► one commit on the target
 *
 * Start every script with:
 *
 *     import * as api from "replicator@v2";
 *
 * The module is built into the `replicator` binary; nothing needs to be installed. Keep this
 * file and `tsconfig.json` next to your script to get editor support and `tsc --noEmit`
 * checks.
 *
 * Values: every number reaches a script as a string holding the number's exact text (no
 * float rounding), so parse, compute and convert back to a string. Booleans are booleans,
 * SQL NULL is `null`, JSON columns are objects/arrays (see {@link JsonValue} for the numbers
 * inside them), SQL arrays are arrays.
 *
 * The sandbox is plain ECMAScript: no timers, no `fetch` or network, no filesystem, no
 * `process`/environment, no crypto. Promises and `async`/`await` work. Global variables
 * persist between handler calls.
 */

// ---------------------------------------------------------------------------------------
// Values
// ---------------------------------------------------------------------------------------

/**
 * One column value as a script receives it.
 *
 * - numbers of any SQL type: a `string` with the exact decimal text (`"42"`, `"19.90"`);
 * - text, dates and times: `string` (RFC 3339 for timestamps, UTC for `timestamptz`);
 * - UUIDs: lowercase canonical `string`; binary columns: `\x`-prefixed hex `string`;
 * - booleans: `boolean`; SQL NULL: `null`;
 * - JSON columns: the document as {@link JsonObject}/{@link JsonValue} arrays (a document
 *   that is a bare number arrives as the `string` of its exact text, like column numbers);
 * - SQL arrays: arrays.
 */
export type RowValue = string | boolean | null | JsonObject | JsonValue[] | RowValue[];

/**
 * A value inside a JSON column's document.
 *
 * A number arrives as a JS `number` when a double prints the same value (`2.50` → `2.5`,
 * `0.1`, `1e21`). Any other number arrives as a `string` holding its exact text:
 * integers beyond what a double holds (`"12345678901234567890"`), more significant digits
 * than a double keeps (`"1.0000000000000000000001"`), or beyond its range (`"1e400"`).
 * Nothing is rounded on the way in.
 *
 * On the way out, a value returned unchanged at the same place keeps the source's exact
 * text: an untouched document reaches the target byte for byte, and in a document the script
 * changed, `2.50` stays `2.50` and `"12345678901234567890"` (given as a string) becomes the
 * number `12345678901234567890` again. A number the script computes is written as JavaScript
 * prints it.
 */
export type JsonValue = string | number | boolean | null | JsonObject | JsonValue[];

/** An object inside a JSON column's document. */
export type JsonObject = { [key: string]: JsonValue };

/** A row as a script receives it: column name → value. Column names are case-sensitive. */
export type Row = { [column: string]: RowValue };

/**
 * One column value a script may return. Besides everything in {@link RowValue}, a JS
 * `number` is accepted and stored as its decimal string (`12.5` → `"12.5"`), and a `Date`
 * is stored as its ISO-8601 string (`toISOString()`). Returning `undefined` in place of a
 * whole row is an error; return `null` to drop the row instead.
 */
export type OutRowValue = string | number | boolean | null | Date | OutRow | OutRowValue[];

/**
 * A row as a script may return it: column name → {@link OutRowValue}. Every {@link Row} is
 * also an `OutRow`, so returning the row you were given always type-checks.
 */
export type OutRow = { [column: string]: OutRowValue };

/**
 * A routing object returned by a schema-level handler: target table name → rows for that
 * table. Keys are case-sensitive table names in the target schema; an empty array sends
 * nothing to that table. Use it to rename tables, split partitions or fan one change out to
 * several tables.
 */
export type RoutedRows = { [table: string]: OutRow[] };

/**
 * Facts about the change being handled. Like a {@link Row} it may carry extra keys.
 *
 * - In schema-level handlers ({@link configureTargetSchema}) `schema` is the target schema
 *   and `table` is the **source** table name (source casing).
 * - In table-level handlers ({@link configureTargetTables}) `schema` is the target schema and
 *   `table` is the **target** table name.
 */
export type Metadata = Row & {
  /** Target schema name, case-sensitive. */
  schema: string;
  /** Table name (source table at schema level, target table at table level). */
  table: string;
  /** Present and `true` when the change came from PostgreSQL logical replication. */
  pglogical?: true;
  /** Present and `true` when the change came from the MySQL/MariaDB binlog. */
  mylogical?: true;
  /** Present and `true` when the change came from Oracle LogMiner. */
  oraclelogminer?: true;
  /** Present and `true` when the change came from a CockroachDB changefeed. */
  changefeed?: true;
  /** Source commit time: wall-clock nanoseconds since the Unix epoch, as a decimal string. */
  nanos?: string;
  /** Source commit time: logical counter that orders changes with equal `nanos`, as a string. */
  logical?: string;
};

// ---------------------------------------------------------------------------------------
// Schema-level handlers
// ---------------------------------------------------------------------------------------

/**
 * A schema-level handler (`onRowUpsert` or `onRowDelete` of {@link configureTargetSchema}).
 * Runs on the ingest side, before the change is written to staging.
 *
 * @param row For upserts: the source row (source column names). For deletes: at least the
 *   primary-key values (under source names, target names or both, depending on the source);
 *   other columns may or may not be present.
 * @param metadata `schema` = target schema, `table` = source table name.
 * @returns
 *   - a row → sent to the target table with the same name as the source table (for deletes:
 *     the row must hold the target primary-key columns; other columns are ignored);
 *   - a {@link RoutedRows} object → sent to the named target tables instead;
 *   - `null` → the change is dropped (for deletes: the target row is kept).
 */
export type RowHandlerFn = (row: Row, metadata: Metadata) => OutRow | RoutedRows | null;

/** The handlers of {@link configureTargetSchema}. Both are required. */
export type TargetSchemaHandlers = {
  /** Called for each source insert or update. A pass-through is `(row) => row`. */
  onRowUpsert: RowHandlerFn;
  /** Called for each source delete. A pass-through is `(row) => row`. */
  onRowDelete: RowHandlerFn;
};

/**
 * Registers schema-level handlers for every change bound for one target schema. Call it at
 * the top level of the script (at load time). The handlers run before changes are staged,
 * so this is the only place that can route changes to other tables (rename, partition,
 * fan out) or drop them early.
 *
 * Call it once per target schema; a later call for the same schema replaces the earlier one.
 *
 * @param targetSchemaName Case-sensitive target schema, as given to `--targetSchema`
 *   (`"defaultdb.public"` for CockroachDB/PostgreSQL, one part for MySQL or Oracle).
 * @param handlers `onRowUpsert` and `onRowDelete`, both required.
 */
export function configureTargetSchema(targetSchemaName: string, handlers: TargetSchemaHandlers): void;

// ---------------------------------------------------------------------------------------
// Table-level handlers
// ---------------------------------------------------------------------------------------

/**
 * Table-level upsert handler. Runs after the row leaves staging, just before it is written.
 *
 * @param row The row as produced by the schema-level stage (target column names).
 * @param meta `schema` = target schema, `table` = target table.
 * @returns the row to write (no routing at this level), or `null` to skip this upsert.
 */
export type onRowUpsertFn = (row: Row, meta: Metadata) => OutRow | null;

/**
 * Table-level delete handler. Runs after the delete leaves staging, just before it is applied.
 *
 * @param keyVals Only the primary-key values, as strings, in the order of the target table's
 *   PRIMARY KEY (PK `(id, region)` → `["123", "US"]`).
 * @param meta `schema` = target schema, `table` = target table.
 * @returns the (possibly rewritten) key values, same arity; or `null` to skip the delete and
 *   keep the target row.
 */
export type onRowDeleteFn = (keyVals: string[], meta: Metadata) => string[] | null;

/**
 * Replaces the default write for the configured tables. Called once per batch with the
 * operations left after `onRowUpsert`/`onRowDelete`, inside the target transaction and
 * right before it is committed. Must return a promise (write it as an `async` function);
 * usually it calls {@link write}. If the promise resolves, the transaction commits; if it
 * rejects or the function throws, the transaction is rolled back and the batch fails.
 * {@link getTX} and {@link write} may be used only here.
 */
export type onWriteFn = (rows: RowOp[]) => Promise<unknown>;

/**
 * The configuration object of {@link configureTargetTables}. Every handler is optional and an
 * omitted one means pass-through, but `onRowUpsert` and `onRowDelete` go together: give
 * both or neither.
 */
export type TargetTablesConfig = {
  /** Custom writer for the batch; see {@link onWriteFn}. */
  onWrite?: onWriteFn;
} & (
  | {
      /** Per-row upsert fix-up; see {@link onRowUpsertFn}. Requires `onRowDelete`. */
      onRowUpsert: onRowUpsertFn;
      /** Per-delete key fix-up; see {@link onRowDeleteFn}. Requires `onRowUpsert`. */
      onRowDelete: onRowDeleteFn;
    }
  | { onRowUpsert?: never; onRowDelete?: never }
);

/**
 * Registers table-level handlers for one or more target tables. Call it at the top level of
 * the script (at load time). The handlers run on the apply side, after rows come back out
 * of staging and just before they are written to the target.
 *
 * May be called several times with different table lists.
 *
 * @param tables Case-sensitive target table names, bare (`"orders"`) or fully qualified
 *   (`"defaultdb.public.orders"`).
 * @param config `onRowUpsert` + `onRowDelete` (together) and/or `onWrite`.
 */
export function configureTargetTables(tables: string[], config: TargetTablesConfig): void;

// ---------------------------------------------------------------------------------------
// onWrite: operations, transaction, write
// ---------------------------------------------------------------------------------------

/** Fields shared by every {@link RowOp}. */
export type RowOpCommon = {
  /** Pre-image of the row, only when the source provides one. */
  before?: Row;
  /** Metadata of the change (`table` = target table). */
  meta: Metadata;
  /** Primary-key values as strings, in the target PRIMARY KEY order. */
  pk: string[];
};

/**
 * One operation handed to `onWrite`: an upsert (with the row in `data`) or a delete
 * (identified by `pk`). Numbers inside `data`, `before` and `pk` are strings.
 */
export type RowOp = ({ action: "delete" } | { action: "upsert"; data: Row }) & RowOpCommon;

/**
 * An operation as a script may pass it to {@link write}: like {@link RowOp}, but an upsert's
 * `data` may hold returnable values ({@link OutRow}: numbers and `Date`s are converted to
 * strings). Every `RowOp` is an `OutRowOp`.
 */
export type OutRowOp = ({ action: "delete" } | { action: "upsert"; data: OutRow }) & RowOpCommon;

/**
 * A column of the target table, as returned by {@link TargetTX.columns}.
 */
export type TargetColumn = {
  /** Column name, quoted so it is safe to paste into SQL. */
  name: string;
  /** True for primary-key columns (these come first, in key order). */
  primary: boolean;
  /** True when the replicator would not normally write this column (e.g. computed columns). */
  ignored: boolean;
  /** SQL type name as the target reports it, e.g. `"INT8"`, `"TEXT"`. */
  type: string;
  /** The column's DEFAULT expression, when it has one. */
  defaultExpr?: string;
};

/**
 * The target transaction of the batch being written. Obtained from {@link getTX} inside
 * `onWrite`. Nothing is committed until `onWrite`'s promise resolves.
 *
 * SQL errors reject the returned promise with an `Error` whose message carries the
 * database's text and `SQLSTATE xxxxx` (five characters), so scripts can branch on the
 * code, e.g. `String(err).includes("SQLSTATE 23502")` for a NOT NULL violation. A failed
 * statement aborts the transaction unless you roll back to a SAVEPOINT taken before it.
 */
export interface TargetTX {
  /**
   * Runs a statement that returns rows. Placeholders use the target's syntax (`$1`, `$2`
   * for CockroachDB/PostgreSQL).
   *
   * @returns the rows, each an array of column values in SELECT order; numbers come back as
   *   strings, NULL as `null`.
   */
  query(sql: string, ...params: unknown[]): Promise<Iterable<RowValue[]>>;
  /** Runs a statement that returns no rows (DML, SAVEPOINT, ...). */
  exec(sql: string, ...params: unknown[]): Promise<void>;
  /** Columns of the target table, primary-key columns first in key order. */
  columns(): TargetColumn[];
  /** The target schema, quoted and safe to paste into SQL (e.g. `defaultdb.public`). */
  schema(): string;
  /** The target table, fully qualified, quoted and safe to paste into SQL. */
  table(): string;
}

/**
 * Returns the target transaction of the batch currently being written.
 *
 * Valid only while an `onWrite` handler runs (including after its `await`s); calling it
 * from schema-level handlers, table-level `onRowUpsert`/`onRowDelete` or at load time
 * throws.
 */
export function getTX(): TargetTX;

/**
 * Writes operations to the target with the replicator's normal apply logic, inside the
 * current transaction (it does not commit). Pass all, some or rewritten rows, and mix it
 * with your own SQL via {@link getTX}.
 *
 * Valid only inside `onWrite`. Rejects with an `Error` carrying the database message and
 * `SQLSTATE xxxxx` when a statement fails.
 */
export function write(rows: readonly OutRowOp[]): Promise<void>;

// ---------------------------------------------------------------------------------------
// Global console
// ---------------------------------------------------------------------------------------

declare global {
  /**
   * The script's logger; lines go to the replicator's structured log (arguments are joined
   * with spaces). Avoid logging sensitive data. This is the only host facility besides the
   * API module: there are no timers (`setTimeout`/`setInterval`), no `fetch`, no filesystem,
   * no `process` or environment variables.
   */
  interface Console {
    /** Informational message. */
    log(...data: unknown[]): void;
    /** Informational message (same level as `log`). */
    info(...data: unknown[]): void;
    /** Debug message, shown when the replicator runs with `-v`. */
    debug(...data: unknown[]): void;
    /** Trace message, shown when the replicator runs with `-vv`. */
    trace(...data: unknown[]): void;
    /** Warning. */
    warn(...data: unknown[]): void;
    /** Error message (does not by itself fail the batch; throw for that). */
    error(...data: unknown[]): void;
    /** Silences every console call from the script until `enable()`. */
    disable(): void;
    /** Turns script logging back on after `disable()`. */
    enable(): void;
  }
  /** The script's logger; see {@link Console}. */
  var console: Console;
}
