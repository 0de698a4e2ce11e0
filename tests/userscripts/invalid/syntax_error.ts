import * as api from "replicator@v2";

api.configureTargetSchema("db.public", {
  onRowUpsert: (row) => { return row +; },
  onRowDelete: (row) => row,
});
