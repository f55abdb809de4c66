// Every file in presets/ is built into the binary, by its name without
// .toml (`built_in_presets`): a new preset cannot be left out by hand.
//
// model/build.rs's link rules for libtorch binaries, chosen by apex's
// features so that each image links only what its role uses:
// - `torch`: an rpath to libtorch's lib folder. Rust links with --as-needed,
//   so the binary needs libtorch_cpu.so and libc10.so alone (the actors').
// - `cuda`: libtorch_cuda kept as a needed library too, which --as-needed
//   would drop since nothing references it by symbol (the learner's).
// - neither: no libtorch at all (the replay server's).
fn main() {
    built_in_presets();
    let enabled = |feature: &str| std::env::var_os(format!("CARGO_FEATURE_{feature}")).is_some();
    if !enabled("TORCH") {
        return;
    }
    let lib = std::env::var("DEP_TCH_LIBTORCH_LIB").expect("torch-sys must be a direct dependency");
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    if enabled("CUDA") && std::path::Path::new(&lib).join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
}

/// `$OUT_DIR/presets.rs`: `(name, text)` of every `presets/*.toml`, sorted
/// by name, for `cli/src/preset.rs`.
fn built_in_presets() {
    let manifest = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let dir = manifest.join("../presets");
    // A folder here makes cargo rerun this script when any file in it changes, appears or goes.
    println!("cargo:rerun-if-changed={}", dir.display());
    println!("cargo:rerun-if-changed=build.rs");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            Some(name.strip_suffix(".toml")?.to_owned())
        })
        .collect();
    names.sort();
    let mut code = String::from("&[\n");
    for name in &names {
        let path = dir.join(format!("{name}.toml"));
        code += &format!(
            "    ({name:?}, include_str!({:?})),\n",
            path.display().to_string()
        );
    }
    code += "]\n";
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("presets.rs");
    std::fs::write(&out, code).unwrap_or_else(|e| panic!("cannot write {}: {e}", out.display()));
}
