//! Choosing the tenant of a request (SPEC §4 "Tenant selection").

use http::HeaderValue;
use odgw_core::{ErrorCode, GatewayError, Principal, TenantId};

fn not_allowed(detail: &'static str) -> GatewayError {
    GatewayError::new(ErrorCode::TenantNotAllowed, detail)
}

/// Picks the tenant from the token's tenant claim and the `Odgw-Tenant`
/// header values (`odgw_tenant_values`: every `Odgw-Tenant` header received).
///
/// - two or more headers: refused;
/// - one header: its value, trimmed of leading and trailing SP/HTAB, must be a
///   valid [`TenantId`] (so a comma list is refused) and be in the claim;
/// - no header: the claim must name exactly one tenant.
///
/// Every refusal is 403 `tenant_not_allowed`.
pub fn select_tenant(
    principal: &Principal,
    odgw_tenant_values: &[&HeaderValue],
) -> Result<TenantId, GatewayError> {
    match odgw_tenant_values {
        [] => match principal.tenants.as_slice() {
            [only] => {
                TenantId::parse(only).map_err(|_| not_allowed("token names an invalid tenant"))
            }
            [] => Err(not_allowed("token grants no tenant")),
            _ => Err(not_allowed(
                "odgw-tenant header required: token grants several tenants",
            )),
        },
        [value] => {
            let text = value
                .to_str()
                .map_err(|_| not_allowed("invalid odgw-tenant header"))?
                .trim_matches([' ', '\t']);
            let id =
                TenantId::parse(text).map_err(|_| not_allowed("invalid odgw-tenant header"))?;
            if principal.tenants.iter().any(|t| t == id.as_str()) {
                Ok(id)
            } else {
                Err(not_allowed("tenant not granted by token"))
            }
        }
        _ => Err(not_allowed("multiple odgw-tenant headers")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use odgw_core::Identity;

    fn principal(tenants: &[&str]) -> Principal {
        Principal::new(Identity {
            subject: "u".into(),
            issuer: "i".into(),
            tenants: tenants.iter().map(|s| s.to_string()).collect(),
            scopes: vec![],
            expires_at: 0,
        })
    }

    fn hv(s: &str) -> HeaderValue {
        HeaderValue::from_str(s).unwrap()
    }

    fn pick(tenants: &[&str], headers: &[&str]) -> Result<String, GatewayError> {
        let values: Vec<HeaderValue> = headers.iter().map(|h| hv(h)).collect();
        let refs: Vec<&HeaderValue> = values.iter().collect();
        select_tenant(&principal(tenants), &refs).map(|t| t.as_str().to_owned())
    }

    #[test]
    fn selection_table() {
        // one tenant in the claim, no header
        assert_eq!(pick(&["a"], &[]).unwrap(), "a");
        // one tenant, header names it (with surrounding whitespace)
        assert_eq!(pick(&["a"], &[" \ta "]).unwrap(), "a");
        // several tenants: header picks
        assert_eq!(pick(&["a", "b"], &["b"]).unwrap(), "b");
        // refusals
        for (tenants, headers) in [
            (&["a", "b"][..], &[][..]),         // several, no header
            (&["a"][..], &["b"][..]),           // header not in claim
            (&["a", "b"][..], &["a", "b"][..]), // two headers
            (&["a", "b"][..], &["a", "a"][..]), // two headers, same value
            (&["a", "b"][..], &["a,b"][..]),    // comma list
            (&["a", "b"][..], &["a b"][..]),    // inner whitespace
            (&["a"][..], &[""][..]),            // empty header
            (&["A"][..], &["a"][..]),           // case matters
            (&[][..], &[][..]),                 // claim grants nothing
            (&[][..], &["a"][..]),
            (&["bad/id"][..], &[][..]), // invalid id in the claim
        ] {
            let err = pick(tenants, headers).unwrap_err();
            assert_eq!(
                err.code,
                ErrorCode::TenantNotAllowed,
                "{tenants:?} {headers:?}"
            );
        }
    }

    #[test]
    fn non_ascii_header_is_refused() {
        let value = HeaderValue::from_bytes(b"caf\xe9").unwrap();
        let err = select_tenant(&principal(&["a"]), &[&value]).unwrap_err();
        assert_eq!(err.code, ErrorCode::TenantNotAllowed);
    }
}
