// not type-checked: this script is broken on purpose (see syntax_error.json)
import * as api from "replicator@v2";

api.configureTargetSchema("db.public", {
  onRowUpsert: (row) => { return row +; },
  onRowDelete: (row) => row,
});
