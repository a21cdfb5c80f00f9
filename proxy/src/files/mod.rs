//! Files (issue 15): see docs/files.md.

pub mod thumb;
