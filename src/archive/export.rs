//! `ciofs export --project P FILE`: the project's tree, in listing order,
//! as a deterministic tar: every entry owned by root (uid 0), its mode and
//! mtime as the mount shows them, no access times. Two exports of an
//! unchanged project are the same bytes. `_stream`, `_message` and other
//! empty files are stored empty without being read (reading `_stream`
//! would consume messages).
//!
//! The walk runs on a blocking thread and calls the async `Vfs` through the
//! runtime's handle: the tar writer is synchronous, and file contents are
//! streamed into it through `VfsReader` without holding a file whole.

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use ciofs_frontends::{Attr, DirEntry, FileKind, Ino, OpenFlags, ROOT_INO, Vfs, VfsError};
use indicatif::{ProgressBar, ProgressStyle};
use tokio::runtime::Handle;

/// Entries asked of one readdir call.
const PAGE: usize = 1000;
/// Bytes asked of one read call.
const READ_CHUNK: u32 = 1 << 20;

/// What an export wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExportSummary {
    pub directories: u64,
    pub files: u64,
    pub bytes: u64,
}

/// How to show an export's progress. (A configuration-only export walks
/// a namespace made with `Options::config_only`.)
pub struct ExportOptions {
    /// macOS's metadata files are left out by the namespace itself: its
    /// listings drop them unless `--upload-macos-files` (core/macos.rs).
    pub progress: ProgressBar,
}

/// Writes project `project` of `vfs` as a tar archive to `out`, its paths
/// starting with `project/`. Must run off the runtime's threads (it blocks
/// on `runtime`).
pub fn export_project<V: Vfs + ?Sized, W: Write>(
    vfs: Arc<V>,
    runtime: Handle,
    project: &str,
    out: W,
    options: ExportOptions,
) -> Result<(W, ExportSummary), String> {
    let ExportOptions { progress } = options;
    let root = runtime.block_on(vfs.lookup(ROOT_INO, project)).map_err(|e| format!("project {project}: {e}"))?;
    progress.set_style(
        ProgressStyle::with_template("{spinner} {pos} files, {bytes} {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    let tar = tar::Builder::new(out);
    let summary = ExportSummary::default();
    let mut exporter = Exporter { vfs, runtime, tar, summary, progress };
    exporter.directory(&root, project)?;
    exporter.progress.finish_and_clear();
    let out = exporter.tar.into_inner().map_err(|e| format!("finishing the archive: {e}"))?;
    Ok((out, exporter.summary))
}

struct Exporter<V: Vfs + ?Sized, W: Write> {
    vfs: Arc<V>,
    runtime: Handle,
    tar: tar::Builder<W>,
    summary: ExportSummary,
    progress: ProgressBar,
}

impl<V: Vfs + ?Sized, W: Write> Exporter<V, W> {
    /// The directory `attr` at `path`, then its entries in listing order.
    fn directory(&mut self, attr: &Attr, path: &str) -> Result<(), String> {
        let mut header = header(attr, 0);
        header.set_entry_type(tar::EntryType::Directory);
        self.tar.append_data(&mut header, format!("{path}/"), std::io::empty()).map_err(|e| write_error(path, &e))?;
        self.summary.directories += 1;
        for entry in self.entries(attr.ino, path)? {
            let child = format!("{path}/{}", entry.name);
            match entry.attr.kind {
                FileKind::Directory => self.directory(&entry.attr, &child)?,
                FileKind::File => self.file(&entry.attr, &child)?,
            }
        }
        Ok(())
    }

    /// Every entry of a directory, all pages.
    fn entries(&self, dir: Ino, path: &str) -> Result<Vec<DirEntry>, String> {
        let fh = self.runtime.block_on(self.vfs.opendir(dir)).map_err(|e| vfs_error(path, &e))?;
        let mut entries = Vec::new();
        let mut after = 0;
        let listed = loop {
            let page = match self.runtime.block_on(self.vfs.readdir(dir, Some(fh), after, PAGE)) {
                Ok(page) => page,
                Err(e) => break Err(vfs_error(path, &e)),
            };
            after = page.entries.last().map_or(after, |e| e.attr.ino);
            let done = page.eof || page.entries.is_empty();
            let exported = |e: &DirEntry| e.name != "." && e.name != "..";
            entries.extend(page.entries.into_iter().filter(exported));
            if done {
                break Ok(entries);
            }
        };
        let _ = self.runtime.block_on(self.vfs.releasedir(dir, fh));
        listed
    }

    /// A file: its bytes as the mount reads them. An empty one is not
    /// opened (`_stream` would wait for messages).
    fn file(&mut self, attr: &Attr, path: &str) -> Result<(), String> {
        let mut header = header(attr, attr.size);
        if attr.size == 0 {
            self.tar.append_data(&mut header, path, std::io::empty()).map_err(|e| write_error(path, &e))?;
        } else {
            let opened = self
                .runtime
                .block_on(self.vfs.open(attr.ino, OpenFlags::default()))
                .map_err(|e| vfs_error(path, &e))?;
            let reader = VfsReader {
                vfs: &*self.vfs,
                runtime: &self.runtime,
                ino: attr.ino,
                fh: opened.fh,
                offset: 0,
                size: attr.size,
                path,
            };
            let written = self.tar.append_data(&mut header, path, reader);
            let _ = self.runtime.block_on(self.vfs.release(attr.ino, opened.fh));
            written.map_err(|e| write_error(path, &e))?;
        }
        self.summary.files += 1;
        self.summary.bytes += attr.size;
        self.progress.inc(1);
        self.progress.set_message(path.to_string());
        Ok(())
    }
}

/// A file's bytes through the `Vfs`, exactly `size` of them: a file that
/// shrank while it was read fails the export rather than padding it.
struct VfsReader<'a, V: Vfs + ?Sized> {
    vfs: &'a V,
    runtime: &'a Handle,
    ino: Ino,
    fh: u64,
    offset: u64,
    size: u64,
    path: &'a str,
}

impl<V: Vfs + ?Sized> Read for VfsReader<'_, V> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.size - self.offset;
        if left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = (buf.len() as u64).min(left).min(u64::from(READ_CHUNK)) as u32;
        let (bytes, _) = self
            .runtime
            .block_on(self.vfs.read(self.ino, Some(self.fh), self.offset, want))
            .map_err(|e| std::io::Error::other(vfs_error(self.path, &e)))?;
        if bytes.is_empty() {
            return Err(std::io::Error::other(format!(
                "{}: shorter than its size {} while read",
                self.path, self.size
            )));
        }
        let n = bytes.len().min(buf.len());
        buf[..n].copy_from_slice(&bytes[..n]);
        self.offset += n as u64;
        Ok(n)
    }
}

/// A GNU tar header as GNU tar writes one for a file owned by root.
fn header(attr: &Attr, size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_size(size);
    header.set_mode(u32::from(attr.perm));
    header.set_uid(0);
    header.set_gid(0);
    let _ = header.set_username("root");
    let _ = header.set_groupname("root");
    header.set_mtime(seconds(attr.mtime));
    header
}

fn seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn vfs_error(path: &str, error: &VfsError) -> String {
    format!("{path}: {error}")
}

fn write_error(path: &str, error: &std::io::Error) -> String {
    format!("{path}: {error}")
}
