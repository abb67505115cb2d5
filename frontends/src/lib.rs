//! The two frontends of ciofs and the contract they serve.
//!
//! `vfs` is the contract; `fuse` and `nfs` translate their protocols to it;
//! `rpc_records` bounds what NFS clients send before nfsserve reads it
//! (each request's size, the calls in flight, the connections), and
//! `admission` keeps everyone else out of nfsserve's own port.
//! Nothing here knows about Google.

pub mod admission;
pub mod fuse;
pub mod metered;
pub mod nfs;
pub mod rpc_records;
pub mod vfs;

pub use vfs::{
    Attr, ClientCache, DirCaching, DirEntry, DirPage, Fh, FileKind, Ino, OpenFlags, Opened, ROOT_INO, SetAttr, StatFs,
    Vfs, VfsError, VfsResult,
};
