//! `herald verify --data-dir DIR`: checks a stopped node's data dir offline.

use std::path::PathBuf;

use clap::Args;

/// Flags of `herald verify`.
#[derive(Debug, Clone, Args)]
pub struct VerifyArgs {
    /// The node's data directory (the node must be stopped).
    #[arg(long, env = "HERALD_DATA_DIR", value_name = "DIR")]
    pub data_dir: PathBuf,
}

/// What `herald verify` concluded.
pub enum Outcome {
    /// Nothing wrong.
    Clean,
    /// Damage found (the report was printed).
    Damaged,
}

/// Runs the check and prints the report; the caller turns the outcome
/// into the exit status.
pub fn run(args: &VerifyArgs) -> anyhow::Result<Outcome> {
    herald::log::contain::install_hook(Some(args.data_dir.clone()));
    let report = herald::log::integrity::verify(&args.data_dir)?;
    println!("{report}");
    Ok(if report.is_clean() {
        Outcome::Clean
    } else {
        Outcome::Damaged
    })
}
