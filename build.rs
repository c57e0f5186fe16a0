//! Embeds the default models found in `assets/models/` into the binary.
//!
//! A model file that is absent at build time (a fresh checkout that has not
//! yet run `scripts/train-default-models.sh`, say) is left out, and asking
//! for it at run time says so instead of failing the build.

use std::path::PathBuf;

const DEFAULT_MODELS: &[&str] = &[
    "digits",
    "digits-denoise",
    "fashion",
    "photos",
    "photos-cifar32",
];

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("default_models.rs");
    let mut code =
        String::from("/// Default models embedded at build time: (name, safetensors bytes).\n");
    code.push_str("pub static EMBEDDED: &[(&str, &[u8])] = &[\n");
    for name in DEFAULT_MODELS {
        let path = manifest
            .join("assets/models")
            .join(format!("{name}.safetensors"));
        println!("cargo:rerun-if-changed={}", path.display());
        if path.exists() {
            code.push_str(&format!(
                "    ({name:?}, include_bytes!({:?})),\n",
                path.display().to_string()
            ));
        }
    }
    code.push_str("];\n");
    code.push_str(&format!("/// Every default model name, embedded or not.\npub static NAMES: &[&str] = &{DEFAULT_MODELS:?};\n"));
    println!("cargo:rerun-if-changed=assets/models");
    std::fs::write(out, code).unwrap();
}
