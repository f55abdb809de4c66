//! n-step transitions: the discounted sum of the next n rewards, then a
//! bootstrap from the observation n steps later. A terminal cuts the sum and
//! drops the bootstrap; a truncation cuts the sum but keeps the bootstrap.
//! Observations are the frame ids the insert stream gave them.

use std::collections::VecDeque;

use apex_proto::priority::clamp_priority;
use apex_proto::v1::Transition;

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

/// What the agent did at one step: the action, the (clipped) reward it got
/// and the Q-value its network gave that action.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Taken {
    pub action: u32,
    pub reward: f32,
    pub q: f32,
}

/// A finished n-step transition, before its priority is known.
#[derive(Debug, Clone, PartialEq)]
pub struct Emitted {
    pub transition: Transition,
    /// Q(s_t, a_t) from the actor's network when it acted.
    pub q: f32,
    /// The bootstrap observation ended the episode (a truncation): the
    /// actor's next forward pass sees the reset observation instead.
    pub ends_episode: bool,
}

impl Emitted {
    /// |n-step TD error| given max_a Q(next_obs, a) (ignored when the
    /// discount is 0), clamped into the replay's range (a diverged copy of
    /// the network must not get its inserts refused); `None` when the
    /// bootstrap value is not at hand.
    pub fn td_priority(&self, max_q_next: f32) -> Option<f32> {
        let t = &self.transition;
        let td = if t.discount == 0.0 {
            t.reward - self.q
        } else if self.ends_episode {
            return None;
        } else {
            t.reward + t.discount * max_q_next - self.q
        };
        Some(clamp_priority(td.abs()))
    }
}

pub struct NStep {
    n: usize,
    gamma: f32,
    pending: VecDeque<(Vec<u64>, Taken)>,
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
        obs: Vec<u64>,
        taken: Taken,
        next_obs: &[u64],
        end: Option<End>,
        out: &mut Vec<Emitted>,
    ) {
        self.pending.push_back((obs, taken));
        match end {
            Some(end) => {
                while !self.pending.is_empty() {
                    let discount = match end {
                        End::Terminal => 0.0,
                        End::Truncated => self.gamma.powi(self.pending.len() as i32),
                    };
                    out.push(self.emit(next_obs, discount, true));
                }
            }
            None if self.pending.len() == self.n => {
                out.push(self.emit(next_obs, self.gamma.powi(self.n as i32), false))
            }
            None => {}
        }
    }

    /// The transition starting at the oldest pending step.
    fn emit(&mut self, next_obs: &[u64], discount: f32, ends_episode: bool) -> Emitted {
        let reward = self
            .pending
            .iter()
            .rev()
            .fold(0.0, |acc, (_, t)| t.reward + self.gamma * acc);
        let (obs, taken) = self.pending.pop_front().expect("a pending step");
        Emitted {
            transition: Transition {
                obs,
                action: taken.action,
                reward,
                discount,
                next_obs: next_obs.to_vec(),
                priority: 0.0,
            },
            q: taken.q,
            ends_episode,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(i: u8) -> Vec<u64> {
        vec![i as u64]
    }

    /// Plays rewards r_0.. with observations 0, 1, 2, ...; `end` marks the last step.
    fn run(n: usize, rewards: &[f32], end: Option<(bool, bool)>) -> Vec<Transition> {
        emitted(n, rewards, end)
            .into_iter()
            .map(|e| e.transition)
            .collect()
    }

    fn emitted(n: usize, rewards: &[f32], end: Option<(bool, bool)>) -> Vec<Emitted> {
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
                Taken {
                    action: i as u32,
                    reward: r,
                    q: 0.25,
                },
                &obs(i as u8 + 1),
                End::of(terminal, truncated),
                &mut out,
            );
        }
        out
    }

    fn summary(t: &[Transition]) -> Vec<(u8, f32, f32, u8)> {
        t.iter()
            .map(|t| (t.obs[0] as u8, t.reward, t.discount, t.next_obs[0] as u8))
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
    fn priorities_are_the_n_step_td_error() {
        // gamma 0.5, n 2, Q(s_t, a_t) = 0.25 everywhere.
        let e = emitted(2, &[1.0, 2.0, 4.0], None);
        assert_eq!(e.len(), 2);
        // R = 1 + 0.5 * 2 = 2; target = 2 + 0.25 * maxQ(3.0) = 2.75; |2.75 - 0.25| = 2.5.
        assert_eq!(e[0].td_priority(3.0), Some(2.5));
        let e = emitted(2, &[1.0, 2.0], Some((true, false)));
        // Terminal: R - Q, whatever the next value.
        assert_eq!(e[0].td_priority(100.0), Some(1.75));
        let e = emitted(2, &[1.0], Some((false, true)));
        assert_eq!(
            e[0].td_priority(3.0),
            None,
            "after a truncation the bootstrap is not at hand"
        );
        // A diverged network's huge (or infinite) values still give a
        // priority the replay takes.
        let e = emitted(2, &[1.0, 2.0, 4.0], None);
        assert_eq!(
            e[0].td_priority(1.0e9),
            Some(apex_proto::priority::MAX_PRIORITY)
        );
        assert_eq!(
            e[0].td_priority(f32::INFINITY),
            Some(apex_proto::priority::MAX_PRIORITY)
        );
    }

    #[test]
    fn a_life_loss_terminal_is_a_terminal() {
        // The environment reports a terminal life loss as terminal: no bootstrap.
        let t = run(2, &[0.0, 1.0], Some((true, false)));
        assert!(t.iter().all(|t| t.discount == 0.0));
    }
}
