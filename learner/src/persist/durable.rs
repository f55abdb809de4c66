//! Files that survive a crash or power loss at any moment: written beside
//! their final name, synced, then renamed into place, with the folder synced
//! so the rename itself is on disk.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Replaces `dir/name` with `bytes`, keeping the file it replaces as
/// `dir/previous`. At every instant one of the two holds a complete file.
pub fn replace(dir: &Path, name: &str, previous: &str, bytes: &[u8]) -> io::Result<()> {
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    {
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    if path.exists() {
        fs::rename(&path, dir.join(previous))?;
    }
    fs::rename(&tmp, &path)?;
    sync_dir(dir)
}

/// Renames a damaged `path` to `<path>.corrupt-<unix seconds>` (with a
/// counter when that exists) so that it is kept for inspection but never
/// read again; returns the new name.
pub fn move_aside(path: &Path) -> io::Result<PathBuf> {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut aside = path.with_file_name(format!("{name}.corrupt-{secs}"));
    let mut n = 1;
    while aside.exists() {
        aside = path.with_file_name(format!("{name}.corrupt-{secs}-{n}"));
        n += 1;
    }
    fs::rename(path, &aside)?;
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(aside)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_replaced_file_becomes_the_previous_one() {
        let dir = tempfile::tempdir().unwrap();
        replace(dir.path(), "a", "a.prev", b"one").unwrap();
        assert_eq!(fs::read(dir.path().join("a")).unwrap(), b"one");
        assert!(!dir.path().join("a.prev").exists());
        replace(dir.path(), "a", "a.prev", b"two").unwrap();
        assert_eq!(fs::read(dir.path().join("a")).unwrap(), b"two");
        assert_eq!(fs::read(dir.path().join("a.prev")).unwrap(), b"one");
        assert!(!dir.path().join("a.tmp").exists());
    }

    #[test]
    fn moved_aside_files_never_collide() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c");
        fs::write(&path, b"x").unwrap();
        let first = move_aside(&path).unwrap();
        fs::write(&path, b"y").unwrap();
        let second = move_aside(&path).unwrap();
        assert_ne!(first, second);
        assert!(!path.exists());
        assert_eq!(fs::read(first).unwrap(), b"x");
        assert_eq!(fs::read(&second).unwrap(), b"y");
        let name = second.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with("c.corrupt-"), "{name}");
    }
}
