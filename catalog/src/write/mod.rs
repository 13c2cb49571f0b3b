//! Writing tables: Parquet files that appear atomically ([`ParquetFileWriter`]), the per-file
//! column layout ([`ParquetLayout`]), and multi-file changes to one table under a commit journal
//! ([`StagedFile`], [`commit_table`], [`recover`]).
//!
//! Single files are written through `dataport_common::fs` (temporary file, fsync, rename,
//! directory fsync), the one atomic writer of the project; this module adds what needs Parquet.

mod journal;
mod layout;
mod writer;

use std::path::PathBuf;

use dataport_common::{ErrorKind, FsError, HasKind};
use parquet::errors::ParquetError;

pub use journal::{JOURNAL_SUFFIX, Recovery, StagedFile, commit_table, journal_path, recover};
pub use layout::ParquetLayout;
pub use writer::{
    EncodedRowGroup, PARQUET_MAX_ROW_GROUP_ROWS, PARQUET_ZSTD_LEVEL, ParquetFileWriter,
    RowGroupEncoder, WrittenFile,
};

/// Why writing a table file failed; every variant names the path involved.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Creating, syncing, renaming or removing a file failed.
    #[error(transparent)]
    Fs(#[from] FsError),

    /// A file of a table change lies outside the table's schema folder.
    #[error("{path} is outside {dir}; a table change may only touch files of its own folder")]
    OutsideTable { path: PathBuf, dir: PathBuf },

    /// The Parquet encoder failed (bad schema, batch not matching the schema, I/O inside parquet).
    #[error("failed to write Parquet file {path}: {source}")]
    Parquet { path: PathBuf, source: ParquetError },
}

impl HasKind for WriteError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Fs(e) => e.kind(),
            // Both are the writer's own mistakes or its storage failing, never the client's.
            Self::OutsideTable { .. } | Self::Parquet { .. } => ErrorKind::Internal,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
