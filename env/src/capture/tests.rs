//! `Capture` against a plain transcription of gymnasium's buffers (grey
//! screens from the emulator, max-pooled in place, resized in full), over
//! random screens whose rows change a few at a time, with steps cut short,
//! truncated and restarted at random.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;

const H: usize = 210;
const W: usize = 160;

/// A screen of palette indices that changes a few rows per frame, with a
/// fixed grey level per index as a TV format's palette has.
struct Screens {
    rng: ChaCha8Rng,
    screen: Vec<u8>,
    palette: [u8; 256],
    /// Indices in use; a new colour appears now and then.
    colours: Vec<u8>,
}

impl Screens {
    fn new(seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let palette = std::array::from_fn(|_| rng.gen());
        Screens {
            rng,
            screen: vec![0; H * W],
            palette,
            colours: vec![0, 2],
        }
    }

    fn frame(&mut self) {
        if self.rng.gen_bool(0.05) {
            self.colours.push(self.rng.gen());
        }
        let rows = if self.rng.gen_bool(0.02) {
            H
        } else {
            self.rng.gen_range(0..5)
        };
        for _ in 0..rows {
            let r = self.rng.gen_range(0..H);
            let (from, to) = (self.rng.gen_range(0..W), self.rng.gen_range(0..W));
            let colour = self.colours[self.rng.gen_range(0..self.colours.len())];
            self.screen[r * W + from.min(to)..r * W + from.max(to) + 1].fill(colour);
        }
    }
}

impl Emulator for Screens {
    fn act(&mut self, _: i32) -> i32 {
        self.frame();
        0
    }
    fn game_over(&self) -> bool {
        false
    }
    fn reset_game(&mut self) {}
    fn lives(&self) -> i32 {
        0
    }
    fn screen(&self, out: &mut [u8]) {
        out.copy_from_slice(&self.screen);
    }
    fn grayscale(&self, out: &mut [u8]) {
        for (o, &i) in out.iter_mut().zip(&self.screen) {
            *o = self.palette[i as usize];
        }
    }
    fn rgb(&self, _: &mut [u8]) {
        unreachable!("the capture reads the palette and grey screens, never RGB")
    }
}

/// gymnasium's `AtariPreprocessing` buffers, as written there.
struct Reference {
    buffers: [Vec<u8>; 2],
    resize: AreaResize,
}

impl Reference {
    fn capture(&mut self, slot: Slot, emu: &Screens) {
        emu.grayscale(&mut self.buffers[slot as usize]);
    }

    fn obs(&mut self, out: &mut [u8]) {
        let [pooled, other] = &mut self.buffers;
        max_pool(pooled, other);
        self.resize.apply(pooled, out);
    }
}

#[test]
fn frames_match_gymnasiums_buffers_through_early_stops_truncations_and_restarts() {
    for (seed, skip) in [(1, 4), (2, 4), (3, 3), (4, 2), (5, 1), (6, 5)] {
        let mut emu = Screens::new(seed);
        let mut rng = ChaCha8Rng::seed_from_u64(seed + 100);
        let mut capture = Capture::new(H, W, 84, 84);
        let mut reference = Reference {
            buffers: [vec![0; H * W], vec![0; H * W]],
            resize: AreaResize::new(H, W, 84, 84),
        };
        let (mut ours, mut theirs) = (vec![0; 84 * 84], vec![0; 84 * 84]);
        let mut restart = true;
        for step in 0..400 {
            if restart {
                for _ in 0..rng.gen_range(0..4) {
                    emu.frame();
                }
                capture.restart(&emu);
                reference.capture(Slot::Last, &emu);
                reference.buffers[1].fill(0);
                if rng.gen_bool(0.5) {
                    capture.render(&mut ours);
                    reference.obs(&mut theirs);
                    assert!(ours == theirs, "seed {seed}, restart before step {step}");
                }
            }
            for t in 0..skip {
                emu.act(0);
                if rng.gen_bool(0.04) {
                    break;
                }
                if t + 2 == skip {
                    capture.capture(Slot::BeforeLast, &emu);
                    reference.capture(Slot::BeforeLast, &emu);
                } else if t + 1 == skip {
                    capture.capture(Slot::Last, &emu);
                    reference.capture(Slot::Last, &emu);
                }
                if rng.gen_bool(0.01) {
                    // The episode cap: both buffers show the current frame.
                    capture.capture(Slot::Last, &emu);
                    capture.capture(Slot::BeforeLast, &emu);
                    reference.capture(Slot::Last, &emu);
                    reference.buffers[1] = reference.buffers[0].clone();
                    break;
                }
            }
            capture.finish(&mut ours);
            reference.obs(&mut theirs);
            assert!(ours == theirs, "seed {seed}, skip {skip}, step {step}");
            restart = rng.gen_bool(0.03);
        }
        assert!(emu.colours.len() > 10, "new colours appeared mid-run");
    }
}

#[test]
fn a_still_screen_is_learnt_once() {
    struct Counting {
        screens: Screens,
        grey_calls: std::cell::Cell<u32>,
    }
    impl Emulator for Counting {
        fn act(&mut self, _: i32) -> i32 {
            0
        }
        fn game_over(&self) -> bool {
            false
        }
        fn reset_game(&mut self) {}
        fn lives(&self) -> i32 {
            0
        }
        fn screen(&self, out: &mut [u8]) {
            self.screens.screen(out)
        }
        fn grayscale(&self, out: &mut [u8]) {
            self.grey_calls.set(self.grey_calls.get() + 1);
            self.screens.grayscale(out)
        }
        fn rgb(&self, _: &mut [u8]) {}
    }
    let mut screens = Screens::new(9);
    screens.frame();
    let emu = Counting {
        screens,
        grey_calls: 0.into(),
    };
    let mut capture = Capture::new(H, W, 84, 84);
    let mut out = vec![0; 84 * 84];
    for _ in 0..5 {
        capture.capture(Slot::BeforeLast, &emu);
        capture.capture(Slot::Last, &emu);
        capture.finish(&mut out);
    }
    assert_eq!(emu.grey_calls.get(), 1);
}

#[test]
fn rows_differ_wherever_a_byte_does() {
    let row: Vec<u8> = (0..163).map(|i| i as u8).collect();
    assert!(!differ(&row, &row.clone()));
    for i in [0, 7, 8, 100, 159, 160, 162] {
        let mut other = row.clone();
        other[i] ^= 0x10;
        assert!(differ(&row, &other), "byte {i}");
    }
}

#[test]
fn max_pool_takes_the_brighter_pixel() {
    let mut a = [0u8, 9, 5, 255];
    max_pool(&mut a, &[3, 2, 5, 0]);
    assert_eq!(a, [3, 9, 5, 255]);
}
