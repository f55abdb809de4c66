//! TensorBoard scalar summaries written straight to an event file, so a run's
//! curves show up in `tensorboard --logdir runs/` without TensorFlow in the
//! dependency tree.
//!
//! An event file is a sequence of TFRecords, each holding one serialized
//! `tensorflow.Event`. Only the two messages a scalar needs are declared
//! here, by hand with `prost`: readers skip the fields we never write.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use prost::Message;

/// What TensorFlow writes first in every event file; readers use it to tell
/// the record format apart from the pre-2016 one.
const FILE_VERSION: &str = "brain.Event:2";

/// Errors from writing an event file.
#[derive(Debug, thiserror::Error)]
pub enum TensorBoardError {
    #[error("cannot create the tensorboard folder {dir}: {source}; check that no file is in the way and that you may write there")]
    CreateDir { dir: PathBuf, source: io::Error },
    #[error("cannot create the tensorboard event file {path}: {source}; check that the folder is writable")]
    CreateFile { path: PathBuf, source: io::Error },
    #[error("cannot write to the tensorboard event file {path}: {source}; check free disk space and that the file was not removed")]
    Write { path: PathBuf, source: io::Error },
}

/// `tensorflow.Event`, reduced to the fields a scalar log needs.
#[derive(Clone, PartialEq, Message)]
struct Event {
    #[prost(double, tag = "1")]
    wall_time: f64,
    #[prost(int64, tag = "2")]
    step: i64,
    #[prost(oneof = "What", tags = "3, 5")]
    what: Option<What>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum What {
    #[prost(string, tag = "3")]
    FileVersion(String),
    #[prost(message, tag = "5")]
    Summary(Summary),
}

/// `tensorflow.Summary`.
#[derive(Clone, PartialEq, Message)]
struct Summary {
    #[prost(message, repeated, tag = "1")]
    value: Vec<SummaryValue>,
}

/// `tensorflow.Summary.Value`, scalar case only.
#[derive(Clone, PartialEq, Message)]
struct SummaryValue {
    #[prost(string, tag = "1")]
    tag: String,
    /// `optional` because upstream it is a member of the `value` oneof: a
    /// plain proto3 float would leave out 0.0, and readers drop a value
    /// with no oneof member set.
    #[prost(float, optional, tag = "2")]
    simple_value: Option<f32>,
}

/// Writes TensorBoard scalar summaries to an event file in a run folder.
///
/// Clones share one file, so every part of a process can log into the same run.
#[derive(Clone)]
pub struct SummaryWriter {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    file: Mutex<BufWriter<File>>,
}

impl std::fmt::Debug for SummaryWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SummaryWriter")
            .field("path", &self.inner.path)
            .finish()
    }
}

impl SummaryWriter {
    /// Creates `dir` if needed and a new file `events.out.tfevents.<unix secs>.<hostname>.<pid>.<n>` in it,
    /// starting with the `file_version: "brain.Event:2"` event as TensorFlow writes it.
    pub fn create(dir: &Path) -> Result<Self, TensorBoardError> {
        fs::create_dir_all(dir).map_err(|source| TensorBoardError::CreateDir {
            dir: dir.to_path_buf(),
            source,
        })?;
        // Two writers created in the same second by one process (a resumed
        // run, tests) would otherwise pick the same name; TensorBoard merges
        // every file of a folder, so separate files are harmless.
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let name = format!(
            "events.out.tfevents.{secs}.{}.{}.{n}",
            hostname(),
            std::process::id()
        );
        let path = dir.join(name);
        // create_new: never append to, or truncate, another writer's file.
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|source| TensorBoardError::CreateFile {
                path: path.clone(),
                source,
            })?;
        let writer = Self {
            inner: Arc::new(Inner {
                path,
                file: Mutex::new(BufWriter::new(file)),
            }),
        };
        writer.write_event(&Event {
            wall_time: wall_time(),
            step: 0,
            what: Some(What::FileVersion(FILE_VERSION.into())),
        })?;
        // The header goes to disk at once so a folder watched by TensorBoard
        // shows the run even before its first flush.
        writer.flush()?;
        Ok(writer)
    }

    /// One scalar (`simple_value`, f32 on the wire) at `step`, wall time now.
    ///
    /// NaN and infinities are written as they are: TensorBoard draws them,
    /// and a diverging loss is exactly what one wants to see.
    pub fn scalar(&self, tag: &str, value: f64, step: i64) -> Result<(), TensorBoardError> {
        self.write_event(&Event {
            wall_time: wall_time(),
            step,
            what: Some(What::Summary(Summary {
                value: vec![SummaryValue {
                    tag: tag.into(),
                    simple_value: Some(value as f32),
                }],
            })),
        })
    }

    /// Flushes buffered events to disk (call after each batch of scalars).
    pub fn flush(&self) -> Result<(), TensorBoardError> {
        self.lock().flush().map_err(|e| self.write_error(e))
    }

    /// The event file this writer appends to.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    fn write_event(&self, event: &Event) -> Result<(), TensorBoardError> {
        let record = frame(&event.encode_to_vec());
        // One write_all per record under the lock keeps records from
        // different clones whole and in order.
        self.lock()
            .write_all(&record)
            .map_err(|e| self.write_error(e))
    }

    fn lock(&self) -> MutexGuard<'_, BufWriter<File>> {
        // A panic elsewhere while holding the lock leaves at worst a torn
        // record, which readers report and skip; logging must not take the
        // whole process down with it.
        self.inner
            .file
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn write_error(&self, source: io::Error) -> TensorBoardError {
        TensorBoardError::Write {
            path: self.inner.path.clone(),
            source,
        }
    }
}

fn wall_time() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The machine's name as TensorFlow puts it in event file names; it only
/// tells files from different machines apart, so a fallback is fine.
fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Frames `data` as a TFRecord: length, its masked CRC, data, its masked CRC.
fn frame(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc(data).to_le_bytes());
    out
}

/// TFRecord's CRC masking: a CRC of data that itself holds CRCs is weak, so
/// the stored value is rotated and offset.
fn masked_crc(data: &[u8]) -> u32 {
    let crc = crc32c(data);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// Reflected Castagnoli polynomial.
const CASTAGNOLI: u32 = 0x82f6_3b78;

const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut bit = 0;
        while bit < 8 {
            c = if c & 1 == 1 {
                (c >> 1) ^ CASTAGNOLI
            } else {
                c >> 1
            };
            bit += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

/// CRC-32C of `data`. Byte at a time is plenty: a scalar record is ~50 bytes.
fn crc32c(data: &[u8]) -> u32 {
    !data.iter().fold(!0u32, |crc, &b| {
        CRC_TABLE[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writer_is_shareable_across_threads() {
        fn shareable<T: Send + Sync + Clone>() {}
        shareable::<SummaryWriter>();
    }

    #[test]
    fn crc32c_matches_the_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
        assert_eq!(crc32c(b""), 0);
        // RFC 3720 B.4: 32 bytes of zeros.
        assert_eq!(crc32c(&[0u8; 32]), 0x8a91_36aa);
    }

    #[test]
    fn mask_matches_tensorboards() {
        // tensorboard's masked_crc32c(b"123456789").
        assert_eq!(masked_crc(b"123456789"), 0xc78a_b0e5);
    }

    #[test]
    fn frames_a_known_payload() {
        let record = frame(b"abc");
        assert_eq!(record.len(), 8 + 4 + 3 + 4);
        assert_eq!(&record[..8], &[3, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            &record[8..12],
            &masked_crc(&[3, 0, 0, 0, 0, 0, 0, 0]).to_le_bytes()
        );
        assert_eq!(&record[12..15], b"abc");
        assert_eq!(&record[15..], &masked_crc(b"abc").to_le_bytes());
        // From TensorBoard's own masked_crc32c, so a change to the CRC or
        // the mask cannot cancel out in the two lines above.
        assert_eq!(crc32c(b"abc"), 0x364b_3fb7);
        assert_eq!(&record[15..], &0x21f1_576eu32.to_le_bytes());
    }

    #[test]
    fn scalar_event_encodes_as_tensorflow_does() {
        let event = Event {
            wall_time: 1.0,
            step: 7,
            what: Some(What::Summary(Summary {
                value: vec![SummaryValue {
                    tag: "a".into(),
                    simple_value: Some(0.5),
                }],
            })),
        };
        // The bytes tensorboard's own event_pb2 serializes for this event.
        let expected: &[u8] = &[
            0x09, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f, // wall_time = 1.0
            0x10, 7, // step = 7
            0x2a, 10, // summary, 10 bytes
            0x0a, 8, // value, 8 bytes
            0x0a, 1, b'a', // tag
            0x15, 0, 0, 0, 0x3f, // simple_value = 0.5
        ];
        assert_eq!(event.encode_to_vec(), expected);
    }

    #[test]
    fn create_makes_the_folder_and_a_file_starting_with_the_version() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("runs").join("breakout");
        let writer = SummaryWriter::create(&dir).unwrap();
        assert!(dir.is_dir());
        assert_eq!(writer.path().parent(), Some(dir.as_path()));
        let name = writer.path().file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with("events.out.tfevents."), "{name}");

        let bytes = fs::read(writer.path()).unwrap();
        let len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        assert_eq!(bytes.len(), 16 + len, "only the version record so far");
        let event = Event::decode(&bytes[12..12 + len]).unwrap();
        assert_eq!(event.what, Some(What::FileVersion(FILE_VERSION.into())));
        assert!(event.wall_time > 1.6e9);

        // A second writer in the same folder and second gets its own file.
        let other = SummaryWriter::create(&dir).unwrap();
        assert_ne!(other.path(), writer.path());
    }

    #[test]
    fn scalars_reach_disk_on_flush() {
        let tmp = tempfile::tempdir().unwrap();
        let writer = SummaryWriter::create(tmp.path()).unwrap();
        let before = fs::metadata(writer.path()).unwrap().len();
        writer
            .clone()
            .scalar("losses/td_loss", f64::NAN, 3)
            .unwrap();
        writer.flush().unwrap();
        let bytes = fs::read(writer.path()).unwrap();
        assert!(bytes.len() as u64 > before);
        let data = &bytes[before as usize + 12..bytes.len() - 4];
        let event = Event::decode(data).unwrap();
        assert_eq!(event.step, 3);
        let Some(What::Summary(summary)) = event.what else {
            panic!("not a summary: {event:?}");
        };
        assert_eq!(summary.value[0].tag, "losses/td_loss");
        assert!(summary.value[0].simple_value.unwrap().is_nan());
    }

    #[test]
    fn zero_is_written_not_left_out() {
        let value = SummaryValue {
            tag: "a".into(),
            simple_value: Some(0.0),
        };
        assert_eq!(value.encode_to_vec(), [0x0a, 1, b'a', 0x15, 0, 0, 0, 0]);
    }

    #[test]
    fn create_fails_with_a_path_in_the_message() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("not-a-folder");
        fs::write(&file, b"").unwrap();
        let err = SummaryWriter::create(&file.join("run")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("not-a-folder"), "{msg}");
        assert!(msg.starts_with("cannot create"), "{msg}");
    }
}
