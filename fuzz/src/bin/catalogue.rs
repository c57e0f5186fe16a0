//! AFL++ target `catalogue`: see the crate's documentation.
fn main() {
    afl::fuzz!(|data: &[u8]| imgsearch_fuzz::run("catalogue", data));
}
