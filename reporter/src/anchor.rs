//! WORM anchoring (placeholder, being written).
