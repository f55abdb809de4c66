//! What an actor needs from an environment: Atari games and the small test
//! environments implement it, so the pipeline runs unchanged on either.

use crate::atari::{AtariConfig, AtariEnv, Step};
use crate::catch::{Catch, CatchConfig};
use crate::EnvError;

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

impl Environment for AtariEnv {
    fn obs_shape(&self) -> Vec<usize> {
        vec![
            self.config().frame_stack,
            crate::FRAME_SIZE,
            crate::FRAME_SIZE,
        ]
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
        let (width, height) = (crate::ale::SCREEN_WIDTH, crate::ale::SCREEN_HEIGHT);
        let mut rgb = vec![0; width * height * 3];
        self.screen_rgb(&mut rgb);
        Screen { width, height, rgb }
    }
}

/// Which environment to make: enough to make any number of them, each with
/// its own seed, in any process.
#[derive(Debug, Clone, PartialEq)]
pub enum EnvSpec {
    Atari(AtariConfig),
    Catch(CatchConfig),
}

impl EnvSpec {
    pub fn make(&self, seed: u64) -> Result<Box<dyn Environment>, EnvError> {
        Ok(match self {
            EnvSpec::Atari(c) => {
                let mut c = c.clone();
                c.seed = seed;
                Box::new(AtariEnv::new(&c)?)
            }
            EnvSpec::Catch(c) => Box::new(Catch::new(*c, seed)),
        })
    }

    /// Observation shape and action count, by making one environment.
    pub fn probe(&self) -> Result<(Vec<usize>, usize), EnvError> {
        let env = self.make(0)?;
        Ok((env.obs_shape(), env.num_actions()))
    }

    pub fn name(&self) -> String {
        match self {
            EnvSpec::Atari(c) => format!("{}-{}", c.game, c.protocol),
            EnvSpec::Catch(_) => "catch".into(),
        }
    }
}
