//! TLS (rustls) for apex's gRPC, with optional client certificates (mTLS).
//!
//! A process reads its TLS files once, at start ([`Tls::load`]), and hands
//! the result to every server it starts ([`crate::transport::server`]) and
//! every client it makes ([`crate::transport::endpoint`]), the way it hands
//! them its token: no process-wide state. A server with an identity serves
//! TLS; an `https://` address is verified against the configured CA (or
//! the system's roots); `http://` addresses stay plaintext, so one process
//! may call a TLS learner and a loopback replay.

use std::path::{Path, PathBuf};
use std::sync::Arc;

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
}

/// A process's TLS settings, read and checked once: the server side where
/// it has an identity, the client side for `https://` addresses. The
/// default is plaintext servers, and the system's roots for `https://`.
/// Cheap to clone; two are equal when they came from the same files.
#[derive(Clone, Default)]
pub struct Tls {
    files: String,
    configs: Option<Arc<Configs>>,
}

struct Configs {
    server: Option<ServerTlsConfig>,
    client: ClientTlsConfig,
}

impl PartialEq for Tls {
    fn eq(&self, other: &Self) -> bool {
        self.files == other.files
    }
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.configs {
            None => f.write_str("Tls(plaintext)"),
            Some(_) => write!(f, "Tls({})", self.files),
        }
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

impl Tls {
    /// Reads and checks `files`: a bad or missing file fails here, with its
    /// reason, not at the first connection. Nothing given: the default.
    pub fn load(files: &TlsFiles) -> Result<Tls, TlsError> {
        if !files.any() {
            return Ok(Tls::default());
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
                // Parses the key and certificates now.
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
        Ok(Tls {
            files: format!("{files:?}"),
            configs: Some(Arc::new(Configs { server, client })),
        })
    }

    /// Whether servers made with these settings serve TLS.
    pub fn serves_tls(&self) -> bool {
        self.configs.as_ref().is_some_and(|c| c.server.is_some())
    }

    /// The server side, where this process has an identity.
    pub(crate) fn server_config(&self) -> Option<ServerTlsConfig> {
        self.configs.as_ref().and_then(|c| c.server.clone())
    }

    /// The client side for `https://` addresses: the configured CA and
    /// identity, or the system's roots.
    pub(crate) fn client_config(&self) -> ClientTlsConfig {
        match &self.configs {
            Some(c) => c.client.clone(),
            None => ClientTlsConfig::new().with_native_roots(),
        }
    }
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
