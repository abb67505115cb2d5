//! The two frontends of ciofs and the contract they serve.
//!
//! `vfs` is the contract; `fuse` and `nfs` translate their protocols to it.
//! Nothing here knows about Google.

pub mod fuse;
pub mod nfs;
pub mod vfs;

pub use vfs::{
    Attr, AttrsChanged, DirEntry, DirPage, Fh, FileKind, Ino, OpenFlags, Opened, ROOT_INO, SetAttr, StatFs, Vfs,
    VfsError, VfsResult,
};
