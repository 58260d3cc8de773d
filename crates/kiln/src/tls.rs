//! The ingress's certificate and key. `kiln-spec` checks that both files are readable PEM of
//! the right kind (it stays free of cryptography); whether the key belongs to the certificate
//! needs rustls, so it is checked here, through `kiln-ingress`, both when a stack is loaded
//! (`kiln validate`, plan, apply) and when the control plane starts the TLS listener.

use std::path::Path;

use kiln_ingress::{TlsError, TlsSettings};
use kiln_spec::{Code, Diagnostic, FileSystem, IngressTls, LoadFailure, Stack};

/// Loads the stack as `kiln_spec::load` does, then checks its TLS key pair.
pub fn load(fs: &dyn FileSystem, root_file: &Path) -> Result<Stack, Box<LoadFailure>> {
    let stack = kiln_spec::load(fs, root_file)?;
    let Some(tls) = &stack.ingress_tls else {
        return Ok(stack);
    };
    match settings(tls) {
        Ok(_) => Ok(stack),
        Err(diagnostic) => Err(Box::new(LoadFailure {
            sources: stack.sources,
            diagnostics: vec![*diagnostic],
        })),
    }
}

/// Reads the files and builds the TLS settings, or says which file is wrong and how.
pub fn settings(tls: &IngressTls) -> Result<TlsSettings, Box<Diagnostic>> {
    let read = |path: &Path, span, key_path| {
        std::fs::read(path).map_err(|e| {
            Box::new(Diagnostic::new(
                Code::InvalidValue,
                span,
                key_path,
                format!("cannot read {}: {e}", path.display()),
            ))
        })
    };
    let cert = read(&tls.cert, tls.cert_span, "ingress.tls.cert")?;
    let key = read(&tls.key, tls.key_span, "ingress.tls.key")?;
    TlsSettings::from_pem(&cert, &key).map_err(|error| Box::new(diagnostic(tls, &error)))
}

fn diagnostic(tls: &IngressTls, error: &TlsError) -> Diagnostic {
    let cert = tls.cert.display();
    let key = tls.key.display();
    match error {
        TlsError::KeyMismatch => Diagnostic::new(
            Code::InvalidValue,
            tls.key_span,
            "ingress.tls.key",
            format!("{key} is not the private key of the certificate in {cert}"),
        )
        .label("this key does not match the certificate")
        .related(tls.cert_span, "the certificate it was checked against")
        .help(format!(
            "use the key the certificate was issued for; the two public keys must be equal: `openssl x509 -noout -pubkey -in {cert}` and `openssl pkey -pubout -in {key}`"
        )),
        TlsError::NoCertificate | TlsError::BadCertificate(_) => Diagnostic::new(
            Code::InvalidValue,
            tls.cert_span,
            "ingress.tls.cert",
            format!("{cert}: {error}"),
        )
        .label("the certificate does not decode")
        .help("export the certificate again as PEM: `openssl x509 -in CERT -out cert.pem`"),
        TlsError::NoKey | TlsError::BadKey(_) | TlsError::Unusable(_) => Diagnostic::new(
            Code::InvalidValue,
            tls.key_span,
            "ingress.tls.key",
            format!("{key}: {error}"),
        )
        .label("the key cannot be used")
        .help("use an unencrypted RSA, ECDSA (P-256/P-384) or Ed25519 key in PEM: `openssl pkey -in KEY -out key.pem`"),
    }
}
