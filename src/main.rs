//! The `imgsearch` binary. Everything it does lives in the library; the
//! command line (arguments, progress bars, tables) lives in [`cli`]. This
//! file decides only how the process ends.
//!
//! Exit codes: 0 success; 1 failure (nothing was done); 2 bad usage (clap);
//! 3 partial success (some inputs were skipped, each named on stderr).
//! A closed standard output (`imgsearch query … | head -1`) ends the
//! program quietly with 0: the reader had what it wanted.

mod cli;

use std::process::ExitCode;

use clap::Parser;

/// jemalloc, not the system allocator: sled and the graph's planning
/// allocate from every core, and glibc's malloc spent a fifth of an
/// import's time on it, much of that waiting on its arena locks.
#[cfg(all(unix, not(target_env = "musl")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(outcome) => outcome.exit_code(),
        Err(err) if cli::output::is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            let line = cli::output::error_line(&err);
            eprintln!("error: {line}");
            if cli::output::is_disk_full(&err) && !line.contains("free some space") {
                // Every write is a whole batch or nothing, so the same
                // command picks up where this one stopped.
                eprintln!("hint: the disk is full; free some space and run the same command again");
            }
            ExitCode::FAILURE
        }
    }
}
