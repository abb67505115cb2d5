//! The one routing decision for names that live in ciofs only (macOS's
//! metadata files and directories, see `core::macos`): every call that
//! names an entry of a directory asks `keeps_local` first, and such an
//! entry is answered here, from `cx.local` (files, as `Node::Scratch`) and
//! `cx.local_dirs` (directories, as `Node::LocalDir`), whatever service the
//! directory belongs to. No slice sees them, so nothing of them reaches
//! Google; a listing shows them after the directory's other entries.

use std::time::SystemTime;

use ciofs_frontends::{Attr, DirEntry, DirPage, Fh, Ino, Opened, VfsError, VfsResult};

use super::{Handle, Namespace};
use crate::core::macos::{self, moved_under};
use crate::core::node::{self, Node};

impl Namespace {
    /// Whether entry `name` of `dir` is local (see `core::macos::kept_local`).
    pub(super) fn keeps_local(&self, dir: &Node, name: &str) -> bool {
        macos::kept_local(dir, name, self.cx.options.upload_macos_files)
    }

    /// The local file and the local directory `name` of `dir` could be.
    fn local_nodes(dir: &Node, name: &str) -> (Node, Node) {
        let (dir, name) = (Box::new(dir.clone()), name.to_string());
        (Node::Scratch { dir: dir.clone(), name: name.clone() }, Node::LocalDir { dir, name })
    }

    /// Size and time of a local node, or None if `node` is not one.
    pub(super) fn local_stat(&self, node: &Node) -> Option<VfsResult<(u64, SystemTime)>> {
        let missing = || VfsError::not_found(node.to_string());
        match node {
            Node::LocalDir { .. } => Some(self.cx.local_dirs.mtime(node).map(|t| (0, t)).ok_or_else(missing)),
            Node::Scratch { dir, name } if self.keeps_local(dir, name) => {
                Some(self.cx.local.stat(node).ok_or_else(missing))
            }
            _ => None,
        }
    }

    /// The local entry `name` of `dir`, file or directory.
    fn local_entry(&self, dir: &Node, name: &str) -> Option<DirEntry> {
        let (file, local_dir) = Self::local_nodes(dir, name);
        if let Some(mtime) = self.cx.local_dirs.mtime(&local_dir) {
            return Some(self.cx.entry(local_dir, 0, mtime));
        }
        let (size, mtime) = self.cx.local.stat(&file)?;
        Some(self.cx.entry(file, size, mtime))
    }

    pub(super) fn local_lookup(&self, dir: &Node, name: &str) -> VfsResult<Attr> {
        let entry = self.local_entry(dir, name).ok_or_else(|| VfsError::not_found(format!("{dir}/{name}")))?;
        Ok(entry.attr)
    }

    pub(super) fn local_create(&self, dir: &Node, name: &str) -> VfsResult<(Attr, Opened)> {
        node::check_new_name(dir, name)?;
        let (file, local_dir) = Self::local_nodes(dir, name);
        if self.cx.local_dirs.mtime(&local_dir).is_some() {
            return Err(VfsError::is_dir(format!("{local_dir}: is a directory")));
        }
        let (ino, generation) = self.cx.inodes.remember(&file);
        self.cx.inodes.count_lookup(ino);
        let handle = self.cx.local.create(&file);
        let (size, mtime) = self.cx.local.stat(&file).unwrap_or((0, SystemTime::now()));
        let attr = self.cx.attr(ino, generation, &file, size, mtime);
        tracing::debug!(node = %file, "a macOS metadata file, kept local");
        Ok((attr, Opened { fh: self.new_handle(Handle::Local(handle)), ..Opened::default() }))
    }

    pub(super) fn local_mkdir(&self, dir: &Node, name: &str) -> VfsResult<Attr> {
        node::check_new_name(dir, name)?;
        let (file, local_dir) = Self::local_nodes(dir, name);
        if self.cx.local.stat(&file).is_some() {
            return Err(VfsError::exists(format!("{file} exists")));
        }
        let mtime = self.cx.local_dirs.make(&local_dir)?;
        Ok(self.cx.entry(local_dir, 0, mtime).attr)
    }

    pub(super) fn local_unlink(&self, dir: &Node, name: &str) -> VfsResult<()> {
        let (file, local_dir) = Self::local_nodes(dir, name);
        if self.cx.local_dirs.mtime(&local_dir).is_some() {
            return Err(VfsError::is_dir(format!("{local_dir}: is a directory")));
        }
        self.cx.local.unlink(&file)
    }

    pub(super) fn local_rmdir(&self, dir: &Node, name: &str) -> VfsResult<()> {
        let (file, local_dir) = Self::local_nodes(dir, name);
        if self.cx.local_dirs.mtime(&local_dir).is_none() {
            return Err(match self.cx.local.stat(&file) {
                Some(_) => VfsError::not_dir(format!("{file}: not a directory")),
                None => VfsError::not_found(format!("{local_dir}")),
            });
        }
        if !self.local_children(&local_dir).is_empty() {
            return Err(VfsError::not_empty(format!("{local_dir}: not empty")));
        }
        self.cx.local_dirs.remove(&local_dir);
        Ok(())
    }

    /// `mv` between local names. A local name and one of Google's do not
    /// mix: EXDEV, so `mv` copies (and an upload is what the user asked for).
    pub(super) async fn local_rename(&self, from: &Node, name: &str, to: &Node, new_name: &str) -> VfsResult<()> {
        if !(self.keeps_local(from, name) && self.keeps_local(to, new_name)) {
            return Err(VfsError::cross_device(format!("{to}/{new_name}: a local name moves by copy only")));
        }
        node::check_new_name(to, new_name)?;
        let (source_file, source_dir) = Self::local_nodes(from, name);
        let (target_file, target_dir) = Self::local_nodes(to, new_name);
        if self.cx.local_dirs.mtime(&source_dir).is_some() {
            return self.rename_local_dir(&source_dir, &target_file, &target_dir);
        }
        if self.cx.local_dirs.mtime(&target_dir).is_some() {
            return Err(VfsError::is_dir(format!("{target_dir}: is a directory")));
        }
        self.cx.local.rename(self, &source_file, &target_file).await?;
        self.cx.inodes.rekey(|node| (*node == source_file).then(|| target_file.clone()));
        Ok(())
    }

    /// A local directory renamed, with everything inside it; onto an empty
    /// local directory, it replaces it.
    fn rename_local_dir(&self, from: &Node, target_file: &Node, to: &Node) -> VfsResult<()> {
        if from == to {
            return Ok(());
        }
        if self.cx.local.stat(target_file).is_some() {
            return Err(VfsError::not_dir(format!("{target_file}: not a directory")));
        }
        if to.path().starts_with(&format!("{}/", from.path())) {
            return Err(VfsError::invalid(format!("{to}: inside {from}")));
        }
        if self.cx.local_dirs.mtime(to).is_some() {
            if !self.local_children(to).is_empty() {
                return Err(VfsError::not_empty(format!("{to}: not empty")));
            }
            self.cx.local_dirs.remove(to);
        }
        let moved = |node: &Node| moved_under(node, from, to);
        self.cx.local_dirs.rekey(moved);
        self.cx.local.rekey(moved);
        self.cx.inodes.rekey(moved);
        Ok(())
    }

    /// The local entries of `dir`: its local directories and files (not
    /// an editor's scratch files beside documents, which their slice lists).
    fn local_children(&self, dir: &Node) -> Vec<DirEntry> {
        let dirs = self.cx.local_dirs.children(dir).into_iter().map(|(node, mtime)| self.cx.entry(node, 0, mtime));
        let files = self.cx.local.scratch_in(dir).into_iter().filter(|(node, _, _)| match node {
            Node::Scratch { name, .. } => self.keeps_local(dir, name),
            _ => false,
        });
        let files = files.map(|(node, size, mtime)| self.cx.entry(node, size, mtime));
        dirs.chain(files).collect()
    }

    /// Whether inode `ino` is a local entry of `dir`.
    fn is_local_entry(&self, dir: &Node, ino: Ino) -> bool {
        match self.cx.node(ino) {
            Ok(Node::LocalDir { dir: parent, name } | Node::Scratch { dir: parent, name }) => {
                *parent == *dir && self.keeps_local(dir, &name)
            }
            _ => false,
        }
    }

    /// A page of `dir`: the slice's entries (without names that are local
    /// here, which Google may hold from before), then the local ones. The
    /// local entries follow the last page of the slice's; `after` naming a
    /// local entry goes on among them.
    pub(super) async fn readdir_with_local(
        &self,
        dir: &Node,
        ino: Ino,
        fh: Option<Fh>,
        after: Ino,
        max: usize,
    ) -> VfsResult<DirPage> {
        // The local entries are gathered only where they are listed (this
        // runs for every page of every directory).
        if after != 0 && self.is_local_entry(dir, after) {
            let local = self.local_children(dir);
            if local.iter().any(|entry| entry.attr.ino == after) {
                return Ok(self.cx.page_after(local, after, max));
            }
        }
        let mut after = after;
        let mut page = loop {
            let mut page = self.slice_or_fixed_page(dir, ino, fh, after, max).await?;
            let last = page.entries.last().map(|entry| entry.attr.ino);
            page.entries.retain(|entry| !self.keeps_local(dir, &entry.name));
            match (last, page.entries.is_empty() && !page.eof) {
                // A page of nothing but local names: the next one.
                (Some(last), true) => after = last,
                _ => break page,
            }
        };
        if page.eof {
            let local = self.local_children(dir);
            let room = max.saturating_sub(page.entries.len());
            page.eof = local.len() <= room;
            page.entries.extend(local.into_iter().take(room));
        }
        Ok(page)
    }
}
