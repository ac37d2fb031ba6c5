//! Credentials read from mounted Secret files at use time, turned into git2
//! callbacks, and a redactor so no secret leaves in an error message.

use std::{cell::RefCell, collections::BTreeSet, path::PathBuf, sync::Arc};

use base64::Engine as _;
use git2::{CertificateCheckStatus, Cred, CredentialType, RemoteCallbacks};

use super::{Error, GitCause, Result};

/// How to authenticate to the remote. Paths point at files mounted from a
/// Kubernetes Secret; they are read on every network operation, so a rotated
/// Secret takes effect without a restart.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Credentials {
    /// Anonymous (or a local path / `file://` remote).
    #[default]
    None,
    /// HTTP(S) basic auth with a username and a token (or password).
    UserToken {
        username_file: PathBuf,
        token_file: PathBuf,
    },
    /// SSH with a private key; the user comes from the URL (default `git`).
    /// With `known_hosts`, the server's host key must be listed there
    /// (plain host names; hashed entries are not supported).
    SshKey {
        private_key_file: PathBuf,
        known_hosts: Option<PathBuf>,
    },
}

/// Secrets loaded for one network operation.
pub(crate) struct Session {
    creds: Credentials,
    username: Option<String>,
    token: Option<String>,
    known_hosts: Option<String>,
}

fn read_secret(path: &PathBuf) -> Result<String> {
    std::fs::read_to_string(path)
        .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
        .map_err(|e| Error::Credentials {
            path: path.clone(),
            source: Arc::new(e),
        })
}

impl Session {
    pub(crate) fn load(creds: &Credentials) -> Result<Self> {
        let mut session = Session {
            creds: creds.clone(),
            username: None,
            token: None,
            known_hosts: None,
        };
        match creds {
            Credentials::None => {}
            Credentials::UserToken {
                username_file,
                token_file,
            } => {
                session.username = Some(read_secret(username_file)?);
                session.token = Some(read_secret(token_file)?);
            }
            Credentials::SshKey { known_hosts, .. } => {
                if let Some(path) = known_hosts {
                    session.known_hosts = Some(read_secret(path)?);
                }
            }
        }
        Ok(session)
    }

    /// Turn a git2 error into a [`GitCause`] with every secret removed.
    pub(crate) fn cause(&self, e: git2::Error) -> GitCause {
        cause(e, self.token.as_deref())
    }

    /// Callbacks that answer credential requests once per credential type
    /// (libgit2 asks again after a refusal; asking twice means the remote
    /// rejected what we gave) and check SSH host keys.
    pub(crate) fn callbacks(&self) -> RemoteCallbacks<'_> {
        let mut cb = RemoteCallbacks::new();
        let tried: RefCell<BTreeSet<u32>> = RefCell::default();
        cb.credentials(move |_url, username_from_url, allowed| {
            if !tried.borrow_mut().insert(allowed.bits()) {
                return Err(git2::Error::from_str(
                    "authentication was rejected by the remote; check the credentials secret",
                ));
            }
            match &self.creds {
                Credentials::UserToken { .. } if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) => {
                    Cred::userpass_plaintext(
                        self.username.as_deref().unwrap_or_default(),
                        self.token.as_deref().unwrap_or_default(),
                    )
                }
                Credentials::SshKey { private_key_file, .. } if allowed.contains(CredentialType::SSH_KEY) => {
                    Cred::ssh_key(username_from_url.unwrap_or("git"), None, private_key_file, None)
                }
                Credentials::SshKey { .. } if allowed.contains(CredentialType::USERNAME) => {
                    Cred::username(username_from_url.unwrap_or("git"))
                }
                Credentials::None => Err(git2::Error::from_str(
                    "the remote requires authentication but no credentials are configured",
                )),
                _ => Err(git2::Error::from_str(
                    "the remote asks for a kind of authentication the configured credentials cannot give",
                )),
            }
        });
        if let Some(known_hosts) = self.known_hosts.as_deref() {
            cb.certificate_check(move |cert, host| {
                let Some(key) = cert.as_hostkey().and_then(|h| h.hostkey()) else {
                    return Ok(CertificateCheckStatus::CertificatePassthrough);
                };
                if host_key_known(known_hosts, host, key) {
                    Ok(CertificateCheckStatus::CertificateOk)
                } else {
                    Err(git2::Error::from_str(&format!(
                        "the host key of {host} is not in the configured known_hosts"
                    )))
                }
            });
        }
        cb
    }
}

pub(crate) fn cause(e: git2::Error, secret: Option<&str>) -> GitCause {
    let mut message = e.message().to_string();
    if let Some(secret) = secret.filter(|s| !s.is_empty()) {
        message = message.replace(secret, "<redacted>");
    }
    GitCause {
        message,
        code: e.code(),
        class: e.class(),
    }
}

/// `https://user:token@host/x` → `https://host/x`, for messages (the
/// core's rule, which the rendered Applications' `repoURL` follows too).
pub(crate) use paver_core::render::without_credentials as display_url;

/// Whether `known_hosts` lists `key` for `host` (plain, non-hashed entries;
/// `[host]:port` entries match `host` too).
fn host_key_known(known_hosts: &str, host: &str, key: &[u8]) -> bool {
    known_hosts.lines().any(|line| {
        let mut fields = line.split_whitespace();
        let (Some(hosts), Some(_kind), Some(b64)) = (fields.next(), fields.next(), fields.next()) else {
            return false;
        };
        let host_matches = hosts.split(',').any(|h| {
            let h = h
                .strip_prefix('[')
                .map_or(h, |h| h.split(']').next().unwrap_or(h));
            h == host
        });
        host_matches
            && base64::engine::general_purpose::STANDARD
                .decode(b64)
                .is_ok_and(|k| k == key)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_userinfo_is_hidden() {
        assert_eq!(
            display_url("https://bot:s3cret@git.example/org/repo.git"),
            "https://git.example/org/repo.git"
        );
        assert_eq!(display_url("/tmp/x.git"), "/tmp/x.git");
    }

    #[test]
    fn known_hosts_matching() {
        let key = b"key-bytes";
        let b64 = base64::engine::general_purpose::STANDARD.encode(key);
        let kh = format!("# comment\n[git.example]:2222,other ssh-ed25519 {b64}\n");
        assert!(host_key_known(&kh, "git.example", key));
        assert!(host_key_known(&kh, "other", key));
        assert!(!host_key_known(&kh, "evil.example", key));
        assert!(!host_key_known(&kh, "other", b"different"));
    }

    #[test]
    fn redaction() {
        let e = git2::Error::from_str("remote said: bad token tok-123 for user");
        assert!(!cause(e, Some("tok-123")).message.contains("tok-123"));
    }
}
