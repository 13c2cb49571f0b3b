//! `dataport-client`: the analyst's commands without the server (see the crate's docs).

use clap::Parser;

/// Dataport on a laptop: log in to a Dataport server, pull the tables you may read into a
/// folder with DuckDB views over them, push notes and transcripts.
#[derive(Debug, Parser)]
#[command(name = "dataport-client", version)]
struct Cli {
    #[command(subcommand)]
    command: dataport_laptop::ClientCommand,
}

fn main() -> anyhow::Result<()> {
    dataport_laptop::run(Cli::parse().command)
}
