//! From settings to each service's configuration.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
#[cfg(feature = "torch")]
use apex_actor::policy::Exploration;
#[cfg(feature = "torch")]
use apex_actor::ActorConfig;
#[cfg(feature = "torch")]
use apex_env::EnvSpec;
#[cfg(feature = "torch")]
use apex_evaluator::{EnvSteps, EvaluatorConfig};
#[cfg(feature = "torch")]
use apex_learner::dqn::{DqnConfig, LrDecay, Munchausen, Optimizer, TdLoss};
#[cfg(feature = "torch")]
use apex_learner::LearnerConfig;
#[cfg(feature = "torch")]
use apex_model::{Arch, QNetConfig};
use apex_replay_server::limiter::RateLimit;
use apex_replay_server::store::StoreConfig;
use apex_replay_server::ReplayConfig;
#[cfg(feature = "torch")]
use apex_telemetry::tensorboard::SummaryWriter;

use super::settings::*;
use crate::env_cmd::GameArgs;

impl StoreArgs {
    pub(super) fn replay_config(
        &self,
        seed: u64,
        checkpoint: &CheckpointArgs,
        dir: Option<PathBuf>,
    ) -> ReplayConfig {
        ReplayConfig {
            store: StoreConfig {
                capacity: self.capacity,
                shards: self.shards.max(1),
                alpha: self.alpha,
                seed,
            },
            limit: RateLimit {
                min_size: self.min_size,
                samples_per_insert: (self.samples_per_insert > 0.0)
                    .then_some(self.samples_per_insert),
                error_buffer: self.error_buffer,
            },
            sample_timeout: Duration::from_secs(10),
            checkpoint_every: dir.as_ref().and_then(|_| {
                (checkpoint.checkpoint_every_secs > 0)
                    .then(|| Duration::from_secs(checkpoint.checkpoint_every_secs))
            }),
            checkpoint_dir: dir,
            ..ReplayConfig::in_memory(self.capacity, self.min_size, self.alpha, seed)
        }
    }
}

#[cfg(feature = "torch")]
pub(super) fn learner_config(
    game: &GameArgs,
    net: &NetArgs,
    t: &TrainArgs,
    replay_addr: String,
    run_dir: Option<PathBuf>,
) -> Result<LearnerConfig> {
    let device = apex_model::device(t.cuda)?;
    let spec = game.spec();
    let (obs_shape, num_actions) = spec.probe()?;
    let arch = Arch::for_observation(&obs_shape);
    // Read once, here, on the thread that starts the learner.
    let torch_threads = apex_model::threads::torch_threads_here();
    Ok(LearnerConfig {
        arch,
        replay_addr,
        obs_shape,
        num_actions,
        dueling: net.dueling.into(),
        quantiles: net.quantiles()?,
        dqn: t.dqn()?,
        batch_size: t.batch_size,
        publish_every: t.publish_every,
        checkpoint_every: t.checkpoint_every,
        run_dir,
        cuda: t.cuda,
        max_updates: t.max_updates,
        prefetch: 2,
        input_workers: t.input_workers.map_or_else(
            || apex_learner::default_input_workers(device),
            |w| w as usize,
        ),
        batch_slices: t.batch_slices.map_or_else(
            || apex_learner::dqn::default_batch_slices(device, arch, torch_threads),
            |s| s as usize,
        ),
        torch_threads,
        beta_start: t.beta_start,
        beta_end: t.beta_end,
        beta_anneal_updates: t.beta_anneal_updates,
        tensorboard: None,
        token: None,
        tls: Default::default(),
    })
}

#[cfg(feature = "torch")]
pub(super) fn actor_config(
    game: &GameArgs,
    net: &NetArgs,
    a: &ActArgs,
    index: usize,
    count: usize,
    replay: String,
    learner: String,
) -> Result<ActorConfig> {
    let env = game.spec();
    Ok(ActorConfig {
        replay_addr: replay,
        learner_addr: learner,
        arch: Arch::for_observation(&env.probe()?.0),
        env,
        dueling: net.dueling.into(),
        quantiles: net.quantiles()?,
        actor_index: index,
        actor_count: count,
        envs: a.envs,
        exploration: Exploration {
            base: a.epsilon_base,
            alpha: a.epsilon_alpha,
            start: a.epsilon_start,
            decay_steps: a.epsilon_decay_steps,
        },
        n_step: a.n_step,
        gamma: a.gamma,
        send_batch: a.send_batch,
        max_in_flight: a.max_in_flight,
        weights_refresh_steps: a.weights_refresh_steps,
        max_env_steps: a.max_env_steps,
        seed: game.seed,
        codec: a.frame_codec.into(),
        token: None,
        tls: Default::default(),
        inference_groups: a.inference_groups,
        torch_threads: a.actor_torch_threads,
    })
}

#[cfg(feature = "torch")]
impl TrainArgs {
    pub(super) fn dqn(&self) -> Result<DqnConfig> {
        let learning_rate_decay = match (self.learning_rate_end, self.learning_rate_decay_updates) {
            (None, None) => None,
            (Some(end), Some(over_updates)) if end >= 0.0 && over_updates > 0 => {
                Some(LrDecay { end, over_updates })
            }
            (Some(_), Some(_)) => anyhow::bail!(
                "--learning-rate-end must be at least 0 and --learning-rate-decay-updates at least 1"
            ),
            _ => anyhow::bail!(
                "--learning-rate-end and --learning-rate-decay-updates go together: give both or neither"
            ),
        };
        Ok(DqnConfig {
            optimizer: match self.optimizer {
                OptimizerName::Adam => Optimizer::Adam {
                    eps: self.optimizer_eps,
                },
                OptimizerName::Rmsprop => Optimizer::CentredRmsProp {
                    decay: self.rmsprop_decay,
                    eps: self.optimizer_eps,
                },
            },
            learning_rate: self.learning_rate,
            learning_rate_decay,
            max_grad_norm: self.max_grad_norm,
            target_update_every: self.target_update_every,
            double: self.double.into(),
            loss: match self.loss {
                LossName::Huber => TdLoss::Huber,
                LossName::Mse => TdLoss::Mse,
            },
            munchausen: self.munchausen()?,
        })
    }

    /// Munchausen's settings, when on, checked.
    fn munchausen(&self) -> Result<Option<Munchausen>> {
        if !bool::from(self.munchausen) {
            return Ok(None);
        }
        anyhow::ensure!(
            self.munchausen_tau > 0.0,
            "--munchausen-tau {} must be above 0 (the paper's is 0.03)",
            self.munchausen_tau
        );
        anyhow::ensure!(
            self.munchausen_alpha >= 0.0 && self.munchausen_clip_min < 0.0,
            "--munchausen-alpha {} must be at least 0 and --munchausen-clip-min {} below 0 (the paper's: 0.9 and -1)",
            self.munchausen_alpha,
            self.munchausen_clip_min
        );
        Ok(Some(Munchausen {
            alpha: self.munchausen_alpha,
            tau: self.munchausen_tau,
            clip_min: self.munchausen_clip_min,
        }))
    }
}

/// Evaluation games use seeds apart from the actors' (which count from the game seed).
pub const EVAL_SEED_OFFSET: u64 = 1_000_000;
/// Evaluation games stepped together.
pub const PARALLEL_GAMES: usize = 10;

#[cfg(feature = "torch")]
impl EvalArgs {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn evaluator_config(
        &self,
        game: &GameArgs,
        net: QNetConfig,
        learner_addr: String,
        env_steps: EnvSteps,
        run_dir: Option<PathBuf>,
        tensorboard: Option<SummaryWriter>,
    ) -> EvaluatorConfig {
        EvaluatorConfig {
            learner_addr,
            env_steps,
            env: game.spec(),
            net,
            protocols: self.eval_protocols.clone(),
            episodes: self.eval_episodes,
            epsilon: self.eval_epsilon,
            every: Duration::from_secs(self.eval_every_secs),
            budget: self.eval_budget,
            parallel: PARALLEL_GAMES,
            seed: game.seed + EVAL_SEED_OFFSET,
            run_dir,
            tensorboard,
            max_rounds: None,
            token: None,
            tls: Default::default(),
        }
    }
}

/// The network a game is played with.
#[cfg(feature = "torch")]
pub fn net_config(spec: &EnvSpec, dueling: bool) -> Result<QNetConfig> {
    let (shape, actions) = spec.probe()?;
    Ok(QNetConfig::new(
        Arch::for_observation(&shape),
        &shape,
        actions,
        dueling,
    ))
}
