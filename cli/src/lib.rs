//! The apex command line's library: each command's settings and the code
//! that runs it (the services together in `apex local`, the tools around a
//! run folder). The `apex` binary (`main.rs`) only parses arguments and
//! calls in here; the benchmark harnesses live in the `apex-bench` crate.

pub mod command;
// Without the `torch` feature (the replay server's image) apex links no
// libtorch: the commands that need it are left out (see Cargo.toml).
#[cfg(feature = "torch")]
pub mod doctor;
#[cfg_attr(not(feature = "torch"), allow(dead_code))]
pub mod env_cmd;
#[cfg(feature = "torch")]
pub mod evaluate;
#[cfg(feature = "torch")]
pub mod export;
pub mod health;
pub mod plot;
#[cfg_attr(not(feature = "torch"), allow(dead_code))]
pub mod preset;
#[cfg(feature = "torch")]
pub mod progress;
// Without libtorch only the replay server's part of the services is built;
// the other services' settings stay, so that presets still resolve.
#[cfg_attr(not(feature = "torch"), allow(dead_code, unused_imports))]
pub mod services;

#[doc(hidden)]
pub use tikv_jemallocator;

/// Makes jemalloc the process's allocator, for Rust's allocations and, as
/// the exported `malloc` (tikv-jemallocator's unprefixed symbols, on Linux),
/// libtorch's too: activations and gradients then reuse pages instead of
/// faulting in fresh ones every update (BENCHMARKS.md, "The learner's
/// update"). Its boot options: by default jemalloc gives freed pages back
/// only while a thread allocates, so a replay server whose insert streams
/// closed kept their frame windows (4 GB for 32 streams of incompressible
/// frames) while idle; background threads give them back within about a
/// second (BENCHMARKS.md, "Allocators"). `MALLOC_CONF` overrides them
/// (where jemalloc stays prefixed, on macOS, `_RJEM_MALLOC_CONF`).
///
/// A macro, used once in each binary's `main.rs`: the exported options must
/// be in the binary's own object code for jemalloc to find them at boot.
#[macro_export]
macro_rules! use_jemalloc {
    () => {
        #[global_allocator]
        static GLOBAL: $crate::tikv_jemallocator::Jemalloc = $crate::tikv_jemallocator::Jemalloc;

        #[used]
        #[cfg_attr(
            any(
                target_os = "android",
                target_os = "dragonfly",
                target_vendor = "apple"
            ),
            export_name = "_rjem_malloc_conf"
        )]
        #[cfg_attr(
            not(any(
                target_os = "android",
                target_os = "dragonfly",
                target_vendor = "apple"
            )),
            export_name = "malloc_conf"
        )]
        static MALLOC_CONF: Option<&std::ffi::c_char> =
            // SAFETY: a NUL-terminated string that lives as long as the program.
            Some(unsafe {
                &*c"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0".as_ptr()
            });
    };
}

/// Sets up logging to stderr at `RUST_LOG`'s level (info by default).
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
}
