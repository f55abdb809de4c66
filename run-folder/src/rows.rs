//! The rows of the run folder's CSV files. Field order is column order;
//! numbers are written with the places each column has always had, so a
//! resumed run's rows match its old ones.

use serde::{Deserialize, Serialize, Serializer};

use crate::table::Row;
use crate::{EVAL_CSV, PROGRESS_CSV};

/// One row of `eval.csv`: one protocol's games in one evaluation round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalRow {
    /// Empty when the evaluator did not know the frame count.
    pub env_frames: Option<u64>,
    #[serde(serialize_with = "one_place")]
    pub wall_seconds: f64,
    pub weights_version: u64,
    pub updates: u64,
    pub protocol: String,
    pub episodes: u64,
    #[serde(serialize_with = "three_places")]
    pub mean: f64,
    #[serde(serialize_with = "three_places")]
    pub std: f64,
    #[serde(serialize_with = "three_places")]
    pub median: f64,
    #[serde(serialize_with = "shortest")]
    pub min: f64,
    #[serde(serialize_with = "shortest")]
    pub max: f64,
}

impl Row for EvalRow {
    const FILE: &'static str = EVAL_CSV;
    const HEADER: &'static str =
        "env_frames,wall_seconds,weights_version,updates,protocol,episodes,mean,std,median,min,max";
    const REMEDY: &'static str = "run apex local with evaluation on, or apex eval";
}

/// One row of `progress.csv`: the figures of one progress line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProgressRow {
    #[serde(serialize_with = "one_place")]
    pub wall_seconds: f64,
    pub env_steps: u64,
    pub env_frames: u64,
    pub games: u64,
    /// Mean raw score of the training games that ended since the last row;
    /// empty when none did.
    #[serde(serialize_with = "two_places")]
    pub episodic_return: Option<f64>,
    #[serde(serialize_with = "two_places")]
    pub episodic_length: Option<f64>,
    pub updates: u64,
    #[serde(serialize_with = "six_places")]
    pub loss: Option<f64>,
    #[serde(serialize_with = "four_places")]
    pub mean_q: Option<f64>,
    /// Agent steps per second since the last row.
    #[serde(serialize_with = "one_place")]
    pub sps: f64,
}

impl Row for ProgressRow {
    const FILE: &'static str = PROGRESS_CSV;
    const HEADER: &'static str = "wall_seconds,env_steps,env_frames,games,episodic_return,episodic_length,updates,loss,mean_q,sps";
    const REMEDY: &'static str = "run apex local there again";
}

fn places<S: Serializer>(n: usize, v: f64, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&format_args!("{v:.n$}"))
}

fn one_place<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    places(1, *v, s)
}

fn three_places<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    places(3, *v, s)
}

/// Rust's shortest form: game scores are whole numbers, written as such.
fn shortest<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

fn optional<S: Serializer>(n: usize, v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => places(n, *v, s),
        None => s.serialize_none(),
    }
}

fn two_places<S: Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
    optional(2, v, s)
}

fn four_places<S: Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
    optional(4, v, s)
}

fn six_places<S: Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
    optional(6, v, s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{append, read};

    fn eval_row() -> EvalRow {
        EvalRow {
            env_frames: Some(4000),
            wall_seconds: 12.0,
            weights_version: 3,
            updates: 50,
            protocol: "v4".into(),
            episodes: 2,
            mean: 1.5,
            std: 0.5,
            median: 1.5,
            min: 1.0,
            max: 2.0,
        }
    }

    #[test]
    fn rows_append_under_one_header() {
        const HEADER: &str = EvalRow::HEADER;
        let dir = tempfile::tempdir().unwrap();
        let row = eval_row();
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

    #[test]
    fn progress_rows_keep_their_places_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let row = ProgressRow {
            wall_seconds: 20.04,
            env_steps: 200,
            env_frames: 800,
            games: 3,
            episodic_return: Some(1.5),
            episodic_length: None,
            updates: 5,
            loss: Some(0.1),
            mean_q: Some(0.2),
            sps: 10.0,
        };
        let path = append(dir.path(), &row).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            format!(
                "{}\n20.0,200,800,3,1.50,,5,0.100000,0.2000,10.0\n",
                ProgressRow::HEADER
            )
        );
        let back: Vec<(u64, ProgressRow)> = read(&path).unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].0, 2, "the first row is line 2");
        assert_eq!(
            back[0].1,
            ProgressRow {
                wall_seconds: 20.0,
                ..row
            }
        );
    }
}
