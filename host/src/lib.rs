//! The support gateway: a self-hostable AI customer-support server.
//!
//! See `ARCHITECTURE.md` at the repository root for the codemap. In short:
//! [`config`] reads the operator's TOML, [`store`] keeps everything in SQLite
//! or PostgreSQL, [`domain`] holds the types and rules, [`auth`] the
//! credentials, [`plugins`] hosts the WebAssembly plugins, [`search`] and [`assistant`]
//! answer customers from the knowledge base, [`api`] the HTTP
//! dialects, and [`server`] runs it all.

pub mod api;
pub mod assistant;
pub mod auth;
pub mod channels;
pub mod cli;
pub mod config;
pub mod domain;
pub mod email;
pub mod events;
pub mod files;
pub mod places;
pub mod plugins;
pub mod realtime;
pub mod search;
pub mod server;
pub mod service;
pub mod store;
pub mod telemetry;
