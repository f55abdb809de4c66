//! What a set of games scored, as evaluation tables report it.

/// Raw game scores of one evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub games: usize,
    pub mean: f64,
    /// Population standard deviation.
    pub std: f64,
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Summary {
    /// The row of `eval.csv` that reports this summary.
    pub fn eval_row(
        &self,
        protocol: impl ToString,
        env_frames: Option<u64>,
        wall_seconds: f64,
        weights_version: u64,
        updates: u64,
    ) -> apex_run_folder::EvalRow {
        apex_run_folder::EvalRow {
            env_frames,
            wall_seconds,
            weights_version,
            updates,
            protocol: protocol.to_string(),
            episodes: self.games as u64,
            mean: self.mean,
            std: self.std,
            median: self.median,
            min: self.min,
            max: self.max,
        }
    }

    /// `None` for no games.
    pub fn of(scores: &[f64]) -> Option<Summary> {
        if scores.is_empty() {
            return None;
        }
        let n = scores.len() as f64;
        let mean = scores.iter().sum::<f64>() / n;
        let var = scores.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / n;
        let mut sorted = scores.to_vec();
        sorted.sort_by(f64::total_cmp);
        let mid = sorted.len() / 2;
        let median = if sorted.len() % 2 == 1 {
            sorted[mid]
        } else {
            (sorted[mid - 1] + sorted[mid]) / 2.0
        };
        Some(Summary {
            games: scores.len(),
            mean,
            std: var.sqrt(),
            median,
            min: sorted[0],
            max: sorted[sorted.len() - 1],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_std_median_min_max() {
        let s = Summary::of(&[4.0, 1.0, 3.0, 2.0]).unwrap();
        assert_eq!(
            (s.games, s.mean, s.median, s.min, s.max),
            (4, 2.5, 2.5, 1.0, 4.0)
        );
        assert!((s.std - 1.25f64.sqrt()).abs() < 1e-12);
        assert_eq!(Summary::of(&[7.0, 1.0, 3.0]).unwrap().median, 3.0);
        assert!(Summary::of(&[]).is_none());
    }
}
