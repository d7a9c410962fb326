//! `sendtime hubspot-standin`: the stand-in run by hand, with events and contacts from files.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context;

use super::{Options, StandIn};
use crate::hubspot::EmailEvent;

/// `--contacts`: one `email` or `email,id` per line; blank lines are skipped.
fn read_contacts(path: &Path) -> anyhow::Result<Vec<(String, Option<u64>)>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read contacts file {}", path.display()))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let (email, id) = match line.split_once(',') {
            Some((email, id)) => (email.trim(), Some(id.trim())),
            None => (line, None),
        };
        let id = id.map(|id| id.parse::<u64>().ok().filter(|&id| id > 0));
        anyhow::ensure!(
            email.contains('@') && id.is_none_or(|id| id.is_some()),
            "{} line {}: expected `email` or `email,id` (a positive integer id), found {line:?}",
            path.display(),
            n + 1
        );
        out.push((email.to_string(), id.flatten()));
    }
    Ok(out)
}

/// Run the stand-in on `listen` until Ctrl-C, serving the email events of `events_file` (a
/// JSON array of HubSpot events, or `{"events": [...]}`) and knowing the contacts of
/// `contacts_file` and of the events.
pub fn run_until_ctrl_c(
    listen: SocketAddr,
    events_file: Option<&Path>,
    contacts_file: Option<&Path>,
    options: Options,
) -> anyhow::Result<()> {
    let events = match events_file {
        None => Vec::new(),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read events file {}", path.display()))?;
            #[derive(serde::Deserialize)]
            struct Page {
                events: Vec<EmailEvent>,
            }
            // Read as the shape its first character says: tried as either, serde's error said
            // only that neither matched, not which event and field (an audit).
            let read = match text.trim_start().starts_with('[') {
                true => serde_json::from_str::<Vec<EmailEvent>>(&text),
                false => serde_json::from_str::<Page>(&text).map(|p| p.events),
            };
            read.with_context(|| {
                format!(
                    "{}: expected a JSON array of HubSpot email events (`created` in epoch milliseconds), or {{\"events\": [...]}}",
                    path.display()
                )
            })?
        }
    };
    let mut contacts = match contacts_file {
        None => Vec::new(),
        Some(path) => read_contacts(path)?,
    };
    contacts.extend(
        events
            .iter()
            .filter_map(|e| Some((e.recipient.clone()?, None))),
    );
    let options = Options { events, ..options };
    let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    rt.block_on(async {
        let n = options.events.len();
        let standin = StandIn::bind(listen, options)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        // Ids as given; the others numbered after the largest.
        let mut next = contacts.iter().filter_map(|c| c.1).max().unwrap_or(0) + 1;
        let mut known = 0;
        for (email, vid) in contacts {
            if standin.vid_of(&email).is_none() {
                standin.add_contact(
                    &email,
                    vid.unwrap_or_else(|| {
                        next += 1;
                        next - 1
                    }),
                );
                known += 1;
            }
        }
        println!(
            "HubSpot stand-in listening on {} ({n} email events, {known} contacts)",
            standin.url()
        );
        tokio::signal::ctrl_c().await?;
        Ok(())
    })
}
