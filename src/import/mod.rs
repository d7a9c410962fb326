//! Importers that fill the events dataset: HubSpot's email events API and CSV files.

pub mod csv;
pub mod hubspot;
pub mod scheduled;
