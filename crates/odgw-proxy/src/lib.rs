//! odgw-proxy
