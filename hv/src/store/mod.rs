//! The xenstore.
