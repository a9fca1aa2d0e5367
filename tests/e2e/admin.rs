//! The admin API (SPEC §6) through the real admin listener.

use http::{Method, Request};
use http_body_util::Full;
use serde_json::{json, Value};

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
    assert!(gw.metrics().await.contains("odgw_build_info"));
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

/// Runs the `odgw` CLI against this gateway's admin API (tokio's process
/// API: the gateway serves on this test's runtime).
async fn odgw_cli(gw: &TestGateway, args: &[&str], stdin: Option<&str>) -> std::process::Output {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_odgw"))
        .args(args)
        .args(["--admin-url", &format!("http://{}", gw.admin)])
        .env("ODGW_ADMIN_TOKEN", ADMIN_TOKEN)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).await.unwrap();
    }
    drop(input);
    child.wait_with_output().await.unwrap()
}

#[tokio::test]
async fn the_cli_manages_tenants_and_the_cache() {
    let gw = TestGateway::start_with(Options {
        tenants: false,
        ..Options::default()
    })
    .await;
    let tmp = tempfile::tempdir().unwrap();
    let dev_file = tmp.path().join("dev");
    std::fs::write(&dev_file, "ownDevKey0000042\n").unwrap();
    gw.mock
        .mock
        .add_key(odgw_mock::KeyPair::new("ownDevKey0000042", KEY_A));

    let out = odgw_cli(
        &gw,
        &[
            "tenant",
            "put",
            "office",
            "--customer-key-file",
            "-",
            "--developer-key-file",
            dev_file.to_str().unwrap(),
            "--rate",
            "unlimited",
            "--burst",
            "2",
            "--name",
            "The Office",
        ],
        Some(&format!("{KEY_A}\n")),
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["has_developer_key"], true);
    assert_eq!(shown["rate"], "unlimited");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("ownDevKey0000042"));

    // The tenant's own developer key is what Open Dental receives.
    let token = gw.token(json!({"tenant": "office"}));
    assert_eq!(
        gw.get("/api/v1/patients/11", Some(&token)).await.status,
        200
    );
    let seen = gw.mock.mock.requests();
    assert_eq!(
        seen[0].header_values("authorization"),
        vec![format!("ODFHIR ownDevKey0000042/{KEY_A}")]
    );

    let list = odgw_cli(&gw, &["tenant", "list"], None).await;
    assert!(list.status.success());
    let listed: Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1);

    let check = odgw_cli(&gw, &["tenant", "check", "office"], None).await;
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(String::from_utf8_lossy(&check.stdout).contains("24.3.36.0"));

    assert!(odgw_cli(&gw, &["tenant", "disable", "office"], None)
        .await
        .status
        .success());
    gw.get("/api/v1/patients/11", Some(&token))
        .await
        .assert_problem(403, "tenant_disabled");
    assert!(odgw_cli(&gw, &["tenant", "enable", "office"], None)
        .await
        .status
        .success());
    assert_eq!(
        gw.get("/api/v1/patients/11", Some(&token)).await.status,
        200
    );

    // Cache purge from the CLI makes the next preferences GET a miss.
    let pref = "/api/v1/preferences?PrefName=PracticeTitle";
    gw.get(pref, Some(&token)).await;
    assert_eq!(
        gw.get(pref, Some(&token)).await.header("odgw-cache"),
        Some("hit")
    );
    assert!(
        odgw_cli(&gw, &["cache", "purge", "--tenant", "office"], None)
            .await
            .status
            .success()
    );
    assert_eq!(
        gw.get(pref, Some(&token)).await.header("odgw-cache"),
        Some("miss")
    );
    assert!(odgw_cli(&gw, &["cache", "purge"], None)
        .await
        .status
        .success());

    assert!(odgw_cli(&gw, &["tenant", "delete", "office"], None)
        .await
        .status
        .success());
    let gone = odgw_cli(&gw, &["tenant", "show", "office"], None).await;
    assert!(!gone.status.success());
    let stderr = String::from_utf8_lossy(&gone.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("not_found"), "{stderr}");

    // Keys never come from argv: an empty stdin is an error, not an empty key.
    let empty = odgw_cli(&gw, &["tenant", "put", "x"], Some("")).await;
    assert!(!empty.status.success());
    // A wrong admin token is refused with a one-line message.
    let mut wrong = tokio::process::Command::new(env!("CARGO_BIN_EXE_odgw"));
    let wrong = wrong
        .args([
            "tenant",
            "list",
            "--admin-url",
            &format!("http://{}", gw.admin),
        ])
        .env("ODGW_ADMIN_TOKEN", "not-the-token")
        .output()
        .await
        .unwrap();
    assert!(!wrong.status.success());
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("401"));
}

/// SPEC §8 asks for one audit record per admin action. A client that hangs
/// up while its change is being written (here: right after sending it) must
/// not leave the change applied without that record: a change the gateway
/// started runs to completion, record included, whether or not anyone waits
/// for the answer. (A request cut off before its body reached the handler
/// changes nothing and leaves no record; that is fine too.)
#[tokio::test]
async fn admin_changes_keep_their_audit_record_when_the_client_hangs_up() {
    use tokio::io::AsyncWriteExt;
    const CHANGES: usize = 12;
    let gw = TestGateway::start_with(Options {
        tenants: false,
        ..Options::default()
    })
    .await;
    for i in 0..CHANGES {
        let body = json!({ "customer_key": KEY_A }).to_string();
        let request = format!(
            "PUT /admin/v1/tenants/hangup-{i} HTTP/1.1\r\nhost: odgw\r\n\
             authorization: Bearer {ADMIN_TOKEN}\r\ncontent-type: application/json\r\n\
             x-request-id: hangup-{i}\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        let mut stream = tokio::net::TcpStream::connect(gw.admin).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        drop(stream);
    }

    let audit_dir = gw.root.join("audit");
    let recorded = |lines: &[Value], id: &str| {
        lines.iter().any(|r| {
            r["request_id"] == id
                && r["kind"] == "admin"
                && r["action"] == "tenant.put"
                && r["target"] == id
                && r["status"] == 201
        })
    };
    // Changes may still be running after their clients left: wait (bounded)
    // until two looks 200 ms apart agree, then judge the last one.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut previous = None;
    let (stored, unrecorded) = loop {
        let listed = gw
            .admin(Method::GET, "/admin/v1/tenants", None)
            .await
            .json();
        let stored: Vec<String> = listed
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_str().unwrap().to_owned())
            .collect();
        let lines = audit_lines(&audit_dir);
        let unrecorded: Vec<String> = stored
            .iter()
            .filter(|id| !recorded(&lines, id))
            .cloned()
            .collect();
        let look = (stored, unrecorded);
        if previous.as_ref() == Some(&look) || tokio::time::Instant::now() > deadline {
            break look;
        }
        previous = Some(look);
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert!(
        unrecorded.is_empty(),
        "changes applied without their audit record: {unrecorded:?} (stored: {stored:?})"
    );
}
