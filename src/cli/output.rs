//! Everything the command line prints to standard output goes through here:
//! a typed `Serialize` report, written either as JSON or as the table its
//! [`Table`] impl draws. Both views come from the same struct, so a field
//! cannot be in one and silently missing from the other.
//!
//! Writes return `io::Result` instead of panicking like `println!`, so a
//! reader that closes the pipe early ends the program quietly
//! ([`is_broken_pipe`]).

use std::io::{self, BufWriter, Write};
use std::process::ExitCode;

use serde::Serialize;

/// How a command's own work went, as the process's exit code tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Everything asked for was done (exit 0).
    Success,
    /// Some inputs were skipped, each named on stderr (exit 3).
    Partial,
    /// Nothing could be done (exit 1).
    Failure,
}

impl Outcome {
    /// The outcome of a run that did `done` inputs and skipped `failed`.
    pub fn of(done: usize, failed: usize) -> Self {
        match (done, failed) {
            (_, 0) => Self::Success,
            (0, _) => Self::Failure,
            _ => Self::Partial,
        }
    }

    pub fn exit_code(self) -> ExitCode {
        match self {
            Self::Success => ExitCode::SUCCESS,
            Self::Partial => ExitCode::from(3),
            Self::Failure => ExitCode::FAILURE,
        }
    }
}

/// A report's human-readable view.
pub trait Table {
    fn table(&self, out: &mut dyn Write) -> io::Result<()>;
}

/// Prints `report` on standard output: pretty JSON with `json`, else its table.
pub fn print<R: Serialize + Table>(report: &R, json: bool) -> io::Result<()> {
    if json {
        print_json(report)
    } else {
        print_with(|out| report.table(out))
    }
}

/// Prints `value` as pretty JSON on standard output.
pub fn print_json<T: Serialize + ?Sized>(value: &T) -> io::Result<()> {
    print_with(|out| {
        serde_json::to_writer_pretty(&mut *out, value)?;
        writeln!(out)
    })
}

/// Runs `draw` against buffered, locked standard output, then flushes.
pub fn print_with(draw: impl FnOnce(&mut dyn Write) -> io::Result<()>) -> io::Result<()> {
    let mut out = BufWriter::new(io::stdout().lock());
    draw(&mut out)?;
    out.flush()
}

/// Whether an error comes from writing to a pipe whose reader has gone.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    })
}

/// The error's chain as one line, `outer: cause: cause`, leaving out a
/// cause whose text the line already holds (our error types name their
/// cause in their own message, and anyhow's `{:#}` would repeat it).
pub fn error_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if !line.contains(&text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
    }
    line
}

/// Whether an error comes from a full disk.
pub fn is_disk_full(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::StorageFull)
            || cause
                .downcast_ref::<imgsearch::store::StoreError>()
                .is_some_and(imgsearch::store::StoreError::is_disk_full)
            // `IndexError::Store` is transparent: the chain goes from it
            // straight to sled's error, which names no cause of its own.
            || matches!(
                cause.downcast_ref::<imgsearch::index::IndexError>(),
                Some(imgsearch::index::IndexError::Store(store)) if store.is_disk_full()
            )
    })
}

/// Cuts `s` to at most `width` characters (for table columns).
pub fn truncate(s: &str, width: usize) -> String {
    s.chars().take(width).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_follows_done_and_failed() {
        assert_eq!(Outcome::of(3, 0), Outcome::Success);
        assert_eq!(Outcome::of(0, 0), Outcome::Success);
        assert_eq!(Outcome::of(2, 1), Outcome::Partial);
        assert_eq!(Outcome::of(0, 2), Outcome::Failure);
    }

    #[test]
    fn broken_pipe_is_found_through_context() {
        let err = anyhow::Error::from(io::Error::from(io::ErrorKind::BrokenPipe))
            .context("printing results");
        assert!(is_broken_pipe(&err));
        assert!(!is_broken_pipe(&anyhow::anyhow!("no index")));
    }

    #[test]
    fn error_line_names_each_cause_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("cannot access f.bin: {source}")]
        struct Access {
            source: io::Error,
        }
        let full = io::Error::from(io::ErrorKind::StorageFull);
        let err = anyhow::Error::from(Access { source: full }).context("ingesting dir");
        assert_eq!(
            error_line(&err),
            format!(
                "ingesting dir: cannot access f.bin: {}",
                io::Error::from(io::ErrorKind::StorageFull)
            )
        );
        assert!(is_disk_full(&err));
        // A sled write that met a full disk, as an index passes it on.
        let sled_full = sled::Error::Io(io::Error::from(io::ErrorKind::StorageFull));
        let err = anyhow::Error::from(imgsearch::index::IndexError::Store(sled_full.into()));
        assert!(is_disk_full(&err));
        let plain = anyhow::anyhow!("no index").context("opening");
        assert_eq!(error_line(&plain), "opening: no index");
        assert!(!is_disk_full(&plain));
    }
}
