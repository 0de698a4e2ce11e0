// Handlers that fail in every way a script can; each failure stops only its own batch.
import * as api from "replicator@v2";

function explode(id: string): never {
  throw new Error(`row ${id} is bad`);
}

api.configureTargetSchema("db.public", {
  onRowUpsert: (row, meta) => {
    switch (meta.table) {
      case "throws":
        return explode(String(row.id));
      case "throws_string":
        throw "plain string";
      case "loops":
        for (;;) {}
      case "hogs": {
        const hog: string[] = [];
        for (let i = 0; ; i++) hog.push("x".repeat(1 << 20) + i);
      }
      case "undefined":
        return undefined as unknown as api.Row;
      case "number":
        return 42 as unknown as api.Row;
      case "bad_route":
        return { a: [row, undefined] } as unknown as api.Row;
      case "fn_column":
        return { id: row.id, f: (() => 1) as unknown as string };
      case "undefined_column":
        return { id: row.id, gone: undefined as unknown as string };
      default:
        return row;
    }
  },
  onRowDelete: (row) => row,
});

api.configureTargetTables(["keys"], {
  onRowUpsert: (row) => row,
  onRowDelete: (key) => (key[0] === "short" ? ["only-one"] : key[0] === "nulls" ? [null as unknown as string, "x"] : key),
});
