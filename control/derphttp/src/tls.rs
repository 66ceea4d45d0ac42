//! How the client checks the server's certificate, and the `sha256-raw` pin.
//!
//! Lab and self-hosted relays rarely have a certificate from a public CA. Tailscale's DERP map
//! lets a node say `CertName: "sha256-raw:<hex>"` instead: the client then trusts exactly the
//! certificate whose DER bytes hash to that value and ignores names and chains (so `HostName`
//! may be an IP). [`cert_pin`] computes that value; `weft-derper` prints it for the certificate
//! it serves, and [`PinVerifier`] checks it. The handshake signature is still verified with the
//! pinned certificate's key, so holding the certificate alone does not let anyone impersonate
//! the server.
//!
//! The other modes are ordinary WebPKI verification against roots the caller supplies (this
//! crate bundles none, to stay small and let the agent choose the system store or a bundle),
//! and no verification at all, for tests.

use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

/// The `sha256-raw:<hex>` pin of a DER certificate, as a DERP map's `CertName` carries it.
pub fn cert_pin(der: &[u8]) -> String {
    format!("sha256-raw:{}", hex::encode(Sha256::digest(der)))
}

/// How the server's certificate is checked (ignored for `http://` URLs).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum TlsVerify {
    /// Trust exactly the certificate with this `sha256-raw:<hex>` pin.
    Pin(String),
    /// Verify the chain and the URL's host name against these roots.
    Roots(Arc<rustls::RootCertStore>),
    /// Accept any certificate. Tests only: this gives no protection at all.
    InsecureForTests,
}

pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Where a [`PinVerifier`] records the pin of a certificate it refused.
pub(crate) type PresentedPin = Arc<Mutex<Option<String>>>;

/// Builds the rustls client configuration for `verify`; with a pin, also the slot where a
/// mismatching server's pin is recorded (to name it in the error).
pub(crate) fn client_config(
    verify: &TlsVerify,
) -> Result<(rustls::ClientConfig, Option<PresentedPin>), rustls::Error> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    Ok(match verify {
        TlsVerify::Roots(roots) => (
            builder
                .with_root_certificates(roots.clone())
                .with_no_client_auth(),
            None,
        ),
        TlsVerify::Pin(pin) => {
            let v = Arc::new(PinVerifier::new(pin, provider));
            let seen = v.presented.clone();
            (
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(v)
                    .with_no_client_auth(),
                Some(seen),
            )
        }
        TlsVerify::InsecureForTests => (
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
                .with_no_client_auth(),
            None,
        ),
    })
}

/// Trusts exactly the certificate whose `sha256-raw` pin is given, as the official client does
/// for `CertName: "sha256-raw:…"`; signatures are checked with that certificate's key.
#[derive(Debug)]
pub struct PinVerifier {
    pin: String,
    provider: Arc<CryptoProvider>,
    /// The pin of a refused certificate, for the error message.
    presented: PresentedPin,
}

impl PinVerifier {
    /// A verifier for `pin` (`sha256-raw:<hex>`, compared without regard to case).
    pub fn new(pin: &str, provider: Arc<CryptoProvider>) -> Self {
        Self {
            pin: pin.to_ascii_lowercase(),
            provider,
            presented: Arc::new(Mutex::new(None)),
        }
    }
}

fn verify_sig12(
    p: &CryptoProvider,
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    rustls::crypto::verify_tls12_signature(message, cert, dss, &p.signature_verification_algorithms)
}

fn verify_sig13(
    p: &CryptoProvider,
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    rustls::crypto::verify_tls13_signature(message, cert, dss, &p.signature_verification_algorithms)
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got = cert_pin(end_entity.as_ref());
        if got == self.pin {
            return Ok(ServerCertVerified::assertion());
        }
        let msg = format!("certificate pin mismatch: server presented {got}");
        if let Ok(mut slot) = self.presented.lock() {
            *slot = Some(got);
        }
        Err(rustls::Error::General(msg))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_sig12(&self.provider, message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_sig13(&self.provider, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// [`TlsVerify::InsecureForTests`]: any certificate (signatures are still checked, which costs
/// nothing and keeps the handshake honest about the key it used).
#[derive(Debug)]
struct AnyCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_sig12(&self.0, message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_sig13(&self.0, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_is_the_sha256_of_the_der_bytes() {
        // SHA-256 of the empty string.
        assert_eq!(
            cert_pin(b""),
            "sha256-raw:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert!(crate::url::is_pin(&cert_pin(b"x")));
    }
}
