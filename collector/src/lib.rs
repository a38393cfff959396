//! Ebb's collector: takes in user data sent with consent, and lets it go on schedule.
//!
//! The collector accepts the Segment HTTP Tracking API (`/v1/batch`, `/v1/track`, …) from
//! Ebb's browser SDK and from any Segment-compatible server library, and stores users, their
//! traits and their activity per environment. Operators read and manage that data through
//! the admin API (`/admin/v1/…`) with an admin token.
//!
//! # What it guarantees
//!
//! - **An acknowledgement means durable.** A `200` is sent only after the transaction that
//!   holds the request's messages has committed; a message that was refused is named in the
//!   answer with its reason, and its valid siblings are stored.
//! - **A retry never counts twice.** Activity is keyed by the client's `messageId` within an
//!   environment.
//! - **Nothing it need not keep.** The client's IP address is not stored.
//!
//! # Layout
//!
//! [`config`] reads settings; [`server`] wires routes, state and static files; [`ingest`]
//! and [`admin`] are the two APIs; [`auth`] checks write keys and admin tokens; [`store`]
//! owns every query; [`bootstrap`] creates the default environment and admin token on the
//! first start; [`error`] is the one mapping from failures to HTTP answers; [`openapi`]
//! describes every route, from the same registrations that serve them.

#![forbid(unsafe_code)]

pub mod admin;
pub mod auth;
pub mod bootstrap;
pub mod cli;
pub mod config;
pub mod error;
pub mod ingest;
pub mod jobs;
pub mod metrics;
pub mod openapi;
pub mod rate_limit;
pub mod segment;
pub mod server;
pub mod store;
pub mod sweeper;
