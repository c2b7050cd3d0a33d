//! Private files and directories: the data directory, the store's files and the cached fax
//! documents are readable by faxd's user only (directories 0700, files 0600), also when an
//! older installation left them wider.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

/// Creates a directory (and its parents) and makes it private to its owner (mode 0700), also
/// when it already existed.
pub fn private_dir(path: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
}

/// Creates a directory and its missing parents with mode 0700; an existing directory is left
/// as it is (a cache directory may be a shared one the operator chose, never to be narrowed).
pub async fn create_dir_private(path: &Path) -> std::io::Result<()> {
    tokio::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .await
}

/// As [`create_dir_private`], for start-up code outside the runtime.
pub fn create_dir_private_blocking(path: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
}

/// Makes an existing file private to its owner (mode 0600); a missing file is no error.
pub fn make_private(path: &Path) -> std::io::Result<()> {
    match std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Creates a new file private to its owner (mode 0600). Fails when the path exists (a
/// planted file or link is never written through).
pub async fn create_private(path: &Path) -> std::io::Result<tokio::fs::File> {
    tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .await
}

/// A file name nobody can guess: `prefix`, 128 random bits in hex, then `suffix`.
pub fn unguessable_name(prefix: &str, suffix: &str) -> String {
    format!("{prefix}{}{suffix}", crate::ids::new_id())
}

/// Removes the files of `dir` whose names start with `prefix` (left by an earlier owner that
/// was killed before it cleaned up); errors are ignored, as for any clean-up.
pub async fn remove_with_prefix(dir: &Path, prefix: &str) {
    let Ok(mut entries) = tokio::fs::read_dir(dir).await else {
        return;
    };
    while let Ok(Some(e)) = entries.next_entry().await {
        if e.file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(prefix))
        {
            let _ = tokio::fs::remove_file(e.path()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_and_files_become_private() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("a/b");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        private_dir(&d).unwrap();
        let mode = std::fs::metadata(&d).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        let f = d.join("x");
        std::fs::write(&f, b"x").unwrap();
        make_private(&f).unwrap();
        assert_eq!(
            std::fs::metadata(&f).unwrap().permissions().mode() & 0o777,
            0o600
        );
        make_private(&d.join("missing")).unwrap();
        let name = unguessable_name("job-", ".tiff");
        assert_eq!(name.len(), "job-".len() + 32 + ".tiff".len());
        assert_ne!(name, unguessable_name("job-", ".tiff"));
    }
}
