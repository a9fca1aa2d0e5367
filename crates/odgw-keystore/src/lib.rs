//! odgw-keystore
