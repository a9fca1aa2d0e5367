//! odgw-cache
