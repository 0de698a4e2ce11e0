import * as api from "replicator@v2";

export const unused = api;
