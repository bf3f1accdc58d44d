//! OpenPGP detached-signature verification (placeholder, being written).
