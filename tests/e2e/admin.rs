//! The admin API (SPEC §6) through the real admin listener.

use http::{Method, Request};
use http_body_util::Full;
use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn admin_routes_need_the_admin_token() {
    let gw = TestGateway::start().await;
    for auth in [
        None,
        Some("Bearer wrong"),
        Some("Bearer "),
        Some(&*format!("Basic {ADMIN_TOKEN}")),
    ] {
        let mut b = Request::get(format!("http://{}/admin/v1/tenants", gw.admin));
        if let Some(a) = auth {
            b = b.header("authorization", a);
        }
        let resp = gw.send(b.body(Full::default()).unwrap()).await;
        resp.assert_problem(401, "unauthorized");
    }
    // Health is open.
    let resp = gw
        .send(
            Request::get(format!("http://{}/healthz", gw.admin))
                .body(Full::default())
                .unwrap(),
        )
        .await;
    assert_eq!(resp.status, 200);
    let resp = gw
        .send(
            Request::get(format!("http://{}/readyz", gw.admin))
                .body(Full::default())
                .unwrap(),
        )
        .await;
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.json()["ready"], true);
    let resp = gw
        .send(
            Request::get(format!("http://{}/metrics", gw.admin))
                .body(Full::default())
                .unwrap(),
        )
        .await;
    assert_eq!(resp.status, 200);
    assert!(String::from_utf8_lossy(&resp.body).contains("odgw_build_info"));
}

#[tokio::test]
async fn tenant_lifecycle_never_echoes_keys() {
    let gw = TestGateway::start_with(Options {
        tenants: false,
        ..Options::default()
    })
    .await;
    let resp = gw
        .admin(
            Method::PUT,
            "/admin/v1/tenants/office-1",
            Some(json!({
                "customer_key": KEY_A,
                "developer_key": "perTenantDevKey9",
                "base_url": "http://office.example:30223/api/v1/",
                "rate": "unlimited",
                "burst": 3,
                "name": "Office One",
            })),
        )
        .await;
    assert_eq!(resp.status, 201, "{resp:?}");
    let text = String::from_utf8_lossy(&resp.body).to_string();
    assert!(
        !text.contains(KEY_A) && !text.contains("perTenantDevKey9"),
        "{text}"
    );
    let body = resp.json();
    assert_eq!(body["customer_key_hint"], &KEY_A[KEY_A.len() - 4..]);
    assert_eq!(body["base_url"], "http://office.example:30223/api/v1");
    assert_eq!(body["rate"], "unlimited");
    assert_eq!(body["name"], "Office One");

    // Replacing answers 200.
    let resp = gw
        .admin(
            Method::PUT,
            "/admin/v1/tenants/office-1",
            Some(json!({"customer_key": KEY_B})),
        )
        .await;
    assert_eq!(resp.status, 200);
    let list = gw.admin(Method::GET, "/admin/v1/tenants", None).await;
    assert_eq!(list.status, 200);
    let text = String::from_utf8_lossy(&list.body).to_string();
    assert!(!text.contains(KEY_B) && !text.contains(KEY_A), "{text}");
    assert_eq!(list.json().as_array().unwrap().len(), 1);
    let one = gw
        .admin(Method::GET, "/admin/v1/tenants/office-1", None)
        .await;
    assert_eq!(one.json()["customer_key_hint"], &KEY_B[KEY_B.len() - 4..]);

    let resp = gw
        .admin(Method::DELETE, "/admin/v1/tenants/office-1", None)
        .await;
    assert_eq!(resp.status, 204);
    gw.admin(Method::GET, "/admin/v1/tenants/office-1", None)
        .await
        .assert_problem(404, "not_found");
    gw.admin(Method::DELETE, "/admin/v1/tenants/office-1", None)
        .await
        .assert_problem(404, "not_found");
}

#[tokio::test]
async fn bad_admin_input_is_refused_without_echoing_it() {
    let gw = TestGateway::start().await;
    gw.admin(
        Method::PUT,
        "/admin/v1/tenants/bad%2Fid",
        Some(json!({"customer_key": "k"})),
    )
    .await
    .assert_problem(400, "bad_request");
    let resp = gw
        .admin(
            Method::PUT,
            "/admin/v1/tenants/x",
            Some(json!({"customer_key": 12345678901234u64})),
        )
        .await;
    resp.assert_problem(400, "bad_request");
    assert!(!String::from_utf8_lossy(&resp.body).contains("12345678901234"));
    let resp = gw
        .admin(
            Method::PUT,
            "/admin/v1/tenants/x",
            Some(json!({"customer_key": "SecretWith Space"})),
        )
        .await;
    resp.assert_problem(400, "bad_request");
    assert!(!String::from_utf8_lossy(&resp.body).contains("SecretWith"));
    gw.admin(
        Method::PUT,
        "/admin/v1/tenants/x",
        Some(json!({"customer_key": KEY_A, "rate": "fast"})),
    )
    .await
    .assert_problem(400, "bad_request");
    gw.admin(
        Method::PUT,
        "/admin/v1/tenants/x",
        Some(json!({"customer_key": KEY_A, "base_url": "ftp://x"})),
    )
    .await
    .assert_problem(400, "bad_request");
    // Nothing was stored by the refused requests.
    gw.admin(Method::GET, "/admin/v1/tenants/x", None)
        .await
        .assert_problem(404, "not_found");
}

#[tokio::test]
async fn tenant_check_calls_open_dental_with_the_tenants_keys() {
    let gw = TestGateway::start().await;
    let resp = gw
        .admin(Method::POST, "/admin/v1/tenants/a/check", None)
        .await;
    assert_eq!(resp.status, 200, "{resp:?}");
    let body = resp.json();
    assert_eq!(body["ok"], true);
    assert_eq!(body["upstream_status"], 200);
    assert!(body["program_version"]
        .as_str()
        .is_some_and(|v| !v.is_empty()));
    let seen = gw.mock.mock.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/api/v1/preferences");
    assert_eq!(seen[0].query.as_deref(), Some("PrefName=ProgramVersion"));
    assert_eq!(
        seen[0].header_values("authorization"),
        vec![format!("ODFHIR {DEV_KEY}/{KEY_A}")]
    );

    // Keys Open Dental does not know: the check reports the upstream 401.
    gw.put_tenant("wrongkeys", "notAKeyOpenDentalKnows").await;
    let body = gw
        .admin(Method::POST, "/admin/v1/tenants/wrongkeys/check", None)
        .await
        .json();
    assert_eq!(body["ok"], false);
    assert_eq!(body["upstream_status"], 401);
}
