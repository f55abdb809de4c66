//! Catch (as in bsuite): a ball falls from a random column of the top row,
//! one row per step; the paddle on the bottom row moves left, stays or moves
//! right. +1 for a catch, -1 for a miss, and the episode ends. A random
//! policy catches about a fifth of the balls; a trained one catches all.
//! Small enough to learn in minutes on a CPU, so tests can prove that the
//! whole pipeline learns.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::environment::{Environment, GameSummary, Screen, Step};

/// Screen pixels per Catch cell, so videos are big enough to see.
const CELL: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatchConfig {
    pub rows: usize,
    pub columns: usize,
}

impl Default for CatchConfig {
    fn default() -> Self {
        CatchConfig {
            rows: 10,
            columns: 5,
        }
    }
}

pub struct Catch {
    config: CatchConfig,
    rng: ChaCha8Rng,
    ball_row: usize,
    ball_column: usize,
    paddle: usize,
    pixels: Vec<u8>,
    steps: u64,
}

/// Pixel value of the ball and the paddle.
const ON: u8 = 255;

impl Catch {
    pub fn new(config: CatchConfig, seed: u64) -> Self {
        assert!(config.rows >= 2 && config.columns >= 1);
        let mut c = Catch {
            config,
            rng: ChaCha8Rng::seed_from_u64(seed),
            ball_row: 0,
            ball_column: 0,
            paddle: 0,
            pixels: vec![0; config.rows * config.columns],
            steps: 0,
        };
        c.reset();
        c
    }

    fn draw(&mut self) {
        let w = self.config.columns;
        self.pixels.fill(0);
        self.pixels[self.ball_row * w + self.ball_column] = ON;
        self.pixels[(self.config.rows - 1) * w + self.paddle] = ON;
    }
}

impl Environment for Catch {
    fn obs_shape(&self) -> Vec<usize> {
        vec![1, self.config.rows, self.config.columns]
    }

    fn num_actions(&self) -> usize {
        3
    }

    fn reset(&mut self) -> &[u8] {
        self.ball_row = 0;
        self.ball_column = self.rng.gen_range(0..self.config.columns);
        self.paddle = self.config.columns / 2;
        self.steps = 0;
        self.draw();
        &self.pixels
    }

    fn obs(&self) -> &[u8] {
        &self.pixels
    }

    fn step(&mut self, action: usize) -> Step {
        assert!(action < 3, "catch has 3 actions, got {action}");
        self.paddle = (self.paddle + action)
            .saturating_sub(1)
            .min(self.config.columns - 1);
        self.ball_row += 1;
        self.steps += 1;
        self.draw();
        let landed = self.ball_row == self.config.rows - 1;
        let raw = match (landed, self.ball_column == self.paddle) {
            (false, _) => 0,
            (true, true) => 1,
            (true, false) => -1,
        };
        Step {
            reward: raw as f32,
            raw_reward: raw,
            terminal: landed,
            truncated: false,
            lives: 1,
            game: landed.then_some(GameSummary {
                raw_score: raw as i64,
                frames: self.steps,
                agent_steps: self.steps,
            }),
        }
    }

    fn render(&self) -> Screen {
        let (w, h) = (self.config.columns * CELL, self.config.rows * CELL);
        let mut rgb = Vec::with_capacity(w * h * 3);
        for y in 0..h {
            for x in 0..w {
                let on = self.pixels[(y / CELL) * self.config.columns + x / CELL];
                rgb.extend_from_slice(&[on, on, on]);
            }
        }
        Screen {
            width: w,
            height: h,
            rgb,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ball_falls_and_a_paddle_under_it_catches() {
        let mut c = Catch::new(
            CatchConfig {
                rows: 4,
                columns: 3,
            },
            1,
        );
        let ball = c.ball_column;
        // Move under the ball, then stay.
        let mut total = 0;
        for i in 0..3 {
            let action = if i == 0 { 1 + ball - 1 } else { 1 };
            let s = c.step(action);
            total += s.raw_reward;
            assert_eq!(s.terminal, i == 2);
        }
        assert_eq!(total, 1);
        assert_eq!(
            c.obs().iter().filter(|&&p| p == ON).count(),
            1,
            "ball and paddle overlap"
        );
    }

    #[test]
    fn a_paddle_elsewhere_misses() {
        let mut c = Catch::new(
            CatchConfig {
                rows: 3,
                columns: 5,
            },
            2,
        );
        c.reset();
        let away = if c.ball_column < 2 { 2 } else { 0 }; // right, or left
        c.step(away);
        let s = c.step(away);
        assert!(s.terminal);
        assert_eq!(s.raw_reward, -1);
        assert_eq!(s.game.unwrap().raw_score, -1);
    }

    #[test]
    fn the_paddle_stays_on_the_board() {
        let mut c = Catch::new(
            CatchConfig {
                rows: 10,
                columns: 5,
            },
            3,
        );
        for _ in 0..4 {
            c.step(0);
        }
        assert_eq!(c.paddle, 0);
        for _ in 0..4 {
            c.step(2);
        }
        assert_eq!(c.paddle, 4);
    }
}
