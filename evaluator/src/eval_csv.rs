//! `eval.csv` in a run folder: one row per protocol per evaluation round,
//! appended as rounds finish, so a resumed run extends its curve; and the
//! appending that the run folder's other CSV files share.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::summary::Summary;

pub const FILE: &str = "eval.csv";
pub const HEADER: &str =
    "env_frames,wall_seconds,weights_version,updates,protocol,episodes,mean,std,median,min,max";

/// One row.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalRow {
    pub env_frames: Option<u64>,
    pub wall_seconds: f64,
    pub weights_version: u64,
    pub updates: u64,
    pub protocol: String,
    pub summary: Summary,
}

/// Opens a run folder's CSV file for appending, writing `header` first
/// when the file is new or empty: a resumed run extends its file.
pub fn open_appending(path: &Path, header: &str) -> std::io::Result<std::fs::File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let fresh = std::fs::metadata(path).map_or(true, |m| m.len() == 0);
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    if fresh {
        writeln!(f, "{header}")?;
    }
    Ok(f)
}

/// Appends `row` to `dir/eval.csv`.
pub fn append(dir: &Path, row: &EvalRow) -> std::io::Result<PathBuf> {
    let path = dir.join(FILE);
    let mut f = open_appending(&path, HEADER)?;
    let s = &row.summary;
    let text = format!(
        "{},{:.1},{},{},{},{},{:.3},{:.3},{:.3},{},{}\n",
        row.env_frames.map(|f| f.to_string()).unwrap_or_default(),
        row.wall_seconds,
        row.weights_version,
        row.updates,
        row.protocol,
        s.games,
        s.mean,
        s.std,
        s.median,
        s.min,
        s.max
    );
    f.write_all(text.as_bytes())?;
    f.sync_data()?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_append_under_one_header() {
        let dir = tempfile::tempdir().unwrap();
        let row = EvalRow {
            env_frames: Some(4000),
            wall_seconds: 12.0,
            weights_version: 3,
            updates: 50,
            protocol: "v4".into(),
            summary: Summary::of(&[1.0, 2.0]).unwrap(),
        };
        append(dir.path(), &row).unwrap();
        let path = append(
            dir.path(),
            &EvalRow {
                env_frames: None,
                protocol: "v5".into(),
                ..row
            },
        )
        .unwrap();
        let text = std::fs::read_to_string(path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], HEADER);
        assert_eq!(lines[1], "4000,12.0,3,50,v4,2,1.500,0.500,1.500,1,2");
        assert_eq!(lines[2], ",12.0,3,50,v5,2,1.500,0.500,1.500,1,2");
    }
}
