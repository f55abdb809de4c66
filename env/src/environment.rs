//! What an actor needs from an environment: Atari games and the small test
//! environments implement it, so the pipeline runs unchanged on either.
//! This module knows no implementation; `spec.rs` makes them.

pub trait Environment: Send {
    /// Observation shape, e.g. `[4, 84, 84]`; observations are uint8.
    fn obs_shape(&self) -> Vec<usize>;
    fn num_actions(&self) -> usize;
    /// Starts a training episode; returns its first observation.
    fn reset(&mut self) -> &[u8];
    /// The current observation.
    fn obs(&self) -> &[u8];
    /// Plays an action index; call `reset` after a step that is `done()`.
    fn step(&mut self, action: usize) -> Step;
    /// The screen as a person sees it, for videos of play.
    fn render(&self) -> Screen;
}

/// An RGB picture, row-major, 3 bytes per pixel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Screen {
    pub width: usize,
    pub height: usize,
    pub rgb: Vec<u8>,
}

/// One agent step's outcome.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    /// The sign of `raw_reward`: what training sees.
    pub reward: f32,
    /// The game's own score change over the repeated frames.
    pub raw_reward: i32,
    /// The training episode ended (game over, or a life lost when that is terminal).
    pub terminal: bool,
    /// The game hit the frame cap; the next state is still worth bootstrapping from.
    pub truncated: bool,
    pub lives: i32,
    /// Set when the real game ended (over or truncated).
    pub game: Option<GameSummary>,
}

impl Step {
    /// The caller must `reset()` before stepping again.
    pub fn done(&self) -> bool {
        self.terminal || self.truncated
    }
}

/// A whole game, across all its lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GameSummary {
    pub raw_score: i64,
    pub frames: u64,
    pub agent_steps: u64,
}
