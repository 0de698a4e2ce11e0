import * as api from "replicator@v2";
import { readFileSync } from "fs";

api.configureTargetSchema("db.public", { onRowUpsert: (r) => r, onRowDelete: (r) => r });
