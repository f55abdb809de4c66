// Every binary and test that links libtorch gets:
// - an rpath to libtorch's lib folder, so nobody exports LD_LIBRARY_PATH;
// - libtorch_cuda kept as a needed library: the linker's --as-needed would
//   drop it (nothing references it by symbol) and CUDA would silently be
//   unavailable. The binary still runs without a GPU.
// Crates that link libtorch point `build` at this file and depend on torch-sys.
fn main() {
    let lib = std::env::var("DEP_TCH_LIBTORCH_LIB").expect("torch-sys must be a direct dependency");
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    if std::path::Path::new(&lib).join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
}
