//! The CLI's error: what went wrong, in one line, and which exit code it earns.

use std::io;

use leasehold_core::StoreError;

/// Exit code for a runtime or store failure.
pub(crate) const EXIT_FAILURE: u8 = 1;
/// Exit code for bad input (a refused argument, a missing or foreign database file); clap's
/// own usage errors use the same code.
pub(crate) const EXIT_USAGE: u8 = 2;

/// Why a subcommand stopped.
#[derive(Debug)]
pub(crate) enum CliError {
    /// Bad input, refused before anything was written (exit 2).
    Usage(String),
    /// The store or the runtime failed (exit 1).
    Failure(String),
    /// stdout was closed under us (e.g. `| head`): nothing more to say, exit 0.
    BrokenPipe,
}

impl CliError {
    /// Bad input.
    pub(crate) fn usage(msg: impl Into<String>) -> Self {
        CliError::Usage(msg.into())
    }

    /// A runtime failure.
    pub(crate) fn failure(msg: impl Into<String>) -> Self {
        CliError::Failure(msg.into())
    }

    /// A store error met while opening or using the database at `db`.
    ///
    /// Refusals of the caller's input (`InvalidInput`) and a file that is not a leasehold
    /// database are bad input; everything else — a newer schema, a busy or broken database —
    /// is a failure.
    pub(crate) fn store(db: &str, e: StoreError) -> Self {
        match e {
            StoreError::InvalidInput(msg) => CliError::Usage(msg),
            e @ StoreError::NotADatabase(_) => CliError::Usage(format!("{db}: {e}")),
            e => CliError::Failure(format!("{db}: {e}")),
        }
    }

    /// A store error from an operator's action on items (`decide`, `retry`, `cancel`,
    /// `delete`, `item`): an unknown item or one in a state the action does not apply to is
    /// the caller's bad input (the store changed nothing); the rest as [`store`](Self::store).
    pub(crate) fn refused(db: &str, e: StoreError) -> Self {
        match e {
            e @ (StoreError::InvalidState { .. } | StoreError::NotFound(_)) => {
                CliError::Usage(e.to_string())
            }
            e => CliError::store(db, e),
        }
    }

    /// A failed write to stdout.
    pub(crate) fn output(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::BrokenPipe {
            CliError::BrokenPipe
        } else {
            CliError::Failure(format!("cannot write output: {e}"))
        }
    }

    /// The process exit code.
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => EXIT_USAGE,
            CliError::Failure(_) => EXIT_FAILURE,
            CliError::BrokenPipe => 0,
        }
    }

    /// The one stderr line, `error: …`, if there is anything to say. Newlines inside the
    /// message are flattened so the contract of one line holds.
    pub(crate) fn line(&self) -> Option<String> {
        let msg = match self {
            CliError::Usage(m) | CliError::Failure(m) => m,
            CliError::BrokenPipe => return None,
        };
        Some(format!(
            "error: {}",
            msg.split_whitespace().collect::<Vec<_>>().join(" ")
        ))
    }
}
