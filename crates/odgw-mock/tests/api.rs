//! The Open Dental resources over real HTTP: shapes, filters, paging, writes
//! and the ShortQuery screen.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashSet;

use http::{header, Method, StatusCode};
use odgw_mock::{ErrorBodyStyle, MockConfig, UnknownPrefAnswer, NOT_READ_ONLY};
use serde_json::{json, Value};
use support::Harness;

fn is_server_date_time(v: &Value) -> bool {
    // yyyy-MM-dd HH:mm:ss, no offset.
    let s = v.as_str().unwrap_or_default();
    s.len() == 19
        && s.as_bytes()[4] == b'-'
        && s.as_bytes()[10] == b' '
        && s.as_bytes()[13] == b':'
        && !s.contains('T')
}

#[tokio::test]
async fn single_patient_has_open_dental_types() {
    let h = Harness::start(MockConfig::test_defaults()).await;
    let r = h.get("/api/v1/patients/11").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.headers[header::CONTENT_TYPE],
        "application/json; charset=utf-8"
    );
    let p = r.json();
    assert_eq!(p["PatNum"], 11);
    assert_eq!(p["LName"], "Allowed");
    assert_eq!(p["FName"], "Allen");
    assert_eq!(p["Birthdate"], "1980-06-05");
    assert_eq!(p["PriProv"], 1);
    assert_eq!(p["priProvAbbr"], "DOC1");
    assert_eq!(p["EstBalance"], 370.0);
    assert_eq!(p["ClinicNum"], 0);
    assert!(is_server_date_time(&p["serverDateTime"]), "{p}");
    // serverDateTime is the last field of a patient object.
    let text = r.text();
    assert!(
        text.starts_with(r#"{"PatNum":11,"LName":"Allowed""#),
        "{text}"
    );
    assert!(text.ends_with("\"}") && text.contains(",\"serverDateTime\":\""));

    let missing = h.get("/api/v1/patients/99999").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.text(), "\"Patient not found.\"");
    let bad = h.get("/api/v1/patients/abc").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn plain_text_error_style() {
    let h = Harness::start(MockConfig {
        error_body: ErrorBodyStyle::PlainText,
        ..MockConfig::test_defaults()
    })
    .await;
    let missing = h.get("/api/v1/patients/99999").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.text(), "Patient not found.");
    assert_eq!(
        missing.headers[header::CONTENT_TYPE],
        "text/plain; charset=utf-8"
    );
}

#[tokio::test]
async fn patient_list_pages_by_offset_and_caps_limit() {
    let h = Harness::start(MockConfig::test_defaults()).await;
    let first = h.get("/api/v1/patients").await.array();
    assert_eq!(first.len(), 100, "default page is 100");
    let capped = h.get("/api/v1/patients?Limit=500").await.array();
    assert_eq!(capped, first, "Limit above 100 is capped, not refused");

    let second = h.get("/api/v1/patients?Offset=100").await.array();
    assert!(!second.is_empty() && second.len() < 100, "{}", second.len());
    let past_end = h.get("/api/v1/patients?Offset=100000").await.array();
    assert!(past_end.is_empty());

    // Client strategy: Offset += len until a short page; no duplicates.
    let mut all = Vec::new();
    let mut offset = 0;
    for _ in 0..10 {
        let page = h
            .get(&format!("/api/v1/patients?Offset={offset}"))
            .await
            .array();
        offset += page.len();
        let short = page.len() < 100;
        all.extend(page);
        if short {
            break;
        }
    }
    let nums: HashSet<_> = all.iter().map(|p| p["PatNum"].as_u64().unwrap()).collect();
    assert_eq!(nums.len(), all.len());
    assert_eq!(all.len(), 100 + second.len());

    let window = h.get("/api/v1/patients?Limit=50&Offset=50").await.array();
    assert_eq!(window, all[50..100].to_vec());
    // Lowercase names work too (ASP.NET-style binding).
    let lower = h.get("/api/v1/patients?limit=5&offset=3").await.array();
    assert_eq!(lower, all[3..8].to_vec());
    let bad = h.get("/api/v1/patients?Offset=-1").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn patient_list_filters_and_row_shape() {
    let h = Harness::start(MockConfig::test_defaults()).await;
    let rows = h.get("/api/v1/patients?LName=Allowed").await.array();
    assert_eq!(
        rows,
        vec![
            json!({"PatNum": 11, "LName": "Allowed", "FName": "Allen", "MiddleI": "", "Preferred": "", "PatStatus": "Patient",
   "Birthdate": "1980-06-05", "SSN": "", "Address": "266 Jamaica Street", "Address2": "", "City": "Forbes",
   "State": "CT", "Zip": "21598", "HmPhone": "(253)687-9654", "WkPhone": "", "WirelessPhone": "", "Email": "",
   "priProvAbbr": "DOC1", "secProvAbbr": "", "BillingType": "Standard Account", "ChartNumber": "",
   "ClinicNum": 0, "clinicAbbr": "", "siteDesc": "", "TxtMsgOk": "Unknown"})
        ]
    );
    let copays = h.get("/api/v1/patients?LName=cop").await.array();
    let names: Vec<_> = copays
        .iter()
        .map(|p| p["FName"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Candi", "Cody"]);
    let candi = h.get("/api/v1/patients?LName=Copay&FName=Ca").await.array();
    assert_eq!(candi.len(), 1);
    assert_eq!(candi[0]["PatNum"], 13);
    let spaced = h.get("/api/v1/patients?LName=De%20Angelo").await.array();
    assert!(spaced.is_empty());
    let inactive = h.get("/api/v1/patients?LName=Inactive").await.array();
    assert_eq!(inactive.len(), 1);
    let hidden = h
        .get("/api/v1/patients?LName=Inactive&hideInactive=true")
        .await
        .array();
    assert!(hidden.is_empty());
    // DateTStamp belongs to /patients/Simple.
    let wrong = h.get("/api/v1/patients?DateTStamp=2025-01-01").await;
    assert_eq!(wrong.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn simple_patients_filter_by_date_t_stamp() {
    let h = Harness::start(MockConfig::test_defaults()).await;
    let all = h.get("/api/v1/patients/Simple").await.array();
    assert_eq!(all.len(), 100);
    assert!(all
        .iter()
        .all(|p| is_server_date_time(&p["serverDateTime"])));
    let recent = h
        .get("/api/v1/patients/Simple?DateTStamp=2025-10-20%2000%3A00%3A00")
        .await
        .array();
    let nums: Vec<_> = recent
        .iter()
        .map(|p| p["PatNum"].as_u64().unwrap())
        .collect();
    assert_eq!(nums, [17, 22]);
    let bad = h.get("/api/v1/patients/Simple?DateTStamp=10/20/2025").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        bad.text(),
        "\"DateTStamp format must be yyyy-MM-dd HH:mm:ss\""
    );
}

#[tokio::test]
async fn post_creates_a_patient_with_location() {
    let h = Harness::start(MockConfig::test_defaults()).await;
    let r = h
        .send_json(
            Method::POST,
            "/api/v1/patients",
            r#"{"LName":"Newman","FName":"Nora","Birthdate":"1999-09-09","Gender":"Female","PriProv":3,"Unknown":"ignored"}"#,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let created = r.json();
    let num = created["PatNum"].as_u64().unwrap();
    assert_eq!(
        r.headers[header::LOCATION],
        format!("{}/patients/{num}", h.running.base_url())
    );
    assert_eq!(created["LName"], "Newman");
    assert_eq!(created["priProvAbbr"], "DOC2");
    assert_eq!(created["Guarantor"], num);
    let fetched = h.get(&format!("/api/v1/patients/{num}")).await.json();
    assert_eq!(fetched["FName"], "Nora");
    assert_eq!(fetched["Birthdate"], "1999-09-09");

    for (body, message) in [
        (r#"{"FName":"Nora"}"#, "LName is required"),
        (r#"{"LName":"Newman"}"#, "FName is required"),
        (r#"{"LName":" ","FName":"x"}"#, "LName is required"),
        (
            r#"{"LName":"A","FName":"B","Birthdate":"09/09/1999"}"#,
            "Birthdate format must be yyyy-MM-dd",
        ),
        (
            r#"{"LName":"A","FName":"B","Gender":"Robot"}"#,
            "Gender is invalid",
        ),
        (
            r#"{"LName":"A","FName":"B","PriProv":77}"#,
            "PriProv is invalid",
        ),
        ("not json", "Invalid JSON in request body."),
    ] {
        let r = h.send_json(Method::POST, "/api/v1/patients", body).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(r.json(), json!(message), "{body}");
    }
}

#[tokio::test]
async fn put_updates_only_the_given_fields() {
    let h = Harness::start(MockConfig::test_defaults()).await;
    let before = h.get("/api/v1/patients/13").await.json();
    let r = h
        .send_json(
            Method::PUT,
            "/api/v1/patients/13",
            r#"{"City":"Hartford","WirelessPhone":"","Position":"Single"}"#,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let after = r.json();
    assert_eq!(after["City"], "Hartford");
    assert_eq!(after["WirelessPhone"], "", "an empty string clears");
    assert_eq!(after["Position"], "Single");
    assert_eq!(after["LName"], before["LName"]);
    assert_eq!(after["Address"], before["Address"]);
    assert_ne!(after["DateTStamp"], before["DateTStamp"]);
    assert_eq!(
        h.get("/api/v1/patients/13").await.json()["City"],
        "Hartford"
    );

    let blank = h
        .send_json(Method::PUT, "/api/v1/patients/13", r#"{"LName":""}"#)
        .await;
    assert_eq!(blank.status, StatusCode::BAD_REQUEST);
    assert_eq!(h.get("/api/v1/patients/13").await.json()["LName"], "Copay");
    let missing = h
        .send_json(Method::PUT, "/api/v1/patients/99999", r#"{"City":"x"}"#)
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);

    // State is per mock instance.
    let other = Harness::start(MockConfig::test_defaults()).await;
    assert_eq!(
        other.get("/api/v1/patients/13").await.json()["City"],
        "Forbes"
    );
}

#[tokio::test]
async fn appointments_single_and_filtered() {
    let h = Harness::start(MockConfig::test_defaults()).await;
    let r = h.get("/api/v1/appointments/53").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.text().starts_with("{\"serverDateTime\":\""),
        "{}",
        r.text()
    );
    let apt = r.json();
    assert_eq!(apt["PatNum"], 22);
    assert_eq!(apt["AptStatus"], "Scheduled");
    assert_eq!(apt["TimeLocked"], "false");
    assert_eq!(apt["AptDateTime"], "2025-11-01 15:00:00");
    assert_eq!(apt["provAbbr"], "DOC1");

    let nums = |rows: Vec<Value>| -> Vec<u64> {
        rows.iter().map(|a| a["AptNum"].as_u64().unwrap()).collect()
    };
    assert_eq!(
        nums(h.get("/api/v1/appointments?PatNum=22").await.array()),
        [53]
    );
    assert_eq!(
        nums(
            h.get("/api/v1/appointments?PatNum=13&AptStatus=Broken")
                .await
                .array()
        ),
        [45]
    );
    assert_eq!(
        nums(h.get("/api/v1/appointments?date=2025-11-01").await.array()),
        [48, 53]
    );
    assert_eq!(
        nums(
            h.get("/api/v1/appointments?dateStart=2025-10-01&dateEnd=2025-11-01")
                .await
                .array()
        ),
        [45, 48, 53]
    );
    let all = h.get("/api/v1/appointments").await.array();
    assert!(all
        .iter()
        .all(|a| is_server_date_time(&a["serverDateTime"])));
    assert_eq!(
        h.get("/api/v1/appointments?AptStatus=Bogus").await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        h.get("/api/v1/appointments/1").await.text(),
        "\"Appointment not found.\""
    );
}

#[tokio::test]
async fn providers_and_operatories() {
    let h = Harness::start(MockConfig::test_defaults()).await;
    let provs = h.get("/api/v1/providers").await.array();
    let abbrs: Vec<_> = provs.iter().map(|p| p["Abbr"].as_str().unwrap()).collect();
    assert_eq!(abbrs, ["DOC1", "HYG1", "DOC2", "HYG2"]);
    assert_eq!(provs[0]["IsHidden"], "false");
    let p3 = h.get("/api/v1/providers/3").await.json();
    assert_eq!(p3["Abbr"], "DOC2");
    let changed = h
        .get("/api/v1/providers?DateTStamp=2025-01-01%2000:00:00")
        .await
        .array();
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0]["Abbr"], "HYG2");
    let bad = h.get("/api/v1/providers?DateTStamp=yesterday").await;
    assert_eq!(
        bad.text(),
        "\"DateTStamp format must be yyyy-MM-dd HH:mm:ss\""
    );

    let ops = h.get("/api/v1/operatories").await.array();
    let names: Vec<_> = ops.iter().map(|o| o["OpName"].as_str().unwrap()).collect();
    assert_eq!(names, ["OP-1", "OP-2", "OP-3", "OP-4", "Hyg1", "Hyg2"]);
    let hyg = h.get("/api/v1/operatories/5").await.json();
    assert_eq!(hyg["IsHygiene"], "true");
    assert_eq!(hyg["ProvHygienist"], 2);
    assert_eq!(
        h.get("/api/v1/operatories/50").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn preferences_filter_and_page() {
    let h = Harness::start(MockConfig::test_defaults()).await;
    for (name, value) in [
        ("ProgramVersion", "24.3.36.0"),
        ("RecallDaysPast", "365"),
        ("PracticeDefaultBillType", "40"),
    ] {
        let rows = h
            .get(&format!("/api/v1/preferences?PrefName={name}"))
            .await
            .array();
        assert_eq!(rows.len(), 1, "{name}");
        assert_eq!(rows[0]["PrefName"], name);
        assert_eq!(rows[0]["ValueString"], value, "values are strings");
    }
    for name in [
        "DateLastAging",
        "AgingServiceTimeDue",
        "PracticeTitle",
        "PracticeZip",
    ] {
        let rows = h
            .get(&format!("/api/v1/preferences?PrefName={name}"))
            .await
            .array();
        assert_eq!(rows.len(), 1, "{name}");
    }
    assert!(h
        .get("/api/v1/preferences?PrefName=NoSuchPref")
        .await
        .array()
        .is_empty());
    assert!(
        h.get("/api/v1/preferences?PrefName=programversion")
            .await
            .array()
            .is_empty(),
        "PrefName matches exactly"
    );

    let mut seen = HashSet::new();
    let mut sizes = Vec::new();
    let mut offset = 0;
    for _ in 0..10 {
        let page = h
            .get(&format!("/api/v1/preferences?Offset={offset}"))
            .await
            .array();
        sizes.push(page.len());
        offset += page.len();
        for p in &page {
            assert!(seen.insert(p["PrefNum"].as_u64().unwrap()));
        }
        if page.len() < 100 {
            break;
        }
    }
    assert!(seen.len() >= 250);
    assert_eq!(sizes[..2], [100, 100]);
    assert!(*sizes.last().unwrap() < 100);

    let strict = Harness::start(MockConfig {
        unknown_pref: UnknownPrefAnswer::NotFound,
        ..MockConfig::test_defaults()
    })
    .await;
    let r = strict.get("/api/v1/preferences?PrefName=NoSuchPref").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn short_query_screens_writes_with_401() {
    let h = Harness::start(MockConfig::test_defaults()).await;
    let ok = h
        .short_query(
            "",
            "SELECT patnum, estbalance, bal_0_30, bal_31_60, bal_61_90, balover90, insest, baltotal FROM patient WHERE patnum=guarantor",
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text());
    let rows = ok.array();
    assert_eq!(rows[0]["patnum"], 11);
    assert_eq!(rows[0]["balover90"], 370.0);
    assert!(ok.text().starts_with("[{\"patnum\":11,\"estbalance\":"));

    for sql in [
        "UPDATE patient SET LName='x' WHERE PatNum=11",
        "DELETE FROM patient",
        "DROP TABLE patient",
        "select * from patient; delete from patient",
        "  insert into patient (LName) values ('x')",
    ] {
        let r = h.short_query("", sql).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{sql}");
        assert_eq!(r.json(), json!(NOT_READ_ONLY), "{sql}");
    }
    assert_eq!(
        h.get("/api/v1/patients/11").await.json()["LName"],
        "Allowed"
    );

    let missing = h
        .send_json(
            Method::PUT,
            "/api/v1/queries/ShortQuery",
            r#"{"Query":"SELECT 1"}"#,
        )
        .await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    assert_eq!(missing.json(), json!("SqlCommand is required"));

    // Offset paging at 100 rows.
    let first = h.short_query("", "SELECT * FROM preference").await.array();
    assert_eq!(first.len(), 100);
    let third = h
        .short_query("?Offset=200", "SELECT * FROM preference")
        .await
        .array();
    assert!(!third.is_empty() && third.len() < 100);
    assert_eq!(third[0]["PrefNum"], 201);
    let payperiods = h.short_query("", "SELECT * FROM payperiod").await.array();
    assert_eq!(payperiods[0]["DateStart"], "2021-05-01T00:00:00");
    // GET is not a ShortQuery method.
    assert_eq!(
        h.get("/api/v1/queries/ShortQuery").await.status,
        StatusCode::NOT_FOUND
    );
}
