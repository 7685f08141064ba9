//! The bearer token that guards writes: 32 random bytes as hex in `service.token`, mode 0600,
//! created at first start.

use std::fs;
use std::io::ErrorKind;
use std::path::Path;

use rand::RngCore as _;

use crate::error::{Error, Result};

/// The token file's name in the data directory.
pub const TOKEN_FILE: &str = "service.token";

/// Reads the service token from `data_dir/service.token`, creating it on first use.
///
/// A new token is written by `agency_fs::atomic_write`, whose temporary file starts with mode
/// 0600, so the token is never readable by others, not even briefly; the file is read back so
/// that two services starting together agree on the one that won the rename.
pub fn load_or_create_token(data_dir: &Path) -> Result<String> {
    let path = data_dir.join(TOKEN_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => return parse(&path, &text),
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(source) => return Err(Error::Token { path, source }),
    }
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let token = agency_core::pattern::hex(&bytes);
    agency_fs::atomic_write(&path, format!("{token}\n").as_bytes())?;
    let text = fs::read_to_string(&path).map_err(|source| Error::Token {
        path: path.clone(),
        source,
    })?;
    parse(&path, &text)
}

fn parse(path: &Path, text: &str) -> Result<String> {
    let token = text.trim();
    if token.len() < 32 || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::BadToken {
            path: path.to_path_buf(),
        });
    }
    Ok(token.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn token_is_created_once_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create_token(dir.path()).unwrap();
        assert_eq!(first.len(), 64);
        assert!(first.bytes().all(|b| b.is_ascii_hexdigit()));
        let mode = fs::metadata(dir.path().join(TOKEN_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(load_or_create_token(dir.path()).unwrap(), first);
    }

    #[test]
    fn a_damaged_token_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(TOKEN_FILE), "short\n").unwrap();
        assert!(matches!(
            load_or_create_token(dir.path()),
            Err(Error::BadToken { .. })
        ));
    }
}
