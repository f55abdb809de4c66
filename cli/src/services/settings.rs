//! The settings every service takes, as command-line arguments and preset
//! sections ([replay], [learner], [actor], [net], [local]).

use std::path::PathBuf;

use anyhow::Result;
use apex_env::Protocol;
use apex_proto::auth::Token;
use apex_proto::tls::{Tls, TlsFiles};
use apex_proto::v1::Codec;
use clap::{Args, ValueEnum};
use serde::Serialize;

use crate::env_cmd::{GameArgs, OnOff};
use crate::preset::parse_switch;

/// The parser of a count that must be at least 1, where 0 would silently
/// mean "never" (a target network never synced, weights never published)
/// or break a service at its first step. Presets become clap defaults, so
/// a preset's 0 is refused by it too.
pub fn at_least_one<T>(value: &str) -> std::result::Result<T, String>
where
    T: std::str::FromStr + Default + PartialEq,
    T::Err: std::fmt::Display,
{
    let n: T = value
        .trim()
        .parse()
        .map_err(|e| format!("{e}: give a whole number of at least 1"))?;
    if n == T::default() {
        return Err("must be at least 1".into());
    }
    Ok(n)
}

/// Evaluation settings ([eval] in a run's config.toml).
#[derive(Args, Clone, Serialize)]
pub struct EvalArgs {
    /// Evaluation games per protocol per round (0: no evaluation).
    #[arg(long, env = "APEX_EVAL_EPISODES", default_value_t = 10)]
    pub eval_episodes: usize,
    /// Probability of a random action in evaluation games (Ape-X, DQN: 0.05).
    #[arg(long, env = "APEX_EVAL_EPSILON", default_value_t = 0.05)]
    pub eval_epsilon: f64,
    /// Protocols each round plays, comma-separated.
    #[arg(
        long,
        env = "APEX_EVAL_PROTOCOLS",
        value_delimiter = ',',
        default_value = "v4,v5"
    )]
    #[serde(serialize_with = "protocols_text")]
    pub eval_protocols: Vec<Protocol>,
    /// Seconds between the starts of evaluation rounds, at least.
    #[arg(long, env = "APEX_EVAL_EVERY_SECS", default_value_t = 300)]
    pub eval_every_secs: u64,
    /// Most wall time evaluation may use, as a share of one core: a round
    /// that took t seconds waits at least t / budget before the next.
    #[arg(long, env = "APEX_EVAL_BUDGET", default_value_t = 0.1)]
    pub eval_budget: f64,
}

fn protocols_text<S: serde::Serializer>(v: &[Protocol], s: S) -> Result<S::Ok, S::Error> {
    let names: Vec<String> = v.iter().map(Protocol::to_string).collect();
    s.collect_str(&names.join(","))
}

impl EvalArgs {
    pub fn enabled(&self) -> bool {
        self.eval_episodes > 0 && !self.eval_protocols.is_empty()
    }

    pub fn check(&self) -> Result<()> {
        anyhow::ensure!(
            (0.0..=1.0).contains(&self.eval_epsilon),
            "--eval-epsilon {} must be in [0, 1]",
            self.eval_epsilon
        );
        anyhow::ensure!(
            self.eval_budget > 0.0,
            "--eval-budget {} must be above 0 (use --eval-episodes 0 to turn evaluation off)",
            self.eval_budget
        );
        Ok(())
    }
}

/// Replay storage settings ([replay] in a preset).
#[derive(Args, Clone, Serialize)]
pub struct StoreArgs {
    /// Transitions held before the oldest are evicted.
    #[arg(long, env = "APEX_CAPACITY", value_parser = at_least_one::<usize>)]
    pub capacity: usize,
    /// Transitions needed before the learner may sample.
    #[arg(long, env = "APEX_MIN_SIZE")]
    pub min_size: usize,
    /// Priority exponent (0: uniform sampling).
    #[arg(long, env = "APEX_ALPHA")]
    pub alpha: f64,
    /// Shards, each with its own lock: inserts from many actors go on in parallel.
    #[arg(long, env = "APEX_SHARDS", value_parser = at_least_one::<usize>)]
    pub shards: usize,
    /// Sampled per inserted transition, held by the rate limiter (0: no ratio).
    #[arg(long, env = "APEX_SAMPLES_PER_INSERT")]
    pub samples_per_insert: f64,
    /// How far (in sampled transitions) sampling and inserting may drift from the ratio.
    #[arg(long, env = "APEX_ERROR_BUFFER")]
    pub error_buffer: f64,
}

/// Replay persistence (where, how often): deployment settings, not in presets.
#[derive(Args, Clone)]
pub struct CheckpointArgs {
    /// Seconds between replay checkpoints (0: only at shutdown).
    #[arg(long, env = "APEX_CHECKPOINT_EVERY_SECS", default_value_t = 600)]
    pub checkpoint_every_secs: u64,
}

#[derive(Clone, Copy, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerName {
    Adam,
    /// Centred RMSProp, no momentum.
    Rmsprop,
}

#[derive(Clone, Copy, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LossName {
    Huber,
    Mse,
}

/// Learner settings ([learner] in a preset).
#[derive(Args, Clone, Serialize)]
pub struct TrainArgs {
    #[arg(long, env = "APEX_BATCH_SIZE", value_parser = at_least_one::<usize>)]
    pub batch_size: usize,
    #[arg(long, env = "APEX_OPTIMIZER")]
    pub optimizer: OptimizerName,
    #[arg(long, env = "APEX_LEARNING_RATE")]
    pub learning_rate: f64,
    /// Where the learning rate falls to, linearly, over
    /// --learning-rate-decay-updates, then stays [default: no decay].
    #[arg(long, env = "APEX_LEARNING_RATE_END")]
    pub learning_rate_end: Option<f64>,
    /// Updates over which the learning rate falls to --learning-rate-end.
    #[arg(long, env = "APEX_LEARNING_RATE_DECAY_UPDATES")]
    pub learning_rate_decay_updates: Option<u64>,
    /// Epsilon of Adam or RMSProp.
    #[arg(long, env = "APEX_OPTIMIZER_EPS")]
    pub optimizer_eps: f64,
    /// RMSProp's moving-average decay.
    #[arg(long, env = "APEX_RMSPROP_DECAY")]
    pub rmsprop_decay: f64,
    #[arg(long, env = "APEX_MAX_GRAD_NORM")]
    pub max_grad_norm: f64,
    /// Updates between syncs of the target network.
    #[arg(long, env = "APEX_TARGET_UPDATE_EVERY", value_parser = at_least_one::<u64>)]
    pub target_update_every: u64,
    /// Double-DQN targets (off: the target network's max).
    #[arg(long, env = "APEX_DOUBLE")]
    pub double: OnOff,
    /// How a TD error d becomes a loss: huber (d^2/2 within 1, |d| - 1/2
    /// beyond) or mse (d^2/2 everywhere).
    #[arg(long, env = "APEX_LOSS", default_value = "huber")]
    pub loss: LossName,
    /// Munchausen-DQN targets (a log-policy bonus on the reward, a soft
    /// bootstrap), in place of --double's.
    #[arg(long, env = "APEX_MUNCHAUSEN", default_value = "off")]
    pub munchausen: OnOff,
    /// Munchausen's bonus scale.
    #[arg(long, env = "APEX_MUNCHAUSEN_ALPHA", default_value_t = 0.9)]
    pub munchausen_alpha: f64,
    /// Munchausen's entropy temperature (above 0).
    #[arg(long, env = "APEX_MUNCHAUSEN_TAU", default_value_t = 0.03)]
    pub munchausen_tau: f64,
    /// Munchausen's floor on the bonus's log-probability term (below 0).
    #[arg(long, env = "APEX_MUNCHAUSEN_CLIP_MIN", default_value_t = -1.0, allow_negative_numbers = true)]
    pub munchausen_clip_min: f64,
    /// Importance-sampling exponent at the start, annealed linearly to --beta-end.
    #[arg(long, env = "APEX_BETA_START")]
    pub beta_start: f64,
    #[arg(long, env = "APEX_BETA_END")]
    pub beta_end: f64,
    /// Updates over which beta goes from start to end.
    #[arg(long, env = "APEX_BETA_ANNEAL_UPDATES")]
    pub beta_anneal_updates: u64,
    /// Updates between weight publications.
    #[arg(long, env = "APEX_PUBLISH_EVERY", value_parser = at_least_one::<u64>)]
    pub publish_every: u64,
    /// Updates between checkpoints (one is written at the end too).
    #[arg(long, env = "APEX_CHECKPOINT_EVERY", value_parser = at_least_one::<u64>)]
    pub checkpoint_every: u64,
    /// Stop after this many updates.
    #[arg(long, env = "APEX_MAX_UPDATES")]
    pub max_updates: Option<u64>,
    /// Train on CUDA (--cuda, --cuda=on); without a usable GPU apex stops
    /// at start rather than train on the CPU. --cuda=false runs a GPU
    /// preset on the CPU.
    #[arg(
        long,
        env = "APEX_CUDA",
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        default_value = "false",
        value_parser = parse_switch
    )]
    pub cuda: bool,
    /// Sample calls in flight, each decoded on its own thread [default: one
    /// per core with --cuda (up to 8), else 1].
    #[arg(long, env = "APEX_INPUT_WORKERS", value_parser = clap::value_parser!(u64).range(1..=64))]
    pub input_workers: Option<u64>,
    /// Slices each CPU batch is taken in side by side, one thread each (1:
    /// whole) [default: 2 on the CPU with two or more libtorch threads,
    /// else 1].
    #[arg(long, env = "APEX_BATCH_SLICES", value_parser = clap::value_parser!(u64).range(1..=16))]
    pub batch_slices: Option<u64>,
}

/// Actor settings ([actor] in a preset).
#[derive(Args, Clone, Serialize)]
pub struct ActArgs {
    /// Environments stepped together by one actor (one batched forward pass).
    #[arg(long, env = "APEX_ENVS", value_parser = at_least_one::<usize>)]
    pub envs: usize,
    #[arg(long, env = "APEX_N_STEP", value_parser = at_least_one::<usize>)]
    pub n_step: usize,
    #[arg(long, env = "APEX_GAMMA")]
    pub gamma: f32,
    /// Environment i of N explores with base^(1 + alpha i / (N - 1)).
    #[arg(long, env = "APEX_EPSILON_BASE")]
    pub epsilon_base: f64,
    #[arg(long, env = "APEX_EPSILON_ALPHA")]
    pub epsilon_alpha: f64,
    /// Epsilon at the first step, decayed linearly to the ladder's value.
    #[arg(long, env = "APEX_EPSILON_START")]
    pub epsilon_start: f64,
    /// Steps of each environment over which epsilon decays (0: none).
    #[arg(long, env = "APEX_EPSILON_DECAY_STEPS")]
    pub epsilon_decay_steps: u64,
    /// Transitions per insert request.
    #[arg(long, env = "APEX_SEND_BATCH", value_parser = at_least_one::<usize>)]
    pub send_batch: usize,
    /// Insert requests each actor may have unacknowledged.
    #[arg(long, env = "APEX_MAX_IN_FLIGHT", value_parser = at_least_one::<usize>)]
    pub max_in_flight: usize,
    /// Steps of each environment between weight refreshes (100 = 400 Atari frames).
    #[arg(long, env = "APEX_WEIGHTS_REFRESH_STEPS", value_parser = at_least_one::<u64>)]
    pub weights_refresh_steps: u64,
    /// Stop each actor after this many agent steps of its own (per actor:
    /// `apex local --total-env-steps` counts all actors together).
    #[arg(long, env = "APEX_MAX_ENV_STEPS")]
    pub max_env_steps: Option<u64>,
    /// How actors compress frames for the replay.
    #[arg(long, env = "APEX_FRAME_CODEC")]
    pub frame_codec: CodecName,
    /// Groups of each actor's environments, one forward pass each on its
    /// inference thread while the stepping thread steps the others (1: the
    /// stepping thread runs every pass itself). More than 1 pays only where
    /// a core is free for the inference thread.
    #[arg(long, env = "APEX_INFERENCE_GROUPS", default_value_t = 1, value_parser = at_least_one::<usize>)]
    pub inference_groups: usize,
    /// libtorch threads of each actor's inference thread (0: libtorch's default).
    #[arg(long, env = "APEX_ACTOR_TORCH_THREADS", default_value_t = 1)]
    pub actor_torch_threads: usize,
}

impl ActArgs {
    /// Refuses settings that can never work, before anything starts.
    pub(super) fn check(&self) -> Result<()> {
        // Counts that must be at least 1 are refused by their parsers
        // (`at_least_one`), for flags, variables and presets alike.
        anyhow::ensure!(
            (0.0..=1.0).contains(&self.gamma),
            "--gamma {} must be in [0, 1]",
            self.gamma
        );
        Ok(())
    }
}

#[derive(Clone, Copy, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CodecName {
    None,
    Lz4,
    Zstd,
}

impl From<CodecName> for Codec {
    fn from(c: CodecName) -> Codec {
        match c {
            CodecName::None => Codec::None,
            CodecName::Lz4 => Codec::Lz4,
            CodecName::Zstd => Codec::Zstd,
        }
    }
}

/// The shared secret of every apex service (see apex_proto::auth).
#[derive(Args, Clone, Default)]
pub struct AuthArgs {
    /// A file holding the bearer token every gRPC call must carry; without
    /// it, the variable APEX_TOKEN; with neither, the services are open.
    #[arg(long, env = "APEX_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// TLS: this process's certificate chain (PEM). Its servers serve TLS;
    /// it is presented to servers that ask for a client certificate.
    #[arg(long, env = "APEX_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// TLS: the private key of --tls-cert (PEM).
    #[arg(long, env = "APEX_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// TLS: verify https:// servers against this CA (PEM) instead of the
    /// system's roots.
    #[arg(long, env = "APEX_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// mTLS: serve only clients whose certificate this CA (PEM) signed.
    #[arg(long, env = "APEX_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// TLS: the name servers' certificates carry, where it is not the
    /// address's host.
    #[arg(long, env = "APEX_TLS_DOMAIN")]
    pub tls_domain: Option<String>,
}

/// What a service shows and asks of its peers: its token and its TLS
/// settings, both handed to the service's config.
pub struct Access {
    pub token: Option<Token>,
    pub tls: Tls,
}

impl AuthArgs {
    /// Reads the token and the TLS files; a bad file fails here, at start.
    pub fn load(&self) -> Result<Access> {
        let tls = Tls::load(&TlsFiles {
            cert: self.tls_cert.clone(),
            key: self.tls_key.clone(),
            ca: self.tls_ca.clone(),
            client_ca: self.tls_client_ca.clone(),
            domain: self.tls_domain.clone(),
        })?;
        let token = Token::configured(self.token_file.as_deref())?;
        Ok(Access { token, tls })
    }
}

/// Network settings both the learner and the actors must agree on ([net]).
#[derive(Args, Clone, Serialize)]
pub struct NetArgs {
    /// Dueling value and advantage heads.
    #[arg(long, env = "APEX_DUELING")]
    pub dueling: OnOff,
    /// Quantiles of each action's return the head predicts, trained with
    /// QR-DQN's quantile Huber loss (2 to 256; 0: the expected return, DQN).
    #[arg(long, env = "APEX_QUANTILES", default_value_t = 0)]
    pub quantiles: i64,
}

#[cfg(feature = "torch")]
impl NetArgs {
    /// The quantile head asked for, if any; a count no head takes is
    /// refused here, where every service that builds the network starts.
    pub fn quantiles(&self) -> Result<Option<apex_model::Quantiles>> {
        match self.quantiles {
            0 => Ok(None),
            n => Ok(Some(apex_model::Quantiles::new(n)?)),
        }
    }

    /// The network for `spec`'s game.
    pub fn for_game(&self, spec: &apex_env::EnvSpec) -> Result<apex_model::QNetConfig> {
        Ok(super::net_config(spec, self.dueling.into())?.with_quantiles(self.quantiles()?))
    }
}

/// `apex local`'s own settings ([local]).
#[derive(Args, Clone, Serialize)]
pub struct LocalSettings {
    /// Actor loops, each with its own environments and batched forward pass.
    #[arg(long, env = "APEX_ACTORS", value_parser = at_least_one::<usize>)]
    pub actors: usize,
    /// Stop once all actors together have made this many agent steps since
    /// this start (--max-env-steps counts each actor's own), as Ctrl-C stops
    /// a run (checkpoints), then evaluate the checkpoint once more into
    /// eval.csv. A resumed run makes this many more.
    #[arg(long, env = "APEX_TOTAL_ENV_STEPS", value_parser = at_least_one::<u64>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_env_steps: Option<u64>,
    /// Stop after this many minutes of wall time since this start, as
    /// --total-env-steps does.
    #[arg(long, env = "APEX_MINUTES", value_parser = positive_minutes)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub minutes: Option<f64>,
}

/// The parser of `--minutes`: a time above 0 (fractions allowed).
fn positive_minutes(value: &str) -> std::result::Result<f64, String> {
    let m: f64 = value
        .trim()
        .parse()
        .map_err(|e| format!("{e}: give minutes as a number, e.g. 30 or 0.5"))?;
    if !(m.is_finite() && m > 0.0) {
        return Err("must be above 0".into());
    }
    Ok(m)
}

/// What a run resolved, sections as in a preset file.
#[cfg(feature = "torch")]
#[derive(Serialize)]
pub(super) struct Resolved<'a> {
    pub game: &'a GameArgs,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local: Option<&'a LocalSettings>,
    pub net: &'a NetArgs,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replay: Option<&'a StoreArgs>,
    pub learner: &'a TrainArgs,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor: Option<&'a ActArgs>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eval: Option<&'a EvalArgs>,
}
