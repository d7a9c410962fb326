//! Talking to HubSpot's API: [`client`] is what the importer and the dispatcher call, paced by
//! its [`limiter`], and [`policy`] says how long failures make them wait; [`standin`] is a
//! local HubSpot that tests and benchmarks call instead, with HubSpot's shapes, limits and
//! failures, so the real client code is what gets exercised.

pub mod action;
pub mod auth;
pub mod client;
pub mod limiter;
pub mod online;
pub mod paths;
pub mod policy;
pub mod standin;
pub mod targets;

pub use client::{ApiError, Client, ClientOptions, EmailEvent, EventsPage, RateLimit, RatePolicy};
