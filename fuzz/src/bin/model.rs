//! AFL++ target `model`: see the crate's documentation.
fn main() {
    afl::fuzz!(|data: &[u8]| imgsearch_fuzz::run("model", data));
}
