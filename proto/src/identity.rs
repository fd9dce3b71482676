//! Persistent identities. Gateways and nodes each own a key pair kept in a PEM file; the
//! self-signed certificate presented in TLS is re-made from that key at start-up, so only the
//! key matters. A node's id and a gateway's pinned fingerprint are both hashes of the public key
//! (its SubjectPublicKeyInfo), which the TLS handshake proves the peer holds.

use std::path::Path;

use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("reading key file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("writing key file {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("key file {path} is not a PKCS#8 PEM private key: {source}")]
    BadKey {
        path: String,
        #[source]
        source: rcgen::Error,
    },
    #[error("generating certificate: {0}")]
    Cert(#[from] rcgen::Error),
    #[error("peer certificate cannot be parsed: {0}")]
    BadPeerCert(#[source] rustls::Error),
}

/// A key pair plus the self-signed certificate made from it.
pub struct Identity {
    key_der: Vec<u8>,
    cert: CertificateDer<'static>,
    spki_hash: [u8; 32],
}

impl std::fmt::Debug for Identity {
    // Never print key material.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("id", &self.node_id())
            .field("key", &"MASKED")
            .finish()
    }
}

impl Identity {
    /// A fresh, unsaved identity (tests, ephemeral nodes).
    pub fn generate() -> Result<Self, IdentityError> {
        Self::from_key(rcgen::KeyPair::generate()?)
    }

    /// Loads the key at `path`, creating it (mode 0600) when the file does not exist yet.
    pub fn load_or_generate(path: &Path) -> Result<Self, IdentityError> {
        let shown = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(pem) => {
                let key =
                    rcgen::KeyPair::from_pem(&pem).map_err(|source| IdentityError::BadKey {
                        path: shown,
                        source,
                    })?;
                Self::from_key(key)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = rcgen::KeyPair::generate()?;
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|source| IdentityError::Write {
                        path: shown.clone(),
                        source,
                    })?;
                }
                write_private(path, key.serialize_pem().as_bytes()).map_err(|source| {
                    IdentityError::Write {
                        path: shown.clone(),
                        source,
                    }
                })?;
                Self::from_key(key)
            }
            Err(source) => Err(IdentityError::Read {
                path: shown,
                source,
            }),
        }
    }

    fn from_key(key: rcgen::KeyPair) -> Result<Self, IdentityError> {
        let params = rcgen::CertificateParams::new(vec!["meridian".to_string()])?;
        let cert = params.self_signed(&key)?;
        let spki_hash = Sha256::digest(key.public_key_der()).into();
        Ok(Self {
            key_der: key.serialize_der(),
            cert: cert.der().clone(),
            spki_hash,
        })
    }

    /// The node id: the first 16 bytes of SHA-256(SubjectPublicKeyInfo), hex.
    pub fn node_id(&self) -> String {
        hex::encode(&self.spki_hash[..16])
    }

    /// The fingerprint a node pins for its gateway: `sha256:` + SHA-256(SPKI) hex.
    pub fn fingerprint(&self) -> String {
        format!("sha256:{}", hex::encode(self.spki_hash))
    }

    pub fn cert(&self) -> CertificateDer<'static> {
        self.cert.clone()
    }

    pub fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }
}

/// SHA-256 of a certificate's SubjectPublicKeyInfo.
pub fn spki_sha256(cert: &CertificateDer<'_>) -> Result<[u8; 32], IdentityError> {
    let parsed =
        rustls::server::ParsedCertificate::try_from(cert).map_err(IdentityError::BadPeerCert)?;
    Ok(Sha256::digest(parsed.subject_public_key_info().as_ref()).into())
}

/// The node id a certificate proves (see [`Identity::node_id`]).
pub fn node_id_of(cert: &CertificateDer<'_>) -> Result<String, IdentityError> {
    Ok(hex::encode(&spki_sha256(cert)?[..16]))
}

/// The fingerprint of a certificate (see [`Identity::fingerprint`]).
pub fn fingerprint_of(cert: &CertificateDer<'_>) -> Result<String, IdentityError> {
    Ok(format!("sha256:{}", hex::encode(spki_sha256(cert)?)))
}

#[cfg(unix)]
fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(data)
}

#[cfg(not(unix))]
fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_is_stable_across_reloads_and_matches_the_cert() {
        let dir = std::env::temp_dir().join(format!("meridian-id-{}", std::process::id()));
        let path = dir.join("node.key");
        let _ = std::fs::remove_file(&path);
        let a = Identity::load_or_generate(&path).unwrap();
        let b = Identity::load_or_generate(&path).unwrap();
        assert_eq!(a.node_id(), b.node_id());
        assert_eq!(a.node_id().len(), 32);
        assert_eq!(node_id_of(&a.cert()).unwrap(), a.node_id());
        assert_eq!(fingerprint_of(&b.cert()).unwrap(), a.fingerprint());
        assert_ne!(Identity::generate().unwrap().node_id(), a.node_id());
        assert!(!format!("{a:?}").contains("BEGIN"));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn garbage_key_file_is_a_named_error() {
        let dir = std::env::temp_dir().join(format!("meridian-badkey-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad.key");
        std::fs::write(&path, "not a key").unwrap();
        let err = Identity::load_or_generate(&path).unwrap_err().to_string();
        assert!(err.contains("bad.key"), "{err}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
