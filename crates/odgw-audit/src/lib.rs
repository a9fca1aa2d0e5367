//! odgw-audit
