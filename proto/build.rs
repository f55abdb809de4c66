// protoc comes from the protoc-bin-vendored crate: nothing to install.
fn main() -> std::io::Result<()> {
    if std::env::var_os("PROTOC").is_none() {
        let protoc =
            protoc_bin_vendored::protoc_bin_path().expect("vendored protoc for this platform");
        std::env::set_var("PROTOC", protoc);
    }
    tonic_prost_build::configure()
        .bytes(".apex.v1")
        .compile_protos(&["apex/v1/apex.proto"], &["."])
}
