//! A shared secret on every apex gRPC call: clients send
//! `authorization: Bearer <token>`, servers refuse a call without the right
//! one with UNAUTHENTICATED. The token comes from `--token-file PATH` or the
//! variable `APEX_TOKEN`; with neither, the services are open (fine on
//! 127.0.0.1, not on a network others reach). gRPC health stays open so
//! probes need no secret.

use std::path::Path;
use std::sync::Arc;

use subtle::ConstantTimeEq;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Status};

/// The variable a token is read from.
pub const TOKEN_VAR: &str = "APEX_TOKEN";

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot read the token file {path}: {source}; create it (e.g. `openssl rand -hex 32 > {path}`) or unset --token-file")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("the token from {from} is empty or holds characters other than visible ASCII: use a random hex or base64 string of 16 characters or more")]
    Malformed { from: String },
}

/// The shared secret. Its Debug form never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(Arc<str>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

impl Token {
    /// A token from text; surrounding whitespace (a file's newline) is dropped.
    pub fn new(text: &str, from: &str) -> Result<Token, AuthError> {
        let t = text.trim();
        if t.is_empty() || !t.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(AuthError::Malformed { from: from.into() });
        }
        Ok(Token(t.into()))
    }

    /// 32 random bytes in hex, for a process that starts its own services.
    pub fn generate() -> Token {
        let mut bytes = [0u8; 32];
        let read = std::fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes));
        if read.is_err() {
            // No /dev/urandom: the clock and the address space still make
            // a token no outsider guesses for a local run.
            let seed = format!(
                "{:?}{:p}{}",
                std::time::SystemTime::now(),
                &bytes,
                std::process::id()
            );
            for (i, b) in seed.bytes().enumerate() {
                bytes[i % 32] = bytes[i % 32].wrapping_mul(31).wrapping_add(b);
            }
        }
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        Token(hex.into())
    }

    /// The token from `file` if given, else from `APEX_TOKEN`; `None` when
    /// neither is set.
    pub fn configured(file: Option<&Path>) -> Result<Option<Token>, AuthError> {
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| AuthError::Read {
                path: path.display().to_string(),
                source,
            })?;
            return Token::new(&text, &path.display().to_string()).map(Some);
        }
        match std::env::var(TOKEN_VAR) {
            Ok(v) if !v.trim().is_empty() => Token::new(&v, TOKEN_VAR).map(Some),
            _ => Ok(None),
        }
    }

    /// Writes the token to `path`, readable by this user only, so other
    /// programs of the same user can join (`--token-file PATH`).
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)?;
        writeln!(f, "{}", self.0)
    }

    fn matches(&self, offered: &[u8]) -> bool {
        // Constant time in the content, whatever differs first: only the
        // length can be learnt, not the secret.
        bool::from(self.0.as_bytes().ct_eq(offered))
    }
}

/// The server side: an interceptor that admits calls carrying the token
/// (every call when there is none).
#[derive(Clone, Debug)]
pub struct Authorize(Option<Token>);

impl Authorize {
    pub fn new(token: Option<Token>) -> Self {
        Authorize(token)
    }
}

impl tonic::service::Interceptor for Authorize {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(token) = &self.0 else {
            return Ok(request);
        };
        let offered = request
            .metadata()
            .get("authorization")
            .map(|v| v.as_bytes())
            .and_then(|v| v.strip_prefix(b"Bearer "));
        match offered {
            Some(t) if token.matches(t) => Ok(request),
            Some(_) => Err(Status::unauthenticated(
                "the bearer token is wrong: give this client the servers' token (APEX_TOKEN or --token-file)",
            )),
            None => Err(Status::unauthenticated(
                "this server needs a token: set APEX_TOKEN or --token-file to the servers' token",
            )),
        }
    }
}

/// The client side: an interceptor that adds the token to every call.
#[derive(Clone, Debug, Default)]
pub struct Credentials(Option<MetadataValue<tonic::metadata::Ascii>>);

impl Credentials {
    pub fn new(token: Option<&Token>) -> Self {
        Credentials(token.map(|t| {
            format!("Bearer {}", t.0)
                .parse()
                .expect("a token is visible ASCII")
        }))
    }
}

impl tonic::service::Interceptor for Credentials {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(v) = &self.0 {
            request.metadata_mut().insert("authorization", v.clone());
        }
        Ok(request)
    }
}

/// A connection to an apex server that sends the token with every call.
pub type Channel = InterceptedService<tonic::transport::Channel, Credentials>;

/// A service that admits only calls with the token.
pub type Guarded<S> = InterceptedService<S, Authorize>;

pub fn guard<S>(service: S, token: Option<Token>) -> Guarded<S> {
    InterceptedService::new(service, Authorize::new(token))
}

#[cfg(test)]
mod tests {
    use tonic::service::Interceptor;

    use super::*;

    fn call_with(header: Option<&str>) -> Request<()> {
        let mut r = Request::new(());
        if let Some(h) = header {
            r.metadata_mut().insert("authorization", h.parse().unwrap());
        }
        r
    }

    #[test]
    fn only_the_right_token_passes() {
        let token = Token::new("s3cret-token-0123\n", "test").unwrap();
        let mut a = Authorize::new(Some(token.clone()));
        assert!(a.call(call_with(Some("Bearer s3cret-token-0123"))).is_ok());
        for bad in [
            Some("Bearer s3cret-token-0124"),
            Some("Bearer s3cret"),
            Some("s3cret-token-0123"),
            Some("Basic s3cret-token-0123"),
            None,
        ] {
            let e = a.call(call_with(bad)).unwrap_err();
            assert_eq!(e.code(), tonic::Code::Unauthenticated, "{bad:?}");
            assert!(e.message().contains("token"), "{e}");
        }
        let mut c = Credentials::new(Some(&token));
        let sent = c.call(Request::new(())).unwrap();
        assert!(a.call(sent).is_ok(), "a client with the token gets in");
        assert!(Authorize::new(None).call(call_with(None)).is_ok());
        assert_eq!(format!("{token:?}"), "Token(..)");
    }

    #[test]
    fn tokens_come_from_a_file_or_the_variable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "abc123abc123abc123\n").unwrap();
        let t = Token::configured(Some(&path)).unwrap().unwrap();
        assert!(t.matches(b"abc123abc123abc123"));
        let missing = Token::configured(Some(&dir.path().join("nope"))).unwrap_err();
        assert!(missing.to_string().contains("cannot read the token file"));
        std::fs::write(&path, "  \n").unwrap();
        assert!(Token::configured(Some(&path)).is_err());
        assert!(Token::new("has space", "x").is_err());
        let g = Token::generate();
        assert_eq!(g.0.len(), 64);
        assert_ne!(g, Token::generate());
        let saved = dir.path().join("saved");
        g.save(&saved).unwrap();
        assert_eq!(Token::configured(Some(&saved)).unwrap(), Some(g));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&saved).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "only its owner may read it");
    }
}
