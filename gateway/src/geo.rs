//! Caller location (filled in by the routing work).
