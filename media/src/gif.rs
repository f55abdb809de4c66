//! Animated GIFs of raw RGB screens, for watching what an agent did.
//!
//! Atari screens use at most 128 colours and change little from one frame to
//! the next, so each frame is written as the rectangle that changed since the
//! previous one (disposal "keep"), with a palette built exactly from the
//! colours that rectangle needs and unchanged pixels inside it transparent.
//! A rectangle needing more than 256 colours falls back to a 3-3-2 colour
//! cube; that frame is then approximate, never wrong in size or position.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use ::gif::{DisposalMethod, Encoder, Frame, Repeat};

/// Why a GIF could not be written.
#[derive(Debug, thiserror::Error)]
pub enum GifError {
    #[error("cannot create {path} ({source}): check that its folder exists and is writable")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("a gif must be at least 1x1 pixels, not {width}x{height}")]
    EmptyScreen { width: u16, height: u16 },
    #[error(
        "frame has {got} bytes but a {width}x{height} rgb frame has {expected}: \
         pass width*height*3 bytes, rows top to bottom"
    )]
    FrameSize {
        got: usize,
        expected: usize,
        width: u16,
        height: u16,
    },
    #[error("cannot write the gif ({0}): check the disk has space")]
    Encode(#[from] ::gif::EncodingError),
    #[error("cannot write the gif ({0}): check the disk has space")]
    Io(#[from] std::io::Error),
}

/// Writes RGB frames (e.g. raw 210x160 Atari screens) as an animated GIF
/// that loops forever.
pub struct GifWriter {
    encoder: Encoder<BufWriter<File>>,
    width: usize,
    height: usize,
    delay_cs: u16,
    /// The last frame pushed, as given (not as quantized).
    previous: Option<Vec<u8>>,
    frames: u64,
    palette: PaletteBuilder,
    indices: Vec<u8>,
}

/// Index reserved for "keep what is there" in frames after the first.
const TRANSPARENT: u8 = 0;

impl GifWriter {
    /// Creates `path` for frames of `width` x `height` pixels shown for
    /// `delay_cs` hundredths of a second each.
    pub fn create(path: &Path, width: u16, height: u16, delay_cs: u16) -> Result<Self, GifError> {
        if width == 0 || height == 0 {
            return Err(GifError::EmptyScreen { width, height });
        }
        let file = File::create(path).map_err(|source| GifError::Create {
            path: path.to_owned(),
            source,
        })?;
        // No global palette: each frame carries the few colours it needs.
        let mut encoder = Encoder::new(BufWriter::new(file), width, height, &[])?;
        encoder.set_repeat(Repeat::Infinite)?;
        Ok(GifWriter {
            encoder,
            width: width.into(),
            height: height.into(),
            delay_cs,
            previous: None,
            frames: 0,
            palette: PaletteBuilder::default(),
            indices: Vec::new(),
        })
    }

    /// Appends one frame of `width * height * 3` bytes (RGB, row-major).
    pub fn push_rgb(&mut self, rgb: &[u8]) -> Result<(), GifError> {
        let expected = self.width * self.height * 3;
        if rgb.len() != expected {
            return Err(GifError::FrameSize {
                got: rgb.len(),
                expected,
                width: self.width as u16,
                height: self.height as u16,
            });
        }
        let rect = match &self.previous {
            None => Some(Rect {
                left: 0,
                top: 0,
                width: self.width,
                height: self.height,
            }),
            Some(prev) => changed_rect(prev, rgb, self.width, self.height),
        };
        let frame = match rect {
            Some(rect) => self.encode_rect(rgb, rect),
            // The frame count must stay exact: one transparent pixel.
            None => Frame {
                delay: self.delay_cs,
                dispose: DisposalMethod::Keep,
                transparent: Some(TRANSPARENT),
                width: 1,
                height: 1,
                palette: Some(vec![0, 0, 0]),
                buffer: Cow::Borrowed(&[TRANSPARENT]),
                ..Frame::default()
            },
        };
        self.encoder.write_frame(&frame)?;
        // Keep the index buffer's allocation for the next frame.
        if let Cow::Owned(indices) = frame.buffer {
            self.indices = indices;
        }
        match &mut self.previous {
            Some(prev) => prev.copy_from_slice(rgb),
            None => self.previous = Some(rgb.to_vec()),
        }
        self.frames += 1;
        Ok(())
    }

    /// Writes the trailer and flushes; returns how many frames were written.
    pub fn finish(self) -> Result<u64, GifError> {
        let mut out = self.encoder.into_inner()?;
        out.flush()?;
        Ok(self.frames)
    }

    fn encode_rect(&mut self, rgb: &[u8], rect: Rect) -> Frame<'static> {
        let prev = self.previous.as_deref();
        let pixels = rect.width * rect.height;
        self.indices.clear();
        self.indices.reserve(pixels);
        let pixel_at = |x: usize, y: usize| (y * self.width + x) * 3;

        // Exact palettes first: with a transparent slot when a previous frame
        // shows through, then without one, then the colour cube.
        let mut transparent = prev.map(|_| TRANSPARENT);
        'attempt: for attempt in 0..2 {
            self.palette.reset(transparent.is_some());
            self.indices.clear();
            for y in rect.top..rect.top + rect.height {
                for x in rect.left..rect.left + rect.width {
                    let i = pixel_at(x, y);
                    let px = &rgb[i..i + 3];
                    let index = match (transparent, prev) {
                        (Some(t), Some(p)) if &p[i..i + 3] == px => Some(t),
                        _ => self.palette.index(px),
                    };
                    match index {
                        Some(index) => self.indices.push(index),
                        None if attempt == 0 && transparent.is_some() => {
                            transparent = None;
                            continue 'attempt;
                        }
                        None => break 'attempt,
                    }
                }
            }
            return Frame {
                delay: self.delay_cs,
                dispose: DisposalMethod::Keep,
                transparent,
                left: rect.left as u16,
                top: rect.top as u16,
                width: rect.width as u16,
                height: rect.height as u16,
                palette: Some(self.palette.colours.clone()),
                buffer: Cow::Owned(std::mem::take(&mut self.indices)),
                ..Frame::default()
            };
        }

        self.indices.clear();
        for y in rect.top..rect.top + rect.height {
            for x in rect.left..rect.left + rect.width {
                let i = pixel_at(x, y);
                self.indices.push(cube_index(&rgb[i..i + 3]));
            }
        }
        Frame {
            delay: self.delay_cs,
            dispose: DisposalMethod::Keep,
            left: rect.left as u16,
            top: rect.top as u16,
            width: rect.width as u16,
            height: rect.height as u16,
            palette: Some(cube_palette()),
            buffer: Cow::Owned(std::mem::take(&mut self.indices)),
            ..Frame::default()
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Rect {
    left: usize,
    top: usize,
    width: usize,
    height: usize,
}

/// The bounding box of the pixels that differ, or `None` if none do.
fn changed_rect(prev: &[u8], next: &[u8], width: usize, height: usize) -> Option<Rect> {
    let row = width * 3;
    let differs = |y: usize| prev[y * row..(y + 1) * row] != next[y * row..(y + 1) * row];
    let top = (0..height).find(|&y| differs(y))?;
    let bottom = (top..height).rev().find(|&y| differs(y)).unwrap_or(top);
    let (mut left, mut right) = (width, 0);
    for y in top..=bottom {
        let (a, b) = (&prev[y * row..(y + 1) * row], &next[y * row..(y + 1) * row]);
        if let Some(x) = (0..left).find(|&x| a[x * 3..x * 3 + 3] != b[x * 3..x * 3 + 3]) {
            left = x;
        }
        if let Some(x) = (right..width)
            .rev()
            .find(|&x| a[x * 3..x * 3 + 3] != b[x * 3..x * 3 + 3])
        {
            right = x;
        }
    }
    // Rows that differ have at least one differing pixel, so left <= right.
    Some(Rect {
        left,
        top,
        width: right - left + 1,
        height: bottom - top + 1,
    })
}

/// Assigns palette indices to colours in the order they appear.
#[derive(Default)]
struct PaletteBuilder {
    colours: Vec<u8>,
    lookup: HashMap<[u8; 3], u8>,
    /// The last colour looked up: runs of one colour are the common case.
    last: Option<([u8; 3], u8)>,
    first_free: usize,
}

impl PaletteBuilder {
    fn reset(&mut self, reserve_transparent: bool) {
        self.lookup.clear();
        self.last = None;
        self.colours.clear();
        self.first_free = 0;
        if reserve_transparent {
            // Its colour is never shown; black keeps the table valid.
            self.colours.extend_from_slice(&[0, 0, 0]);
            self.first_free = 1;
        }
    }

    /// The colour's index, or `None` when the palette is full.
    fn index(&mut self, px: &[u8]) -> Option<u8> {
        let key = [px[0], px[1], px[2]];
        if let Some((colour, index)) = self.last {
            if colour == key {
                return Some(index);
            }
        }
        let index = match self.lookup.get(&key) {
            Some(&index) => index,
            None => {
                let next = self.colours.len() / 3;
                if next >= 256 {
                    return None;
                }
                debug_assert!(next >= self.first_free);
                self.colours.extend_from_slice(&key);
                self.lookup.insert(key, next as u8);
                next as u8
            }
        };
        self.last = Some((key, index));
        Some(index)
    }
}

/// 3 bits of red, 3 of green, 2 of blue.
fn cube_index(px: &[u8]) -> u8 {
    (px[0] & 0xe0) | ((px[1] >> 5) << 2) | (px[2] >> 6)
}

/// Each cube cell's centre, so no channel is off by more than half a cell.
fn cube_palette() -> Vec<u8> {
    (0..=255u8)
        .flat_map(|i| {
            [
                (i & 0xe0) | 0x10,
                (((i >> 2) & 7) << 5) | 0x10,
                ((i & 3) << 6) | 0x20,
            ]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame's `(left, top, width, height)`.
    type FrameRect = (u16, u16, u16, u16);

    /// Decodes a GIF: logical size, per-frame rectangles, and the composited
    /// screen after each frame.
    fn decode(path: &Path) -> (u16, u16, Vec<FrameRect>, Vec<Vec<u8>>) {
        let mut screens = Vec::new();
        let (w, h, rects) = decode_with(path, |_, canvas| screens.push(canvas.to_vec()));
        (w, h, rects, screens)
    }

    /// Decodes a GIF, showing `on_frame` the composited screen after each frame.
    fn decode_with(
        path: &Path,
        mut on_frame: impl FnMut(usize, &[u8]),
    ) -> (u16, u16, Vec<FrameRect>) {
        let mut options = ::gif::DecodeOptions::new();
        options.set_color_output(::gif::ColorOutput::Indexed);
        let mut decoder = options.read_info(File::open(path).unwrap()).unwrap();
        let (w, h) = (decoder.width(), decoder.height());
        let mut canvas = vec![0u8; w as usize * h as usize * 3];
        let mut rects = Vec::new();
        while let Some(frame) = decoder.read_next_frame().unwrap() {
            assert_eq!(frame.dispose, DisposalMethod::Keep);
            let palette = frame.palette.as_ref().expect("local palette");
            for y in 0..frame.height as usize {
                for x in 0..frame.width as usize {
                    let index = frame.buffer[y * frame.width as usize + x];
                    if Some(index) == frame.transparent {
                        continue;
                    }
                    let c = index as usize * 3;
                    let at = ((frame.top as usize + y) * w as usize + frame.left as usize + x) * 3;
                    canvas[at..at + 3].copy_from_slice(&palette[c..c + 3]);
                }
            }
            rects.push((frame.left, frame.top, frame.width, frame.height));
            on_frame(rects.len() - 1, &canvas);
        }
        (w, h, rects)
    }

    /// A 160x210 screen with a few Atari-like colours: bands, a moving
    /// "ball" and an occasional colour change of one band.
    fn synthetic(t: usize) -> Vec<u8> {
        let (w, h) = (160, 210);
        let colours = [
            [0u8, 0, 0],
            [200, 72, 72],
            [66, 72, 200],
            [142, 142, 142],
            [84, 184, 153],
        ];
        let mut rgb = vec![0u8; w * h * 3];
        for y in 0..h {
            for x in 0..w {
                let band = if (50..80).contains(&y) {
                    1 + (y / 6 + t / 40) % 3
                } else {
                    0
                };
                let ball = (x as isize - (10 + (t * 3) % 140) as isize).abs() < 2
                    && (y as isize - (100 + (t * 2) % 100) as isize).abs() < 3;
                let c = if ball { colours[4] } else { colours[band] };
                rgb[(y * w + x) * 3..(y * w + x) * 3 + 3].copy_from_slice(&c);
            }
        }
        rgb
    }

    #[test]
    fn frames_composite_back_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("game.gif");
        let mut gif = GifWriter::create(&path, 160, 210, 3).unwrap();
        let frames: Vec<Vec<u8>> = (0..120)
            .map(|t| synthetic(if t % 10 == 5 { t - 1 } else { t }))
            .collect();
        for f in &frames {
            gif.push_rgb(f).unwrap();
        }
        assert_eq!(gif.finish().unwrap(), 120);
        let (w, h, rects, screens) = decode(&path);
        assert_eq!((w, h), (160, 210));
        assert_eq!(screens.len(), 120);
        assert_eq!(rects[0], (0, 0, 160, 210));
        // Frames repeating the previous one are a single pixel.
        assert_eq!(rects[5], (0, 0, 1, 1));
        // Only the ball moved: a small rectangle.
        assert!(rects[2].2 < 10 && rects[2].3 < 12, "{:?}", rects[2]);
        for (t, screen) in screens.iter().enumerate() {
            assert!(screen == &frames[t], "frame {t} differs after compositing");
        }
        let bytes = std::fs::metadata(&path).unwrap().len();
        assert!(
            bytes < 40_000,
            "{bytes} bytes for 120 mostly unchanged frames"
        );
    }

    #[test]
    fn a_breakout_game_is_small_and_exact() {
        use rand::{Rng, SeedableRng};
        let mut env = apex_env::AtariEnv::new(&apex_env::AtariConfig::new(
            "breakout",
            apex_env::Protocol::V4,
        ))
        .unwrap();
        env.reset();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("breakout.gif");
        let mut gif = GifWriter::create(&path, 160, 210, 7).unwrap();
        let mut screen = vec![0u8; 210 * 160 * 3];
        let mut checkpoints = Vec::new();
        for t in 0..2000 {
            if env.step(rng.gen_range(0..env.num_actions())).done() {
                env.reset();
            }
            env.screen_rgb(&mut screen);
            gif.push_rgb(&screen).unwrap();
            if t % 250 == 249 {
                checkpoints.push((t, screen.clone()));
            }
        }
        assert_eq!(gif.finish().unwrap(), 2000);
        let mut seen = Vec::new();
        let (w, h, rects) = decode_with(&path, |t, canvas| {
            if let Some((_, want)) = checkpoints.iter().find(|(at, _)| *at == t) {
                assert!(canvas == &want[..], "frame {t} differs after compositing");
                seen.push(t);
            }
        });
        assert_eq!((w, h, rects.len(), seen.len()), (160, 210, 2000, 8));
        let bytes = std::fs::metadata(&path).unwrap().len();
        // About 85 bytes a frame (measured); uncompressed full frames would be 33,600 each.
        assert!(bytes < 300_000, "{bytes} bytes for 2000 breakout frames");
    }

    #[test]
    fn many_colours_fall_back_to_the_colour_cube() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("noise.gif");
        let (w, h) = (40u16, 30u16);
        let noise = |seed: u32| -> Vec<u8> {
            let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
            (0..w as usize * h as usize * 3)
                .map(|_| {
                    s ^= s << 13;
                    s ^= s >> 17;
                    s ^= s << 5;
                    s as u8
                })
                .collect()
        };
        let mut few = noise(9);
        for (i, px) in few.chunks_mut(3).enumerate() {
            px.copy_from_slice(&[(i % 7) as u8 * 30, 9, 200]);
        }
        let frames = [noise(1), noise(2), few];
        let mut gif = GifWriter::create(&path, w, h, 5).unwrap();
        for f in &frames {
            gif.push_rgb(f).unwrap();
        }
        assert_eq!(gif.finish().unwrap(), 3);
        let (_, _, _, screens) = decode(&path);
        assert_eq!(screens.len(), 3);
        for (screen, frame) in screens[..2].iter().zip(&frames) {
            for (px, want) in screen.chunks(3).zip(frame.chunks(3)) {
                let off: Vec<i32> = (0..3)
                    .map(|c| (px[c] as i32 - want[c] as i32).abs())
                    .collect();
                assert!(
                    off[0] <= 16 && off[1] <= 16 && off[2] <= 32,
                    "{px:?} vs {want:?}"
                );
            }
        }
        // Back to few colours: exact again.
        assert!(screens[2] == frames[2]);
    }

    #[test]
    fn exactly_256_colours_are_exact() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("256.gif");
        let first: Vec<u8> = (0..256u32).flat_map(|i| [i as u8, 0, 7]).collect();
        // Every pixel changes to one of 256 new colours: no room for a transparent slot.
        let second: Vec<u8> = (0..256u32).flat_map(|i| [i as u8, 1, 7]).collect();
        let mut gif = GifWriter::create(&path, 16, 16, 1).unwrap();
        gif.push_rgb(&first).unwrap();
        gif.push_rgb(&second).unwrap();
        gif.finish().unwrap();
        let (_, _, _, screens) = decode(&path);
        assert!(screens[0] == first && screens[1] == second);
    }

    #[test]
    fn wrong_sizes_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let mut gif = GifWriter::create(&dir.path().join("a.gif"), 4, 2, 1).unwrap();
        let err = gif.push_rgb(&[0; 23]).unwrap_err();
        assert!(matches!(
            err,
            GifError::FrameSize {
                got: 23,
                expected: 24,
                ..
            }
        ));
        assert!(err.to_string().contains("width*height*3"), "{err}");
        gif.push_rgb(&[0; 24]).unwrap();
        assert_eq!(gif.finish().unwrap(), 1);
        assert!(matches!(
            GifWriter::create(&dir.path().join("b.gif"), 0, 2, 1),
            Err(GifError::EmptyScreen { .. })
        ));
        assert!(matches!(
            GifWriter::create(&dir.path().join("no/such/c.gif"), 4, 2, 1),
            Err(GifError::Create { .. })
        ));
    }

    #[test]
    fn changed_rect_is_the_bounding_box() {
        let (w, h) = (8, 6);
        let a = vec![0u8; w * h * 3];
        let mut b = a.clone();
        assert_eq!(changed_rect(&a, &b, w, h), None);
        b[(2 * w + 5) * 3 + 1] = 1;
        b[(4 * w + 3) * 3] = 1;
        assert_eq!(
            changed_rect(&a, &b, w, h),
            Some(Rect {
                left: 3,
                top: 2,
                width: 3,
                height: 3
            })
        );
    }
}
