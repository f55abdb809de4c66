//! The gRPC contract between actors, the replay server and the learner
//! (`apex.v1`), generated from `proto/apex/v1/apex.proto`, with the message
//! size limit every endpoint uses and the client's connect-and-retry.

pub mod auth;
pub mod codec;
pub mod frame_stream;
pub mod health;
pub mod priority;
pub mod sample_frames;
pub mod tls;
pub mod transport;
pub mod weights;

pub mod v1 {
    tonic::include_proto!("apex.v1");
}

/// A transition may refer to any of the last this-many frames its insert
/// stream sent; the replay server forgets older ones unless a stored
/// transition holds them. An actor needs about envs x (channels + n + 2).
pub const STREAM_FRAME_WINDOW: u64 = 16_384;

/// A sender names a frame it already sent by its old id only while that id
/// is younger than this; an older one (a screen that stayed unchanged while
/// other environments moved on) is sent again under a new id. Transitions
/// then refer to frames at most this old when they are named, leaving the
/// other half of the window for the time until they are sent.
pub const FRAME_REUSE_AGE: u64 = STREAM_FRAME_WINDOW / 2;

/// Batches of Atari transitions (28 KB per observation) and the weights
/// exceed tonic's 4 MiB default; every client and server raises it to this.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;

/// Observation layouts any endpoint accepts: channels first, at most this
/// many channels of at most this many bytes each. Far above Atari's 4 x 84 x
/// 84; they keep a wrong or hostile shape from sizing huge allocations.
pub const MAX_CHANNELS: usize = 64;
pub const MAX_FRAME_BYTES: usize = 4 << 20;

/// Chunk size for streaming weights.
pub const WEIGHTS_CHUNK_BYTES: usize = 1024 * 1024;

impl v1::Shape {
    pub fn of(dims: &[usize]) -> Self {
        v1::Shape {
            dims: dims.iter().map(|&d| d as u32).collect(),
        }
    }

    pub fn dims(&self) -> Vec<usize> {
        self.dims.iter().map(|&d| d as usize).collect()
    }

    /// Bytes of one uint8 tensor of this shape.
    pub fn numel(&self) -> usize {
        self.dims.iter().map(|&d| d as usize).product()
    }
}

/// Connects to `addr` (`http://host:port`, or `https://` with `tls`),
/// retrying until the server answers, and sends `token` with every call;
/// `Ok(None)` if `shutdown` comes first, `Err(addr)` if the address is
/// malformed.
pub async fn connect(
    addr: &str,
    token: Option<&auth::Token>,
    tls: &tls::Tls,
    shutdown: &tokio_util::sync::CancellationToken,
) -> Result<Option<auth::Channel>, String> {
    let endpoint = transport::endpoint(addr, tls)?;
    let mut warned = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(None),
            r = endpoint.connect() => match r {
                Ok(channel) => {
                    let credentials = auth::Credentials::new(token);
                    return Ok(Some(auth::Channel::new(channel, credentials)));
                }
                Err(e) => {
                    if !warned {
                        tracing::warn!(%addr, error = %e, "waiting for the server to come up");
                        warned = true;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                }
            }
        }
    }
}
