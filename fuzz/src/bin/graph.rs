//! AFL++ target `graph`: see the crate's documentation.
fn main() {
    afl::fuzz!(|data: &[u8]| imgsearch_fuzz::run("graph", data));
}
