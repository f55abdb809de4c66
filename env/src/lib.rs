//! Environments for apex: Atari games (ALE 0.6 through `ale-sys`) wrapped
//! with the preprocessing DQN-family agents are trained and compared under,
//! and Catch for proving that the pipeline learns. The trait every
//! environment implements is in `environment.rs`, which imports none of
//! them; `spec.rs` makes them. GIFs, recordings and `.npy` files are in
//! `apex-media`.

mod ale;
pub mod atari;
pub mod bench;
mod capture;
pub mod catch;
mod emulator;
pub mod environment;
pub mod frame_stack;
mod palette;
pub mod protocol;
pub mod resize;
pub mod rom;
pub mod spec;

use std::path::PathBuf;

pub use ale::{SCREEN_HEIGHT, SCREEN_PIXELS, SCREEN_WIDTH};
pub use atari::{AtariConfig, AtariEnv, FRAME_PIXELS, FRAME_SIZE};
pub use catch::{Catch, CatchConfig};
pub use environment::{Environment, GameSummary, Screen, Step};
pub use protocol::Protocol;
pub use spec::EnvSpec;

/// Why a game could not be started.
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    #[error("unknown game '{game}': use one of {known}")]
    UnknownGame { game: String, known: String },
    #[error(
        "rom {path} cannot be read ({source}): run scripts/setup.sh to install the ROMs, \
         or point --rom-dir (APEX_ROM_DIR) at a folder of <game>.bin files"
    )]
    MissingRom {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "rom {path} has md5 {actual} but {expected} is expected: replace it with the ROM \
         from the ale-py 0.12.1 wheel (scripts/setup.sh does this)"
    )]
    WrongRom {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("invalid environment settings: {0}")]
    Config(String),
}
