//! AFL++ target `decode`: see the crate's documentation.
fn main() {
    afl::fuzz!(|data: &[u8]| imgsearch_fuzz::run("decode", data));
}
