//! Per-VM ssh key pairs. Every guest gets a fresh ed25519 key that never leaves the VM's
//! private directory.

use crate::error::{Error, Result};
use ssh_key::{Algorithm, LineEnding, PrivateKey};

/// An ssh key pair in OpenSSH formats.
#[derive(Clone)]
pub struct KeyPair {
    /// Private key, OpenSSH PEM format (what libssh2 reads).
    pub private_openssh: String,
    /// Public key line for `authorized_keys`.
    pub public_line: String,
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPair")
            .field("public_line", &self.public_line)
            .finish_non_exhaustive()
    }
}

impl KeyPair {
    /// Generates a new ed25519 key pair with `comment`.
    pub fn generate(comment: &str) -> Result<KeyPair> {
        let mut rng = rand::rngs::OsRng;
        let mut key = PrivateKey::random(&mut rng, Algorithm::Ed25519)
            .map_err(|e| Error::Ssh(format!("generating a key: {e}")))?;
        key.set_comment(comment);
        let private_openssh = key
            .to_openssh(LineEnding::LF)
            .map_err(|e| Error::Ssh(format!("encoding a key: {e}")))?
            .to_string();
        let public_line = key
            .public_key()
            .to_openssh()
            .map_err(|e| Error::Ssh(format!("encoding a public key: {e}")))?;
        Ok(KeyPair {
            private_openssh,
            public_line,
        })
    }
}

/// A guest ssh host key: the private half in dropbear's file format (goes into the guest),
/// the public half as the SSH wire-format blob the client pins.
#[derive(Clone)]
pub struct HostKey {
    /// dropbear's ed25519 private key file content.
    pub dropbear_private: Vec<u8>,
    /// `string "ssh-ed25519" || string pubkey`, as libssh2 reports the server's key.
    pub public_blob: Vec<u8>,
}

impl std::fmt::Debug for HostKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostKey").finish_non_exhaustive()
    }
}

fn put_string(buf: &mut Vec<u8>, s: &[u8]) {
    buf.extend_from_slice(&(s.len() as u32).to_be_bytes());
    buf.extend_from_slice(s);
}

impl HostKey {
    /// Generates a fresh ed25519 host key.
    pub fn generate() -> Result<HostKey> {
        let mut rng = rand::rngs::OsRng;
        let key = PrivateKey::random(&mut rng, Algorithm::Ed25519)
            .map_err(|e| Error::Ssh(format!("generating a host key: {e}")))?;
        let kp = key
            .key_data()
            .ed25519()
            .ok_or_else(|| Error::Ssh("not an ed25519 key".into()))?;
        let mut both = Vec::with_capacity(64);
        both.extend_from_slice(kp.private.as_ref());
        both.extend_from_slice(kp.public.as_ref());
        let mut dropbear_private = Vec::new();
        put_string(&mut dropbear_private, b"ssh-ed25519");
        put_string(&mut dropbear_private, &both);
        let mut public_blob = Vec::new();
        put_string(&mut public_blob, b"ssh-ed25519");
        put_string(&mut public_blob, kp.public.as_ref());
        Ok(HostKey {
            dropbear_private,
            public_blob,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_key_matches_dropbear_layout() {
        let k = HostKey::generate().unwrap();
        // u32 len 11, "ssh-ed25519", u32 len 64, 64 bytes.
        assert_eq!(k.dropbear_private.len(), 4 + 11 + 4 + 64);
        assert_eq!(&k.dropbear_private[4..15], b"ssh-ed25519");
        assert_eq!(&k.dropbear_private[15..19], &64u32.to_be_bytes());
        // The public half of the private file is the key in the public blob.
        assert_eq!(&k.dropbear_private[19 + 32..], &k.public_blob[4 + 11 + 4..]);
    }

    #[test]
    fn keys_are_fresh_and_well_formed() {
        let a = KeyPair::generate("vm-a").unwrap();
        let b = KeyPair::generate("vm-b").unwrap();
        assert!(a.public_line.starts_with("ssh-ed25519 "));
        assert!(a.public_line.ends_with(" vm-a"));
        assert!(a
            .private_openssh
            .starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"));
        assert_ne!(a.public_line, b.public_line);
    }
}
