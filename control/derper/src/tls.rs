//! TLS for the relay: the certificate in force, where it comes from, and its pin.
//!
//! Official clients only speak TLS to relays in a DERP map, so TLS is the normal mode. A lab
//! relay rarely has a certificate from a public CA; instead the DERP map pins the certificate by
//! the SHA-256 of its DER bytes (`CertName: "sha256-raw:<hex>"`), which the official client
//! checks in place of a chain. So when no `--cert`/`--key` is given, a self-signed certificate is
//! generated once into the state directory (key file mode 0600) and kept across restarts, so the
//! pin stays valid.
//!
//! The certificate is served through a resolver that holds the current one behind a lock, so
//! SIGHUP can swap in re-read files without a restart; a file that fails to load leaves the
//! previous certificate in force.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// File names inside the state directory.
pub const SELF_SIGNED_CERT: &str = "derper-selfsigned.crt";
/// See [`SELF_SIGNED_CERT`].
pub const SELF_SIGNED_KEY: &str = "derper-selfsigned.key";

/// Why a certificate could not be loaded or made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The certificate file holds no certificate.
    #[error("{0}: no certificate in the file")]
    NoCertificate(PathBuf),
    /// The key file holds no usable private key.
    #[error("{0}: no usable private key in the file")]
    BadKey(PathBuf),
    /// Generating the self-signed certificate failed.
    #[error("generating a self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the configuration.
    #[error("tls: {0}")]
    Rustls(#[from] rustls::Error),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The `sha256-raw:<hex>` pin of a DER certificate, as a DERP map's `CertName` carries it
/// (defined next to the client's pin check, in `weft-derphttp`, so both agree by construction).
pub use weft_derphttp::cert_pin;

/// Writes `bytes` to `path` atomically (temporary file, then rename) with `mode`.
pub(crate) fn write_private_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TlsError> {
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    f.write_all(bytes).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    fs::rename(&tmp, path).map_err(io_err(path))
}

/// Makes a self-signed certificate for `names` into `dir` unless one is already there; returns
/// the certificate and key paths.
///
/// # Errors
/// [`TlsError`] when the directory or files cannot be written or generation fails.
pub fn ensure_self_signed(dir: &Path, names: &[String]) -> Result<(PathBuf, PathBuf), TlsError> {
    let cert = dir.join(SELF_SIGNED_CERT);
    let key = dir.join(SELF_SIGNED_KEY);
    if cert.exists() && key.exists() {
        return Ok((cert, key));
    }
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let made = rcgen::generate_simple_self_signed(names.to_vec())?;
    write_private_file(&key, made.key_pair.serialize_pem().as_bytes(), 0o600)?;
    write_private_file(&cert, made.cert.pem().as_bytes(), 0o644)?;
    Ok((cert, key))
}

/// Reads a PEM certificate chain and private key into a rustls [`CertifiedKey`].
///
/// # Errors
/// [`TlsError`] for unreadable files, an empty chain or an unusable key.
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let pem = fs::read(cert).map_err(io_err(cert))?;
    let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(io_err(cert))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(cert.to_owned()));
    }
    let pem = fs::read(key).map_err(io_err(key))?;
    let der: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(io_err(key))?
        .ok_or_else(|| TlsError::BadKey(key.to_owned()))?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&der)
        .map_err(|_| TlsError::BadKey(key.to_owned()))?;
    Ok(CertifiedKey::new(chain, signer))
}

/// The certificate in force, swappable at run time (SIGHUP).
#[derive(Debug)]
pub struct CertStore {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

impl CertStore {
    /// Loads the certificate and key from these files.
    ///
    /// # Errors
    /// As [`load_certified_key`].
    pub fn load(cert_path: PathBuf, key_path: PathBuf) -> Result<Self, TlsError> {
        let ck = load_certified_key(&cert_path, &key_path)?;
        Ok(Self {
            cert_path,
            key_path,
            current: RwLock::new(Arc::new(ck)),
        })
    }

    /// Re-reads the files; on failure the previous certificate stays in force.
    ///
    /// # Errors
    /// As [`load_certified_key`].
    pub fn reload(&self) -> Result<(), TlsError> {
        let ck = Arc::new(load_certified_key(&self.cert_path, &self.key_path)?);
        match self.current.write() {
            Ok(mut g) => *g = ck,
            Err(poisoned) => *poisoned.into_inner() = ck,
        }
        Ok(())
    }

    fn get(&self) -> Arc<CertifiedKey> {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The pin of the leaf certificate in force.
    pub fn pin(&self) -> String {
        self.get()
            .cert
            .first()
            .map(|c| cert_pin(c.as_ref()))
            .unwrap_or_default()
    }

    /// A rustls server configuration that serves whatever certificate is in force.
    ///
    /// # Errors
    /// [`TlsError::Rustls`] if the provider refuses the protocol versions (not expected).
    pub fn server_config(self: &Arc<Self>) -> Result<rustls::ServerConfig, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        // No ALPN: the DERP client offers none, and a server list would refuse clients that
        // offer only h2.
        Ok(rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Resolver(self.clone()))))
    }
}

#[derive(Debug)]
struct Resolver(Arc<CertStore>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.get())
    }
}
