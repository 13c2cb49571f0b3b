//! The `dataport` command: wires the catalog, engine and HTTP API together. No logic lives
//! here beyond reading configuration and starting and stopping the parts.

mod admin;
mod config;
mod jobs;
mod memory;
mod notify;
mod profile;
mod push;
mod rsync;
mod serve;
mod wiring;

use clap::{Parser, Subcommand};

/// mimalloc, as DataFusion's own binaries use: query execution allocates and frees many
/// short-lived buffers from several threads, and mimalloc reuses freed memory per thread
/// instead of returning it to the kernel and faulting it in again.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Dataport: a governed SQL server over a directory of Parquet tables.
#[derive(Debug, Parser)]
#[command(name = "dataport", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the data dir over HTTP and Flight SQL.
    Serve(Box<serve::ServeArgs>),
    /// Print the effective configuration (secrets masked) and where each value came from:
    /// default, file, env or flag; `--reference` prints every key.
    Config(config::ConfigArgs),
    /// Manage users: add, list, remove, passwd, set-groups.
    User {
        #[command(flatten)]
        store: admin::StoreArgs,
        #[command(subcommand)]
        command: admin::UserCommand,
    },
    /// Give a group read access to a table or schema, optionally filtered.
    Grant {
        #[command(flatten)]
        store: admin::StoreArgs,
        #[command(flatten)]
        args: admin::GrantArgs,
    },
    /// Take a grant away.
    Revoke {
        #[command(flatten)]
        store: admin::StoreArgs,
        #[command(flatten)]
        args: admin::RevokeArgs,
    },
    /// List the grants.
    Grants {
        #[command(flatten)]
        store: admin::StoreArgs,
        #[arg(long)]
        json: bool,
    },
    /// Manage API tokens: create, list, revoke.
    Token {
        #[command(flatten)]
        store: admin::StoreArgs,
        #[command(subcommand)]
        command: admin::TokenCommand,
    },
    /// Sync sources now: every configured source, one source, or one table of it.
    Sync {
        #[command(flatten)]
        store: admin::StoreArgs,
        #[command(flatten)]
        args: jobs::SyncArgs,
    },
    /// Print a table's profile, profile changed tables, or export every profile.
    Profile {
        #[command(flatten)]
        store: admin::StoreArgs,
        #[command(flatten)]
        args: profile::ProfileArgs,
    },
    /// Print an rsync filter of exactly the files a user may read (the rsync fallback of
    /// `dataport pull`).
    RsyncFilter {
        #[command(flatten)]
        store: admin::StoreArgs,
        #[command(flatten)]
        args: rsync::RsyncFilterArgs,
    },
    #[command(flatten)]
    Client(dataport_laptop::ClientCommand),
    /// Show the newest entries of the query audit log.
    Audit {
        #[command(flatten)]
        store: admin::StoreArgs,
        #[command(flatten)]
        args: admin::AuditArgs,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve::run(*args),
        Command::Config(args) => {
            print!("{}", config::render(&args)?);
            Ok(())
        }
        Command::User { store, command } => admin::user(&store, command),
        Command::Grant { store, args } => admin::grant(&store, args),
        Command::Revoke { store, args } => admin::revoke(&store, args),
        Command::Grants { store, json } => admin::grants(&store, json),
        Command::Token { store, command } => admin::token(&store, command),
        Command::Audit { store, args } => admin::audit(&store, args),
        Command::Sync { store, args } => jobs::sync(&store, args),
        Command::Profile { store, args } => profile::profile(&store, args),
        Command::RsyncFilter { store, args } => rsync::rsync_filter(&store, args),
        Command::Client(command) => dataport_laptop::run(command),
    }
}
