//! `billd store copy`: a whole book, with its history, from a SQLite file to a PostgreSQL database or back.

use crate::store::Store;
use crate::store::sql::copy;
use anyhow::{Result, bail};
use std::path::Path;
use std::process::ExitCode;

pub fn copy(config: &Path, from: &str, to: &str) -> Result<ExitCode> {
    let cfg = crate::app::load_config(config)?;
    if from.trim() == to.trim() {
        bail!("--from and --to name the same book ({from}): nothing was copied");
    }
    let mut source = crate::app::store_at(&cfg, from, false)?;
    let mut target = crate::app::store_at(&cfg, to, true)?;
    if source.location() == target.location() {
        bail!("--from and --to name the same book ({}): nothing was copied", source.location());
    }
    let counts = copy::copy(&mut source, &mut target)?;
    println!("copied {} to {}:", source.location(), target.location());
    for (table, n) in counts {
        println!("  {table:<17} {n:>10}");
    }
    println!("both books count the same rows; point billing.database at the new one before starting billd");
    Ok(ExitCode::SUCCESS)
}
