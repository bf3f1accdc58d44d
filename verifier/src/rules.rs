//! Compliance rules (placeholder, being written).
