//! odgw-limit
