//! The `dataport` command: wires the catalog, engine and HTTP API together. No logic lives
//! here beyond reading configuration and starting and stopping the parts.

mod config;
mod serve;

use clap::{Parser, Subcommand};

/// Dataport: a governed SQL server over a directory of Parquet tables.
#[derive(Debug, Parser)]
#[command(name = "dataport", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the data dir over HTTP.
    Serve(serve::ServeArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve::run(args),
    }
}
