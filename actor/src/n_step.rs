//! n-step transitions: the discounted sum of the next n rewards, then a
//! bootstrap from the observation n steps later. A terminal cuts the sum and
//! drops the bootstrap; a truncation cuts the sum but keeps the bootstrap.

use std::collections::VecDeque;

use apex_proto::v1::Transition;
use bytes::Bytes;

/// How an episode's step ended it, if it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// No future reward: no bootstrap.
    Terminal,
    /// Cut off by a time limit: bootstrap from the last observation.
    Truncated,
}

impl End {
    pub fn of(terminal: bool, truncated: bool) -> Option<End> {
        match (terminal, truncated) {
            (true, _) => Some(End::Terminal),
            (false, true) => Some(End::Truncated),
            (false, false) => None,
        }
    }
}

pub struct NStep {
    n: usize,
    gamma: f32,
    pending: VecDeque<(Bytes, u32, f32)>,
}

impl NStep {
    pub fn new(n: usize, gamma: f32) -> Self {
        assert!(n >= 1, "n-step needs n >= 1");
        NStep {
            n,
            gamma,
            pending: VecDeque::with_capacity(n),
        }
    }

    /// Records one step from `obs` and appends the transitions it completes to `out`.
    pub fn push(
        &mut self,
        obs: Bytes,
        action: u32,
        reward: f32,
        next_obs: &Bytes,
        end: Option<End>,
        out: &mut Vec<Transition>,
    ) {
        self.pending.push_back((obs, action, reward));
        match end {
            Some(end) => {
                while !self.pending.is_empty() {
                    let discount = match end {
                        End::Terminal => 0.0,
                        End::Truncated => self.gamma.powi(self.pending.len() as i32),
                    };
                    out.push(self.emit(next_obs, discount));
                }
            }
            None if self.pending.len() == self.n => {
                out.push(self.emit(next_obs, self.gamma.powi(self.n as i32)))
            }
            None => {}
        }
    }

    /// The transition starting at the oldest pending step.
    fn emit(&mut self, next_obs: &Bytes, discount: f32) -> Transition {
        let reward = self
            .pending
            .iter()
            .rev()
            .fold(0.0, |acc, &(_, _, r)| r + self.gamma * acc);
        let (obs, action, _) = self.pending.pop_front().expect("a pending step");
        Transition {
            obs,
            action,
            reward,
            discount,
            next_obs: next_obs.clone(),
            priority: 0.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(i: u8) -> Bytes {
        Bytes::from(vec![i])
    }

    /// Plays rewards r_0.. with observations 0, 1, 2, ...; `end` marks the last step.
    fn run(n: usize, rewards: &[f32], end: Option<(bool, bool)>) -> Vec<Transition> {
        let mut s = NStep::new(n, 0.5);
        let mut out = Vec::new();
        for (i, &r) in rewards.iter().enumerate() {
            let last = i + 1 == rewards.len();
            let (terminal, truncated) = if last {
                end.unwrap_or((false, false))
            } else {
                (false, false)
            };
            s.push(
                obs(i as u8),
                i as u32,
                r,
                &obs(i as u8 + 1),
                End::of(terminal, truncated),
                &mut out,
            );
        }
        out
    }

    fn summary(t: &[Transition]) -> Vec<(u8, f32, f32, u8)> {
        t.iter()
            .map(|t| (t.obs[0], t.reward, t.discount, t.next_obs[0]))
            .collect()
    }

    #[test]
    fn full_windows_sum_n_rewards_and_bootstrap_n_ahead() {
        // n = 3, gamma 0.5: 1 + 0.5*2 + 0.25*4 = 3.
        let t = run(3, &[1.0, 2.0, 4.0, 8.0], None);
        assert_eq!(
            summary(&t),
            vec![(0, 3.0, 0.125, 3), (1, 2.0 + 2.0 + 2.0, 0.125, 4)]
        );
        assert_eq!(t[1].action, 1);
    }

    #[test]
    fn an_episode_end_inside_the_window_cuts_the_sum_and_the_bootstrap() {
        let t = run(3, &[1.0, 2.0, 4.0, 8.0], Some((true, false)));
        assert_eq!(
            summary(&t),
            vec![
                (0, 3.0, 0.125, 3),
                (1, 6.0, 0.0, 4),
                (2, 8.0, 0.0, 4),
                (3, 8.0, 0.0, 4)
            ]
        );
    }

    #[test]
    fn truncation_keeps_the_bootstrap_over_the_remaining_steps() {
        let t = run(3, &[1.0, 2.0, 4.0], Some((false, true)));
        assert_eq!(
            summary(&t),
            vec![(0, 3.0, 0.125, 3), (1, 4.0, 0.25, 3), (2, 4.0, 0.5, 3)]
        );
    }

    #[test]
    fn n_larger_than_the_episode_and_one_step() {
        let t = run(5, &[1.0, 1.0], Some((true, false)));
        assert_eq!(summary(&t), vec![(0, 1.5, 0.0, 2), (1, 1.0, 0.0, 2)]);
        let t = run(1, &[1.0, 2.0], Some((true, false)));
        assert_eq!(summary(&t), vec![(0, 1.0, 0.5, 1), (1, 2.0, 0.0, 2)]);
    }

    #[test]
    fn a_life_loss_terminal_is_a_terminal() {
        // The environment reports a terminal life loss as terminal: no bootstrap.
        let t = run(2, &[0.0, 1.0], Some((true, false)));
        assert!(t.iter().all(|t| t.discount == 0.0));
    }
}
