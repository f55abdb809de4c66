//! What the Atari wrapper needs from an emulator. [`crate::ale::Ale`] is the
//! real one; unit tests script a fake one to reach game situations on demand.

use crate::ale::Ale;

pub trait Emulator {
    /// Emulates one frame with an ALE action id and returns its reward.
    fn act(&mut self, action: i32) -> i32;
    fn game_over(&self) -> bool;
    fn reset_game(&mut self);
    fn lives(&self) -> i32;
    /// 210x160 palette indices.
    fn screen(&self, out: &mut [u8]);
    /// 210x160 luminance.
    fn grayscale(&self, out: &mut [u8]);
    /// 210x160x3 RGB.
    fn rgb(&self, out: &mut [u8]);
}

impl Emulator for Ale {
    #[inline]
    fn act(&mut self, action: i32) -> i32 {
        Ale::act(self, action)
    }
    fn game_over(&self) -> bool {
        Ale::game_over(self)
    }
    fn reset_game(&mut self) {
        Ale::reset_game(self)
    }
    fn lives(&self) -> i32 {
        Ale::lives(self)
    }
    #[inline]
    fn screen(&self, out: &mut [u8]) {
        Ale::screen(self, out)
    }
    fn grayscale(&self, out: &mut [u8]) {
        Ale::grayscale(self, out)
    }
    fn rgb(&self, out: &mut [u8]) {
        Ale::rgb(self, out)
    }
}
