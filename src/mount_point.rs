//! Mount points: what is mounted at one (read from /proc/self/mountinfo,
//! without a stat, so a process can ask about its own mount), and making
//! one ready to mount on: created if asked, and a dead ciofs mount left by
//! a ciofs that was killed (every call on it fails with ENOTCONN) detached
//! first. `ciofs mount` and `ciofs fuse-helper` both prepare theirs so.

use std::io;
use std::path::{Path, PathBuf};

/// The topmost mount at a mount point, as mountinfo lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct MountEntry {
    pub fs_type: String,
    pub source: String,
}

impl MountEntry {
    /// A ciofs FUSE mount: its source is `ciofs`, its type `fuse` (as
    /// fuser mounts it) or `fuse.ciofs` (as `fuse-helper` and mount(8)'s
    /// helper forms do).
    pub fn is_ciofs(&self) -> bool {
        use ciofs_frontends::fuse::{FS_NAME, FS_TYPE};
        self.source == FS_NAME && (self.fs_type == "fuse" || self.fs_type == FS_TYPE)
    }
}

/// The topmost mount at `canonical`, if anything is mounted there.
pub fn top_mount(canonical: &Path) -> Option<MountEntry> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    top_mount_in(&mountinfo, canonical)
}

/// Later lines are mounted on top of earlier ones at the same point.
fn top_mount_in(mountinfo: &str, path: &Path) -> Option<MountEntry> {
    let wanted = escaped(path);
    mountinfo.lines().rev().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        let separator = fields.iter().position(|field| *field == "-")?;
        if fields.get(4) != Some(&wanted.as_str()) {
            return None;
        }
        let (fs_type, source) = (fields.get(separator + 1)?, fields.get(separator + 2)?);
        Some(MountEntry { fs_type: fs_type.to_string(), source: source.to_string() })
    })
}

/// A path as mountinfo writes it: space, tab, newline and backslash as
/// octal escapes.
fn escaped(path: &Path) -> String {
    let mut text = String::new();
    for c in path.to_string_lossy().chars() {
        match c {
            ' ' | '\t' | '\n' | '\\' => text.push_str(&format!("\\{:03o}", c as u32)),
            c => text.push(c),
        }
    }
    text
}

/// Makes `path` ready to mount on and returns it canonical: created if
/// missing and `mkdir` asks; a dead ciofs mount on it detached (the mount
/// point of a ciofs that was killed answers ENOTCONN, though a stat may
/// still be answered from the kernel's cache). A dead mount of another
/// filesystem is left alone: not ours to take down.
pub fn prepare(path: &Path, mkdir: bool) -> Result<PathBuf, String> {
    let named = |e: io::Error| format!("mount point {}: {e}", path.display());
    if mkdir && matches!(std::fs::symlink_metadata(path), Err(e) if e.kind() == io::ErrorKind::NotFound) {
        std::fs::create_dir_all(path).map_err(named)?;
    }
    let canonical = match path.canonicalize() {
        Ok(canonical) => canonical,
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => canonical_through_parent(path).map_err(named)?,
        Err(e) => return Err(named(e)),
    };
    if is_dead_ciofs_mount(&canonical) {
        // Through fusermount3 where ciofs is not root.
        ciofs_frontends::fuse::unmount(&canonical, true).map_err(named)?;
        tracing::warn!(mountpoint = %canonical.display(), "detached a dead ciofs mount (its ciofs was killed)");
    }
    canonical.canonicalize().map_err(named)
}

/// A ciofs mount whose server is gone: statfs, which the kernel always
/// asks the server, fails with ENOTCONN.
fn is_dead_ciofs_mount(canonical: &Path) -> bool {
    top_mount(canonical).is_some_and(|mounted| mounted.is_ciofs())
        && nix::sys::statfs::statfs(canonical).err() == Some(nix::errno::Errno::ENOTCONN)
}

/// `path` made canonical without a stat of `path` itself.
fn canonical_through_parent(path: &Path) -> io::Result<PathBuf> {
    let name = path.file_name().ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.canonicalize()?,
        _ => std::env::current_dir()?,
    };
    Ok(parent.join(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_topmost_mount_at_a_point_is_the_last_listed() {
        let mountinfo = "\
22 1 0:21 / / rw - ext4 /dev/sda1 rw
40 22 0:35 / /pod/my\\040data rw,relatime shared:5 - tmpfs tmpfs rw
41 40 0:36 / /pod/my\\040data rw,nosuid,nodev - fuse.ciofs ciofs rw,user_id=0
42 22 0:37 / /pod/other rw - fuse sshfs rw
43 22 0:38 / /pod/fuser rw - fuse ciofs rw
";
        let at = |path: &str| top_mount_in(mountinfo, Path::new(path));
        let ciofs = |path: &str| at(path).is_some_and(|mounted| mounted.is_ciofs());
        assert_eq!(at("/pod/my data").map(|m| m.fs_type).as_deref(), Some("fuse.ciofs"));
        assert!(ciofs("/pod/my data") && ciofs("/pod/fuser"));
        assert!(!ciofs("/pod/other"), "another FUSE filesystem");
        assert_eq!(at("/pod"), None);
    }

    #[test]
    fn a_missing_mount_point_is_made_only_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let wanted = dir.path().join("a/b");
        let error = prepare(&wanted, false).unwrap_err();
        assert!(error.contains("No such file"), "{error}");
        assert_eq!(prepare(&wanted, true).unwrap(), dir.path().canonicalize().unwrap().join("a/b"));
    }
}
