//! macOS's metadata files, which ciofs keeps local to the mount and never
//! sends to Google: which names they are (`is_macos_metadata`), where they
//! are kept local (`kept_local`), and the local directories among them
//! (`LocalDirs`). Their files are `Node::Scratch` files of
//! `core::edits::LocalFiles`, like an editor's scratch files.
//!
//! Finder and macOS's NFS and FUSE clients write an AppleDouble file
//! `._NAME` beside each file they copy (its extended attributes and
//! resource fork), `.DS_Store` in each directory they show, and
//! `.Trashes`, `.Spotlight-V100`, `.fseventsd` ... at the volume's root.
//! Uploaded, they would litter every bucket (and BigQuery and Pub/Sub
//! directories would refuse them). rclone's `--noappledouble` and macFUSE's
//! `noappledouble` keep `._*` and `.DS_Store` away; the other names are
//! those macOS puts at a volume's root (github/gitignore's macOS list).
//! `--upload-macos-files` makes them ordinary names again.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::SystemTime;

use ciofs_backends::sync::lock;
use ciofs_frontends::{VfsError, VfsResult};

use super::node::Node;

/// The names macOS writes for itself, exactly (case matters: these are
/// the names macOS writes).
const MACOS_NAMES: [&str; 12] = [
    ".DS_Store",
    ".Spotlight-V100",
    ".Trashes",
    ".fseventsd",
    ".TemporaryItems",
    ".DocumentRevisions-V100",
    ".VolumeIcon.icns",
    ".apdisk",
    ".com.apple.timemachine.donotpresent",
    ".AppleDouble",
    ".AppleDB",
    ".AppleDesktop",
];

/// The prefix of an AppleDouble file (`._photo.jpg` beside `photo.jpg`).
const APPLE_DOUBLE_PREFIX: &str = "._";

/// Whether `name` (one path segment) is a file or directory macOS writes
/// for its own use.
pub fn is_macos_metadata(name: &str) -> bool {
    name.starts_with(APPLE_DOUBLE_PREFIX) || MACOS_NAMES.contains(&name)
}

/// Whether the entry `name` of directory `dir` lives in ciofs only: a
/// macOS name (unless `upload_macos_files`), or anything inside a local
/// directory. `.ciofs/` is ciofs's own and holds none.
pub fn kept_local(dir: &Node, name: &str, upload_macos_files: bool) -> bool {
    match dir {
        Node::LocalDir { .. } => true,
        Node::Control => false,
        _ => !upload_macos_files && is_macos_metadata(name),
    }
}

/// The local directories of a mount, each with its time; in memory only,
/// so they are gone after a restart.
#[derive(Default)]
pub struct LocalDirs {
    dirs: Mutex<HashMap<Node, SystemTime>>,
}

impl LocalDirs {
    /// The time of local directory `node`, if it exists.
    pub fn mtime(&self, node: &Node) -> Option<SystemTime> {
        lock(&self.dirs).get(node).copied()
    }

    /// `mkdir`: EEXIST if it is there already.
    pub fn make(&self, node: &Node) -> VfsResult<SystemTime> {
        let now = SystemTime::now();
        match lock(&self.dirs).entry(node.clone()) {
            std::collections::hash_map::Entry::Occupied(_) => Err(VfsError::exists(format!("{node} exists"))),
            std::collections::hash_map::Entry::Vacant(slot) => Ok(*slot.insert(now)),
        }
    }

    /// Removes `node` (the caller checked that it is empty).
    pub fn remove(&self, node: &Node) -> bool {
        lock(&self.dirs).remove(node).is_some()
    }

    /// The local directories in `dir`, by name.
    pub fn children(&self, dir: &Node) -> Vec<(Node, SystemTime)> {
        let mut found: Vec<(Node, SystemTime)> =
            lock(&self.dirs).iter().filter(|(node, _)| is_in(node, dir)).map(|(n, t)| (n.clone(), *t)).collect();
        found.sort_by_key(|(node, _)| node.path());
        found
    }

    /// Moves every local directory `moved` gives a new node.
    pub fn rekey(&self, moved: impl Fn(&Node) -> Option<Node>) {
        rekey_keys(&mut lock(&self.dirs), moved);
    }
}

/// Gives every entry of `map` whose key `moved` maps the new key. All of
/// them are taken out before any goes back in (as `InodeTable::rekey`
/// does), so that one moved onto another's old key does not lose it.
pub fn rekey_keys<V>(map: &mut HashMap<Node, V>, moved: impl Fn(&Node) -> Option<Node>) {
    let changes: Vec<(Node, Node)> = map.keys().filter_map(|node| Some((node.clone(), moved(node)?))).collect();
    let taken: Vec<(Node, V)> =
        changes.into_iter().filter_map(|(from, to)| map.remove(&from).map(|value| (to, value))).collect();
    map.extend(taken);
}

/// Whether local directory `node` is in `dir` (its stored parent, not
/// one made again by `Node::parent`).
fn is_in(node: &Node, dir: &Node) -> bool {
    matches!(node, Node::LocalDir { dir: parent, .. } if **parent == *dir)
}

/// `node` once local directory `from` is named `to`, if it is `from` or
/// inside it.
pub fn moved_under(node: &Node, from: &Node, to: &Node) -> Option<Node> {
    if node == from {
        return Some(to.clone());
    }
    match node {
        Node::LocalDir { dir, name } => {
            Some(Node::LocalDir { dir: Box::new(moved_under(dir, from, to)?), name: name.clone() })
        }
        Node::Scratch { dir, name } => {
            Some(Node::Scratch { dir: Box::new(moved_under(dir, from, to)?), name: name.clone() })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket() -> Node {
        Node::Dir { project: "p".into(), bucket: "b".into(), prefix: "photos/".into() }
    }

    #[test]
    fn macos_names_are_recognized_and_others_are_not() {
        for name in [
            "._photo.jpg",
            "._",
            ".DS_Store",
            ".Spotlight-V100",
            ".Trashes",
            ".fseventsd",
            ".TemporaryItems",
            ".VolumeIcon.icns",
            ".apdisk",
            ".DocumentRevisions-V100",
        ] {
            assert!(is_macos_metadata(name), "{name}");
        }
        for name in ["photo.jpg", "a._b", ".gitignore", ".ds_store", "DS_Store", "_photo", ".", ".meta", ".Trashes2"] {
            assert!(!is_macos_metadata(name), "{name}");
        }
    }

    #[test]
    fn macos_names_are_local_unless_uploaded_and_everything_in_a_local_dir_is() {
        assert!(kept_local(&bucket(), ".DS_Store", false));
        assert!(!kept_local(&bucket(), ".DS_Store", true), "--upload-macos-files");
        assert!(!kept_local(&bucket(), "photo.jpg", false));
        assert!(kept_local(&Node::Root, ".Trashes", false), "at the mount root too");
        assert!(!kept_local(&Node::Control, ".DS_Store", false), ".ciofs/ is ciofs's own");
        let trashes = Node::LocalDir { dir: Box::new(bucket()), name: ".Trashes".into() };
        assert!(kept_local(&trashes, "501", false));
        assert!(kept_local(&trashes, "photo.jpg", true), "inside a local directory, whatever the option");
    }

    #[test]
    fn a_renamed_local_dir_takes_what_is_inside_it() {
        let from = Node::LocalDir { dir: Box::new(bucket()), name: ".Trashes".into() };
        let to = Node::LocalDir { dir: Box::new(Node::Root), name: ".Trashes".into() };
        let inner = Node::LocalDir { dir: Box::new(from.clone()), name: "501".into() };
        let file = Node::Scratch { dir: Box::new(inner.clone()), name: "x".into() };
        let moved = moved_under(&file, &from, &to).expect("inside");
        assert_eq!(moved.path(), ".Trashes/501/x");
        assert_eq!(moved_under(&bucket(), &from, &to), None);
        let dirs = LocalDirs::default();
        dirs.make(&from).expect("made");
        dirs.make(&inner).expect("made");
        assert!(dirs.make(&from).is_err(), "EEXIST");
        dirs.rekey(|node| moved_under(node, &from, &to));
        assert!(dirs.mtime(&from).is_none());
        assert_eq!(dirs.children(&to).len(), 1);
        assert_eq!(dirs.children(&Node::Root).len(), 1);
    }

    /// Local nodes are made by `Namespace::local_nodes`, not by the
    /// grammar (`Node::child_dir`, `Node::file_in`).
    #[test]
    fn local_nodes_have_paths_inside_a_local_dir() {
        let trashes = Node::LocalDir { dir: Box::new(bucket()), name: ".Trashes".into() };
        assert_eq!(trashes.path(), "p/storage/b/photos/.Trashes");
        assert!(trashes.is_dir());
        assert_eq!(trashes.parent(), bucket());
        let inner = Node::LocalDir { dir: Box::new(trashes), name: "501".into() };
        let file = Node::Scratch { dir: Box::new(inner.clone()), name: "._x".into() };
        assert_eq!(file.parent(), inner);
        assert_eq!(file.path(), "p/storage/b/photos/.Trashes/501/._x");
    }

    #[test]
    fn rekey_keys_swaps_two_names_without_losing_either() {
        let (a, b) = (Node::LocalDir { dir: Box::new(bucket()), name: "a".into() }, Node::Root);
        let mut map = HashMap::from([(a.clone(), 1), (b.clone(), 2)]);
        rekey_keys(&mut map, |node| Some(if *node == a { b.clone() } else { a.clone() }));
        assert_eq!(map, HashMap::from([(b, 1), (a, 2)]));
    }
}
