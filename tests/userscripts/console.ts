// console: every level reaches the log at its level; disable()/enable() silence it.
import * as api from "replicator@v2";

console.info("loading", { version: 2 }, [1, 2], "done");

api.configureTargetSchema("db.public", {
  onRowUpsert: (row, meta) => {
    console.log("log line", meta.table);
    console.info("info line");
    console.debug("debug line");
    console.trace("trace line");
    console.warn("warn line");
    console.error("error line", new Error("shown with its stack"));
    console.disable();
    console.error("silenced line");
    console.enable();
    console.info("back on");
    return row;
  },
  onRowDelete: (row) => row,
});
