// ale-sys builds ALE as a static C++ library but does not link the C++
// runtime or zlib it needs; every binary that uses it must.
fn main() {
    println!("cargo:rustc-link-lib=dylib=stdc++");
    println!("cargo:rustc-link-lib=dylib=z");
}
