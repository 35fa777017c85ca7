//! xenbus helpers (state machine on top of a Store).
