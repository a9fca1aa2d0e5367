//! odgw-auth
