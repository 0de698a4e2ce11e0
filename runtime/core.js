// replicator:core — the JavaScript half of the userscript API.
//
// Loaded into every engine before the user's script. It keeps the handlers a script
// registers, runs them over whole batches (Rust crosses into JS once per batch, not per row),
// and reaches Rust only through `native`, which it takes from the global object and removes
// before any user code runs. The public modules (replicator@v2, replicator@v1, cdc-sink@v1)
// re-export from here.

const native = globalThis.__replicator_native;
delete globalThis.__replicator_native;

const FAILURE = "__replicator_failure";
const STANDARD_MERGE = Symbol("standardMerge");
const UNSUPPORTED_V1 = ["cas", "deadlines", "exprs", "extras", "ignore", "merge", "rowLimit"];
const V1_TABLE_OPTIONS = new Set(["apply", "deleteKey", "map", ...UNSUPPORTED_V1]);
const V2_TABLE_OPTIONS = new Set(["onRowUpsert", "onRowDelete", "onWrite"]);

// ---------------------------------------------------------------------------------------
// console: joins its arguments with spaces and hands the line to Rust's log at that level.
// Levels: 0 trace, 1 debug, 2 info, 3 warn, 4 error. Lines below native.minLevel are not
// even formatted.

let consoleEnabled = true;

function show(value) {
  if (typeof value === "string") return value;
  if (value instanceof Error) return value.stack ? `${value}\n${value.stack}` : String(value);
  if (typeof value === "bigint") return `${value}n`;
  try {
    const text = JSON.stringify(value);
    return text === undefined ? String(value) : text;
  } catch {
    return String(value);
  }
}

function logger(level) {
  return (...args) => {
    if (consoleEnabled && level >= native.minLevel) native.log(level, args.map(show).join(" "));
  };
}

Object.defineProperty(globalThis, "console", {
  value: Object.freeze({
    log: logger(2),
    info: logger(2),
    debug: logger(1),
    trace: logger(0),
    warn: logger(3),
    error: logger(4),
    disable() {
      consoleEnabled = false;
    },
    enable() {
      consoleEnabled = true;
    },
  }),
  writable: false,
  enumerable: false,
  configurable: false,
});

// ---------------------------------------------------------------------------------------
// Registry

const schemas = new Map(); // target schema -> { upsert, delete, api }
const tables = new Map(); // target table (bare or qualified, as written) -> { upsert, delete, write, api }
let loading = true;
let writeContext = null;

function requireLoading(fn) {
  if (!loading) {
    throw new Error(`${fn}() can only be called while the userscript loads, not from a handler`);
  }
}

function requireFunction(value, what) {
  if (typeof value !== "function") throw new TypeError(`${what} must be a function`);
  return value;
}

function requireName(value, fn, example) {
  if (typeof value !== "string" || value === "") {
    throw new TypeError(`${fn}: expected a name such as "${example}", got ${show(value)}`);
  }
  return value;
}

// ---------------------------------------------------------------------------------------
// replicator@v2

export function configureTargetSchema(name, handlers) {
  requireLoading("configureTargetSchema");
  requireName(name, "configureTargetSchema", "defaultdb.public");
  const h = handlers ?? {};
  if (typeof h.onRowUpsert !== "function" || typeof h.onRowDelete !== "function") {
    throw new TypeError(
      `configureTargetSchema("${name}"): onRowUpsert and onRowDelete are both required ` +
        "(a pass-through is (row, meta) => row)",
    );
  }
  schemas.set(name, { upsert: h.onRowUpsert, delete: h.onRowDelete, api: "v2" });
}

export function configureTargetTables(names, config) {
  requireLoading("configureTargetTables");
  if (!Array.isArray(names) || names.length === 0) {
    throw new TypeError('configureTargetTables: the first argument is a list of table names, e.g. ["orders"]');
  }
  const c = config ?? {};
  for (const key of Object.keys(c)) {
    if (!V2_TABLE_OPTIONS.has(key)) {
      throw new TypeError(`configureTargetTables: unknown option "${key}" (expected onRowUpsert, onRowDelete, onWrite)`);
    }
  }
  if ((c.onRowUpsert === undefined) !== (c.onRowDelete === undefined)) {
    throw new TypeError("configureTargetTables: onRowUpsert and onRowDelete go together; give both or neither");
  }
  const entry = {
    upsert: c.onRowUpsert === undefined ? null : requireFunction(c.onRowUpsert, "onRowUpsert"),
    delete: c.onRowDelete === undefined ? null : requireFunction(c.onRowDelete, "onRowDelete"),
    write: c.onWrite === undefined ? null : requireFunction(c.onWrite, "onWrite"),
    api: "v2",
  };
  for (const name of names) tables.set(requireName(name, "configureTargetTables", "orders"), entry);
}

export function getTX() {
  if (writeContext === null) {
    throw new Error(
      "getTX() can only be called inside onWrite (table-level), not from schema-level " +
        "handlers or from onRowUpsert/onRowDelete",
    );
  }
  return writeContext.tx;
}

export async function write(rows) {
  if (writeContext === null) {
    throw new Error("write() can only be called inside onWrite (table-level)");
  }
  native.write(rows);
}

const tx = Object.freeze({
  query: async (sql, ...params) => native.query(String(sql), params),
  exec: async (sql, ...params) => {
    native.exec(String(sql), params);
  },
  columns: () => native.columns(),
  schema: () => native.schema(),
  table: () => native.table(),
  apply: async (ops) => {
    native.write(ops);
  },
});

// ---------------------------------------------------------------------------------------
// replicator@v1 (and cdc-sink@v1)

export const replicationKey = "__REPLICATION_KEY__";

export function configureSource(name, props) {
  requireLoading("configureSource");
  requireName(name, "configureSource", "defaultdb.public");
  const p = props ?? {};
  const hasDispatch = p.dispatch !== undefined;
  const hasTarget = p.target !== undefined;
  if (hasDispatch === hasTarget) {
    throw new TypeError(`configureSource("${name}"): give exactly one of dispatch or target`);
  }
  let upsert;
  let remove;
  if (hasTarget) {
    const target = requireName(p.target, `configureSource("${name}").target`, "orders");
    upsert = (doc) => ({ [target]: [doc] });
    remove = upsert;
  } else {
    upsert = requireFunction(p.dispatch, `configureSource("${name}").dispatch`);
    if (typeof p.deletesTo === "string" && p.deletesTo !== "") {
      const target = p.deletesTo;
      remove = (doc) => ({ [target]: [doc] });
    } else if (typeof p.deletesTo === "function") {
      remove = p.deletesTo;
    } else {
      throw new TypeError(`configureSource("${name}"): dispatch needs deletesTo (a table name or a function)`);
    }
  }
  schemas.set(name, { upsert, delete: remove, api: "v1" });
}

export function configureTable(name, props) {
  requireLoading("configureTable");
  requireName(name, "configureTable", "orders");
  const p = props ?? {};
  for (const key of Object.keys(p)) {
    if (!V1_TABLE_OPTIONS.has(key)) throw new TypeError(`configureTable("${name}"): unknown option "${key}"`);
    if (UNSUPPORTED_V1.includes(key)) throw new Error(`configureTable("${name}"): not supported yet: ${key}`);
  }
  tables.set(name, {
    upsert: p.map === undefined ? null : requireFunction(p.map, "map"),
    delete: p.deleteKey === undefined ? null : requireFunction(p.deleteKey, "deleteKey"),
    write: p.apply === undefined ? null : requireFunction(p.apply, "apply"),
    api: "v1",
  });
}

export function setOptions(options) {
  if (options === null || typeof options !== "object") {
    throw new TypeError('setOptions: expected an object of flag names to values, e.g. {flushSize: "500"}');
  }
  for (const [key, value] of Object.entries(options)) native.setOption(key, String(value));
}

export function randomUUID() {
  return native.randomUUID();
}

export function standardMerge(fallback) {
  return Object.freeze({ [STANDARD_MERGE]: true, fallback });
}

// ---------------------------------------------------------------------------------------
// Entry points for Rust. Each runs a whole batch; a throw is wrapped with the index of the
// row that caused it so the error can name the row.

function fail(index, error) {
  return { [FAILURE]: true, index, error };
}

export function describe() {
  return {
    schemas: [...schemas.entries()].map(([name, s]) => [name, s.api]),
    tables: [...tables.entries()].map(([name, t]) => [name, t.api, t.upsert !== null, t.delete !== null, t.write !== null]),
  };
}

export function finishLoading() {
  loading = false;
}

export function runSchema(schema, isDelete, rows, metas) {
  const s = schemas.get(schema);
  const fn = isDelete ? s.delete : s.upsert;
  const out = new Array(rows.length);
  let i = 0;
  try {
    // metas[i] may be shared by consecutive rows: each call gets a copy of its own.
    for (; i < rows.length; i++) out[i] = fn(rows[i], { ...metas[i] });
  } catch (e) {
    throw fail(i, e);
  }
  return out;
}

export function runTable(table, isDelete, values, metas) {
  const t = tables.get(table);
  const fn = isDelete ? t.delete : t.upsert;
  const out = new Array(values.length);
  let i = 0;
  try {
    for (; i < values.length; i++) out[i] = fn(values[i], { ...metas[i] });
  } catch (e) {
    throw fail(i, e);
  }
  return out;
}

export function runWrite(table, ops) {
  const t = tables.get(table);
  writeContext = { tx };
  let result;
  try {
    result = t.write(ops);
  } catch (e) {
    writeContext = null;
    throw fail(-1, e);
  }
  if (result === null || typeof result !== "object" || typeof result.then !== "function") {
    writeContext = null;
    const fn = t.api === "v1" ? "apply" : "onWrite";
    throw fail(-1, new TypeError(`${fn} for table "${table}" must return a Promise (declare it async)`));
  }
  return Promise.resolve(result).catch((e) => {
    throw fail(-1, e);
  });
}

export function endWrite() {
  writeContext = null;
}
