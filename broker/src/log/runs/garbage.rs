//! Whether the run files may hold garbage collection has not yet seen, so
//! that a node that only appends never scans its refs for it: a scan of
//! every ref grows with the log and holds compaction up while it runs.
//!
//! Garbage comes only from a ref removed or pointed elsewhere (retention
//! removing runs, a replacement, a damaged record removed, a move that
//! lost its race) or from bodies no ref came to name (a write that failed
//! or was given up). Retention's skip is not garbage: collection counts a
//! run's whole body live. Each is noted with the
//! number after the newest file at that moment, which bounds the files it
//! can be in; collection is clean again once a pass that saw no new note
//! looked at every one of those files, closed.

use parking_lot::Mutex;

/// Garbage noted since collection last found none left.
#[derive(Debug)]
pub(in crate::log) struct GarbageNotes {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// Counts notes, so that a pass knows whether one came meanwhile.
    notes: u64,
    /// Every file a note since the last clean pass may concern has a
    /// number below this.
    below: u64,
    /// A pass left nothing to collect, and nothing was noted since.
    clean: bool,
}

/// What one collection pass must cover to leave the notes clean.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::log) struct Pass {
    notes: u64,
    below: u64,
}

impl GarbageNotes {
    /// At open, with files numbered below `next_file` on disk: what an
    /// earlier process left may be garbage, so the first pass looks at
    /// every one of them; with none there is nothing to look for.
    pub fn at_open(next_file: u64) -> Self {
        GarbageNotes {
            state: Mutex::new(State {
                notes: 0,
                below: next_file,
                clean: next_file == 0,
            }),
        }
    }

    /// Garbage may now be in files numbered below `next_file`.
    pub fn note(&self, next_file: u64) {
        let mut s = self.state.lock();
        s.notes += 1;
        s.below = s.below.max(next_file);
        s.clean = false;
    }

    /// The pass to run now; `None` when there is nothing to collect.
    pub fn pass(&self) -> Option<Pass> {
        let s = self.state.lock();
        (!s.clean).then_some(Pass {
            notes: s.notes,
            below: s.below,
        })
    }

    /// `pass` looked at every closed file before `keep_from` and left
    /// nothing collectable in them.
    pub fn passed(&self, pass: Pass, keep_from: u64) {
        let mut s = self.state.lock();
        if s.notes == pass.notes && keep_from >= pass.below {
            s.clean = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_pass_runs_and_a_clean_one_ends_the_passes_until_a_note() {
        let g = GarbageNotes::at_open(3);
        let pass = g.pass().expect("an earlier process may have left garbage");
        g.passed(pass, 3);
        assert_eq!(g.pass(), None, "clean: nothing to scan for");
        g.note(5);
        assert!(g.pass().is_some());
    }

    #[test]
    fn a_pass_that_could_not_see_a_noted_file_closed_leaves_the_next_to_run() {
        let g = GarbageNotes::at_open(0);
        assert_eq!(g.pass(), None, "no file yet: nothing to look for");
        g.note(4);
        let pass = g.pass().unwrap();
        // File 3 was still being written: not looked at.
        g.passed(pass, 3);
        let pass = g.pass().expect("file 3 may hold garbage");
        g.passed(pass, 4);
        assert_eq!(g.pass(), None);
    }

    #[test]
    fn a_note_during_a_pass_leaves_the_next_to_run() {
        let g = GarbageNotes::at_open(1);
        let pass = g.pass().unwrap();
        g.note(1);
        g.passed(pass, 10);
        assert!(
            g.pass().is_some(),
            "the pass may have scanned before the edit"
        );
    }
}
