//! Google's answers and refused documents as errnos: the one table
//! (docs/SEMANTICS.md, "Errors").

use ciofs_backends::{BackendError, ErrorKind};
use ciofs_frontends::VfsError;

use super::rules::Problems;

pub fn errno_of(kind: ErrorKind) -> i32 {
    match kind {
        ErrorKind::NotFound => libc::ENOENT,
        ErrorKind::PermissionDenied => libc::EACCES,
        ErrorKind::AlreadyExists => libc::EEXIST,
        ErrorKind::PreconditionFailed => libc::ESTALE,
        ErrorKind::RateLimited => libc::EDQUOT,
        ErrorKind::InvalidArgument => libc::EINVAL,
        ErrorKind::Unavailable | ErrorKind::Stalled | ErrorKind::Other => libc::EIO,
    }
}

pub fn vfs_error(error: BackendError) -> VfsError {
    VfsError::new(errno_of(error.kind), error.message)
}

/// A document refused (bad JSON, a rule broken): EINVAL, every problem
/// named (see `core::rules::Problems`).
impl From<Problems> for VfsError {
    fn from(problems: Problems) -> Self {
        VfsError::invalid(problems.to_string())
    }
}

/// For tests: what a refused document tells the user, checking that it is
/// refused as EINVAL.
#[cfg(test)]
pub fn refused_message<T: std::fmt::Debug>(result: Result<T, Problems>) -> String {
    let error = VfsError::from(result.expect_err("refused"));
    assert_eq!(error.errno(), libc::EINVAL, "{error}");
    error.message().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_design_table_holds() {
        assert_eq!(errno_of(ErrorKind::NotFound), libc::ENOENT);
        assert_eq!(errno_of(ErrorKind::PermissionDenied), libc::EACCES);
        assert_eq!(errno_of(ErrorKind::AlreadyExists), libc::EEXIST);
        assert_eq!(errno_of(ErrorKind::PreconditionFailed), libc::ESTALE);
        assert_eq!(errno_of(ErrorKind::RateLimited), libc::EDQUOT);
        assert_eq!(errno_of(ErrorKind::Unavailable), libc::EIO);
        assert_eq!(errno_of(ErrorKind::InvalidArgument), libc::EINVAL);
    }
}
