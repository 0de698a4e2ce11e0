//! MOLT Replicator's command and flag names, so a command line written for MOLT that uses
//! something we do not implement yet gets told so, instead of a bare "unknown".

/// MOLT commands this binary may not register yet.
pub const COMMANDS: &[&str] = &["oraclelogminer"];

/// Every flag MOLT Replicator documents (long names), across its commands.
pub const FLAGS: &[&str] = &[
    "allow",
    "applyTimeout",
    "assumeIdempotent",
    "backfillFromSCN",
    "bestEffortOnly",
    "bestEffortWindow",
    "bindAddr",
    "checkpointQueueBufferSize",
    "claim",
    "collapseMutations",
    "copierChannel",
    "dataDir",
    "defaultGTIDSet",
    "disableAuthentication",
    "disableCheckpointStream",
    "discard",
    "discardDelay",
    "dlqTableName",
    "enableCheckpointStream",
    "enableParallelApplies",
    "enableToastedColumns",
    "fetchMetadata",
    "flushPeriod",
    "flushSize",
    "gracePeriod",
    "healthCheckTimeout",
    "httpResponseTimeout",
    "immediate",
    "insecureSkipVerify",
    "key",
    "limitLookahead",
    "logDestination",
    "logFormat",
    "maxRetries",
    "metricsAddr",
    "metricsSnapshotCompression",
    "metricsSnapshotPeriod",
    "metricsSnapshotRetentionSize",
    "metricsSnapshotRetentionTime",
    "ndjsonBufferSize",
    "oracle-application-users",
    "out",
    "parallelism",
    "publicationName",
    "quiescentPeriod",
    "replicationProcessID",
    "retireOffset",
    "retryInitialBackoff",
    "retryMaxBackoff",
    "retryMultiplier",
    "scanSize",
    "schemaRefresh",
    "scn",
    "scnWindowSize",
    "slotName",
    "sourceConn",
    "sourcePDBConn",
    "sourceSchema",
    "stageCopierChannelSize",
    "stageDisableCreateTableReaderIndex",
    "stageMarkAppliedLimit",
    "stageMode",
    "stageSanityCheckPeriod",
    "stageSanityCheckWindow",
    "stageUnappliedPeriod",
    "stagingConn",
    "stagingCreateSchema",
    "stagingIdleTime",
    "stagingJitterTime",
    "stagingMaxLifetime",
    "stagingMaxPoolSize",
    "stagingSchema",
    "standbyTimeout",
    "targetApplyQueueSize",
    "targetConn",
    "targetIdleTime",
    "targetJitterTime",
    "targetMaxLifetime",
    "targetMaxPoolSize",
    "targetSchema",
    "targetStatementCacheSize",
    "taskGracePeriod",
    "timestampLimit",
    "tlsCACertificate",
    "tlsCertificate",
    "tlsPrivateKey",
    "tlsSelfSigned",
    "userscript",
    "verbose",
];

/// A note for an argument clap rejected, when MOLT knows it: `--flushSize=5` → a note that the
/// flag is MOLT's and not implemented for this command yet.
pub fn note_for_unknown(arg: &str) -> Option<String> {
    let name = arg.strip_prefix("--")?;
    let name = name.split_once('=').map_or(name, |(n, _)| n);
    FLAGS.contains(&name).then(|| {
        format!(
            "note: --{name} is a MOLT Replicator flag that this command of replicator does not \
             implement yet; it is refused rather than ignored (see `replicator <command> --help` \
             for the flags it takes)"
        )
    })
}

/// A note for a subcommand clap rejected, when MOLT has it.
pub fn note_for_unknown_command(name: &str) -> Option<String> {
    COMMANDS.contains(&name).then(|| {
        format!(
            "note: `{name}` is a MOLT Replicator command that this version of replicator does \
             not provide yet"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn molt_flags_get_a_note_and_others_do_not() {
        let note = note_for_unknown("--flushSize=5").expect("MOLT flag");
        assert!(note.contains("--flushSize is a MOLT Replicator flag"), "{note}");
        assert!(note_for_unknown("--slotName").is_some());
        assert!(note_for_unknown("--noSuchFlag").is_none());
        assert!(note_for_unknown("flushSize").is_none());
        assert!(note_for_unknown_command("oraclelogminer").is_some());
        assert!(note_for_unknown_command("frobnicate").is_none());
    }
}
