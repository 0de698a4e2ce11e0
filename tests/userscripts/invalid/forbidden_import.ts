// not type-checked: this script is broken on purpose (see forbidden_import.json)
import * as api from "replicator@v2";
import { readFileSync } from "fs";

api.configureTargetSchema("db.public", { onRowUpsert: (r) => r, onRowDelete: (r) => r });
