//! odgw-admin
