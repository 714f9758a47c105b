//! End-to-end tests: the real `gateway` binary, real databases, real HTTP.
//! See tests/README.md for the tiers and how PostgreSQL is included.

mod common;

mod answers;
mod assistant;
mod attachments;
mod auth;
mod chat;
mod cli;
mod config_errors;
mod core;
mod crash;
mod email;
mod errors;
mod jwt;
mod openai;
mod plugins;
mod rate_limits;
mod service;
mod store;
mod tickets;
mod whatsapp;
