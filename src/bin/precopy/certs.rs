//! `precopy certs`: a CA and two host certificates (source and destination) for
//! trying TLS out. Each host certificate is good for both roles (server and client
//! authentication) and names the hosts given with `--name`.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

/// Options of `precopy certs`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Directory to write ca.pem, source.pem, source.key, destination.pem and
    /// destination.key into (created if missing; existing files are not overwritten).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Names (DNS names or IP addresses) the host certificates carry: the
    /// destination's name as `send --connect` gives it. Repeatable.
    #[arg(long = "name", default_values = ["localhost", "127.0.0.1"])]
    names: Vec<String>,
}

/// A CA, and a key pair and certificate it signed per host.
pub struct Generated {
    /// The CA certificate, PEM.
    pub ca: String,
    /// (name, certificate PEM, key PEM) per host.
    pub hosts: Vec<(&'static str, String, String)>,
}

/// Makes a CA and the source's and destination's certificates for `names`.
pub fn generate(names: &[String]) -> Result<Generated, String> {
    let err = |e: rcgen::Error| format!("making certificates: {e}");
    let ca_key = KeyPair::generate().map_err(err)?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "precopy test CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key).map_err(err)?;
    let mut hosts = Vec::new();
    for role in ["source", "destination"] {
        let key = KeyPair::generate().map_err(err)?;
        let mut params = CertificateParams::new(names.to_vec()).map_err(err)?;
        params
            .distinguished_name
            .push(DnType::CommonName, format!("precopy {role}"));
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, &ca_cert, &ca_key).map_err(err)?;
        hosts.push((role, cert.pem(), key.serialize_pem()));
    }
    Ok(Generated {
        ca: ca_cert.pem(),
        hosts,
    })
}

/// Writes `contents` to a new file `dir/name` (never over an existing one).
fn write_new(dir: &Path, name: &str, contents: &str) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(name);
    // Keys stay private to their owner.
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| format!("--out: creating {}: {e}", path.display()))?;
    file.write_all(contents.as_bytes())
        .map_err(|e| format!("--out: writing {}: {e}", path.display()))
}

/// Runs `precopy certs`.
pub fn run(args: &Args) -> Result<(), String> {
    let generated = generate(&args.names)?;
    std::fs::create_dir_all(&args.out).map_err(|e| format!("--out {}: {e}", args.out.display()))?;
    write_new(&args.out, "ca.pem", &generated.ca)?;
    for (role, cert, key) in &generated.hosts {
        write_new(&args.out, &format!("{role}.pem"), cert)?;
        write_new(&args.out, &format!("{role}.key"), key)?;
    }
    println!(
        "precopy certs: wrote ca.pem, source.pem/.key and destination.pem/.key to {} for {}",
        args.out.display(),
        args.names.join(", ")
    );
    Ok(())
}
