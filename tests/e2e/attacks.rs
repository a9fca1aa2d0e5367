//! Attack regression suite (SECURITY.md): smuggling, header and path games,
//! JWT attacks, tenant crossing, slowloris.
