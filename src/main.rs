//! `replicator`: parse flags, start logging, run the command, report the final error.

use std::process::ExitCode;

/// Replication allocates and frees many small values per row (rows, column names, text);
/// mimalloc does that with far less CPU than the system allocator under several threads.
/// (The userscript engines keep QuickJS's own allocator, which enforces the memory limit.)
/// Built without transparent huge pages (`no_thp`): with them, every fresh 2 MiB page is
/// zeroed on first touch, and a replication stream that frees and refills its batches kept
/// the kernel zeroing pages (~10% of replicator's CPU in benches/mylogical.sh).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = replicator::cli::parse();
    let log_file = match cli.log_config().init() {
        Ok(file) => file,
        Err(err) => return fail(&err.into(), false),
    };
    match replicator::cli::run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        // `replicator version | head`: the reader has what it wanted.
        Err(err) if closed_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            let code = fail(&err, log_file.is_some());
            // Commands with documented exit codes (script test, script check) say which one.
            match err.downcast_ref::<replicator::cli::CodedError>() {
                Some(failure) => ExitCode::from(failure.code),
                None => code,
            }
        }
    }
}

/// The error is a write to a pipe whose reader has gone.
fn closed_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Prints the error and its causes to stderr (and to the log file when logs go to one) and
/// returns the failure exit code.
fn fail(err: &anyhow::Error, to_log_file: bool) -> ExitCode {
    if to_log_file {
        tracing::error!(error = replicator::error::with_causes(err.as_ref()), "replicator stopped");
    }
    eprintln!("error: {err}");
    // A cause that only repeats what was printed (drivers often wrap their inner error with
    // its text) is left out.
    let mut said = err.to_string();
    for cause in err.chain().skip(1) {
        let text = cause.to_string();
        if !said.contains(&text) {
            eprintln!("  caused by: {text}");
        }
        said = text;
    }
    ExitCode::FAILURE
}
