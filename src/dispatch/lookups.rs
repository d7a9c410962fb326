//! Contact lookups from the dashboard, answered by the dispatcher from its profiles in memory
//! (building them from disk would take as long as a start-up): between ticks, and during a
//! tick while it waits on its calls. A tick that sent for most of each minute (a paced
//! connector's backlog) left them to time out, a review found.

use tokio::sync::{mpsc, oneshot};

use crate::config::Config;
use crate::model::explain::{Explanation, Posted};

/// One lookup: the contact asked for, and where its answer goes.
pub struct Lookup {
    pub contact: String,
    /// What the contact's receipts on disk were posted with (the id a queued receipt of the
    /// email carries is known to the dispatcher).
    pub posted: Posted,
    /// The operators' pauses as the file says now (the dispatcher's are the last tick's).
    pub pauses: std::sync::Arc<crate::pauses::Pauses>,
    pub reply: oneshot::Sender<anyhow::Result<Explanation>>,
}

/// The lookups a dispatcher answers: none for `sendtime tick`, which has no dashboard.
#[derive(Default)]
pub struct Lookups(Option<mpsc::Receiver<Lookup>>);

impl Lookups {
    pub fn new(rx: mpsc::Receiver<Lookup>) -> Lookups {
        Lookups(Some(rx))
    }

    /// The next lookup asked; never, without a dashboard (or once it has gone).
    pub async fn next(&mut self) -> Lookup {
        match &mut self.0 {
            Some(rx) => match rx.recv().await {
                Some(lookup) => lookup,
                None => std::future::pending().await,
            },
            None => std::future::pending().await,
        }
    }
}

impl super::Dispatcher {
    /// Answer `lookup` with what `config` and the profiles in memory say; one whose asker
    /// has gone (it timed out) is not worked out for nobody.
    pub fn answer(&self, config: &Config, lookup: Lookup) {
        if !lookup.reply.is_closed() {
            let answer = self.explain(config, &lookup.contact, lookup.posted, &lookup.pauses);
            let _ = lookup.reply.send(answer);
        }
    }
}
