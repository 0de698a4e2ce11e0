import * as api from "replicator@v2";
import { check } from "./lib/check";

api.configureTargetSchema("db.public", { onRowUpsert: (r) => r, onRowDelete: (r) => r });
check(false);
