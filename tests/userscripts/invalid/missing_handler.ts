import * as api from "replicator@v2";

// @ts-expect-error onRowDelete is required
api.configureTargetSchema("db.public", { onRowUpsert: (r) => r });
