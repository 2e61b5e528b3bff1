//! TLS 1.3 with mutual authentication through the real binary: a pair with
//! certificates from one CA migrates over every stream; a source with another CA's
//! certificate, a plain-TCP source and a destination under another name are refused,
//! and the destination listens on for the real source; listening beyond loopback
//! without TLS needs --insecure. Certificates are made here with rcgen.

use std::path::{Path, PathBuf};
use std::process::ExitStatus;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

#[path = "common/cli_proc.rs"]
mod cli_proc;
use cli_proc::{Proc, GUEST, TIMEOUT};

/// A CA; `host` makes a certificate it signed for `names` and writes NAME.pem and
/// NAME.key into the directory.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
    dir: PathBuf,
}

impl Ca {
    fn new(dir: &Path, name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
        Ca {
            cert,
            key,
            dir: dir.to_path_buf(),
        }
    }

    fn host(&self, name: &str, names: &[&str]) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        let (c, k) = (
            self.dir.join(format!("{name}.pem")),
            self.dir.join(format!("{name}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (
            c.to_string_lossy().into_owned(),
            k.to_string_lossy().into_owned(),
        )
    }
}

struct Pki {
    dir: PathBuf,
    ca: String,
    source: (String, String),
    destination: (String, String),
    /// Signed by another CA.
    stranger: (String, String),
}

fn pki(name: &str) -> Pki {
    let dir = std::env::temp_dir().join(format!("precopy-tls-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let ca = Ca::new(&dir, "ca");
    let other = Ca::new(&dir, "other-ca");
    Pki {
        ca: dir.join("ca.pem").to_string_lossy().into_owned(),
        source: ca.host("source", &["source.example"]),
        destination: ca.host("destination", &["localhost", "127.0.0.1"]),
        stranger: other.host("stranger", &["stranger.example"]),
        dir,
    }
}

fn tls<'a>(pair: &'a (String, String), ca: &'a str) -> [&'a str; 6] {
    ["--tls-cert", &pair.0, "--tls-key", &pair.1, "--tls-ca", ca]
}

fn recv(pki: &Pki, extra: &[&str]) -> (Proc, String) {
    let mut args = vec!["recv", "--listen", "127.0.0.1:0", "--json"];
    args.extend(tls(&pki.destination, &pki.ca));
    args.extend(extra);
    let p = Proc::spawn(&args);
    let line = p.lines.recv_timeout(TIMEOUT).unwrap();
    let addr = line
        .strip_prefix("{\"kind\":\"listening\",\"addr\":\"")
        .and_then(|r| r.strip_suffix("\"}"))
        .unwrap_or_else(|| panic!("{line}"))
        .to_string();
    (p, addr)
}

fn send(addr: &str, extra: &[&str]) -> (ExitStatus, Vec<String>, String) {
    let mut args = vec!["send", "--connect", addr, "--json"];
    args.extend(extra);
    args.extend(GUEST);
    Proc::spawn(&args).finish()
}

#[test]
fn mutually_authenticated_streams_migrate_and_strangers_are_refused() {
    let pki = pki("pair");
    let (dest, addr) = recv(&pki, &[]);
    // Another CA's certificate: refused in the handshake; the destination listens on.
    let (status, _, err) = send(&addr, &tls(&pki.stranger, &pki.ca));
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    // A plain-TCP source: refused too.
    let (status, _, err) = send(&addr, &[]);
    assert_eq!(status.code(), Some(1), "{err}");
    // The real source, over 3 authenticated streams.
    let mut args = tls(&pki.source, &pki.ca).to_vec();
    args.extend(["--streams", "3"]);
    let (status, out, err) = send(&addr, &args);
    assert!(status.success(), "send: {err}");
    let summary = out
        .iter()
        .find(|l| l.contains("\"kind\":\"summary\""))
        .unwrap();
    assert!(summary.contains("\"verified\":true"), "{summary}");
    let (status, out, err) = dest.finish();
    assert!(status.success(), "recv: {err}");
    let refused: Vec<&String> = out
        .iter()
        .filter(|l| l.contains("\"kind\":\"refused\""))
        .collect();
    assert!(refused.len() >= 2, "{out:?}");
    assert!(
        refused.iter().any(|l| l.contains("certificate")),
        "{refused:?}"
    );
    let summary = out
        .iter()
        .find(|l| l.contains("\"kind\":\"summary\""))
        .unwrap();
    assert!(
        summary.contains("\"verified\":true") && summary.contains("\"streams\":3"),
        "{summary}"
    );
    std::fs::remove_dir_all(&pki.dir).unwrap();
}

#[test]
fn the_source_checks_the_destination_name() {
    let pki = pki("name");
    let (dest, addr) = recv(&pki, &["--deadline", "5"]);
    let mut args = tls(&pki.source, &pki.ca).to_vec();
    args.extend(["--tls-name", "db.example"]);
    let (status, _, err) = send(&addr, &args);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("certificate"), "{err}");
    drop(dest);
    std::fs::remove_dir_all(&pki.dir).unwrap();
}

#[test]
fn listening_beyond_loopback_needs_tls_or_insecure() {
    let (status, _, err) = Proc::spawn(&["recv", "--listen", "0.0.0.0:0"]).finish();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains("--insecure") && err.contains("--tls-cert"),
        "{err}"
    );
    let (status, _, err) = Proc::spawn(&[
        "recv",
        "--listen",
        "0.0.0.0:0",
        "--insecure",
        "--deadline",
        "1",
    ])
    .finish();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("the deadline passed"), "{err}");
    // TLS options come as a set.
    let (status, _, err) =
        Proc::spawn(&["recv", "--listen", "127.0.0.1:0", "--tls-cert", "x.pem"]).finish();
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("--tls-key"), "{err}");
}
