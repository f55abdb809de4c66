//! `apex env record`: plays a game with given or random actions and saves
//! what the network would see (`obs.npy`), what happened (`steps.csv`) and
//! every 50th raw screen as PNG.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use apex_env::{
    AtariConfig, AtariEnv, EnvError, FRAME_SIZE, SCREEN_HEIGHT, SCREEN_PIXELS, SCREEN_WIDTH,
};

use crate::npy;

/// Raw screens saved as PNG every this many steps (and after the first reset).
pub const PNG_EVERY: usize = 50;

#[derive(Debug, Clone, PartialEq)]
pub enum Actions {
    /// Uniform over the action set, seeded from the environment seed.
    Random,
    /// Indices into the action set, one per step.
    List(Vec<usize>),
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error(transparent)]
    Env(#[from] EnvError),
    #[error("cannot read actions file {path}: {source}")]
    ActionsUnreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("actions file {path}, line {line}: '{text}' is not an action index (one non-negative integer per line)")]
    ActionsMalformed {
        path: PathBuf,
        line: usize,
        text: String,
    },
    #[error(
        "action {action} (step {step}) is out of range: {game} has {count} actions (0..={max}) in this action set; \
         use indices below {count}, or the full action set (18)"
    )]
    ActionOutOfRange {
        step: usize,
        action: usize,
        game: String,
        count: usize,
        max: usize,
    },
    #[error("the actions file holds {have} actions but {want} steps were asked for: pass fewer steps or more actions")]
    TooFewActions { have: usize, want: usize },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Reads an actions file: one integer per line; blank lines are skipped.
pub fn read_actions(path: &Path) -> Result<Vec<usize>, RecordError> {
    let text = std::fs::read_to_string(path).map_err(|source| RecordError::ActionsUnreadable {
        path: path.to_owned(),
        source,
    })?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            l.trim().parse().map_err(|_| RecordError::ActionsMalformed {
                path: path.to_owned(),
                line: i + 1,
                text: l.trim().to_owned(),
            })
        })
        .collect()
}

/// What a recording contained.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RecordSummary {
    pub steps: usize,
    pub games_finished: usize,
    pub raw_scores: Vec<i64>,
    pub pngs: usize,
}

/// Plays `steps` steps into `out` (created if needed). After a training
/// episode ends (game over, truncation or a terminal life loss) the
/// environment is reset and play continues.
pub fn record(
    config: &AtariConfig,
    actions: &Actions,
    steps: usize,
    out: &Path,
) -> Result<RecordSummary, RecordError> {
    let mut env = AtariEnv::new(config)?;
    if let Actions::List(list) = actions {
        if list.len() < steps {
            return Err(RecordError::TooFewActions {
                have: list.len(),
                want: steps,
            });
        }
        if let Some((i, &a)) = list
            .iter()
            .take(steps)
            .enumerate()
            .find(|(_, &a)| a >= env.num_actions())
        {
            return Err(RecordError::ActionOutOfRange {
                step: i + 1,
                action: a,
                game: config.game.clone(),
                count: env.num_actions(),
                max: env.num_actions() - 1,
            });
        }
    }
    let write_err = |path: &Path| {
        let path = path.to_owned();
        move |source| RecordError::Write { path, source }
    };
    std::fs::create_dir_all(out).map_err(write_err(out))?;
    let obs_path = out.join("obs.npy");
    let csv_path = out.join("steps.csv");
    let mut obs = BufWriter::new(File::create(&obs_path).map_err(write_err(&obs_path))?);
    let mut csv = BufWriter::new(File::create(&csv_path).map_err(write_err(&csv_path))?);
    npy::write_u8_header(&mut obs, &[steps + 1, FRAME_SIZE, FRAME_SIZE])
        .map_err(write_err(&obs_path))?;
    writeln!(
        csv,
        "step,action,reward,raw_reward,terminal,truncated,lives"
    )
    .map_err(write_err(&csv_path))?;

    let mut rng = ChaCha8Rng::seed_from_u64(config.seed ^ 0x5eed_ac71);
    let mut summary = RecordSummary::default();
    let mut screen = vec![0u8; SCREEN_PIXELS * 3];
    env.reset();
    save_png(&env, &mut screen, &out.join("screen_000000.png"))?;
    summary.pngs += 1;
    obs.write_all(env.frame()).map_err(write_err(&obs_path))?;
    for step in 1..=steps {
        let action = match actions {
            Actions::Random => rng.gen_range(0..env.num_actions()),
            Actions::List(list) => list[step - 1],
        };
        let s = env.step(action);
        writeln!(
            csv,
            "{step},{action},{},{},{},{},{}",
            s.reward, s.raw_reward, s.terminal as u8, s.truncated as u8, s.lives
        )
        .map_err(write_err(&csv_path))?;
        obs.write_all(env.frame()).map_err(write_err(&obs_path))?;
        if step % PNG_EVERY == 0 {
            save_png(
                &env,
                &mut screen,
                &out.join(format!("screen_{step:06}.png")),
            )?;
            summary.pngs += 1;
        }
        if let Some(game) = s.game {
            summary.games_finished += 1;
            summary.raw_scores.push(game.raw_score);
        }
        if s.done() {
            env.reset();
        }
    }
    obs.flush().map_err(write_err(&obs_path))?;
    csv.flush().map_err(write_err(&csv_path))?;
    summary.steps = steps;
    Ok(summary)
}

fn save_png(env: &AtariEnv, screen: &mut [u8], path: &Path) -> Result<(), RecordError> {
    env.screen_rgb(screen);
    let err = |e: png::EncodingError| RecordError::Write {
        path: path.to_owned(),
        source: e.into(),
    };
    let file = File::create(path).map_err(|source| RecordError::Write {
        path: path.to_owned(),
        source,
    })?;
    let mut encoder = png::Encoder::new(
        BufWriter::new(file),
        SCREEN_WIDTH as u32,
        SCREEN_HEIGHT as u32,
    );
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder
        .write_header()
        .map_err(err)?
        .write_image_data(screen)
        .map_err(err)
}
