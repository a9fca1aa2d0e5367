//! odgw-mock
