//! Appending rows to a run folder's CSV file and reading them back. A run
//! folder is shared with a live run: a resumed run extends its files under
//! the header already there, and a reader skips a last line that is still
//! being written.

use std::fs::OpenOptions;
use std::io;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

/// A row type of one of the run folder's CSV files.
pub trait Row: Serialize + DeserializeOwned {
    /// The file's name in the run folder.
    const FILE: &'static str;
    /// The columns, in order, as the header line names them.
    const HEADER: &'static str;
    /// What makes the file again, for messages about a file that cannot be read.
    const REMEDY: &'static str;
}

/// Why a run folder's CSV file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read {path}: check its permissions, or move it away and {remedy}")]
    Unreadable {
        path: PathBuf,
        remedy: &'static str,
        source: io::Error,
    },
    #[error(
        "{path} has no column '{column}': it is not an apex file (its header should be \
         {header}); move it away and {remedy}"
    )]
    MissingColumn {
        path: PathBuf,
        column: String,
        header: &'static str,
        remedy: &'static str,
    },
    #[error("{path} line {line} has {found} fields, not {expected}: fix or delete that line")]
    FieldCount {
        path: PathBuf,
        line: u64,
        found: usize,
        expected: usize,
    },
    #[error("{path} line {line}: {column} is empty: fix or delete that line")]
    Empty {
        path: PathBuf,
        line: u64,
        column: String,
    },
    #[error("{path} line {line}: {column} is '{value}', not a number: fix or delete that line")]
    NotANumber {
        path: PathBuf,
        line: u64,
        column: String,
        value: String,
    },
    #[error("{path} line {line}: {message}: fix or delete that line")]
    Malformed {
        path: PathBuf,
        line: u64,
        message: String,
    },
}

/// Appends `row` to its file in `dir` (made if missing), under a header
/// written when the file is new or empty; the row is on disk when this
/// returns. Returns the file's path.
pub fn append<R: Row>(dir: &Path, row: &R) -> io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(R::FILE);
    let fresh = std::fs::metadata(&path).map_or(true, |m| m.len() == 0);
    let file = OpenOptions::new().create(true).append(true).open(&path)?;
    let mut writer = csv::WriterBuilder::new()
        .has_headers(fresh)
        .from_writer(file);
    writer.serialize(row)?;
    writer.flush()?;
    writer.get_ref().sync_data()?;
    Ok(path)
}

/// The rows of `path` with their line numbers. Columns are found by name,
/// so a file that has gained columns still reads; a last line without its
/// newline is being written right now and is skipped, not an error.
pub fn read<R: Row>(path: &Path) -> Result<Vec<(u64, R)>, ReadError> {
    let text = std::fs::read_to_string(path).map_err(|source| ReadError::Unreadable {
        path: path.to_owned(),
        remedy: R::REMEDY,
        source,
    })?;
    let complete = match text.rfind('\n') {
        Some(end) if !text.ends_with('\n') => &text[..=end],
        _ => &text,
    };
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(complete.as_bytes());
    let headers = reader.headers().cloned().unwrap_or_default();
    for column in R::HEADER.split(',') {
        if !headers.iter().any(|h| h == column) {
            return Err(ReadError::MissingColumn {
                path: path.to_owned(),
                column: column.to_owned(),
                header: R::HEADER,
                remedy: R::REMEDY,
            });
        }
    }
    let mut rows = Vec::new();
    for record in reader.records() {
        let malformed = |line: u64, message: String| ReadError::Malformed {
            path: path.to_owned(),
            line,
            message,
        };
        let record = record.map_err(|e| {
            let line = e.position().map_or(0, |p| p.line());
            malformed(line, e.to_string())
        })?;
        let line = record.position().map_or(0, |p| p.line());
        if record.len() < headers.len() {
            return Err(ReadError::FieldCount {
                path: path.to_owned(),
                line,
                found: record.len(),
                expected: headers.len(),
            });
        }
        let row = record.deserialize::<R>(Some(&headers)).map_err(|e| {
            let field = match e.kind() {
                csv::ErrorKind::Deserialize { err, .. } => err.field(),
                _ => None,
            };
            let Some(i) = field.map(|i| i as usize) else {
                return malformed(line, e.to_string());
            };
            let column = headers.get(i).unwrap_or_default().to_owned();
            match record.get(i).unwrap_or_default() {
                "" => ReadError::Empty {
                    path: path.to_owned(),
                    line,
                    column,
                },
                value => ReadError::NotANumber {
                    path: path.to_owned(),
                    line,
                    column,
                    value: value.to_owned(),
                },
            }
        })?;
        rows.push((line, row));
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EvalRow, ProgressRow};

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn the_writers_header_is_the_readers() {
        let dir = tempfile::tempdir().unwrap();
        let eval = append(
            dir.path(),
            &EvalRow {
                env_frames: None,
                wall_seconds: 0.0,
                weights_version: 0,
                updates: 0,
                protocol: "v4".into(),
                episodes: 1,
                mean: 0.0,
                std: 0.0,
                median: 0.0,
                min: 0.0,
                max: 0.0,
            },
        )
        .unwrap();
        let first = |p: &Path| {
            std::fs::read_to_string(p)
                .unwrap()
                .lines()
                .next()
                .unwrap()
                .to_owned()
        };
        assert_eq!(first(eval.as_path()), EvalRow::HEADER);
        let progress = append(
            dir.path(),
            &ProgressRow {
                wall_seconds: 0.0,
                env_steps: 0,
                env_frames: 0,
                games: 0,
                episodic_return: None,
                episodic_length: None,
                updates: 0,
                loss: None,
                mean_q: None,
                sps: 0.0,
            },
        )
        .unwrap();
        assert_eq!(first(progress.as_path()), ProgressRow::HEADER);
    }

    #[test]
    fn bad_files_are_named_with_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let h = EvalRow::HEADER;
        let path = write(
            dir.path(),
            "a.csv",
            &format!("{h}\n400,1.0,1,10,v4,3,2.0,1.0,2,1,3\n,,1,10,v4,3,2.0,1.0,2,1,3\n"),
        );
        let e = read::<EvalRow>(&path).unwrap_err().to_string();
        assert!(e.contains("a.csv line 3: wall_seconds is empty"), "{e}");
        let path = write(dir.path(), "b.csv", &format!("{h}\n400,1.0,1\n"));
        let e = read::<EvalRow>(&path).unwrap_err().to_string();
        assert!(e.contains("b.csv line 2 has 3 fields, not 11"), "{e}");
        let e = read::<EvalRow>(&dir.path().join("none.csv"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot read") && e.contains("apex eval"), "{e}");
    }

    #[test]
    fn extra_columns_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let h = EvalRow::HEADER;
        let path = write(
            dir.path(),
            "c.csv",
            &format!("{h},later\n400,1.0,1,10,v4,3,2.0,1.0,2,1,3,x\n"),
        );
        let rows = read::<EvalRow>(&path).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].1.mean, 2.0);
    }
}
