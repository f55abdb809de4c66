//! TLS through the command line: `apex replay-server` given a certificate
//! serves TLS, and `apex health` reaches it at `https://` only when it
//! trusts the CA that signed it; plaintext and an untrusted server fail.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use apex_system_tests::apex_bin;
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A CA and a certificate for localhost signed by it, as PEM files in `dir`.
fn certificates(dir: &Path) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "apex system test CA");
    let ca = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("node.pem"), leaf.pem()).unwrap();
    std::fs::write(dir.join("node.key"), key.serialize_pem()).unwrap();
}

fn health(addr: &str, extra: &[&str]) -> Output {
    Command::new(apex_bin())
        .args(["health", addr, "--timeout", "2"])
        .args(extra)
        .env_remove("APEX_PRESET")
        .output()
        .unwrap()
}

#[test]
fn a_replay_server_with_a_certificate_serves_tls_to_clients_that_trust_its_ca() {
    let dir = tempfile::tempdir().unwrap();
    certificates(dir.path());
    let file = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _server = Killed(
        Command::new(apex_bin())
            .args(["replay-server", "--listen", &format!("127.0.0.1:{port}")])
            .args([
                "--tls-cert",
                &file("node.pem"),
                "--tls-key",
                &file("node.key"),
            ])
            .args(["--metrics-addr", "127.0.0.1:0"])
            .env_remove("APEX_PRESET")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let https = format!("https://localhost:{port}");
    let trusted = ["--tls-ca".to_owned(), file("ca.pem")];
    let started = Instant::now();
    let served = loop {
        let o = health(&https, &[&trusted[0], &trusted[1]]);
        if o.status.success() || started.elapsed() > Duration::from_secs(30) {
            break o;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        served.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&served.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&served.stdout).trim(), "serving");

    // The system's roots do not know this CA; plaintext meets a TLS server.
    assert!(!health(&https, &[]).status.success());
    assert!(!health(&format!("127.0.0.1:{port}"), &[]).status.success());
}
