//! Run files: a ref names its body under its key only; each open writes a new file.

use super::*;

#[test]
fn a_ref_round_trips_and_names_its_body_under_its_key_only() {
    let dir = tempfile::tempdir().unwrap();
    let runs = RunFiles::open(dir.path()).unwrap();
    let a = runs.put(b"ka", b"body a", 2, 7).unwrap();
    let b = runs.put(b"kb", b"body b!", 1, 9).unwrap();
    runs.sync().unwrap();
    assert_eq!(RunRef::decode(&a.encode()), Some(a));
    assert_eq!(RunRef::decode(&a.encode()[1..]), None);
    assert_eq!(b.offset, 6);
    assert_eq!(a.first_seq(10), Some(9));
    assert_eq!(runs.get(b"ka", &a).unwrap(), b"body a");
    assert_eq!(runs.get(b"kb", &b).unwrap(), b"body b!");
    let mismatch = RunError::Damaged("checksum mismatch".into());
    assert_eq!(runs.get(b"kb", &a).unwrap_err(), mismatch);
    runs.flip(&b).unwrap();
    assert_eq!(runs.get(b"kb", &b).unwrap_err(), mismatch);
    let trimmed = RunRef { skip: 1, ..a };
    assert_eq!(RunRef::decode(&trimmed.encode()), Some(trimmed));
    assert_eq!(trimmed.first_seq(10), Some(10));
    assert_eq!(RunRef::decode(&RunRef { skip: 2, ..a }.encode()), None);
    assert_eq!(runs.bytes(), 13);
}

#[test]
fn each_open_writes_a_new_file_and_removed_files_are_gone() {
    let dir = tempfile::tempdir().unwrap();
    let first = {
        let runs = RunFiles::open(dir.path()).unwrap();
        let r = runs.put(b"k", b"one", 1, 1).unwrap();
        runs.sync().unwrap();
        r
    };
    let runs = RunFiles::open(dir.path()).unwrap();
    let second = runs.put(b"k", b"two", 1, 2).unwrap();
    runs.sync().unwrap();
    assert_eq!((first.file, second.file, second.offset), (0, 1, 0));
    assert_eq!(runs.get(b"k", &first).unwrap(), b"one");
    // A writer that began in file 1 keeps collection off it and later.
    let busy = runs.writing();
    let files = runs.files().unwrap();
    assert_eq!((files.on_disk.len(), files.keep_from), (2, 1));
    drop(busy);
    // The file being written stays.
    runs.remove(&[0, 1]).unwrap();
    let files = Files {
        on_disk: vec![(1, 3)],
        keep_from: 1,
    };
    assert_eq!(runs.files().unwrap(), files);
    let err = runs.get(b"k", &first).unwrap_err();
    assert!(
        matches!(&err, RunError::Damaged(e) if e.contains("0000000000000000.run is missing")),
        "{err}"
    );
    assert_eq!(runs.bytes(), 3);
}
