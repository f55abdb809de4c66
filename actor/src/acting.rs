//! The stepping loop: steps every environment with epsilon-greedy actions
//! from batched forward passes, builds n-step transitions with their initial
//! priorities and hands them over in batches.
//!
//! The environments are split into groups, each valued by one pass on the
//! inference thread; a group's next pass is asked for as soon as it has
//! stepped, so the network values one group while the others step. Steps,
//! random draws, frame names and transitions come in the same order as with
//! one pass for all the environments, so a seeded run produces the same
//! transitions with any number of groups, except where libtorch computes a
//! Q-value differently in a smaller batch (the last bits of a float).

use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use apex_env::Environment;
use apex_proto::frame_stream::{FrameStream, NamedObs};
use apex_proto::v1::{Frame, Transition};
use bytes::Bytes;
use rand::SeedableRng;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use crate::inference::Passes;
use crate::metrics;
use crate::n_step::{Emitted, End, NStep, Taken};
use crate::{ActorConfig, ActorStats};
use apex_model::policy::{argmax, epsilon_greedy, PolicyNet};

/// Where batches of new frames and the transitions that refer to them go.
pub type Deliver<'a> = dyn FnMut(Vec<Frame>, Vec<Transition>) -> Result<(), tonic::Status> + 'a;

/// The stepping loop's state, on its own thread.
pub struct Acting {
    pub config: ActorConfig,
    pub envs: Vec<Box<dyn Environment>>,
    pub passes: Passes,
    /// Version of the weights the passes use.
    pub version: u64,
    pub stats: Arc<ActorStats>,
}

/// `n` environments in `groups` contiguous groups (at most one each), the
/// larger ones first.
pub fn groups(n: usize, groups: usize) -> Vec<Range<usize>> {
    let g = groups.clamp(1, n.max(1));
    let (size, larger) = (n / g, n % g);
    let mut start = 0;
    (0..g)
        .map(|i| {
            let end = start + size + usize::from(i < larger);
            let r = start..end;
            start = end;
            r
        })
        .collect()
}

impl Acting {
    pub fn run(
        &mut self,
        ready: &mut mpsc::Receiver<PolicyNet>,
        refresh: &Notify,
        stop: &CancellationToken,
        deliver: &mut Deliver,
    ) -> Result<(), tonic::Status> {
        let c = &self.config;
        let n = self.envs.len();
        let actions = self.envs[0].num_actions();
        let epsilons = |step: u64| -> Vec<f64> {
            (0..n)
                .map(|j| {
                    c.exploration
                        .epsilon(c.actor_index * n + j, c.actor_count * n, step)
                })
                .collect()
        };
        let mut eps = epsilons(0);
        let actor = c.actor_index.to_string();
        let label = || [("actor", actor.clone())];
        let report_eps = |eps: &[f64]| {
            ::metrics::gauge!(metrics::EPSILON_MIN, &label())
                .set(eps.iter().copied().fold(1.0, f64::min));
            ::metrics::gauge!(metrics::EPSILON_MAX, &label())
                .set(eps.iter().copied().fold(0.0, f64::max));
        };
        report_eps(&eps);
        ::metrics::gauge!(metrics::WEIGHTS_VERSION, &label()).set(self.version as f64);
        self.stats
            .weights_version
            .store(self.version, Ordering::Relaxed);
        let steps_counter = ::metrics::counter!(metrics::ENV_STEPS, &label());

        let mut rng =
            rand_chacha::ChaCha8Rng::seed_from_u64(c.seed ^ (c.actor_index as u64).rotate_left(32));
        let channels = self.envs[0].obs_shape()[0];
        let mut frames = FrameStream::new(c.codec, channels);
        let mut obs: Vec<NamedObs> = self
            .envs
            .iter_mut()
            .map(|e| frames.name(None, Bytes::copy_from_slice(e.reset())))
            .collect();
        let mut n_steps: Vec<NStep> = (0..n).map(|_| NStep::new(c.n_step, c.gamma)).collect();
        let mut pending = Vec::with_capacity(c.send_batch + c.n_step * n);
        let groups = groups(n, c.inference_groups);
        // Per group, (environment, transition) pairs waiting for the group's
        // next pass to value their bootstrap observations.
        let mut awaiting: Vec<Vec<(usize, Emitted)>> = vec![Vec::new(); groups.len()];
        let mut finished: Vec<Emitted> = Vec::new();
        // Every group of a step is valued with the same weights.
        let mut newer = take_newer(ready, &mut self.version, &self.stats, &label);
        for r in &groups {
            self.passes
                .ask(obs[r.clone()].iter().map(|o| &o.obs[..]), newer.take());
        }
        let mut iteration: u64 = 0;
        while !stop.is_cancelled() {
            if c.max_env_steps
                .is_some_and(|m| self.stats.env_steps.load(Ordering::Relaxed) >= m)
            {
                break;
            }
            for (g, r) in groups.iter().enumerate() {
                let q = self.passes.take();
                let rows: Vec<&[f32]> = q.chunks_exact(actions).collect();
                let row = |j: usize| rows[j - r.start];
                // Transitions this group finished last step get their
                // priorities now that this pass has valued their bootstrap
                // observations.
                for (j, e) in awaiting[g].drain(..) {
                    let max_q_next = row(j)[argmax(row(j))];
                    // 0 asks the server for its largest priority.
                    let priority = e.td_priority(max_q_next).unwrap_or(0.0);
                    pending.push(Transition {
                        priority,
                        ..e.transition
                    });
                }
                for j in r.clone() {
                    let env = &mut self.envs[j];
                    let action = epsilon_greedy(argmax(row(j)), eps[j], actions, &mut rng);
                    let step = env.step(action);
                    let next = frames.name(Some(&obs[j]), Bytes::copy_from_slice(env.obs()));
                    let this = std::mem::replace(&mut obs[j], next);
                    let taken = Taken {
                        action: action as u32,
                        reward: step.reward,
                        q: row(j)[action],
                    };
                    let before = finished.len();
                    n_steps[j].push(
                        this.ids,
                        taken,
                        &obs[j].ids,
                        End::of(step.terminal, step.truncated),
                        &mut finished,
                    );
                    awaiting[g].extend(finished.drain(before..).map(|e| (j, e)));
                    if let Some(game) = step.game {
                        self.stats.record_game(game);
                        ::metrics::counter!(metrics::EPISODES, &label()).increment(1);
                        ::metrics::histogram!(metrics::EPISODE_SCORE, &label())
                            .record(game.raw_score as f64);
                        ::metrics::gauge!(metrics::LAST_SCORE, &label()).set(game.raw_score as f64);
                    }
                    if step.done() {
                        obs[j] = frames.name(None, Bytes::copy_from_slice(env.reset()));
                    }
                }
                // Newer weights serve every group from the next step on.
                let newer = if g == 0 {
                    take_newer(ready, &mut self.version, &self.stats, &label)
                } else {
                    None
                };
                self.passes
                    .ask(obs[r.clone()].iter().map(|o| &o.obs[..]), newer);
            }
            self.stats.env_steps.fetch_add(n as u64, Ordering::Relaxed);
            steps_counter.increment(n as u64);
            if pending.len() >= c.send_batch {
                deliver(frames.take_frames(), std::mem::take(&mut pending))?;
            }
            iteration += 1;
            if c.exploration.decaying(iteration - 1) {
                eps = epsilons(iteration);
                if iteration.is_multiple_of(1000) {
                    report_eps(&eps);
                }
            }
            if iteration.is_multiple_of(c.weights_refresh_steps.max(1)) {
                refresh.notify_one();
            }
        }
        // The last step's transitions go without a bootstrap value: the
        // server gives them its largest priority.
        pending.extend(awaiting.into_iter().flatten().map(|(_, e)| {
            let known = e.transition.discount == 0.0;
            let priority = if known {
                e.td_priority(0.0).unwrap_or(0.0)
            } else {
                0.0
            };
            Transition {
                priority,
                ..e.transition
            }
        }));
        if !pending.is_empty() {
            deliver(frames.take_frames(), pending)?;
        }
        Ok(())
    }
}

/// Newer weights if the poller has them ready.
fn take_newer(
    ready: &mut mpsc::Receiver<PolicyNet>,
    version: &mut u64,
    stats: &ActorStats,
    label: &impl Fn() -> [(&'static str, String); 1],
) -> Option<PolicyNet> {
    let policy = ready.try_recv().ok()?;
    *version = policy.version;
    stats.weights_version.store(*version, Ordering::Relaxed);
    ::metrics::gauge!(metrics::WEIGHTS_VERSION, &label()).set(*version as f64);
    Some(policy)
}

#[cfg(test)]
mod tests {
    use apex_env::{CatchConfig, EnvSpec};
    use apex_model::{Arch, QNet, QNetConfig};
    use apex_proto::v1::Codec;

    use super::*;
    use crate::policy::Exploration;

    #[test]
    fn groups_split_evenly_the_larger_first() {
        assert_eq!(groups(16, 2), vec![0..8, 8..16]);
        assert_eq!(groups(5, 2), vec![0..3, 3..5]);
        assert_eq!(groups(7, 3), vec![0..3, 3..5, 5..7]);
        assert_eq!(groups(1, 2), vec![0..1]);
        assert_eq!(groups(4, 0), vec![0..4]);
    }

    fn config(envs: usize, groups: usize, steps: u64) -> ActorConfig {
        ActorConfig {
            replay_addr: String::new(),
            learner_addr: String::new(),
            env: EnvSpec::Catch(CatchConfig::default()),
            arch: Arch::Mlp { hidden: 16 },
            dueling: true,
            quantiles: None,
            actor_index: 1,
            actor_count: 2,
            envs,
            exploration: Exploration {
                base: 0.4,
                alpha: 3.0,
                start: 1.0,
                decay_steps: 50,
            },
            n_step: 3,
            gamma: 0.99,
            send_batch: 16,
            max_in_flight: 1,
            weights_refresh_steps: 7,
            max_env_steps: Some(steps),
            seed: 5,
            codec: Codec::Lz4,
            token: None,
            tls: Default::default(),
            inference_groups: groups,
            torch_threads: 1,
        }
    }

    /// Everything a seeded run hands over, with a second network arriving
    /// after the first refresh.
    fn play(config: ActorConfig) -> (Vec<Vec<Frame>>, Vec<Vec<Transition>>, u64) {
        let spec = config.env.clone();
        let (shape, actions) = spec.probe().unwrap();
        let net = QNetConfig::new(config.arch, &shape, actions, config.dueling)
            .with_quantiles(config.quantiles);
        let weights = |seed: i64| {
            let vs = tch::nn::VarStore::new(tch::Device::Cpu);
            let _ = QNet::new(&vs.root(), net);
            // Distinct, reproducible weights without touching libtorch's
            // global generator, which other tests share.
            let mut variables: Vec<_> = vs.variables().into_iter().collect();
            variables.sort_by(|a, b| a.0.cmp(&b.0));
            tch::no_grad(|| {
                for (i, (_, mut v)) in variables.into_iter().enumerate() {
                    let k = v.numel() as i64;
                    let w = tch::Tensor::arange(k, (tch::Kind::Float, tch::Device::Cpu))
                        .g_mul_scalar(0.37 + i as f64)
                        .g_add_scalar(seed as f64)
                        .sin()
                        .g_mul_scalar(0.2)
                        .view(v.size().as_slice());
                    v.copy_(&w);
                }
            });
            apex_model::save_weights(&vs).unwrap()
        };
        let first = PolicyNet::from_weights(net, &weights(1), 1).unwrap();
        let envs = (0..config.envs)
            .map(|j| spec.make(config.seed + j as u64).unwrap())
            .collect();
        let (threads, groups) = (config.torch_threads, config.inference_groups);
        let mut acting = Acting {
            config,
            envs,
            passes: Passes::start(first, threads, groups > 1).unwrap(),
            version: 1,
            stats: Arc::new(ActorStats::default()),
        };
        let (tx, mut rx) = mpsc::channel(1);
        let refresh = Notify::new();
        let mut second = Some(PolicyNet::from_weights(net, &weights(2), 2).unwrap());
        let (mut frames, mut batches) = (Vec::new(), Vec::new());
        // The second network arrives with the first delivery, at the same
        // step whatever the groups.
        let mut deliver = |f: Vec<Frame>, t: Vec<Transition>| {
            frames.push(f);
            batches.push(t);
            if let Some(p) = second.take() {
                tx.try_send(p).unwrap();
            }
            Ok(())
        };
        acting
            .run(&mut rx, &refresh, &CancellationToken::new(), &mut deliver)
            .unwrap();
        let version = acting.stats.weights_version.load(Ordering::Relaxed);
        (frames, batches, version)
    }

    #[test]
    fn a_seeded_run_hands_over_the_same_transitions_with_any_groups() {
        let (frames, batches, version) = play(config(6, 1, 600));
        assert_eq!(version, 2, "the newer network was taken");
        let transitions: usize = batches.iter().map(Vec::len).sum();
        assert!(transitions >= 600 - 6 * 3, "{transitions} transitions");
        assert!(
            batches.iter().flatten().all(|t| t.priority >= 0.0),
            "priorities are absolute TD errors"
        );
        // Priorities apart: libtorch may round a Q-value differently in a
        // smaller batch.
        let apart = |batches: &[Vec<Transition>]| -> (Vec<Vec<Transition>>, Vec<f32>) {
            let priorities = batches.iter().flatten().map(|t| t.priority).collect();
            let rest = batches
                .iter()
                .map(|b| {
                    b.iter()
                        .map(|t| Transition {
                            priority: 0.0,
                            ..t.clone()
                        })
                        .collect()
                })
                .collect();
            (rest, priorities)
        };
        let (rest, priorities) = apart(&batches);
        for g in [2, 3, 6] {
            let (f, b, v) = play(config(6, g, 600));
            assert_eq!(v, 2);
            assert_eq!(f, frames, "{g} groups: the same frames");
            let (r, p) = apart(&b);
            assert_eq!(r, rest, "{g} groups: the same transitions");
            for (x, y) in p.iter().zip(&priorities) {
                assert!((x - y).abs() <= 1e-5 * y.abs().max(1.0), "{x} against {y}");
            }
        }
    }
}
