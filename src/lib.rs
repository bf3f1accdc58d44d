//! Shared code for Evident's runnable examples and end-to-end tests: a
//! simulated production day of AI-agent activity with realistic records.
#![forbid(unsafe_code)]

pub mod demo;
