import * as api from "replicator@v1";

api.configureSource("db.public", { target: "orders" });
api.configureTable("orders", { cas: ["version"] });
