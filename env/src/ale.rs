//! A safe owner of one ALE 0.6 emulator instance.

use std::ffi::CString;
use std::path::Path;
use std::sync::Once;

use ale_sys as sys;

/// Emulator settings that must be fixed before the ROM is loaded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AleSettings {
    pub seed: i32,
    pub repeat_action_probability: f32,
}

pub const SCREEN_HEIGHT: usize = 210;
pub const SCREEN_WIDTH: usize = 160;
pub const SCREEN_PIXELS: usize = SCREEN_HEIGHT * SCREEN_WIDTH;

/// ALE action ids.
pub const NOOP: i32 = 0;
pub const FIRE: i32 = 1;

/// One emulator. ALE keeps no shared mutable state between instances, so an
/// instance may move between threads but is used by one at a time.
pub struct Ale {
    raw: *mut sys::ALEInterface,
}

// SAFETY: the pointer is owned exclusively and ALE instances are independent.
unsafe impl Send for Ale {}

impl Ale {
    /// Loads `rom`. The caller has already checked that the file exists and
    /// that ALE 0.6 supports the game: ALE calls `exit(1)` otherwise.
    pub(crate) fn load(rom: &Path, settings: AleSettings) -> Self {
        static QUIET: Once = Once::new();
        // ALE's logger is global; level 2 keeps only errors.
        // SAFETY: sets a global level; no instance exists yet to race with.
        QUIET.call_once(|| unsafe { sys::setLoggerMode(2) });
        let rom = CString::new(rom.to_string_lossy().as_bytes()).expect("rom path has no NUL");
        // SAFETY: a fresh instance, checked non-null before use; the strings
        // are NUL-terminated and outlive the calls that read them.
        unsafe {
            let raw = sys::ALE_new();
            assert!(!raw.is_null(), "ALE_new returned null");
            sys::setInt(raw, c"random_seed".as_ptr(), settings.seed);
            sys::setFloat(
                raw,
                c"repeat_action_probability".as_ptr(),
                settings.repeat_action_probability,
            );
            // The episode cap is applied by the wrapper, which reports it as truncation.
            sys::setInt(raw, c"max_num_frames_per_episode".as_ptr(), 0);
            sys::setInt(raw, c"frame_skip".as_ptr(), 1);
            sys::loadROM(raw, rom.as_ptr());
            Ale { raw }
        }
    }

    /// Emulates one frame and returns its reward.
    #[inline]
    pub fn act(&mut self, action: i32) -> i32 {
        // SAFETY: `raw` is the live instance this value owns (made in `load`, freed only in `drop`).
        unsafe { sys::act(self.raw, action) }
    }

    pub fn game_over(&self) -> bool {
        // SAFETY: `raw` is the live instance this value owns (made in `load`, freed only in `drop`).
        unsafe { sys::game_over(self.raw) }
    }

    pub fn reset_game(&mut self) {
        // SAFETY: `raw` is the live instance this value owns (made in `load`, freed only in `drop`).
        unsafe { sys::reset_game(self.raw) }
    }

    pub fn lives(&self) -> i32 {
        // SAFETY: `raw` is the live instance this value owns (made in `load`, freed only in `drop`).
        unsafe { sys::lives(self.raw) }
    }

    /// Writes the 210x160 screen of palette indices: a memcpy, where the
    /// grey and RGB screens convert every pixel.
    #[inline]
    pub fn screen(&self, out: &mut [u8]) {
        assert_eq!(out.len(), SCREEN_PIXELS);
        // SAFETY: `raw` is the live instance this value owns (made in `load`, freed only in `drop`);
        // `out` holds the screen's pixels, as asserted.
        unsafe { sys::getScreen(self.raw, out.as_mut_ptr()) }
    }

    /// Writes the 210x160 luminance screen.
    pub fn grayscale(&self, out: &mut [u8]) {
        assert_eq!(out.len(), SCREEN_PIXELS);
        // SAFETY: `raw` is the live instance this value owns (made in `load`, freed only in `drop`);
        // `out` holds the screen's pixels, as asserted.
        unsafe { sys::getScreenGrayscale(self.raw, out.as_mut_ptr()) }
    }

    /// Writes the 210x160x3 RGB screen.
    pub fn rgb(&self, out: &mut [u8]) {
        assert_eq!(out.len(), SCREEN_PIXELS * 3);
        // SAFETY: `raw` is the live instance this value owns (made in `load`, freed only in `drop`);
        // `out` holds three bytes per pixel, as asserted.
        unsafe { sys::getScreenRGB(self.raw, out.as_mut_ptr()) }
    }

    pub fn minimal_actions(&self) -> Vec<i32> {
        // SAFETY: `raw` is the live instance this value owns (made in `load`, freed only in `drop`);
        // `v` is sized by ALE's own count before it is filled.
        unsafe {
            let n = sys::getMinimalActionSize(self.raw) as usize;
            let mut v = vec![0; n];
            sys::getMinimalActionSet(self.raw, v.as_mut_ptr());
            v
        }
    }

    pub fn legal_actions(&self) -> Vec<i32> {
        // SAFETY: `raw` is the live instance this value owns (made in `load`, freed only in `drop`);
        // `v` is sized by ALE's own count before it is filled.
        unsafe {
            let n = sys::getLegalActionSize(self.raw) as usize;
            let mut v = vec![0; n];
            sys::getLegalActionSet(self.raw, v.as_mut_ptr());
            v
        }
    }
}

impl Drop for Ale {
    fn drop(&mut self) {
        // SAFETY: the instance this value owns, freed once, never used after.
        unsafe { sys::ALE_del(self.raw) }
    }
}
