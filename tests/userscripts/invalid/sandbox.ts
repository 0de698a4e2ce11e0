import * as api from "replicator@v2";

// Nothing that reaches outside the engine exists; builtins cannot be patched.
const g = globalThis as unknown as Record<string, unknown>;
const absent = ["process", "require", "setTimeout", "setInterval", "fetch", "XMLHttpRequest", "os", "std", "__replicator_native", "Deno", "Bun"]
  .filter((name) => g[name] !== undefined);
if (absent.length > 0) throw new Error("present: " + absent.join(","));
(Array.prototype as unknown as Record<string, unknown>).evil = 1;
api.configureTargetSchema("db.public", { onRowUpsert: (r) => r, onRowDelete: (r) => r });
