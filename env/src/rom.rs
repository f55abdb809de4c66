//! Finding a game's ROM by name and checking it is the one we expect.

use std::path::{Path, PathBuf};

use md5::{Digest, Md5};

use crate::EnvError;

/// `md5  <game>.bin` for every game the bundled ALE 0.6 supports.
const TABLE: &str = include_str!("../roms.md5");

/// Games this build can play, sorted.
pub fn games() -> impl Iterator<Item = &'static str> {
    table().map(|(_, game)| game)
}

fn table() -> impl Iterator<Item = (&'static str, &'static str)> {
    TABLE
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (md5, file) = l.split_once("  ").expect("roms.md5 line: `md5  file`");
            (md5, file.trim_end_matches(".bin"))
        })
}

/// The ROM folder used when none is given: `APEX_ROM_DIR`, else `roms/`
/// beside the workspace this binary was built from.
pub fn default_rom_dir() -> PathBuf {
    std::env::var_os("APEX_ROM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../roms"))
}

/// Returns the path of `game`'s ROM in `dir` after checking its md5.
pub fn locate(dir: &Path, game: &str) -> Result<PathBuf, EnvError> {
    let (expected, _) = table()
        .find(|(_, g)| *g == game)
        .ok_or_else(|| EnvError::UnknownGame {
            game: game.to_owned(),
            known: games().collect::<Vec<_>>().join(", "),
        })?;
    let path = dir.join(format!("{game}.bin"));
    let bytes = std::fs::read(&path).map_err(|source| EnvError::MissingRom {
        path: path.clone(),
        source,
    })?;
    let actual = format!("{:x}", Md5::digest(&bytes));
    if actual != expected {
        return Err(EnvError::WrongRom {
            path,
            expected: expected.to_owned(),
            actual,
        });
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_knows_the_games_we_need() {
        let all: Vec<_> = games().collect();
        for g in ["breakout", "pong", "space_invaders"] {
            assert!(all.contains(&g), "{g}");
        }
        assert!(table().all(|(md5, _)| md5.len() == 32));
    }

    #[test]
    fn unknown_game_names_the_known_ones() {
        let err = locate(Path::new("/nonexistent"), "brekout").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("unknown game 'brekout'"), "{msg}");
        assert!(msg.contains("breakout"), "{msg}");
    }

    #[test]
    fn missing_and_wrong_roms_are_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let err = locate(dir.path(), "pong").unwrap_err();
        assert!(matches!(err, EnvError::MissingRom { .. }), "{err}");
        assert!(err.to_string().contains("scripts/setup.sh"), "{err}");
        std::fs::write(dir.path().join("pong.bin"), b"not a rom").unwrap();
        let err = locate(dir.path(), "pong").unwrap_err();
        assert!(matches!(err, EnvError::WrongRom { .. }), "{err}");
    }
}
