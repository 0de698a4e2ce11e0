//! Metrics in Prometheus' text format, under the names MOLT Replicator uses so its dashboards
//! keep working (listed in the README). One registry per process ([`global`]); the
//! names, types and labels are declared here and nowhere else.

use std::sync::OnceLock;

use prometheus::{
    Encoder, Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    Opts, Registry, TextEncoder,
};

/// Every metric replicator exports.
pub struct Metrics {
    registry: Registry,
    /// Rows written to the target, by `schema`, `table`.
    pub apply_upserts_total: IntCounterVec,
    /// Rows deleted on the target, by `schema`, `table`.
    pub apply_deletes_total: IntCounterVec,
    /// Failed apply attempts, by `schema`, `table`.
    pub apply_errors_total: IntCounterVec,
    /// Compare-and-set conflicts, by `schema`, `table`.
    pub apply_conflicts_total: IntCounterVec,
    /// Time per apply statement batch, by `schema`, `table`.
    pub apply_duration_seconds: HistogramVec,
    /// Mutations waiting for the applier.
    pub target_apply_queue_size: IntGauge,
    /// Mutations read from the source, by `source`, `type` (`upsert`/`delete`).
    pub mutation_total: IntCounterVec,
    /// Source commit → received, by `schema`.
    pub source_lag_seconds: GaugeVec,
    /// Source commit → applied, by `schema`.
    pub target_lag_seconds: GaugeVec,
    /// Source commit → received, as a distribution.
    pub source_lag_seconds_histogram: HistogramVec,
    /// Source commit → applied, as a distribution.
    pub target_lag_seconds_histogram: HistogramVec,
    /// Source commit → target commit of every source transaction, by `schema`.
    pub target_apply_transaction_lag_seconds: HistogramVec,
    /// WAL the PostgreSQL source keeps for the replication slot, in bytes.
    pub pglogical_slot_retained_wal_bytes: IntGauge,
    /// Mutations received for a table, by `schema`, `table`.
    pub mutations_staged: IntCounterVec,
    /// Mutations applied to a table, by `schema`, `table`.
    pub mutations_applied: IntCounterVec,
    /// Successful PostgreSQL source connections.
    pub pglogical_dial_success_total: IntCounter,
    /// Failed PostgreSQL source connections.
    pub pglogical_dial_failure_total: IntCounter,
    /// Successful MySQL/MariaDB source connections.
    pub mylogical_dial_success_total: IntCounter,
    /// Failed MySQL/MariaDB source connections.
    pub mylogical_dial_failure_total: IntCounter,
    /// Userscript handler calls, by `schema`, `table`, `function`.
    pub script_invocations_total: IntCounterVec,
    /// Rows a handler dropped.
    pub script_rows_filtered_total: IntCounterVec,
    /// Rows a handler passed on.
    pub script_rows_processed_total: IntCounterVec,
    /// Handler errors.
    pub script_errors_total: IntCounterVec,
    /// Time in a handler call.
    pub script_exec_time_seconds: HistogramVec,
    /// Time waiting for a free engine.
    pub script_entry_wait_seconds: HistogramVec,
    /// Wall-clock time of the last successful checkpoint (seconds since the epoch).
    pub last_checkpoint_seconds: Gauge,
    /// Process start marker (always 1), so a scrape shows the process is replicator.
    pub up: IntCounter,
    /// Changefeed requests answered, by status code (`replicator start`).
    pub http_status_codes_total: IntCounterVec,
    /// Time to answer a changefeed request.
    pub http_latency_seconds: HistogramVec,
    /// Changefeed request body bytes, as decompressed.
    pub http_payload_in_bytes_total: IntCounter,
    /// Changefeed mutations received, by target schema and table.
    pub mutations_received_count: IntCounterVec,
    /// Changefeed mutations dropped because an equal or newer version of their key was applied.
    pub stage_duplicate_mutations_total: IntCounterVec,
    /// Resolved timestamps refused for going backwards, by target schema.
    pub checkpoint_proposed_going_backwards_errors: IntCounterVec,
    /// The newest applied resolved timestamp, seconds since the epoch, by target schema.
    pub target_applied_timestamp_seconds: GaugeVec,
    /// Staged changefeed mutations not applied yet, per table (consistent mode).
    pub stage_pending_mutations: GaugeVec,
    /// 1 while this instance holds the lease of that name.
    pub lease_holder: GaugeVec,
    /// When the changefeed's JWT keys were last loaded, seconds since the epoch.
    pub jwt_last_refresh_time: Gauge,
    /// Outages of a database replication depends on, by `dependency` (`source`, `target`,
    /// `staging`).
    pub dependency_outages_total: IntCounterVec,
    /// When the current outage of `dependency` began, seconds since the epoch; 0 while it
    /// answers.
    pub dependency_unavailable_since_seconds: GaugeVec,
}

const SCRIPT: &[&str] = &["schema", "table", "function"];
const TABLE: &[&str] = &["schema", "table"];

impl Metrics {
    fn new() -> prometheus::Result<Self> {
        let registry = Registry::new();
        let counter =
            |name: &str, help: &str, labels: &[&str]| -> prometheus::Result<IntCounterVec> {
                let c = IntCounterVec::new(Opts::new(name, help), labels)?;
                registry.register(Box::new(c.clone()))?;
                Ok(c)
            };
        let histogram =
            |name: &str, help: &str, labels: &[&str]| -> prometheus::Result<HistogramVec> {
                let h = HistogramVec::new(HistogramOpts::new(name, help), labels)?;
                registry.register(Box::new(h.clone()))?;
                Ok(h)
            };
        let gauge = |name: &str, help: &str, labels: &[&str]| -> prometheus::Result<GaugeVec> {
            let g = GaugeVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let plain = |name: &str, help: &str| -> prometheus::Result<IntCounter> {
            let c = IntCounter::new(name, help)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let queue = IntGauge::new("target_apply_queue_size", "mutations waiting for the applier")?;
        registry.register(Box::new(queue.clone()))?;
        let last_checkpoint =
            Gauge::new("replicator_last_checkpoint_seconds", "time of the last saved checkpoint")?;
        registry.register(Box::new(last_checkpoint.clone()))?;
        let slot_wal = IntGauge::new(
            "pglogical_slot_retained_wal_bytes",
            "WAL the source keeps for the replication slot",
        )?;
        registry.register(Box::new(slot_wal.clone()))?;
        let up = IntCounter::new("replicator_up", "1 while replicator runs")?;
        registry.register(Box::new(up.clone()))?;
        up.inc();
        let jwt_refresh =
            Gauge::new("jwt_last_refresh_time", "when the JWT public keys were last loaded")?;
        registry.register(Box::new(jwt_refresh.clone()))?;
        let payload_bytes =
            plain("http_payload_in_bytes_total", "changefeed request body bytes, decompressed")?;
        Ok(Self {
            http_status_codes_total: counter(
                "http_status_codes_total",
                "changefeed requests answered, by status code",
                &["code"],
            )?,
            http_latency_seconds: histogram(
                "http_latency_seconds",
                "time to answer a changefeed request",
                &["code"],
            )?,
            http_payload_in_bytes_total: payload_bytes,
            mutations_received_count: counter(
                "mutations_received_count",
                "changefeed mutations received",
                TABLE,
            )?,
            stage_duplicate_mutations_total: counter(
                "stage_duplicate_mutations_total",
                "changefeed mutations dropped: an equal or newer version of the key was applied",
                TABLE,
            )?,
            checkpoint_proposed_going_backwards_errors: counter(
                "checkpoint_proposed_going_backwards_errors",
                "resolved timestamps refused for going backwards",
                &["schema"],
            )?,
            target_applied_timestamp_seconds: gauge(
                "target_applied_timestamp_seconds",
                "the newest applied resolved timestamp",
                &["schema"],
            )?,
            stage_pending_mutations: gauge(
                "stage_pending_mutations",
                "staged changefeed mutations not applied yet",
                TABLE,
            )?,
            lease_holder: gauge(
                "lease_holder",
                "1 while this instance holds the lease",
                &["name"],
            )?,
            jwt_last_refresh_time: jwt_refresh,
            dependency_outages_total: counter(
                "dependency_outages_total",
                "outages of a database replication depends on",
                &["dependency"],
            )?,
            dependency_unavailable_since_seconds: gauge(
                "dependency_unavailable_since_seconds",
                "when the current outage of the dependency began (0: it answers)",
                &["dependency"],
            )?,
            apply_upserts_total: counter(
                "apply_upserts_total",
                "rows written to the target",
                TABLE,
            )?,
            apply_deletes_total: counter(
                "apply_deletes_total",
                "rows deleted on the target",
                TABLE,
            )?,
            apply_errors_total: counter("apply_errors_total", "failed apply attempts", TABLE)?,
            apply_conflicts_total: counter(
                "apply_conflicts_total",
                "compare-and-set conflicts",
                TABLE,
            )?,
            apply_duration_seconds: histogram(
                "apply_duration_seconds",
                "time per apply statement batch",
                TABLE,
            )?,
            target_apply_queue_size: queue,
            mutation_total: counter(
                "mutation_total",
                "mutations read from the source",
                &["source", "type"],
            )?,
            source_lag_seconds: gauge(
                "source_lag_seconds",
                "source commit to received",
                &["schema"],
            )?,
            target_lag_seconds: gauge(
                "target_lag_seconds",
                "source commit to applied",
                &["schema"],
            )?,
            source_lag_seconds_histogram: histogram(
                "source_lag_seconds_histogram",
                "source commit to received",
                &["schema"],
            )?,
            target_lag_seconds_histogram: histogram(
                "target_lag_seconds_histogram",
                "source commit to applied",
                &["schema"],
            )?,
            target_apply_transaction_lag_seconds: histogram(
                "target_apply_transaction_lag_seconds",
                "source commit to target commit, per source transaction",
                &["schema"],
            )?,
            pglogical_slot_retained_wal_bytes: slot_wal,
            mutations_staged: counter(
                "replicator_applier_mutations_staged",
                "mutations received for a table",
                TABLE,
            )?,
            mutations_applied: counter(
                "replicator_applier_mutations_applied",
                "mutations applied to a table",
                TABLE,
            )?,
            pglogical_dial_success_total: plain(
                "pglogical_dial_success_total",
                "successful PostgreSQL source connections",
            )?,
            pglogical_dial_failure_total: plain(
                "pglogical_dial_failure_total",
                "failed PostgreSQL source connections",
            )?,
            mylogical_dial_success_total: plain(
                "mylogical_dial_success_total",
                "successful MySQL/MariaDB source connections",
            )?,
            mylogical_dial_failure_total: plain(
                "mylogical_dial_failure_total",
                "failed MySQL/MariaDB source connections",
            )?,
            script_invocations_total: counter(
                "script_invocations_total",
                "userscript handler calls",
                SCRIPT,
            )?,
            script_rows_filtered_total: counter(
                "script_rows_filtered_total",
                "rows a handler dropped",
                SCRIPT,
            )?,
            script_rows_processed_total: counter(
                "script_rows_processed_total",
                "rows a handler passed on",
                SCRIPT,
            )?,
            script_errors_total: counter("script_errors_total", "userscript errors", SCRIPT)?,
            script_exec_time_seconds: histogram(
                "script_exec_time_seconds",
                "time in a handler call",
                SCRIPT,
            )?,
            script_entry_wait_seconds: histogram(
                "script_entry_wait_seconds",
                "time waiting for a free engine",
                SCRIPT,
            )?,
            last_checkpoint_seconds: last_checkpoint,
            up,
            registry,
        })
    }

    /// Counts rows a committed statement wrote to `schema.table`.
    pub fn count_applied(
        &self,
        schema: &str,
        table: &str,
        op: crate::types::mutation::Op,
        rows: usize,
    ) {
        let labels = [schema, table];
        let rows = rows as u64;
        match op {
            crate::types::mutation::Op::Upsert => {
                self.apply_upserts_total.with_label_values(&labels).inc_by(rows)
            }
            crate::types::mutation::Op::Delete => {
                self.apply_deletes_total.with_label_values(&labels).inc_by(rows)
            }
        }
        self.mutations_applied.with_label_values(&labels).inc_by(rows);
    }

    /// Records one userscript handler call over `rows` rows of `schema.table`, of which
    /// `passed` came out (the rest were dropped), or its failure.
    pub fn count_script_call(
        &self,
        call: [&str; 3],
        rows: usize,
        passed: Option<usize>,
        timing: crate::script::pool::Timing,
    ) {
        self.script_invocations_total.with_label_values(&call).inc();
        self.script_entry_wait_seconds.with_label_values(&call).observe(timing.wait.as_secs_f64());
        self.script_exec_time_seconds.with_label_values(&call).observe(timing.run.as_secs_f64());
        match passed {
            Some(passed) => {
                self.script_rows_processed_total.with_label_values(&call).inc_by(passed as u64);
                let dropped = rows.saturating_sub(passed) as u64;
                if dropped > 0 {
                    self.script_rows_filtered_total.with_label_values(&call).inc_by(dropped);
                }
            }
            None => self.script_errors_total.with_label_values(&call).inc(),
        }
    }

    /// Counts a source transaction's mutations under `mutation_total{source, type}`.
    pub fn count_source_mutations(
        &self,
        source: &str,
        mutations: &[crate::types::mutation::Mutation],
    ) {
        let upserts =
            mutations.iter().filter(|m| m.op == crate::types::mutation::Op::Upsert).count() as u64;
        let deletes = mutations.len() as u64 - upserts;
        for (kind, n) in [("upsert", upserts), ("delete", deletes)] {
            if n > 0 {
                self.mutation_total.with_label_values(&[source, kind]).inc_by(n);
            }
        }
    }

    /// Everything, in Prometheus' text exposition format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metrics.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// The process's metrics.
pub fn global() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| Metrics::new().expect("metric definitions are valid and unique"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_types_and_labels_are_molts() {
        let m = global();
        m.apply_upserts_total.with_label_values(&["db.public", "orders"]).inc_by(3);
        m.mutation_total.with_label_values(&["pglogical", "upsert"]).inc();
        m.script_exec_time_seconds
            .with_label_values(&["db.public", "*", "onRowUpsert"])
            .observe(0.001);
        let text = m.render();
        for line in [
            "# TYPE apply_upserts_total counter",
            "apply_upserts_total{schema=\"db.public\",table=\"orders\"} 3",
            "# TYPE mutation_total counter",
            "mutation_total{source=\"pglogical\",type=\"upsert\"} 1",
            "# TYPE script_exec_time_seconds histogram",
            "script_exec_time_seconds_count{function=\"onRowUpsert\",schema=\"db.public\",table=\"*\"} 1",
            "# TYPE target_apply_queue_size gauge",
            "# TYPE pglogical_dial_success_total counter",
            "# TYPE mylogical_dial_failure_total counter",
        ] {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }
    }
}
