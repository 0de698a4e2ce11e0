// replicator@v1 (also cdc-sink@v1): the legacy userscript API.
export {
  configureSource,
  configureTable,
  getTX,
  randomUUID,
  replicationKey,
  setOptions,
  standardMerge,
} from "replicator:core";
