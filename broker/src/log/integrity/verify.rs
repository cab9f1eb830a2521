//! `herald verify`: the start-up check, offline, changing nothing.
//!
//! Opening sled runs its crash recovery, which rewrites files, so the check
//! runs on a scratch copy of the data dir and the original is only read.

use std::path::{Path, PathBuf};

use super::{examine, report::Finding, Report};
use crate::log::{acked, format, sled_log::SledLog, sled_log::SledOptions, LogError};

/// Why the check could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The directory does not exist or is not one.
    #[error("{0} is not a directory")]
    NotADirectory(PathBuf),
    /// A node is running on it.
    #[error("{0} is in use by a running node; stop it first (or check a copy)")]
    InUse(PathBuf),
    /// The scratch copy failed.
    #[error("cannot copy {path} to a scratch directory: {source}")]
    Copy {
        /// What was being copied.
        path: PathBuf,
        /// Why it failed.
        source: std::io::Error,
    },
}

/// What is wrong with the stored node id, if anything.
pub fn node_id_problem(dir: &Path) -> Option<String> {
    let path = dir.join("node-id");
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => return Some(format!("unreadable: {e}")),
    };
    let id = String::from_utf8_lossy(&bytes);
    let id = id.trim();
    let valid = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    (!valid).then(|| {
        format!(
            "damaged: holds {:?}, not a node name",
            &id.chars().take(40).collect::<String>()
        )
    })
}

fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// Hard-links the files of `from` into `to` where they share a file
/// system, copying them otherwise: run files are large, and the log never
/// writes into a run file an earlier process wrote (it starts a new one),
/// so the copy cannot change the original.
fn link_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if std::fs::hard_link(entry.path(), &target).is_err() {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// Removes the scratch copy when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Checks the data dir `dir` without changing it.
pub fn verify(dir: &Path) -> Result<Report, VerifyError> {
    if !dir.is_dir() {
        return Err(VerifyError::NotADirectory(dir.to_path_buf()));
    }
    let db = dir.join("log").join("db");
    // Held until the end: no node may start on the directory meanwhile.
    let _lock = match std::fs::File::open(&db) {
        Ok(file) if fs2::FileExt::try_lock_exclusive(&file).is_err() => {
            return Err(VerifyError::InUse(dir.to_path_buf()))
        }
        Ok(file) => Some(file),
        Err(_) => None,
    };
    let mut findings = Vec::new();
    if let Some(problem) = node_id_problem(dir) {
        findings.push(Finding::File {
            what: format!("node-id: {problem}"),
        });
    }
    let marker_damaged = format::read_marker(dir).err();
    if let Some(problem) = &marker_damaged {
        findings.push(Finding::File {
            what: problem.clone(),
        });
    }
    if !dir.join("log").is_dir() {
        findings.push(Finding::File {
            what: "log: missing: no Herald log in this directory".into(),
        });
        return Ok(Report {
            data_dir: dir.to_path_buf(),
            findings,
            unreadable: true,
            ..Default::default()
        });
    }
    let scratch = Scratch(std::env::temp_dir().join(format!(
        "herald-verify-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )));
    let copy_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| VerifyError::Copy { path, source }
    };
    copy_tree(&dir.join("log"), &scratch.0.join("log")).map_err(copy_err(&dir.join("log")))?;
    if dir.join("wal").is_dir() {
        copy_tree(&dir.join("wal"), &scratch.0.join("wal")).map_err(copy_err(&dir.join("wal")))?;
    }
    if dir.join("runs").is_dir() {
        link_tree(&dir.join("runs"), &scratch.0.join("runs"))
            .map_err(copy_err(&dir.join("runs")))?;
    }
    for name in acked::FILES
        .iter()
        .chain(&[format::MARKER_FILE, super::LEGACY_HIGH_WATER])
    {
        let from = dir.join(name);
        if from.exists() {
            std::fs::copy(&from, scratch.0.join(name)).map_err(copy_err(&from))?;
        }
    }
    if marker_damaged.is_some() {
        // The marker is reported; on the copy, let the format record inside decide.
        let _ = format::reset_marker(&scratch.0);
    }
    if let Err(problem) = format::check_sled_conf(dir) {
        findings.push(Finding::File {
            what: problem.replace(&scratch.0.display().to_string(), &dir.display().to_string()),
        });
        let _ = format::reset_sled_conf(&scratch.0);
    }
    let options = SledOptions {
        cache_bytes: 64 << 20,
        flush_every_ms: 1000,
    };
    let shown =
        |text: String| text.replace(&scratch.0.display().to_string(), &dir.display().to_string());
    let mut report = match SledLog::open(&scratch.0, &options) {
        Ok(log) => {
            let examined = examine(&log);
            drop(log);
            examined.report
        }
        Err(LogError::Open { path, reason }) => {
            let path = shown(path.display().to_string());
            findings.push(Finding::File {
                what: format!("{path}: cannot be opened: {}", shown(reason)),
            });
            Report {
                unreadable: true,
                ..Default::default()
            }
        }
        Err(e) => {
            findings.push(Finding::File {
                what: format!("log: cannot be opened: {}", shown(e.to_string())),
            });
            Report {
                unreadable: true,
                ..Default::default()
            }
        }
    };
    report.data_dir = dir.to_path_buf();
    findings.append(&mut report.findings);
    report.findings = findings;
    Ok(report)
}
