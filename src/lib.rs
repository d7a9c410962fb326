//! sendtime: receives contacts from HubSpot workflows (its custom workflow action, or a "Send
//! a webhook" step), works out when each is most likely to read email, and at that moment
//! sends it on: releases it from the action, enrolls it into a workflow, or adds it to a list.
//!
//! Data flows one way: [`receiver`] → [`datasets`] (inbox → plan → outcomes) → [`dispatch`],
//! on the machinery of [`store`]. [`config`] is read by all.

pub mod admin;
pub mod capacity;
pub mod cli;
pub mod clock;
pub mod config;
pub mod cut_short;
pub mod datasets;
pub mod demo;
pub mod discard;
pub mod dispatch;
pub mod erase;
pub mod hubspot;
pub mod import;
pub mod lenient;
pub mod lift;
pub mod local_time;
pub mod metrics;
pub mod model;
pub mod pauses;
pub mod prefetch;
pub mod receiver;
pub mod scheduler;
pub mod secret;
pub mod serve;
pub mod store;
pub mod text;
pub mod throttle;
pub mod time;
pub mod write_deadline;
