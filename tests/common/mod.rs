//! Code shared by the integration tests (a test-only module: `mod common;`).
#![allow(dead_code)]

pub mod scripted_guest;
