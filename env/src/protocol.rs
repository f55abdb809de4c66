//! The two evaluation protocols Atari results are reported under.

use std::fmt;
use std::str::FromStr;

/// `v4`: the classic DQN / Ape-X setting. `v5`: Machado et al. (2018).
/// Scores differ several-fold between them, so every score names one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    #[default]
    V4,
    V5,
}

impl Protocol {
    /// Probability that the emulator repeats the previous action instead.
    pub fn repeat_action_probability(self) -> f32 {
        match self {
            Protocol::V4 => 0.0,
            Protocol::V5 => 0.25,
        }
    }

    /// No-op starts: up to 30 in v4; none in v5, where sticky actions
    /// already randomize the start.
    pub fn default_noop_max(self) -> u32 {
        match self {
            Protocol::V4 => 30,
            Protocol::V5 => 0,
        }
    }

    /// Whether losing a life ends a training episode.
    pub fn default_terminal_on_life_loss(self) -> bool {
        match self {
            Protocol::V4 => true,
            Protocol::V5 => false,
        }
    }
}

impl FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "v4" => Ok(Protocol::V4),
            "v5" => Ok(Protocol::V5),
            other => Err(format!("unknown protocol '{other}': use v4 or v5")),
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::V4 => "v4",
            Protocol::V5 => "v5",
        })
    }
}
