//! `sendtime import csv`: engagement events from a CSV file into the events dataset.

use std::path::Path;

use crate::cli::CsvImportArgs;

/// Import the CSV named in `args` into `data_dir`.
pub fn run(_data_dir: &Path, _args: &CsvImportArgs) -> anyhow::Result<()> {
    anyhow::bail!("import csv is not built yet")
}
