//! TLS and mTLS between apex's own client and server builders, with
//! certificates made here: a client that trusts the CA and shows its
//! certificate is served; plaintext, an unknown CA and a client without a
//! certificate are refused.

use std::path::Path;

use apex_proto::tls::{Tls, TlsFiles};
use apex_proto::transport;
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    Ca {
        cert: params.self_signed(&key).unwrap(),
        key,
    }
}

/// A certificate for `names` signed by `ca`, written as PEM files: (cert, key).
fn leaf(
    ca: &Ca,
    names: &[&str],
    dir: &Path,
    stem: &str,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let key = KeyPair::generate().unwrap();
    let params =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    let cert = params.signed_by(&key, &ca.cert, &ca.key).unwrap();
    let (c, k) = (
        dir.join(format!("{stem}.pem")),
        dir.join(format!("{stem}.key")),
    );
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c, k)
}

async fn check(endpoint: Endpoint) -> Result<i32, String> {
    apex_proto::health::check(endpoint, "")
        .await
        .map(|s| s as i32)
        .map_err(|e| format!("{e:?}"))
}

#[tokio::test]
async fn mutual_tls_serves_trusted_clients_and_refuses_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let ours = ca("apex test CA");
    let (cert, key) = leaf(&ours, &["localhost", "127.0.0.1"], dir.path(), "node");
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, ours.cert.pem()).unwrap();

    // Bad settings are refused at start, with the reason.
    let half = TlsFiles {
        cert: Some(cert.clone()),
        ..Default::default()
    };
    assert!(Tls::load(&half)
        .unwrap_err()
        .to_string()
        .contains("--tls-key"));
    let missing = TlsFiles {
        cert: Some(cert.clone()),
        key: Some(dir.path().join("absent.key")),
        ..Default::default()
    };
    assert!(Tls::load(&missing)
        .unwrap_err()
        .to_string()
        .contains("absent.key"));
    let garbage = dir.path().join("garbage.key");
    std::fs::write(&garbage, "not a key").unwrap();
    let bad = TlsFiles {
        cert: Some(cert.clone()),
        key: Some(garbage),
        ..Default::default()
    };
    assert!(Tls::load(&bad).is_err());

    let files = TlsFiles {
        cert: Some(cert),
        key: Some(key),
        ca: Some(ca_path.clone()),
        client_ca: Some(ca_path),
        domain: None,
    };
    let tls = Tls::load(&files).unwrap();
    assert!(tls.serves_tls());
    assert_eq!(
        Tls::load(&files).unwrap(),
        tls,
        "the same settings again are the same"
    );
    assert!(!Tls::load(&TlsFiles::default()).unwrap().serves_tls());

    let (_reporter, health) = tonic_health::server::health_reporter();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        transport::server(&tls)
            .add_service(health)
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );

    // Our own client: verifies the server, shows its certificate.
    let https = format!("https://{addr}");
    assert_eq!(
        check(transport::endpoint(&https, &tls).unwrap()).await,
        Ok(1)
    );
    let by_name = format!("https://localhost:{}", addr.port());
    assert_eq!(
        check(transport::endpoint(&by_name, &tls).unwrap()).await,
        Ok(1)
    );

    // Plaintext to a TLS server.
    let http = format!("http://{addr}");
    assert!(check(transport::endpoint(&http, &tls).unwrap())
        .await
        .is_err());

    // A client that trusts the CA but has no certificate of its own.
    let anonymous = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ours.cert.pem()));
    let endpoint = Endpoint::from_shared(https.clone())
        .unwrap()
        .tls_config(anonymous)
        .unwrap();
    assert!(
        check(endpoint).await.is_err(),
        "mTLS must refuse a client without a certificate"
    );

    // A client with a certificate from another CA, trusting only that CA.
    let theirs = ca("someone else");
    let (c, k) = leaf(&theirs, &["intruder"], dir.path(), "intruder");
    let stranger = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(theirs.cert.pem()))
        .identity(tonic::transport::Identity::from_pem(
            std::fs::read(c).unwrap(),
            std::fs::read(k).unwrap(),
        ));
    let endpoint = Endpoint::from_shared(https)
        .unwrap()
        .tls_config(stranger)
        .unwrap();
    assert!(check(endpoint).await.is_err());
}
