//! Frame encodings (`apex.v1.Codec`): actors encode, the learner decodes, and
//! the replay server only checks that a frame decodes to the right size.

use std::cell::RefCell;

use crate::v1::Codec;

/// zstd level for frames: level 1 already gets most of the gain on Atari
/// screens at a fraction of the cost of higher levels.
const ZSTD_LEVEL: i32 = 1;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CodecError {
    #[error("frame {index} does not decode as {codec}: {reason}")]
    Corrupt {
        index: usize,
        codec: &'static str,
        reason: String,
    },
    #[error("frame {index} decodes to {got} bytes but a frame of this shape has {expected}")]
    WrongSize {
        index: usize,
        got: usize,
        expected: usize,
    },
}

thread_local! {
    static ZSTD_C: RefCell<zstd::bulk::Compressor<'static>> =
        RefCell::new(zstd::bulk::Compressor::new(ZSTD_LEVEL).expect("zstd compressor"));
    static ZSTD_D: RefCell<zstd::bulk::Decompressor<'static>> =
        RefCell::new(zstd::bulk::Decompressor::new().expect("zstd decompressor"));
}

impl Codec {
    pub fn label(self) -> &'static str {
        match self {
            Codec::None => "none",
            Codec::Lz4 => "lz4",
            Codec::Zstd => "zstd",
        }
    }

    pub fn encode(self, frame: &[u8]) -> Vec<u8> {
        match self {
            Codec::None => frame.to_vec(),
            Codec::Lz4 => lz4_flex::compress_prepend_size(frame),
            Codec::Zstd => ZSTD_C.with(|c| {
                c.borrow_mut()
                    .compress(frame)
                    .expect("zstd compresses any input")
            }),
        }
    }

    /// Decodes frame number `index` into `out`, which must be filled exactly.
    pub fn decode_into(self, index: usize, data: &[u8], out: &mut [u8]) -> Result<(), CodecError> {
        let corrupt = |reason: String| CodecError::Corrupt {
            index,
            codec: self.label(),
            reason,
        };
        let got = match self {
            Codec::None => {
                if data.len() == out.len() {
                    out.copy_from_slice(data);
                }
                data.len()
            }
            Codec::Lz4 => {
                let (size, body) =
                    lz4_flex::block::uncompressed_size(data).map_err(|e| corrupt(e.to_string()))?;
                if size == out.len() {
                    let n = lz4_flex::block::decompress_into(body, out)
                        .map_err(|e| corrupt(e.to_string()))?;
                    if n != size {
                        return Err(corrupt(format!("{n} bytes where the header says {size}")));
                    }
                }
                size
            }
            Codec::Zstd => {
                let size = zstd::zstd_safe::get_frame_content_size(data)
                    .map_err(|e| corrupt(format!("{e:?}")))?
                    .ok_or_else(|| corrupt("no content size in the frame header".into()))?
                    as usize;
                if size == out.len() {
                    let n = ZSTD_D
                        .with(|d| d.borrow_mut().decompress_to_buffer(data, out))
                        .map_err(|e| corrupt(e.to_string()))?;
                    if n != size {
                        return Err(corrupt(format!("{n} bytes where the header says {size}")));
                    }
                }
                size
            }
        };
        if got != out.len() {
            return Err(CodecError::WrongSize {
                index,
                got,
                expected: out.len(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame() -> Vec<u8> {
        (0..7056u32)
            .map(|i| if i % 97 < 20 { 142 } else { 0 })
            .collect()
    }

    #[test]
    fn every_codec_round_trips_and_compresses() {
        let f = frame();
        for codec in [Codec::None, Codec::Lz4, Codec::Zstd] {
            let data = codec.encode(&f);
            if codec != Codec::None {
                assert!(
                    data.len() < f.len() / 4,
                    "{}: {}",
                    codec.label(),
                    data.len()
                );
            }
            let mut out = vec![0u8; f.len()];
            codec.decode_into(0, &data, &mut out).unwrap();
            assert_eq!(out, f);
        }
    }

    #[test]
    fn corrupt_and_wrong_sized_frames_are_refused() {
        let f = frame();
        for codec in [Codec::None, Codec::Lz4, Codec::Zstd] {
            let mut small = vec![0u8; 100];
            let e = codec
                .decode_into(3, &codec.encode(&f), &mut small)
                .unwrap_err();
            assert!(
                matches!(
                    e,
                    CodecError::WrongSize {
                        index: 3,
                        got: 7056,
                        expected: 100
                    }
                ),
                "{e}"
            );
        }
        let mut out = vec![0u8; f.len()];
        for codec in [Codec::Lz4, Codec::Zstd] {
            let mut data = codec.encode(&f);
            data.truncate(data.len() / 2);
            assert!(
                codec.decode_into(0, &data, &mut out).is_err(),
                "{}",
                codec.label()
            );
            assert!(
                codec.decode_into(0, &[1, 2], &mut out).is_err(),
                "{}",
                codec.label()
            );
        }
    }
}
