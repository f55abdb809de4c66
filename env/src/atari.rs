//! An Atari game as DeepMind's DQN and Stable-Baselines3's `AtariWrapper`
//! present it: no-op starts, action repeat with max-pooling, FIRE on reset,
//! life loss as a training terminal, 84x84 area-resized grayscale, clipped
//! rewards, a frame stack and an episode cap. Frame capture follows
//! gymnasium's `AtariPreprocessing` exactly so observations match it bit for bit.

use std::path::PathBuf;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::ale::{Ale, AleSettings, FIRE, NOOP, SCREEN_HEIGHT, SCREEN_WIDTH};
use crate::capture::{Capture, Slot};
use crate::emulator::Emulator;
use crate::environment::{Environment, GameSummary, Screen, Step};
use crate::frame_stack::FrameStack;
use crate::protocol::Protocol;
use crate::{rom, EnvError};

/// Side of the square preprocessed frame.
pub const FRAME_SIZE: usize = 84;
pub const FRAME_PIXELS: usize = FRAME_SIZE * FRAME_SIZE;

/// How a game is wrapped; [`AtariConfig::new`] fills in the protocol's defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct AtariConfig {
    pub game: String,
    pub protocol: Protocol,
    pub seed: u64,
    /// Emulator frames of NOOP at a real reset: uniform in 1..=noop_max, none when 0.
    pub noop_max: u32,
    /// Press FIRE after every reset, for games whose minimal action set has it.
    pub fire_reset: bool,
    pub terminal_on_life_loss: bool,
    /// All 18 actions instead of the game's minimal set.
    pub full_action_space: bool,
    /// Emulator frames per agent step.
    pub frame_skip: u32,
    pub frame_stack: usize,
    /// Emulator frames after which a game is truncated (108,000 = 30 minutes).
    pub max_episode_frames: u64,
    pub rom_dir: PathBuf,
}

impl AtariConfig {
    pub fn new(game: &str, protocol: Protocol) -> Self {
        AtariConfig {
            game: game.to_owned(),
            protocol,
            seed: 0,
            noop_max: protocol.default_noop_max(),
            fire_reset: true,
            terminal_on_life_loss: protocol.default_terminal_on_life_loss(),
            full_action_space: false,
            frame_skip: 4,
            frame_stack: 4,
            max_episode_frames: 108_000,
            rom_dir: rom::default_rom_dir(),
        }
    }
}

/// ALE's random seed for `seed`: never 0, which ALE takes to mean "seed
/// from the clock" (and sticky actions would then differ from run to run).
pub fn ale_seed(seed: u64) -> i32 {
    (seed % (i32::MAX as u64 - 1)) as i32 + 1
}

pub struct AtariEnv<E = Ale> {
    emu: E,
    actions: Vec<i32>,
    fire_on_reset: bool,
    config: AtariConfig,
    rng: ChaCha8Rng,
    /// The last two emulator frames of a step, pooled and resized into `frame`.
    capture: Capture,
    frame: Vec<u8>,
    stack: FrameStack,
    lives: i32,
    game_frames: u64,
    game_steps: u64,
    game_score: i64,
    /// A real reset is due: the game is over or was never started.
    game_ended: bool,
    needs_reset: bool,
}

impl AtariEnv<Ale> {
    /// Loads the game's ROM (checked by md5) into a new emulator. Call
    /// [`AtariEnv::reset`] before the first step.
    pub fn new(config: &AtariConfig) -> Result<Self, EnvError> {
        if config.frame_skip == 0 || config.frame_stack == 0 {
            return Err(EnvError::Config(
                "frame_skip and frame_stack must be at least 1".into(),
            ));
        }
        let rom = rom::locate(&config.rom_dir, &config.game)?;
        let ale = Ale::load(
            &rom,
            AleSettings {
                seed: ale_seed(config.seed),
                repeat_action_probability: config.protocol.repeat_action_probability(),
            },
        );
        let minimal = ale.minimal_actions();
        // Stable-Baselines3's rule: FIRE is the second of at least three actions.
        let needs_fire = minimal.len() >= 3 && minimal[1] == FIRE;
        let actions = if config.full_action_space {
            ale.legal_actions()
        } else {
            minimal
        };
        Ok(AtariEnv::with_emulator(
            ale,
            actions,
            needs_fire,
            config.clone(),
        ))
    }
}

impl<E: Emulator> AtariEnv<E> {
    pub(crate) fn with_emulator(
        emu: E,
        actions: Vec<i32>,
        needs_fire: bool,
        config: AtariConfig,
    ) -> Self {
        AtariEnv {
            emu,
            actions,
            fire_on_reset: config.fire_reset && needs_fire,
            rng: ChaCha8Rng::seed_from_u64(config.seed),
            capture: Capture::new(SCREEN_HEIGHT, SCREEN_WIDTH, FRAME_SIZE, FRAME_SIZE),
            frame: vec![0; FRAME_PIXELS],
            stack: FrameStack::new(config.frame_stack, FRAME_PIXELS),
            lives: 0,
            game_frames: 0,
            game_steps: 0,
            game_score: 0,
            game_ended: true,
            needs_reset: true,
            config,
        }
    }

    pub fn config(&self) -> &AtariConfig {
        &self.config
    }

    /// Size of the action set in use; actions are indices below it.
    pub fn num_actions(&self) -> usize {
        self.actions.len()
    }

    /// The ALE action ids behind the indices.
    pub fn action_set(&self) -> &[i32] {
        &self.actions
    }

    /// The stacked observation `[stack, 84, 84]`, oldest frame first.
    pub fn obs(&self) -> &[u8] {
        self.stack.as_slice()
    }

    /// The newest preprocessed 84x84 frame.
    pub fn frame(&self) -> &[u8] {
        &self.frame
    }

    pub fn lives(&self) -> i32 {
        self.lives
    }

    /// The raw 210x160x3 screen, for people to look at.
    pub fn screen_rgb(&self, out: &mut [u8]) {
        self.emu.rgb(out)
    }

    /// Starts a training episode. After a life loss the game goes on (with
    /// FIRE if the game needs it); after a game over or truncation, or on
    /// the first call, the game restarts with random no-ops.
    pub fn reset(&mut self) -> &[u8] {
        // A reset in mid-episode (not after a terminal) restarts the game too.
        if self.game_ended || !self.needs_reset {
            self.restart_game();
        } else if self.fire_on_reset {
            self.press_fire();
        }
        self.stack.fill(&self.frame);
        self.needs_reset = false;
        self.stack.as_slice()
    }

    /// Plays action index `action` for `frame_skip` emulator frames.
    pub fn step(&mut self, action: usize) -> Step {
        assert!(
            !self.needs_reset,
            "step after the episode ended: call reset() first"
        );
        assert!(
            action < self.actions.len(),
            "action {action} out of range 0..{}",
            self.actions.len()
        );
        let outcome = self.repeat(self.actions[action]);
        self.game_steps += 1;
        self.stack.push(&self.frame);
        let game = (outcome.game_over || outcome.truncated).then_some(GameSummary {
            raw_score: self.game_score,
            frames: self.game_frames,
            agent_steps: self.game_steps,
        });
        self.game_ended = game.is_some();
        let terminal = outcome.game_over || outcome.life_lost && self.config.terminal_on_life_loss;
        let step = Step {
            reward: clip_reward(outcome.raw_reward),
            raw_reward: outcome.raw_reward,
            terminal,
            truncated: outcome.truncated && !terminal,
            lives: self.lives,
            game,
        };
        self.needs_reset = step.done();
        step
    }

    fn restart_game(&mut self) {
        loop {
            self.emu.reset_game();
            self.lives = self.emu.lives();
            self.game_frames = 0;
            self.game_steps = 0;
            self.game_score = 0;
            self.game_ended = false;
            let noops = if self.config.noop_max > 0 {
                self.rng.gen_range(1..=self.config.noop_max)
            } else {
                0
            };
            for _ in 0..noops {
                self.game_score += self.emu.act(NOOP) as i64;
                self.game_frames += 1;
                if self.emu.game_over() {
                    self.emu.reset_game();
                }
            }
            self.capture.restart(&self.emu);
            self.lives = self.emu.lives();
            if !self.fire_on_reset {
                self.capture.render(&mut self.frame);
                return;
            }
            // FIRE's step makes the first observation: this frame is never seen.
            if self.press_fire() {
                return;
            }
        }
    }

    /// One agent step of FIRE; false if it ended the game.
    fn press_fire(&mut self) -> bool {
        let outcome = self.repeat(FIRE);
        !(outcome.game_over || outcome.truncated)
    }

    /// Repeats `action`, stopping early when the game or (if terminal) a
    /// life ends. As in gymnasium, the frames of an early stop are not
    /// captured: a terminal observation is never bootstrapped from.
    fn repeat(&mut self, action: i32) -> Outcome {
        let skip = self.config.frame_skip;
        let mut out = Outcome::default();
        // Frames before the last two are emulated and never looked at.
        for t in 0..skip {
            out.raw_reward += self.emu.act(action);
            self.game_frames += 1;
            out.game_over = self.emu.game_over();
            let lives = self.emu.lives();
            let lost = lives < self.lives;
            self.lives = lives;
            out.life_lost |= lost;
            if out.game_over || lost && self.config.terminal_on_life_loss {
                break;
            }
            if t + 2 == skip {
                self.capture.capture(Slot::BeforeLast, &self.emu);
            } else if t + 1 == skip {
                self.capture.capture(Slot::Last, &self.emu);
            }
            if self.game_frames >= self.config.max_episode_frames {
                out.truncated = true;
                if t + 1 < skip {
                    // Cut short by the cap: the next state is bootstrapped
                    // from, so it must show the current frame, not stale ones.
                    self.capture.capture(Slot::Last, &self.emu);
                    self.capture.capture(Slot::BeforeLast, &self.emu);
                }
                break;
            }
        }
        self.game_score += out.raw_reward as i64;
        // As in gymnasium, after an early stop the previous step's pooled
        // frame takes part.
        self.capture.finish(&mut self.frame);
        out
    }
}

#[derive(Debug, Default)]
struct Outcome {
    raw_reward: i32,
    game_over: bool,
    life_lost: bool,
    truncated: bool,
}

impl Environment for AtariEnv {
    fn obs_shape(&self) -> Vec<usize> {
        vec![self.config().frame_stack, FRAME_SIZE, FRAME_SIZE]
    }
    fn num_actions(&self) -> usize {
        AtariEnv::num_actions(self)
    }
    fn reset(&mut self) -> &[u8] {
        AtariEnv::reset(self)
    }
    fn obs(&self) -> &[u8] {
        AtariEnv::obs(self)
    }
    fn step(&mut self, action: usize) -> Step {
        AtariEnv::step(self, action)
    }
    fn render(&self) -> Screen {
        let (width, height) = (SCREEN_WIDTH, SCREEN_HEIGHT);
        let mut rgb = vec![0; width * height * 3];
        self.screen_rgb(&mut rgb);
        Screen { width, height, rgb }
    }
}

/// The reward's sign, as DQN trains on.
pub fn clip_reward(raw: i32) -> f32 {
    raw.signum() as f32
}

#[cfg(test)]
mod tests;
