//! Files only the user who runs ciofs may read: staging files, journals,
//! pid files and logs hold object bytes and paths of the user's project.
//!
//! Directories are made 0700 and files 0600. A file is never opened
//! through a symbolic link (`O_NOFOLLOW`), and a directory that is a link,
//! belongs to another user, or is open to others is refused rather than
//! used, so that nobody can plant a link where ciofs will truncate or write.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// How `open` opens a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Open {
    /// Read only; the file must exist.
    Read,
    /// Read and write, made if missing, kept as it is otherwise.
    ReadWrite,
    /// Read and write, made here: an existing file (or link) is an error.
    CreateNew,
    /// Appended to, made if missing.
    Append,
}

/// Makes `dir` and its missing parents (each made 0700), and checks that
/// `dir` is a directory of ours that nobody else can enter: a link, another
/// user's directory, or one open to others is an error. An existing
/// directory of ours with wider permissions is narrowed to 0700.
pub fn private_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let meta = std::fs::symlink_metadata(dir)?;
    if !meta.file_type().is_dir() {
        return Err(refused(dir, "is not a directory (a symbolic link?)"));
    }
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return Err(refused(dir, &format!("belongs to user {}, not to {me}", meta.uid())));
    }
    if meta.mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Opens `path` as `how` says, never through a symbolic link; a file made
/// here is 0600.
pub fn open(path: &Path, how: Open) -> io::Result<File> {
    let mut options = OpenOptions::new();
    match how {
        Open::Read => options.read(true),
        Open::ReadWrite => options.read(true).write(true).create(true),
        Open::CreateNew => options.read(true).write(true).create_new(true),
        Open::Append => options.append(true).create(true),
    };
    options.mode(0o600).custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC).open(path)
}

/// Replaces `path` with `bytes` so that a crash leaves either the old file
/// or the new one, both complete: written to a new file beside it, synced,
/// renamed over it, and the directory synced.
pub fn replace(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().ok_or_else(|| refused(path, "has no directory"))?;
    let name = path.file_name().ok_or_else(|| refused(path, "has no file name"))?;
    let mut temporary = tempfile::Builder::new()
        .prefix(&format!(".{}.", name.to_string_lossy()))
        .permissions(std::fs::Permissions::from_mode(0o600))
        .tempfile_in(dir)?;
    temporary.write_all(bytes)?;
    temporary.as_file().sync_data()?;
    temporary.persist(path).map_err(|e| e.error)?;
    File::open(dir)?.sync_all()
}

fn refused(path: &Path, why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, format!("{}: {why}; not used", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path).unwrap().mode() & 0o777
    }

    #[test]
    fn directories_are_0700_and_files_0600() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b");
        private_dir(&dir).unwrap();
        assert_eq!((mode(&root.path().join("a")), mode(&dir)), (0o700, 0o700));
        let file = dir.join("f");
        open(&file, Open::CreateNew).unwrap();
        assert_eq!(mode(&file), 0o600);
        replace(&dir.join("g"), b"x").unwrap();
        assert_eq!((mode(&dir.join("g")), std::fs::read(dir.join("g")).unwrap()), (0o600, b"x".to_vec()));
    }

    #[test]
    fn an_open_directory_of_ours_is_narrowed() {
        let root = tempfile::tempdir().unwrap();
        std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        private_dir(root.path()).unwrap();
        assert_eq!(mode(root.path()), 0o700);
    }

    #[test]
    fn links_are_never_followed() {
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join("victim");
        std::fs::write(&target, b"keep").unwrap();
        let planted = root.path().join("planted");
        std::os::unix::fs::symlink(&target, &planted).unwrap();
        for how in [Open::Read, Open::ReadWrite, Open::CreateNew, Open::Append] {
            assert!(open(&planted, how).is_err(), "{how:?} followed a link");
        }
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
        let linked_dir = root.path().join("dir-link");
        std::os::unix::fs::symlink(root.path(), &linked_dir).unwrap();
        assert!(private_dir(&linked_dir).is_err(), "a link is not a private directory");
    }
}
