// The reference for `replicator script bench`: the same userscript (compiled to JS by tsc)
// on the same synthetic rows, in Node.js, the way a Node-based transform would handle a
// change stream: JSON.parse each row, call the handler, JSON.stringify the result.
// Usage: node bench.mjs <compiled-script.mjs> <rows> <schema> <table>
import { resolve } from "node:path";
import { pathToFileURL } from "node:url";

const [script, rowsArg, schema, table] = process.argv.slice(2);
// The stand-in module sits next to the compiled script; import that same instance.
const scriptUrl = pathToFileURL(resolve(script));
const { handlers } = await import(new URL("./replicator@v2.mjs", scriptUrl).href);
await import(scriptUrl.href);
const rows = Number(rowsArg);
const handler = handlers.get(schema).onRowUpsert;

// The same shape as replicator's synthetic rows (numbers as strings, as scripts see them).
function row(i) {
  const p = (n) => String(n).padStart(2, "0");
  return {
    id: String(9007199254740993n + BigInt(i)),
    name: `customer-${i}`,
    amount: `${1000 + (i % 9000)}.${p(i % 100)}`,
    created_at: `2024-01-${p(1 + (i % 28))}T${p(i % 24)}:${p(i % 60)}:${p(Math.floor(i / 60) % 60)}Z`,
    active: i % 2 === 0,
    attrs: { tier: i % 3 === 0 ? "gold" : "silver", score: i % 100, tags: ["a", "b"] },
  };
}
const lines = Array.from({ length: rows }, (_, i) => JSON.stringify(row(i)));
const meta = { schema, table, pglogical: true, nanos: "1704067200000000000", logical: "0" };

const started = process.hrtime.bigint();
let out = 0;
for (const line of lines) {
  const result = handler(JSON.parse(line), meta);
  if (result !== null) out += JSON.stringify(result).length > 0 ? 1 : 0;
}
const seconds = Number(process.hrtime.bigint() - started) / 1e9;
console.log(`node: ${rows} rows, ${out} out, elapsed: ${seconds.toFixed(3)}s`);
console.log(`rows_per_second=${Math.round(rows / seconds)}`);
