//! sendtime: receives HubSpot workflow webhooks, works out when each contact is most likely to
//! read email, and enrolls it back into a HubSpot workflow at that moment.
//!
//! Data flows one way: [`receiver`] → [`store`] → plan → dispatch. [`config`] is read by all.

pub mod cli;
pub mod clock;
pub mod config;
pub mod datasets;
pub mod dispatch;
pub mod hubspot;
pub mod import;
pub mod metrics;
pub mod model;
pub mod receiver;
pub mod scheduler;
pub mod serve;
pub mod store;
pub mod throttle;
pub mod time;
