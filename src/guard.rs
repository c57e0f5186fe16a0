//! Running third-party code that may panic on damaged input (sled on a
//! truncated database) as an error instead.

use std::panic::{self, AssertUnwindSafe};

/// Runs `work`, turning a panic into `Err(message)`. The panic is not
/// printed: the caller reports the error in its own words, without a
/// backtrace that would only alarm.
///
/// The process's panic hook is swapped for the duration, so call this
/// where no other thread is expected to panic (opening files at start-up).
pub fn catch_panic<R>(work: impl FnOnce() -> R) -> Result<R, String> {
    let hook = panic::take_hook();
    panic::set_hook(Box::new(|_| {}));
    let result = panic::catch_unwind(AssertUnwindSafe(work));
    panic::set_hook(hook);
    result.map_err(|payload| {
        payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown failure".into())
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_panic_becomes_its_message() {
        assert_eq!(super::catch_panic(|| 7), Ok(7));
        let err = super::catch_panic(|| -> u8 { panic!("bad page {}", 3) }).unwrap_err();
        assert_eq!(err, "bad page 3");
    }
}
