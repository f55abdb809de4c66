// model/build.rs's link rules for libtorch binaries, chosen by apex's
// features so that each image links only what its role uses:
// - `torch`: an rpath to libtorch's lib folder. Rust links with --as-needed,
//   so the binary needs libtorch_cpu.so and libc10.so alone (the actors').
// - `cuda`: libtorch_cuda kept as a needed library too, which --as-needed
//   would drop since nothing references it by symbol (the learner's).
// - neither: no libtorch at all (the replay server's).
fn main() {
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
