//! # evident-reporter
//!
//! Builds each UTC day's signed compliance pack, anchors it to WORM storage
//! and runs on a schedule.
#![forbid(unsafe_code)]

pub mod anchor;
