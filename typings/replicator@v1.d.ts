/**
 * Typings for the legacy `replicator@v1` userscript module (also importable under its older
 * name `cdc-sink@v1`). New scripts should use `replicator@v2`; this module exists so scripts
 * written for the v1 API keep running unchanged.
 *
 *     import * as api from "replicator@v1";
 *
 * Flow: a change from a source goes through the source's `dispatch`/`deletesTo` (registered
 * with {@link configureSource}) before it is staged, then through the table's `map`/
 * `deleteKey`/`apply` (registered with {@link configureTable}) before it is written.
 *
 * Values: numbers reach scripts as strings holding the exact decimal text (the types allow
 * `number` because a script may return one; it is stored as its decimal string). SQL NULL is
 * `null`, JSON columns are objects/arrays. Inside JSON documents, a number is a JS `number`
 * when a double prints the same value, else a `string` of its exact text
 * (`"12345678901234567890"`, `"1e400"`); returned unchanged, it keeps the source's exact text
 * (`2.50` stays `2.50`).
 *
 * The sandbox is plain ECMAScript: no timers, no `fetch` or network, no filesystem, no
 * `process`/environment, no crypto. Promises and `async`/`await` work.
 */

// ---------------------------------------------------------------------------------------
// Basic types
// ---------------------------------------------------------------------------------------

/** A column name (case-sensitive). */
export type Column = string;

/**
 * A table name: bare (`tbl`), `db.tbl` or `db.schema.tbl`; parts may be double-quoted.
 * Unqualified names are resolved against the target schema.
 */
export type Table = string;

/** A duration in Go syntax, e.g. `"250ms"`, `"10s"`, `"1h30m"`. */
export type Duration = string;

/**
 * One property value. Incoming numbers are strings; a returned `number` is stored as its
 * decimal string. JSON columns are nested documents/arrays.
 */
export type DocumentValue = null | boolean | number | string | Document | DocumentValue[];

/** A row or JSON object: property (column) name → value. */
export type Document = { [key: string]: DocumentValue };

/**
 * Metadata passed along with each change. Like a {@link Document} it may carry more keys:
 * the source tag (e.g. `pglogical: true`), and in `dispatch`/`deletesTo` the pre-image
 * under `before`.
 */
export type Metadata = Document & {
  /** Target schema name. */
  schema: string;
  /** Table name: the source table in `dispatch`/`deletesTo`, the target table in `configureTable` handlers. */
  table: string;
  /** Pre-image of the row (or `null`), in `dispatch`/`deletesTo` only. */
  before?: Document | null;
  /** Source commit time: wall-clock nanoseconds since the Unix epoch, as a decimal string. */
  nanos?: string;
  /** Source commit time: logical counter ordering changes with equal `nanos`, as a string. */
  logical?: string;
};

/**
 * Name of the property that holds the raw key array when a delete cannot be turned into a
 * document (no target table of that name to take key column names from). Its value is
 * `"__REPLICATION_KEY__"`.
 */
export const replicationKey: "__REPLICATION_KEY__";

// ---------------------------------------------------------------------------------------
// configureSource
// ---------------------------------------------------------------------------------------

/**
 * Routes one source upsert to target tables. Runs before the change is staged.
 *
 * @param doc The source row.
 * @param meta Change metadata (`table` = source table).
 * @returns target table → documents to upsert there (an empty object or `null` drops the
 *   change). Every document must contain the target table's primary-key columns.
 */
export type Dispatcher = (doc: Document, meta: Metadata) => Record<Table, Document[]> | null;

/**
 * Routes one source delete to target tables. Runs before the change is staged.
 *
 * @param doc A sparse document holding the primary-key columns (named after the default
 *   target table's key), or `{ [replicationKey]: [...] }` when no such table exists.
 * @param meta Change metadata (`table` = source table).
 * @returns target table → key documents to delete there, or `null` to keep the target rows.
 */
export type DeletesTo = (doc: Document, meta: Metadata) => Record<Table, Document[]> | null;

/** `configureSource` properties that route each change with script functions. */
export type DispatchSourceOptions = {
  /** Routes upserts; see {@link Dispatcher}. Requires `deletesTo`. */
  dispatch: Dispatcher;
  /** Where deletes go: one fixed table, or a function like {@link DeletesTo}. */
  deletesTo: Table | DeletesTo;
  /** For sources with nested sub-collections: also dispatch the nested documents. */
  recurse?: boolean;
  target?: never;
};

/** `configureSource` properties that send every change to one table. */
export type TargetSourceOptions = {
  /** The single target table for every change from this source. */
  target: Table;
  /** For sources with nested sub-collections: also send the nested documents. */
  recurse?: boolean;
  dispatch?: never;
  deletesTo?: never;
};

/**
 * Registers how changes from one source are routed, before they are staged. Call it at the
 * top level of the script. Give either `dispatch` with `deletesTo`, or `target`.
 *
 * @param sourceName For logical-replication sources (PostgreSQL, MySQL, Oracle) this is the
 *   target schema (`"defaultdb.public"`); for changefeeds, the table group / source name.
 *   Calling it again with the same name replaces the earlier registration.
 */
export function configureSource(sourceName: string, props: DispatchSourceOptions | TargetSourceOptions): void;

// ---------------------------------------------------------------------------------------
// configureTable
// ---------------------------------------------------------------------------------------

/**
 * One operation handed to `apply`: an upsert with its row in `data`, or a delete identified
 * by `pk`.
 */
export type ApplyOp = ({ action: "delete" } | { action: "upsert"; data: Document }) & {
  /** Pre-image of the row, when the source provides one. */
  before?: Document;
  /** Change metadata (`table` = target table). */
  meta: Metadata;
  /** Primary-key values in the target PRIMARY KEY order. */
  pk: DocumentValue[];
};

/** The input of a merge function: a conflicting write the CAS check rejected. */
export type MergeOperation = {
  /** The row as the source saw it before the change, when known. */
  before?: Document;
  /** Change metadata. */
  meta: Metadata;
  /** The row the source wants to write. */
  proposed: Document;
  /** The row currently in the target. */
  target: Document;
  /** Set by {@link standardMerge}: the columns it could not merge by itself. */
  unmerged?: Column[];
};

/**
 * What to do with a conflict: write `apply`, send it to the named dead-letter queue, or
 * drop it.
 */
export type MergeResult = { apply: Document } | { dlq: string } | { drop: true };

/** Resolves a conflicting write; see {@link MergeOperation} and {@link MergeResult}. */
export type MergeFunction = (op: MergeOperation) => MergeResult | Promise<MergeResult>;

/** The built-in three-way merge returned by {@link standardMerge}; an opaque value. */
export interface StandardMerge {
  readonly __standardMerge: true;
}

/**
 * Per-table behaviors for {@link configureTable}. All are optional.
 *
 * NOTE: this implementation accepts `apply`, `deleteKey` and `map`. The declarative
 * behaviors `cas`, `deadlines`, `exprs`, `extras`, `ignore`, `merge` and `rowLimit` are
 * rejected when the script loads, with the error `not supported yet: <option>`.
 */
export type ConfigureTableOptions = {
  /**
   * Takes over writing for this table: called once per batch inside the target
   * transaction, which commits when the promise resolves and rolls back when it rejects.
   * Use {@link getTX} here, and `getTX().apply(ops)` for the default write.
   */
  apply: (ops: ApplyOp[]) => Promise<unknown>;
  /** Compare-and-set columns: an update applies only if its tuple is greater than the target's. (Not supported yet.) */
  cas: Column[];
  /** Drop updates whose column value is older than now minus the duration. (Not supported yet.) */
  deadlines: { [column: Column]: Duration };
  /**
   * Rewrites or drops a delete. Runs after staging.
   *
   * @param key Primary-key values in target PRIMARY KEY order.
   * @returns new key values (same arity as the target key), or `null`/`[]` to skip the delete.
   */
  deleteKey: (key: DocumentValue[], meta: Metadata) => DocumentValue[] | null;
  /** SQL expressions substituted for column values, `$0` = incoming value. (Not supported yet.) */
  exprs: { [column: Column]: string };
  /** A JSONB column that collects properties with no matching column. (Not supported yet.) */
  extras: Column;
  /** Columns to drop instead of rejecting them as unknown. (Not supported yet.) */
  ignore: { [column: Column]: boolean };
  /**
   * Per-row fix-up of upserts. Runs after staging, before the write.
   *
   * @returns the document to write (it must contain every target primary-key column), or
   *   `null` to skip the upsert.
   */
  map: (doc: Document, meta: Metadata) => Document | null;
  /** Conflict resolution when a CAS check rejects a write. (Not supported yet.) */
  merge: MergeFunction | StandardMerge;
  /** Maximum rows per UPSERT/DELETE statement. (Not supported yet.) */
  rowLimit: number;
};

/**
 * Registers per-table behaviors for one target table. Call it at the top level of the
 * script. See {@link ConfigureTableOptions} for which options this implementation supports.
 *
 * @param tableName The target table (see {@link Table}).
 */
export function configureTable(tableName: Table, props: Partial<ConfigureTableOptions>): void;

// ---------------------------------------------------------------------------------------
// Transaction and helpers
// ---------------------------------------------------------------------------------------

/** A column of the target table, as returned by {@link TargetTX.columns}. */
export type TargetColumn = {
  /** Column name, quoted so it is safe to paste into SQL. */
  name: string;
  /** True for primary-key columns (these come first, in key order). */
  primary: boolean;
  /** True when the replicator would not normally write this column. */
  ignored: boolean;
  /** SQL type name, e.g. `"INT8"`. */
  type: string;
  /** The column's DEFAULT expression, when it has one. */
  defaultExpr?: string;
};

/**
 * The target transaction of the batch being written, from {@link getTX} inside `apply`.
 * Failing statements reject with an `Error` whose message carries the database's text and
 * `SQLSTATE xxxxx`.
 */
export interface TargetTX {
  /** Writes the operations with the default apply logic, in this transaction (no commit). */
  apply(ops: ApplyOp[]): Promise<void>;
  /** Columns of the target table, primary-key columns first in key order. */
  columns(): TargetColumn[];
  /** Runs a statement that returns no rows. Placeholders use the target's syntax (`$1`). */
  exec(sql: string, ...params: unknown[]): Promise<void>;
  /** Runs a query; each row is an array of column values, numbers as strings. */
  query(sql: string, ...params: unknown[]): Promise<Iterable<DocumentValue[]>>;
  /** The target schema, quoted and safe to paste into SQL. */
  schema(): string;
  /** The target table, fully qualified, quoted and safe to paste into SQL. */
  table(): string;
}

/**
 * Returns the target transaction of the batch being written. Valid only while an `apply`
 * function runs; throws anywhere else.
 */
export function getTX(): TargetTX;

/** Returns a new random (version 4) UUID as a lowercase string. */
export function randomUUID(): string;

/**
 * Sets command-line flags from the script, so shared configuration can live in the script
 * while per-environment flags stay on the command line. Flag names are given without
 * dashes (`{ "targetSchema": "defaultdb.public" }`); an unknown name is an error.
 */
export function setOptions(opts: { [flag: string]: string }): void;

/**
 * Returns the built-in three-way merge for `configureTable`'s `merge` option: properties
 * whose `before` value equals the target's are applied; if some cannot be merged, the
 * `fallback` is called with those column names in `unmerged` (without a fallback the
 * conflict is an error). Note that `merge` is not supported yet by this implementation.
 */
export function standardMerge(fallback?: MergeFunction): StandardMerge;

// ---------------------------------------------------------------------------------------
// Global console
// ---------------------------------------------------------------------------------------

declare global {
  /**
   * The script's logger; lines go to the replicator's structured log (arguments are joined
   * with spaces). There are no timers, no `fetch`, no filesystem and no `process`/environment.
   */
  interface Console {
    /** Informational message. */
    log(...data: unknown[]): void;
    /** Informational message (same level as `log`). */
    info(...data: unknown[]): void;
    /** Debug message, shown with `-v`. */
    debug(...data: unknown[]): void;
    /** Trace message, shown with `-vv`. */
    trace(...data: unknown[]): void;
    /** Warning. */
    warn(...data: unknown[]): void;
    /** Error message. */
    error(...data: unknown[]): void;
    /** Silences every console call from the script until `enable()`. */
    disable(): void;
    /** Turns script logging back on after `disable()`. */
    enable(): void;
  }
  /** The script's logger; see {@link Console}. */
  var console: Console;
}
