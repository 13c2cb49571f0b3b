//! What both ends of Dataport share: the server and the laptop client (`dataport pull`).
//!
//! - [`fs`]: the atomic file writes every file Dataport produces goes through (temporary file,
//!   fsync, rename, directory fsync), and the sweep rules for their temporary names;
//! - [`digest`]: SHA-256 of files and of bytes as they are written;
//! - [`sync`]: the analyst-sync wire types (manifest, file entries, upload answer), declared
//!   once for the server that writes them and the client that reads them;
//! - [`text`]: placeholders in text (`${VAR}`);
//! - [`host`]: the machine's load, memory and disk space, for the health page and the memory
//!   settings;
//! - [`error`]: the error vocabulary ([`ErrorKind`]) every error of every crate answers, and
//!   the JSON error body of the HTTP API.
//!
//! This crate is the bottom of the workspace: it must not know DataFusion, Arrow, Parquet, an
//! async runtime or any transport, so the laptop client can depend on it alone.
//!
//! ```
//! use dataport_common::fs::write_bytes_atomic;
//! use dataport_common::digest::sha256_file;
//!
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("notes").join("hello.txt");
//! write_bytes_atomic(&path, b"hello")?;
//! assert_eq!(
//!     sha256_file(&path)?,
//!     "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
//! );
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod digest;
pub mod error;
pub mod fs;
pub mod host;
pub mod sync;
pub mod text;

pub use error::{ErrorBody, ErrorKind, HasKind};
pub use fs::FsError;
