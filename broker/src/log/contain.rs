//! Containing the storage engine's panics.
//!
//! sled 0.34 panics on some damaged files (while opening, while reading a
//! damaged page, or on its own flusher thread) instead of returning an
//! error. Every call into sled that can meet damaged data runs inside
//! [`contain`], which turns a panic into an error the caller reports with
//! the data directory's name. [`install_hook`] keeps those panics out of
//! the output (the error says it better) and ends the process with a clear
//! message when sled panics on a thread of its own, where nothing could
//! catch it and the node would otherwise carry on without a working log.

use std::{
    any::Any,
    cell::{Cell, RefCell},
    panic::{AssertUnwindSafe, PanicHookInfo},
    path::PathBuf,
};

thread_local! {
    /// How many [`contain`] calls the current thread is inside.
    static DEPTH: Cell<u32> = const { Cell::new(0) };
    /// What the hook recorded about the last contained panic.
    static CAUGHT: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Runs `f`; a panic inside it becomes `Err` with the panic's message and
/// where it happened.
pub fn contain<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    DEPTH.with(|d| d.set(d.get() + 1));
    let result = std::panic::catch_unwind(AssertUnwindSafe(f));
    DEPTH.with(|d| d.set(d.get() - 1));
    result.map_err(|payload| {
        CAUGHT
            .with(|c| c.borrow_mut().take())
            .unwrap_or_else(|| payload_text(&*payload))
    })
}

fn payload_text(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown failure".to_string()
    }
}

fn describe(info: &PanicHookInfo<'_>) -> String {
    let text = payload_text(info.payload());
    match info.location() {
        Some(at) => format!("{text} ({}:{})", at.file(), at.line()),
        None => text,
    }
}

/// Whether a panic comes from the storage engine: raised in its source or
/// on one of its threads.
fn from_storage_engine(info: &PanicHookInfo<'_>) -> bool {
    let in_sled = info
        .location()
        .is_some_and(|at| at.file().contains("/sled-0."));
    let on_sled_thread = std::thread::current()
        .name()
        .is_some_and(|n| n.starts_with("sled") || n.contains("flusher"));
    in_sled || on_sled_thread
}

/// Installs the process-wide panic hook described in the module doc.
/// `data_dir` is named when a storage-engine panic ends the process.
pub fn install_hook(data_dir: Option<PathBuf>) {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if DEPTH.with(Cell::get) > 0 {
            let text = describe(info);
            CAUGHT.with(|c| *c.borrow_mut() = Some(text));
            return;
        }
        if from_storage_engine(info) {
            let dir = data_dir.as_ref().map_or_else(
                || "the data directory".to_string(),
                |d| d.display().to_string(),
            );
            let thread = std::thread::current()
                .name()
                .unwrap_or("unnamed")
                .to_string();
            eprintln!(
                "herald: error: the storage engine failed on thread {thread}: {}. \
                 The log in {dir} is probably damaged; run `herald verify --data-dir {dir}`",
                describe(info)
            );
            std::process::exit(1);
        }
        previous(info);
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_an_error_and_the_thread_carries_on() {
        let err = contain(|| -> u32 { panic!("tried to serialize Uninitialized") }).unwrap_err();
        assert!(err.contains("tried to serialize Uninitialized"), "{err}");
        assert_eq!(contain(|| 7), Ok(7));
        assert_eq!(DEPTH.with(Cell::get), 0);
    }
}
