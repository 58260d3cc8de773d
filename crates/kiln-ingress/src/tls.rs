//! TLS termination with the user's certificate and key (rustls on the `ring` provider).
//! ALPN offers `h2` then `http/1.1`; the connection builder then reads the client's preface as
//! for plain connections, so both protocols behind TLS share the h2c/HTTP/1.1 path.

use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why a certificate and key cannot serve TLS.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsError {
    #[error("the certificate file holds no PEM `CERTIFICATE` block")]
    NoCertificate,
    #[error("the certificate file is not valid PEM: {0}")]
    BadCertificate(String),
    #[error("the key file holds no PEM private key block (PKCS#8, PKCS#1 or SEC1)")]
    NoKey,
    #[error("the key file is not valid PEM: {0}")]
    BadKey(String),
    #[error("the private key does not belong to the certificate")]
    KeyMismatch,
    #[error("the certificate or key is not usable: {0}")]
    Unusable(String),
}

/// A checked certificate chain and key, ready to accept TLS connections. Cheap to clone.
#[derive(Clone)]
pub struct TlsSettings {
    pub(crate) config: Arc<ServerConfig>,
}

impl std::fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSettings")
            .field("alpn", &self.config.alpn_protocols)
            .finish_non_exhaustive()
    }
}

impl TlsSettings {
    /// Parses a PEM certificate chain (end-entity first) and a PEM private key, and checks
    /// that the key is the certificate's (rustls compares their SubjectPublicKeyInfo).
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, TlsError> {
        let certs = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::BadCertificate(e.to_string()))?;
        if certs.is_empty() {
            return Err(TlsError::NoCertificate);
        }
        let key = PrivateKeyDer::from_pem_slice(cert_key_error(key_pem)?).map_err(|e| match e {
            rustls::pki_types::pem::Error::NoItemsFound => TlsError::NoKey,
            other => TlsError::BadKey(other.to_string()),
        })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Unusable(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| match e {
                rustls::Error::InconsistentKeys(_) => TlsError::KeyMismatch,
                other => TlsError::Unusable(other.to_string()),
            })?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self {
            config: Arc::new(config),
        })
    }

    pub(crate) fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.config.clone())
    }
}

/// A certificate given where the key belongs is the most common mix-up; say so.
fn cert_key_error(key_pem: &[u8]) -> Result<&[u8], TlsError> {
    let has_key = PrivateKeyDer::pem_slice_iter(key_pem).any(|k| k.is_ok());
    let has_cert = CertificateDer::pem_slice_iter(key_pem).any(|c| c.is_ok());
    if !has_key && has_cert {
        return Err(TlsError::BadKey(
            "it holds a certificate, not a private key (are `cert` and `key` swapped?)".into(),
        ));
    }
    Ok(key_pem)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn a_matching_pair_loads_with_alpn() {
        let (cert, key) = pair();
        let tls = TlsSettings::from_pem(cert.as_bytes(), key.as_bytes()).unwrap();
        assert_eq!(
            tls.config.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
    }

    #[test]
    fn mistakes_are_named() {
        let (cert, key) = pair();
        let (_, other_key) = pair();
        let err = |c: &str, k: &str| TlsSettings::from_pem(c.as_bytes(), k.as_bytes()).unwrap_err();
        assert_eq!(err(&cert, &other_key), TlsError::KeyMismatch);
        assert_eq!(err("hello", &key), TlsError::NoCertificate);
        assert_eq!(err(&cert, "hello"), TlsError::NoKey);
        assert!(matches!(err(&cert, &cert), TlsError::BadKey(why) if why.contains("swapped")));
        assert!(matches!(
            err(
                "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
                &key
            ),
            TlsError::BadCertificate(_)
        ));
    }
}
