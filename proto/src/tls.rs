//! TLS (rustls) for apex's gRPC, with optional client certificates (mTLS).
//!
//! A process has one identity, so TLS is configured once, at start
//! ([`configure`]): from then on every server it starts
//! ([`crate::transport::server`]) serves TLS, and every `https://` address
//! it calls ([`crate::transport::endpoint`]) is verified against the
//! configured CA (or the system's roots). `http://` addresses stay
//! plaintext, so one process may call a TLS learner and a loopback replay.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use tonic::transport::{Certificate, ClientTlsConfig, Identity, Server, ServerTlsConfig};

/// PEM files (and a name) that make up a process's TLS settings.
#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    /// This process's certificate chain: served by its servers, presented
    /// to servers that ask for a client certificate.
    pub cert: Option<PathBuf>,
    /// The private key of `cert`.
    pub key: Option<PathBuf>,
    /// The CA that servers this process calls must be signed by; without
    /// it, the system's roots.
    pub ca: Option<PathBuf>,
    /// Servers of this process accept only clients whose certificate this
    /// CA signed (mTLS).
    pub client_ca: Option<PathBuf>,
    /// The name servers' certificates must carry, where it is not the
    /// address's host.
    pub domain: Option<String>,
}

impl TlsFiles {
    fn any(&self) -> bool {
        self.cert.is_some()
            || self.key.is_some()
            || self.ca.is_some()
            || self.client_ca.is_some()
            || self.domain.is_some()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the TLS file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--tls-cert and --tls-key go together: give both or neither")]
    HalfIdentity,
    #[error("--tls-client-ca needs the server's own --tls-cert and --tls-key")]
    ClientCaWithoutIdentity,
    #[error("the TLS settings do not work: {0}")]
    Invalid(String),
    #[error("TLS is already configured in this process with other settings")]
    AlreadyConfigured,
}

struct Tls {
    files: String,
    server: Option<ServerTlsConfig>,
    client: ClientTlsConfig,
}

static TLS: OnceLock<Tls> = OnceLock::new();

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Reads and checks `files`, then makes them this process's TLS settings.
/// Nothing given: nothing changes and `Ok(false)`. Configuring the same
/// files twice is fine (an `apex local` starts several services); other
/// files the second time are an error.
pub fn configure(files: &TlsFiles) -> Result<bool, TlsError> {
    if !files.any() {
        return Ok(false);
    }
    let described = format!("{files:?}");
    if let Some(tls) = TLS.get() {
        return if tls.files == described {
            Ok(true)
        } else {
            Err(TlsError::AlreadyConfigured)
        };
    }
    let identity = match (&files.cert, &files.key) {
        (Some(cert), Some(key)) => Some(Identity::from_pem(read(cert)?, read(key)?)),
        (None, None) => None,
        _ => return Err(TlsError::HalfIdentity),
    };
    let server = match &identity {
        Some(identity) => {
            let mut config = ServerTlsConfig::new().identity(identity.clone());
            if let Some(ca) = &files.client_ca {
                config = config.client_ca_root(Certificate::from_pem(read(ca)?));
            }
            // Parses the key and certificates now, so a bad file fails at
            // start with its reason, not at the first connection.
            Server::builder()
                .tls_config(config.clone())
                .map_err(|e| TlsError::Invalid(error_chain(&e)))?;
            Some(config)
        }
        None if files.client_ca.is_some() => return Err(TlsError::ClientCaWithoutIdentity),
        None => None,
    };
    let mut client = ClientTlsConfig::new();
    client = match &files.ca {
        Some(ca) => client.ca_certificate(Certificate::from_pem(read(ca)?)),
        None => client.with_native_roots(),
    };
    if let Some(identity) = identity {
        client = client.identity(identity);
    }
    if let Some(domain) = &files.domain {
        client = client.domain_name(domain.clone());
    }
    let tls = Tls {
        files: described.clone(),
        server,
        client,
    };
    match TLS.set(tls) {
        Ok(()) => Ok(true),
        Err(_) if TLS.get().is_some_and(|t| t.files == described) => Ok(true),
        Err(_) => Err(TlsError::AlreadyConfigured),
    }
}

/// The server side, where this process has an identity.
pub(crate) fn server_config() -> Option<ServerTlsConfig> {
    TLS.get().and_then(|t| t.server.clone())
}

/// The client side for `https://` addresses: the configured CA and
/// identity, or the system's roots.
pub(crate) fn client_config() -> ClientTlsConfig {
    TLS.get().map_or_else(
        || ClientTlsConfig::new().with_native_roots(),
        |t| t.client.clone(),
    )
}

/// An error with its sources: rustls's reasons sit below tonic's summary.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
