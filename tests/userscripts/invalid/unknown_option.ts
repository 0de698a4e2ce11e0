import * as api from "replicator@v1";

api.setOptions({ flushSize: "10", notAFlag: "1" });
api.configureSource("db.public", { target: "t" });
