//! Replay checkpoints: one file holding the layout, the counters, every
//! distinct frame once and each shard's items with their sampling weights.
//! Written to a temporary file, synced, then renamed over the last one (the
//! one before is kept as `.prev`), so a crash mid-write never damages a
//! finished checkpoint. A CRC32 over the whole file catches truncation and
//! corruption; loading checks it before anything is used.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use apex_proto::v1::Codec;

use crate::frame::{new_frame, Frame, Ledger};
use crate::sequences::StreamRecord;
use crate::shard::{Item, ShardContents};
use crate::store::{Contents, Counters, Layout};

const MAGIC: &[u8; 8] = b"APEXRPL3";
/// Written before streams counted their transitions.
const MAGIC_V2: &[u8; 8] = b"APEXRPL2";
/// Written before layouts held an action count and streams their sequences.
const MAGIC_V1: &[u8; 8] = b"APEXRPL1";
const END: &[u8; 8] = b"APEXEND1";
pub const FILE_NAME: &str = "replay.ckpt";

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error(
        "cannot write checkpoint {path}: {source}; check the folder's permissions and free space"
    )]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read checkpoint {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "checkpoint {path} is not a replay checkpoint (or is truncated, or corrupt): {reason}"
    )]
    Corrupt { path: PathBuf, reason: String },
}

/// The checkpoint files of a folder.
pub fn current(dir: &Path) -> PathBuf {
    dir.join(FILE_NAME)
}

pub fn previous(dir: &Path) -> PathBuf {
    dir.join(format!("{FILE_NAME}.prev"))
}

/// A writer that checksums what passes through.
struct Summed<W> {
    inner: W,
    crc: crc32fast::Hasher,
    bytes: u64,
}

impl<W: Write> Write for Summed<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that checksums what passes through.
struct SummedReader<R> {
    inner: R,
    crc: crc32fast::Hasher,
}

impl<R: Read> Read for SummedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.crc.update(&buf[..n]);
        Ok(n)
    }
}

fn codec_byte(c: Codec) -> u8 {
    c as i32 as u8
}

/// Writes `contents` as the folder's checkpoint; returns the file and its size.
pub fn write(dir: &Path, contents: &Contents) -> Result<(PathBuf, u64), CheckpointError> {
    let path = current(dir);
    let tmp = dir.join(format!("{FILE_NAME}.tmp"));
    let err = |source| CheckpointError::Write {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(err)?;
    let file = File::create(&tmp).map_err(err)?;
    let mut w = Summed {
        inner: BufWriter::with_capacity(1 << 20, file),
        crc: crc32fast::Hasher::new(),
        bytes: 0,
    };
    encode(&mut w, contents).map_err(err)?;
    let crc = w.crc.clone().finalize();
    w.write_all(&crc.to_le_bytes()).map_err(err)?;
    w.write_all(END).map_err(err)?;
    let bytes = w.bytes;
    let file = w.inner.into_inner().map_err(|e| err(e.into_error()))?;
    file.sync_all().map_err(err)?;
    drop(file);
    if path.exists() {
        std::fs::rename(&path, previous(dir)).map_err(err)?;
    }
    std::fs::rename(&tmp, &path).map_err(err)?;
    if let Ok(d) = File::open(dir) {
        // Makes the renames durable; not every filesystem allows it.
        let _ = d.sync_all();
    }
    Ok((path, bytes))
}

fn encode(w: &mut impl Write, c: &Contents) -> std::io::Result<()> {
    w.write_all(MAGIC)?;
    match &c.layout {
        None => w.write_all(&[0])?,
        Some(l) => {
            w.write_all(&[1, codec_byte(l.codec)])?;
            w.write_all(&l.num_actions.to_le_bytes())?;
            w.write_all(&(l.shape.len() as u32).to_le_bytes())?;
            for &d in &l.shape {
                w.write_all(&(d as u64).to_le_bytes())?;
            }
        }
    }
    w.write_all(&c.alpha.to_le_bytes())?;
    w.write_all(&c.counters.inserted_total.to_le_bytes())?;
    w.write_all(&c.counters.sampled_total.to_le_bytes())?;
    w.write_all(&c.counters.max_priority.to_le_bytes())?;
    // Frames once each, numbered in order of first use.
    let mut numbers: HashMap<*const crate::frame::FrameData, u32> = HashMap::new();
    let mut order: Vec<&Frame> = Vec::new();
    for shard in &c.shards {
        for (item, _) in &shard.items {
            for f in item.frames.iter() {
                numbers.entry(Arc::as_ptr(f)).or_insert_with(|| {
                    order.push(f);
                    (order.len() - 1) as u32
                });
            }
        }
    }
    w.write_all(&(order.len() as u64).to_le_bytes())?;
    for f in &order {
        w.write_all(&(f.bytes().len() as u32).to_le_bytes())?;
        w.write_all(f.bytes())?;
    }
    w.write_all(&(c.shards.len() as u32).to_le_bytes())?;
    for shard in &c.shards {
        w.write_all(&shard.first.to_le_bytes())?;
        w.write_all(&shard.next.to_le_bytes())?;
        w.write_all(&(shard.items.len() as u64).to_le_bytes())?;
        for (item, weight) in &shard.items {
            w.write_all(&item.action.to_le_bytes())?;
            w.write_all(&item.reward.to_le_bytes())?;
            w.write_all(&item.discount.to_le_bytes())?;
            w.write_all(&weight.to_le_bytes())?;
            w.write_all(&(item.frames.len() as u32).to_le_bytes())?;
            for f in item.frames.iter() {
                w.write_all(&numbers[&Arc::as_ptr(f)].to_le_bytes())?;
            }
        }
    }
    w.write_all(&(c.streams.len() as u64).to_le_bytes())?;
    for stream in &c.streams {
        w.write_all(&stream.id.to_le_bytes())?;
        w.write_all(&stream.last.to_le_bytes())?;
        w.write_all(&stream.transitions.to_le_bytes())?;
    }
    Ok(())
}

/// Reads fixed-size little-endian fields, failing on a short file.
struct Fields<R> {
    r: R,
}

macro_rules! field {
    ($name:ident, $t:ty) => {
        fn $name(&mut self) -> std::io::Result<$t> {
            let mut b = [0u8; std::mem::size_of::<$t>()];
            self.r.read_exact(&mut b)?;
            Ok(<$t>::from_le_bytes(b))
        }
    };
}

impl<R: Read> Fields<R> {
    field!(u8, u8);
    field!(u32, u32);
    field!(u64, u64);
    field!(f32, f32);
    field!(f64, f64);
}

/// Refuses counts that cannot be right, before allocating for them.
fn sane(n: u64, what: &str) -> std::io::Result<usize> {
    if n > 1 << 40 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{n} {what} is not a plausible count"),
        ));
    }
    Ok(n as usize)
}

fn invalid(msg: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg)
}

/// Loads a checkpoint file, checking its checksum before returning anything.
pub fn read(path: &Path, ledger: &Arc<Ledger>) -> Result<Contents, CheckpointError> {
    let file = File::open(path).map_err(|source| CheckpointError::Read {
        path: path.to_owned(),
        source,
    })?;
    let corrupt = |reason: String| CheckpointError::Corrupt {
        path: path.to_owned(),
        reason,
    };
    let mut f = Fields {
        r: SummedReader {
            inner: BufReader::with_capacity(1 << 20, file),
            crc: crc32fast::Hasher::new(),
        },
    };
    let contents = decode(&mut f, ledger).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => corrupt("the file ends early".into()),
        _ => corrupt(e.to_string()),
    })?;
    let computed = f.r.crc.clone().finalize();
    let mut tail = [0u8; 12];
    f.r.inner
        .read_exact(&mut tail)
        .map_err(|_| corrupt("the file ends early".into()))?;
    let stored = u32::from_le_bytes(tail[..4].try_into().expect("4 bytes"));
    if &tail[4..] != END {
        return Err(corrupt("the end marker is missing".into()));
    }
    if stored != computed {
        return Err(corrupt(format!(
            "checksum {computed:08x} does not match the recorded {stored:08x}"
        )));
    }
    if f.r
        .inner
        .read(&mut [0u8; 1])
        .map_err(|e| corrupt(e.to_string()))?
        != 0
    {
        return Err(corrupt("bytes follow the end marker".into()));
    }
    Ok(contents)
}

fn decode<R: Read>(f: &mut Fields<R>, ledger: &Arc<Ledger>) -> std::io::Result<Contents> {
    let mut magic = [0u8; 8];
    f.r.read_exact(&mut magic)?;
    let v1 = &magic == MAGIC_V1;
    let v2 = &magic == MAGIC_V2;
    if &magic != MAGIC && !v1 && !v2 {
        return Err(invalid(
            "it does not start with the replay checkpoint marker".into(),
        ));
    }
    let layout = match f.u8()? {
        0 => None,
        1 => {
            let codec =
                Codec::try_from(f.u8()? as i32).map_err(|_| invalid("unknown codec".into()))?;
            let num_actions = if v1 { 0 } else { f.u32()? };
            let dims = sane(f.u32()? as u64, "dimensions")?;
            let shape = (0..dims)
                .map(|_| f.u64().map(|d| d as usize))
                .collect::<std::io::Result<Vec<_>>>()?;
            Some(Layout {
                shape,
                codec,
                num_actions,
            })
        }
        b => return Err(invalid(format!("layout marker {b}"))),
    };
    let alpha = f.f64()?;
    let counters = Counters {
        inserted_total: f.u64()?,
        sampled_total: f.u64()?,
        max_priority: f.f32()?,
    };
    let n_frames = sane(f.u64()?, "frames")?;
    let mut frames = Vec::with_capacity(n_frames.min(1 << 24));
    let mut buf = Vec::new();
    for _ in 0..n_frames {
        let len = sane(f.u32()? as u64, "frame bytes")?;
        buf.resize(len, 0);
        f.r.read_exact(&mut buf)?;
        frames.push(new_frame(&buf, ledger));
    }
    let n_shards = sane(f.u32()? as u64, "shards")?;
    let mut shards = Vec::with_capacity(n_shards.min(1 << 16));
    for _ in 0..n_shards {
        let first = f.u64()?;
        let next = f.u64()?;
        let n_items = sane(f.u64()?, "items")?;
        if next.checked_sub(first) != Some(n_items as u64) {
            return Err(invalid(format!(
                "a shard holds {n_items} items numbered {first}..{next}"
            )));
        }
        let mut items = Vec::with_capacity(n_items.min(1 << 24));
        for _ in 0..n_items {
            let action = f.u32()?;
            let reward = f.f32()?;
            let discount = f.f32()?;
            let weight = f.f64()?;
            let n = sane(f.u32()? as u64, "frames of an item")?;
            let item_frames = (0..n)
                .map(|_| {
                    let k = f.u32()? as usize;
                    frames
                        .get(k)
                        .cloned()
                        .ok_or_else(|| invalid(format!("frame {k} of {n_frames} does not exist")))
                })
                .collect::<std::io::Result<Box<[Frame]>>>()?;
            items.push((
                Item {
                    frames: item_frames,
                    action,
                    reward,
                    discount,
                },
                weight,
            ));
        }
        shards.push(ShardContents { first, next, items });
    }
    let streams = if v1 {
        Vec::new()
    } else {
        let n = sane(f.u64()?, "streams")?;
        (0..n)
            .map(|_| {
                Ok(StreamRecord {
                    id: f.u64()?,
                    last: f.u64()?,
                    transitions: if v2 { 0 } else { f.u64()? },
                })
            })
            .collect::<std::io::Result<_>>()?
    };
    Ok(Contents {
        layout,
        alpha,
        counters,
        shards,
        streams,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contents(ledger: &Arc<Ledger>) -> Contents {
        let a = new_frame(&[1, 2, 3], ledger);
        let b = new_frame(&[4, 5], ledger);
        let item = |action, frames: Vec<Frame>| Item {
            frames: frames.into(),
            action,
            reward: 0.25,
            discount: 0.99,
        };
        Contents {
            layout: Some(Layout {
                shape: vec![1, 3],
                codec: Codec::Lz4,
                num_actions: 4,
            }),
            alpha: 0.6,
            counters: Counters {
                inserted_total: 9,
                sampled_total: 4,
                max_priority: 2.5,
            },
            shards: vec![
                ShardContents {
                    first: 3,
                    next: 5,
                    items: vec![
                        (item(1, vec![a.clone(), b.clone()]), 0.5),
                        (item(2, vec![b, a]), 1.5),
                    ],
                },
                ShardContents {
                    first: 0,
                    next: 0,
                    items: vec![],
                },
            ],
            streams: vec![
                StreamRecord {
                    id: 0xfeed,
                    last: 7,
                    transitions: 448,
                },
                StreamRecord {
                    id: 42,
                    last: 1,
                    transitions: 64,
                },
            ],
        }
    }

    #[test]
    fn checkpoints_round_trip_and_store_frames_once() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Arc::new(Ledger::default());
        let c = contents(&ledger);
        let (path, bytes) = write(dir.path(), &c).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), bytes);
        let back = Arc::new(Ledger::default());
        let r = read(&path, &back).unwrap();
        assert_eq!(r, c);
        assert_eq!(back.frames(), 2, "shared frames come back shared");
        assert!(Arc::ptr_eq(
            &r.shards[0].items[0].0.frames[0],
            &r.shards[0].items[1].0.frames[1]
        ));
        // A second write keeps the first as .prev.
        write(dir.path(), &c).unwrap();
        assert_eq!(read(&previous(dir.path()), &back).unwrap(), c);
    }

    #[test]
    fn damaged_files_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Arc::new(Ledger::default());
        let (path, _) = write(dir.path(), &contents(&ledger)).unwrap();
        let good = std::fs::read(&path).unwrap();
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (good[..good.len() / 2].to_vec(), "ends early"),
            (good[..good.len() - 3].to_vec(), "ends early"),
            (
                {
                    let mut b = good.clone();
                    b[75] ^= 0x10; // inside the first frame's bytes
                    b
                },
                "checksum",
            ),
            (b"not a checkpoint at all".to_vec(), "marker"),
            ([good.clone(), vec![0]].concat(), "bytes follow"),
        ];
        for (bytes, needle) in cases {
            std::fs::write(&path, &bytes).unwrap();
            let e = read(&path, &ledger).unwrap_err().to_string();
            assert!(
                e.contains(needle) && e.contains("replay.ckpt"),
                "{needle}: {e}"
            );
        }
    }
}
