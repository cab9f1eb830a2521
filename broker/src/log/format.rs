//! The log's on-disk format: the marker file beside sled's directory, the
//! format record inside sled, and in-place upgrades from older formats.
//!
//! | format | what changed |
//! |--------|--------------|
//! | 1 | a head record per append |
//! | 2 | heads derived from message keys; the old head records stay valid |
//! | 3 | every value sealed with a checksum ([`super::record`]), in tree `log-v3` |
//! | 4 | messages in runs, appends in passes ([`super::run`]), in tree `log-v4` |
//! | 5 | run bodies in run files, sled holding where ([`super::runs`]), in tree `log-v5` |
//!
//! Upgrading copies the old tree into the new one: to 3, `log` into
//! `log-v3`, sealing each value; to 4, `log-v3` into `log-v4`, each message
//! record becoming a run of one; to 5, `log-v4` into `log-v5`, each run's
//! body written to a run file and its ref stored instead. Then the new format is recorded and the
//! old trees are dropped. A crash part-way leaves the old format recorded,
//! so the next open starts the copy again from an emptied tree; the old
//! trees are only dropped once the new format is durable. An older Herald
//! refuses the upgraded log (it does not know the format's name) instead of
//! misreading it.

use std::path::Path;

use super::{
    keys::seq_of_key,
    record,
    run::{decode_run, encode_run},
    runs::RunFiles,
    sled_log::write_synced,
    LogError,
};

const FORMAT_KEY: &[u8] = b"format";
/// File beside the sled directory saying Herald created it, and in which
/// format.
pub const MARKER_FILE: &str = "herald-log.format";
const FORMAT_1: &[u8] = b"herald-log-1";
const FORMAT_2: &[u8] = b"herald-log-2";
const FORMAT_3: &[u8] = b"herald-log-3";
const FORMAT_4: &[u8] = b"herald-log-4";
const FORMAT_5: &[u8] = b"herald-log-5";
/// The tree holding format 5's records.
pub const TREE: &str = "log-v5";
const V4_TREE: &str = "log-v4";
const V3_TREE: &str = "log-v3";
const OLD_TREE: &str = "log";
/// Values copied per batch while upgrading.
const UPGRADE_BATCH: usize = 4096;

/// An opened sled database in the current format.
pub(super) struct Opened {
    pub db: sled::Db,
    pub tree: sled::Tree,
    /// The format it was in before this open upgraded it.
    pub upgraded_from: Option<u8>,
    /// Created empty by this open.
    pub created: bool,
}

fn version(name: &[u8]) -> Option<u8> {
    match name {
        FORMAT_1 => Some(1),
        FORMAT_2 => Some(2),
        FORMAT_3 => Some(3),
        FORMAT_4 => Some(4),
        FORMAT_5 => Some(5),
        _ => None,
    }
}

/// What the marker file says: `Ok(None)` when absent, `Err` naming the
/// problem when it is unreadable or holds no format Herald knows.
pub fn read_marker(dir: &Path) -> Result<Option<u8>, String> {
    let path = dir.join(MARKER_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => version(&bytes).map(Some).ok_or_else(|| {
            format!(
                "{} is damaged: it holds {:?}, not a Herald log format",
                path.display(),
                String::from_utf8_lossy(&bytes[..bytes.len().min(40)])
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{} is unreadable: {e}", path.display())),
    }
}

/// Checks sled's own settings file (`log/conf`) before sled reads it: sled
/// only warns when its checksum fails and would go on to read the log with
/// whatever settings the damaged file holds.
pub fn check_sled_conf(dir: &Path) -> Result<(), String> {
    let path = dir.join("log").join("conf");
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("{} is unreadable: {e}", path.display())),
    };
    let intact = bytes.len() > 8 && {
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        crc32fast::hash(body).to_le_bytes() == crc
    };
    if intact {
        Ok(())
    } else {
        Err(format!(
            "{} (the storage engine's settings) is damaged: its checksum does not match",
            path.display()
        ))
    }
}

/// Removes a damaged `log/conf`; sled writes it again with the settings
/// Herald always uses (used when the operator accepts damage).
pub fn reset_sled_conf(dir: &Path) -> std::io::Result<()> {
    std::fs::remove_file(dir.join("log").join("conf"))
}

/// Rewrites the marker with the oldest format name, so that the format
/// record inside the log decides (used when the operator accepts damage).
pub fn reset_marker(dir: &Path) -> std::io::Result<()> {
    write_synced(&dir.join(MARKER_FILE), FORMAT_1)
}

/// Opens sled in `dir/log` and brings it to the current format. Call inside
/// [`super::contain::contain`]: sled may panic on damaged files.
pub(super) fn open(dir: &Path, config: sled::Config, runs: &RunFiles) -> Result<Opened, LogError> {
    let open_err = |reason: String| LogError::Open {
        path: dir.to_path_buf(),
        reason,
    };
    let log_dir = dir.join("log");
    let has_files = std::fs::read_dir(&log_dir)
        .map(|mut d| d.next().is_some())
        .unwrap_or(false);
    let marker = read_marker(dir).map_err(open_err)?;
    check_sled_conf(dir).map_err(open_err)?;
    // sled silently replaces files it cannot make sense of, so refuse a
    // log directory this node did not create before sled sees it.
    if has_files && marker.is_none() {
        return Err(open_err(format!(
            "{} holds data Herald did not write ({MARKER_FILE} is missing); refusing to touch it",
            log_dir.display()
        )));
    }
    let db = config
        .path(&log_dir)
        .open()
        .map_err(|e| open_err(format!("{}: {e}", log_dir.display())))?;
    let stored = db.get(FORMAT_KEY).map_err(|e| open_err(e.to_string()))?;
    let (current, created) = match stored.as_deref() {
        Some(name) => match version(name) {
            Some(v) => (v, false),
            None => {
                return Err(open_err(format!(
                    "unrecognised log format {:?}; refusing to touch it",
                    String::from_utf8_lossy(name)
                )))
            }
        },
        None if db.was_recovered() || marker.is_some() => return Err(open_err(
            "the format record inside the log is missing: the log is damaged or not a Herald log"
                .into(),
        )),
        None => (5, true),
    };
    if let Some(m) = marker.filter(|&m| m > current) {
        return Err(open_err(format!(
            "the log records format {current} but {MARKER_FILE} says {m}: the log lost writes it once made durable"
        )));
    }
    let stamp = |db: &sled::Db| -> Result<(), LogError> {
        db.insert(FORMAT_KEY, FORMAT_5)
            .map_err(|e| open_err(e.to_string()))?;
        db.flush().map_err(|e| open_err(e.to_string()))?;
        write_synced(&dir.join(MARKER_FILE), FORMAT_5).map_err(|e| open_err(e.to_string()))
    };
    let upgraded_from = match current {
        5 if created => {
            stamp(&db)?;
            None
        }
        5 => {
            if marker != Some(5) {
                write_synced(&dir.join(MARKER_FILE), FORMAT_5)
                    .map_err(|e| open_err(e.to_string()))?;
            }
            None
        }
        old => {
            if old < 3 {
                copy_sealed(&db)
                    .map_err(|e| open_err(format!("upgrade to format 3 failed: {e}")))?;
            }
            if old < 4 {
                copy_as_runs(&db)
                    .map_err(|e| open_err(format!("upgrade to format 4 failed: {e}")))?;
            }
            copy_to_run_files(&db, runs)
                .map_err(|e| open_err(format!("upgrade to format 5 failed: {e}")))?;
            stamp(&db)?;
            tracing::info!(path = %dir.display(), from = old, "log upgraded to format 5 (run bodies in run files)");
            Some(old)
        }
    };
    // A crash after the new format became durable may have left old trees.
    for old in [OLD_TREE, V3_TREE, V4_TREE] {
        if db.tree_names().iter().any(|n| n.as_ref() == old.as_bytes()) {
            db.drop_tree(old).map_err(|e| open_err(e.to_string()))?;
            db.flush().map_err(|e| open_err(e.to_string()))?;
        }
    }
    let tree = db.open_tree(TREE).map_err(|e| open_err(e.to_string()))?;
    Ok(Opened {
        db,
        tree,
        upgraded_from,
        created,
    })
}

/// Copies every value of tree `from` into tree `to` (emptied first) as
/// `convert` rewrites it, then makes the copy durable.
fn copy_tree(
    db: &sled::Db,
    from: &str,
    to: &str,
    convert: impl Fn(&[u8], &[u8]) -> Vec<u8>,
) -> Result<(), LogError> {
    let old = db.open_tree(from)?;
    let new = db.open_tree(to)?;
    new.clear()?;
    let mut batch = sled::Batch::default();
    let mut pending = 0;
    for item in old.iter() {
        let (key, value) = item?;
        batch.insert(&*key, convert(&key, &value));
        pending += 1;
        if pending == UPGRADE_BATCH {
            new.apply_batch(std::mem::take(&mut batch))?;
            pending = 0;
        }
    }
    new.apply_batch(batch)?;
    db.flush()?;
    Ok(())
}

/// Copies every value of the old tree into format 3's, sealed.
fn copy_sealed(db: &sled::Db) -> Result<(), LogError> {
    copy_tree(db, OLD_TREE, V3_TREE, record::seal)
}

/// Copies every value of format 3's tree into format 4's: each message
/// record becomes a run of one, sealed again; the rest is copied as it is.
/// A message whose seal fails is copied as it is too, so the start-up check
/// still finds it damaged.
fn copy_as_runs(db: &sled::Db) -> Result<(), LogError> {
    copy_tree(db, V3_TREE, V4_TREE, |key, value| {
        let body = record::open(key, value).ok().filter(|b| b.len() >= 8);
        match body.filter(|_| key.first() == Some(&b'm')) {
            Some(body) => {
                let ts = u64::from_be_bytes(body[..8].try_into().expect("8 bytes"));
                record::seal_owned(key, encode_run([(ts, &body[8..])]))
            }
            None => value.to_vec(),
        }
    })
}

/// Copies every value of format 4's tree into format 5's: each run's body
/// goes to a run file and its ref, sealed, takes its place; the rest is
/// copied as it is. A run whose seal fails is copied as it is too, so the
/// start-up check still finds it damaged. The bodies are durable before the
/// new format is recorded.
fn copy_to_run_files(db: &sled::Db, runs: &RunFiles) -> Result<(), LogError> {
    let failed = std::cell::RefCell::new(None);
    copy_tree(db, V4_TREE, TREE, |key, value| {
        let body = record::open(key, value).ok();
        let run = body
            .filter(|_| key.first() == Some(&b'm'))
            .and_then(|body| {
                let last = seq_of_key(key).ok()?;
                let run = decode_run(last, body).ok()?;
                Some((body, run.len(), run.last()?.ts))
            });
        let Some((body, count, last_ts)) = run else {
            return value.to_vec();
        };
        match runs.put(key, body, count as u32, last_ts) {
            Ok(r) => record::seal(key, &r.encode()),
            Err(e) => {
                failed.borrow_mut().get_or_insert(e);
                value.to_vec()
            }
        }
    })?;
    if let Some(e) = failed.into_inner() {
        return Err(LogError::Storage(format!("writing a run file failed: {e}")));
    }
    runs.sync()
        .map_err(|e| LogError::Storage(format!("syncing the run files failed: {e}")))
}
