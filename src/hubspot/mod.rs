//! Talking to HubSpot's API: [`client`] is what the importer and the dispatcher call, paced by
//! its [`limiter`]; [`error`] sorts HubSpot's failures and [`policy`] says how long they make
//! them wait; [`wire`] holds the bodies that go back and forth; [`standin`] is a
//! local HubSpot that tests and benchmarks call instead, with HubSpot's shapes, limits and
//! failures, so the real client code is what gets exercised.

pub mod action;
pub mod auth;
pub mod client;
pub mod error;
pub mod limiter;
pub mod online;
pub mod paths;
pub mod policy;
pub mod standin;
pub mod targets;
pub mod wire;

pub use client::{Client, ClientOptions};
pub use error::{ApiError, RatePolicy};
pub use limiter::RateLimit;
pub use wire::{EmailEvent, EventsPage};
