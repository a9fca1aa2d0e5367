//! odgw library
