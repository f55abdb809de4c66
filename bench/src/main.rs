//! `apex-bench`'s entry point; the harnesses and their command line are the
//! library's.

use clap::Parser;

apex::use_jemalloc!();

fn main() {
    apex::init_logging();
    if let Err(e) = apex_bench::run(apex_bench::Cli::parse()) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
