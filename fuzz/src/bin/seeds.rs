//! Writes the starting corpus of every target: `seeds OUT_DIR`.
fn main() -> std::io::Result<()> {
    let out = std::env::args_os().nth(1).expect("usage: seeds OUT_DIR");
    imgsearch_fuzz::seeds(std::path::Path::new(&out))
}
