//! The acknowledged high-water mark: a guard against silent loss.
//!
//! sled's recovery stops at the first damaged record and carries on with
//! what came before, so a corrupted log file could silently lose
//! acknowledged messages. Every few seconds (and at shutdown) the node
//! records, beside the log, the sum of every topic's committed seq — a
//! number that only ever grows. At start-up the sum recovered from the log
//! must be at least the recorded one; otherwise the node refuses to start
//! and names the damaged directory.
//!
//! Only meaningful with `always` durability: in `relaxed` mode a crash may
//! legitimately lose acknowledged messages, so the mark is not checked.

use std::path::{Path, PathBuf};

use super::{sled_log::write_synced, LogError};

const FILE: &str = "acked-high-water";

fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

/// Records `total` (sum of committed seqs) durably.
pub fn store(dir: &Path, total: u64) -> std::io::Result<()> {
    write_synced(&path(dir), total.to_string().as_bytes())
}

/// Checks the recovered `total` against the recorded mark.
pub fn verify(dir: &Path, recovered_total: u64) -> Result<(), LogError> {
    let file = path(dir);
    let Ok(text) = std::fs::read_to_string(&file) else {
        return Ok(());
    };
    let recorded: u64 = text.trim().parse().map_err(|_| LogError::Open {
        path: file.clone(),
        reason: "unreadable high-water mark".into(),
    })?;
    if recovered_total < recorded {
        return Err(LogError::Open {
            path: dir.to_path_buf(),
            reason: format!(
                "the log holds fewer messages than were acknowledged (sum of seqs {recovered_total} < recorded {recorded}); \
                 it is damaged. Restore it from a replica or backup, or delete {} to accept the loss",
                file.display()
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_a_log_behind_its_mark() {
        let dir = tempfile::tempdir().unwrap();
        verify(dir.path(), 0).unwrap();
        store(dir.path(), 10).unwrap();
        verify(dir.path(), 10).unwrap();
        verify(dir.path(), 11).unwrap();
        let err = verify(dir.path(), 9).unwrap_err().to_string();
        assert!(
            err.contains("fewer messages than were acknowledged"),
            "{err}"
        );
    }
}
