//! Which environment to make, by name and settings: the one place that
//! knows every implementation.

use crate::atari::{AtariConfig, AtariEnv};
use crate::catch::{Catch, CatchConfig};
use crate::environment::Environment;
use crate::EnvError;

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
