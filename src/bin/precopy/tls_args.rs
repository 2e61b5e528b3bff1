//! The TLS options of `send` and `recv` (`--tls-cert`, `--tls-key`, `--tls-ca`), and
//! the TLS setup of the loopback runs (`bench pipeline --tls`).

use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::Arc;

use precopy::runtime::tls::{self, TlsFiles};
use precopy::runtime::{ConnIo, SourceLink, Wrap};
use rustls::{ClientConfig, ServerConfig};

/// TLS 1.3 with mutual authentication: all three files, or none (plain TCP).
#[derive(clap::Args, Debug, Default, Clone)]
pub struct TlsArgs {
    /// This side's certificate chain (PEM), signed by the CA the other side trusts
    /// (`precopy certs` makes one for trying it out). Needs --tls-key and --tls-ca.
    #[arg(long, value_name = "PEM", requires_all = ["tls_key", "tls_ca"])]
    pub tls_cert: Option<PathBuf>,
    /// This side's private key (PEM).
    #[arg(long, value_name = "PEM", requires_all = ["tls_cert", "tls_ca"])]
    pub tls_key: Option<PathBuf>,
    /// The CA (PEM) that signed the other side's certificate: the destination takes
    /// only sources it signed, the source only a destination it signed.
    #[arg(long, value_name = "PEM", requires_all = ["tls_cert", "tls_key"])]
    pub tls_ca: Option<PathBuf>,
}

impl TlsArgs {
    fn files(&self) -> Option<TlsFiles<'_>> {
        Some(TlsFiles {
            cert: self.tls_cert.as_deref()?,
            key: self.tls_key.as_deref()?,
            ca: self.tls_ca.as_deref()?,
        })
    }

    /// The destination's TLS over each connection, if asked for.
    pub fn server(&self) -> Result<Option<Wrap>, String> {
        match self.files() {
            Some(files) => {
                let config = tls::server_config(&files).map_err(|e| e.to_string())?;
                Ok(Some(tls::server_wrap(config)))
            }
            None => Ok(None),
        }
    }

    /// The source's TLS configuration, if asked for.
    pub fn client(&self) -> Result<Option<Arc<ClientConfig>>, String> {
        self.files()
            .map(|files| tls::client_config(&files).map_err(|e| e.to_string()))
            .transpose()
    }
}

/// The destination's and the source's TLS configurations.
pub type TlsPair = (Arc<ServerConfig>, Arc<ClientConfig>);

/// A source link over `tcp`, in TLS to `name` when `client` is given.
pub fn source_link(
    tcp: TcpStream,
    client: Option<&Arc<ClientConfig>>,
    name: &str,
    peer: String,
) -> Result<SourceLink<Box<dyn ConnIo>>, String> {
    let io: Box<dyn ConnIo> = match client {
        Some(config) => {
            Box::new(tls::connect(config.clone(), name, tcp).map_err(|e| e.to_string())?)
        }
        None => Box::new(tcp),
    };
    Ok(SourceLink::new(io, peer))
}

/// Certificates made in memory for a loopback run, as TLS configurations of both
/// ends (the files go to a private temporary directory, removed at once).
pub fn loopback_pair() -> Result<TlsPair, String> {
    let generated = crate::certs::generate(&["localhost".into(), "127.0.0.1".into()])?;
    let dir = std::env::temp_dir().join(format!("precopy-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let write = |name: &str, text: &str| -> Result<PathBuf, String> {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(path)
    };
    let ca = write("ca.pem", &generated.ca)?;
    let mut paths = Vec::new();
    for (role, cert, key) in &generated.hosts {
        paths.push((
            write(&format!("{role}.pem"), cert)?,
            write(&format!("{role}.key"), key)?,
        ));
    }
    let files = |i: usize| TlsFiles {
        cert: &paths[i].0,
        key: &paths[i].1,
        ca: &ca,
    };
    let client = tls::client_config(&files(0)).map_err(|e| e.to_string());
    let server = tls::server_config(&files(1)).map_err(|e| e.to_string());
    let _ = std::fs::remove_dir_all(&dir);
    Ok((server?, client?))
}

/// The host part of HOST:PORT (brackets of an IPv6 address removed): the name the
/// destination's certificate must carry.
pub fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}
