//! The analyst's command line: `login`, `logout`, `pull` and `push` ([`cli`]), and the terminal
//! helpers every Dataport command-line tool shares ([`term`]).
//!
//! The `dataport` server binary offers these commands as its own subcommands; this crate's
//! `dataport-client` binary offers only them, for laptops: it is built from `dataport-client`
//! and `dataport-common` alone, without DataFusion or the server (`cargo install --path laptop`).
//! It must not know the server's crates; the dependency rules in `tests/run.sh` check it.

pub mod cli;
pub mod term;

pub use cli::{ClientCommand, NotifyCommand, run};
