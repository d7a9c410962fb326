//! `sendtime import hubspot`: HubSpot's email events API into the events dataset.

use crate::cli::HubspotImportArgs;
use crate::config::Config;

/// Run the import for one connector.
pub fn run(_config: &Config, _args: &HubspotImportArgs) -> anyhow::Result<()> {
    anyhow::bail!("import hubspot is not built yet")
}
