//! Checking evidence against the world as it is now, and building evidence.
//!
//! A file hash is recomputed, an artifact's presence looked up, a database row queried
//! through the [`DurableStore`]; a command's exit code is compared with the one observed
//! when the step ran (the command is never run again).

use std::io::Read;
use std::path::Path;

use leasehold_core::durable::{ArtifactKind, DurableStore, Evidence, RowProbe};
use sha2::{Digest, Sha256};

use crate::error::DurableError;

/// Why one piece of evidence does not hold, or `None` when it does. A store failure is an
/// error (nothing is known), not a failed claim.
pub async fn check(
    store: &dyn DurableStore,
    evidence: &Evidence,
) -> Result<Option<String>, DurableError> {
    if let Err(why) = evidence.validate() {
        return Ok(Some(why));
    }
    Ok(match evidence {
        Evidence::CommandExit {
            command,
            expected,
            observed,
            ..
        } => (observed != expected)
            .then(|| format!("command {command:?} exited with {observed}, expected {expected}")),
        Evidence::ArtifactExists { path, kind, .. } => match tokio::fs::metadata(path).await {
            Ok(m) if *kind == ArtifactKind::File && !m.is_file() => {
                Some(format!("artifact {path} is not a file"))
            }
            Ok(m) if *kind == ArtifactKind::Dir && !m.is_dir() => {
                Some(format!("artifact {path} is not a directory"))
            }
            Ok(_) => None,
            Err(e) => Some(format!("artifact {path} is missing: {e}")),
        },
        Evidence::FileSha256 { path, sha256, .. } => match sha256_file(path).await {
            Ok(actual) if &actual == sha256 => None,
            Ok(actual) => Some(format!(
                "file {path} has SHA-256 {actual}, expected {sha256} (changed since the checkpoint)"
            )),
            Err(e) => Some(format!("file {path} cannot be read for its SHA-256: {e}")),
        },
        Evidence::DbRow { row, .. } => match store.evidence_row_exists(row).await {
            Ok(true) => None,
            Ok(false) => Some(format!(
                "no row of {} where {} with {}",
                row.table,
                serde_json::Value::Object(row.where_.clone()),
                serde_json::Value::Object(row.values.clone())
            )),
            // A probe the database cannot answer (unknown table or column) is a failed claim.
            Err(leasehold_core::StoreError::InvalidInput(why)) => Some(why),
            Err(e) => return Err(e.into()),
        },
    })
}

/// The SHA-256 of a file's content, lowercase hex. Reads on a blocking thread, in chunks.
pub async fn sha256_file(path: impl AsRef<Path>) -> std::io::Result<String> {
    let path = path.as_ref().to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut file = std::fs::File::open(&path)?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        Ok(hex(&hasher.finalize()))
    })
    .await
    .map_err(std::io::Error::other)?
}

/// The SHA-256 of `bytes`, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Evidence that `command` exited with `observed`, where `expected` counts as success.
pub fn command_exit(command: impl Into<String>, expected: i32, observed: i32) -> Evidence {
    let command = command.into();
    Evidence::CommandExit {
        description: format!("{command} exits with {expected}"),
        command,
        expected,
        observed,
    }
}

/// Evidence that a file exists at `path`.
pub fn file_exists(path: impl AsRef<Path>) -> Evidence {
    let path = path.as_ref().display().to_string();
    Evidence::ArtifactExists {
        description: format!("{path} exists"),
        path,
        kind: ArtifactKind::File,
    }
}

/// Evidence that a directory exists at `path`.
pub fn dir_exists(path: impl AsRef<Path>) -> Evidence {
    let path = path.as_ref().display().to_string();
    Evidence::ArtifactExists {
        description: format!("{path} exists"),
        path,
        kind: ArtifactKind::Dir,
    }
}

/// Evidence that the file at `path` keeps its current content (hashed now).
pub async fn file_unchanged(path: impl AsRef<Path>) -> Result<Evidence, DurableError> {
    let path = path.as_ref();
    let sha256 = sha256_file(path)
        .await
        .map_err(|e| DurableError::InvalidInput(format!("cannot hash {}: {e}", path.display())))?;
    let path = path.display().to_string();
    Ok(Evidence::FileSha256 {
        description: format!("{path} unchanged"),
        path,
        sha256,
    })
}

/// Evidence that a row matches `probe` in the store's database.
pub fn db_row(probe: RowProbe) -> Evidence {
    Evidence::DbRow {
        description: format!("a row of {} matches", probe.table),
        row: probe,
    }
}
