//! `apex env ...`

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;
use apex_env::{rom, AtariConfig, CatchConfig, EnvSpec, Protocol};
use apex_media::record::{self, Actions};
use clap::{Args, Subcommand, ValueEnum};

#[derive(Subcommand)]
pub enum EnvCommand {
    /// Play a game and save what the network sees (obs.npy), what happened
    /// (steps.csv) and every 50th raw screen (PNG).
    Record(RecordArgs),
    /// List the games this build can play.
    Games,
}

#[derive(Clone, Copy, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnOff {
    On,
    Off,
}

impl From<OnOff> for bool {
    fn from(v: OnOff) -> bool {
        matches!(v, OnOff::On)
    }
}

/// The environment settings shared by every command that makes a game ([game]).
#[derive(Args, Clone, serde::Serialize)]
pub struct GameArgs {
    /// Any game in `apex env games`, or `catch` (a tiny test environment).
    #[arg(long, env = "APEX_GAME", default_value = "breakout")]
    pub game: String,
    /// v4: no sticky actions, no-op starts, life loss terminal; v5: sticky actions (p=0.25).
    #[arg(long, env = "APEX_PROTOCOL", default_value = "v4")]
    #[serde(serialize_with = "crate::preset::as_text")]
    pub protocol: Protocol,
    #[arg(long, env = "APEX_SEED", default_value_t = 0)]
    pub seed: u64,
    /// Most no-op frames at a game start [default: 30 for v4, 0 for v5].
    #[arg(long, env = "APEX_NOOP_MAX")]
    pub noop_max: Option<u32>,
    /// Press FIRE after a reset in games that need it.
    #[arg(long, env = "APEX_FIRE_RESET", default_value = "on")]
    pub fire_reset: OnOff,
    /// A lost life ends the training episode [default: on for v4, off for v5].
    #[arg(long, env = "APEX_TERMINAL_ON_LIFE_LOSS")]
    pub terminal_on_life_loss: Option<OnOff>,
    /// All 18 actions instead of the game's minimal set.
    #[arg(long, env = "APEX_FULL_ACTION_SPACE")]
    pub full_action_space: bool,
    /// Folder of <game>.bin ROMs [default: roms/ in the repository].
    #[arg(long, env = "APEX_ROM_DIR")]
    #[serde(skip)]
    pub rom_dir: Option<PathBuf>,
}

impl GameArgs {
    /// `catch` is the small test environment; any other name is an Atari game.
    pub fn spec(&self) -> EnvSpec {
        if self.game == "catch" {
            EnvSpec::Catch(CatchConfig::default())
        } else {
            EnvSpec::Atari(self.config())
        }
    }

    pub fn config(&self) -> AtariConfig {
        let mut c = AtariConfig::new(&self.game, self.protocol);
        c.seed = self.seed;
        c.noop_max = self.noop_max.unwrap_or(c.noop_max);
        c.fire_reset = self.fire_reset.into();
        c.terminal_on_life_loss = self
            .terminal_on_life_loss
            .map_or(c.terminal_on_life_loss, Into::into);
        c.full_action_space = self.full_action_space;
        if let Some(dir) = &self.rom_dir {
            c.rom_dir = dir.clone();
        }
        c
    }
}

#[derive(Args)]
pub struct RecordArgs {
    #[command(flatten)]
    pub preset: crate::preset::PresetArg,
    #[command(flatten)]
    game: GameArgs,
    /// `random`, or a file of action indices, one per line.
    #[arg(long, env = "APEX_ACTIONS", default_value = "random")]
    actions: String,
    /// Steps to play [default: the actions file's length, or 1000].
    #[arg(long, env = "APEX_STEPS")]
    steps: Option<usize>,
    /// The folder to write into.
    #[arg(long, env = "APEX_OUT", default_value = "runs/env-record")]
    out: PathBuf,
}

pub fn run(command: EnvCommand) -> Result<()> {
    match command {
        EnvCommand::Games => {
            // `apex env games | head` closes the pipe early: that is not an error.
            let mut out = std::io::stdout().lock();
            for g in rom::games() {
                match writeln!(out, "{g}") {
                    Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => break,
                    r => r?,
                }
            }
            Ok(())
        }
        EnvCommand::Record(a) => {
            let actions = match a.actions.as_str() {
                "random" => Actions::Random,
                path => Actions::List(record::read_actions(path.as_ref())?),
            };
            let steps = match (&actions, a.steps) {
                (_, Some(n)) => n,
                (Actions::List(list), None) => list.len(),
                (Actions::Random, None) => 1000,
            };
            let config = a.game.config();
            let summary = record::record(&config, &actions, steps, &a.out)?;
            println!(
                "recorded {} steps of {} ({}) into {}: obs.npy [{}, 84, 84], steps.csv, {} PNG screens; \
                 games finished: {}, raw scores: {:?}",
                summary.steps,
                config.game,
                config.protocol,
                a.out.display(),
                summary.steps + 1,
                summary.pngs,
                summary.games_finished,
                summary.raw_scores
            );
            Ok(())
        }
    }
}
