// replicator@v2: the current userscript API.
export { configureTargetSchema, configureTargetTables, getTX, write } from "replicator:core";
