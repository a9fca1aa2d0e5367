//! [`ApiPath`]: the one `/api/v1` rule.

use http::uri::PathAndQuery;

/// The path of a data-plane request that the guard admitted: under
/// `/api/v1/` with something after the prefix (SPEC §4). The guard inserts
/// it once, after its path checks; scope checks, the cache's routes, the
/// forwarder's upstream URL and the metrics' route templates all read the
/// prefix off through here.
#[derive(Debug, Clone)]
pub struct ApiPath(PathAndQuery);

impl ApiPath {
    /// The prefix every data-plane path starts with, spelled exactly.
    pub const PREFIX: &'static str = "/api/v1/";

    /// The part of `path` after `/api/v1/`, if it has one: the rule itself.
    pub fn rest_of(path: &str) -> Option<&str> {
        path.strip_prefix(Self::PREFIX)
            .filter(|rest| !rest.is_empty())
    }

    /// The request's path when [`ApiPath::rest_of`] accepts it. Path checks
    /// beyond the prefix are the guard's, which inserts the result.
    pub fn from_uri(uri: &http::Uri) -> Option<Self> {
        let path_and_query = uri.path_and_query()?;
        Self::rest_of(path_and_query.path())?;
        Some(Self(path_and_query.clone()))
    }

    /// The whole path, `/api/v1/patients/11`.
    pub fn full(&self) -> &str {
        self.0.path()
    }

    /// After `/api/v1/`: `patients/11`, never empty.
    pub fn rest(&self) -> &str {
        &self.0.path()[Self::PREFIX.len()..]
    }

    /// After `/api/v1`, keeping the slash: `/patients/11` (how scopes and
    /// cache routes are written).
    pub fn relative(&self) -> &str {
        &self.0.path()[Self::PREFIX.len() - 1..]
    }

    /// The raw query, if any.
    pub fn query(&self) -> Option<&str> {
        self.0.query()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prefix_rule() {
        assert_eq!(ApiPath::rest_of("/api/v1/patients/11"), Some("patients/11"));
        for outside in [
            "/api/v1/",
            "/api/v1",
            "/api/v2/x",
            "/API/V1/patients",
            "/api/v1x/a",
        ] {
            assert_eq!(ApiPath::rest_of(outside), None, "{outside}");
        }
    }

    #[test]
    fn parts_of_an_admitted_path() {
        let uri: http::Uri = "/api/v1/queries/ShortQuery?Offset=0".parse().unwrap();
        let path = ApiPath::from_uri(&uri).unwrap();
        assert_eq!(path.full(), "/api/v1/queries/ShortQuery");
        assert_eq!(path.rest(), "queries/ShortQuery");
        assert_eq!(path.relative(), "/queries/ShortQuery");
        assert_eq!(path.query(), Some("Offset=0"));
        assert!(ApiPath::from_uri(&"/admin/v1/tenants".parse().unwrap()).is_none());
    }
}
