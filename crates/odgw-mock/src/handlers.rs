//! The Open Dental resources the mock serves, once a request has passed
//! faults, auth and throttling (see `service.rs`).

use bytes::Bytes;
use http::{header, HeaderValue, Method, StatusCode};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::clock;
use crate::config::{MockConfig, UnknownPrefAnswer};
use crate::model::{
    Patient, ServerTimeLast, WithServerTime, APT_STATUSES, GENDERS, PAT_STATUSES, POSITIONS,
    TXT_MSG_OK,
};
use crate::params::Params;
use crate::respond::{self, Resp};
use crate::seed::{blank_patient, Database};
use crate::sql;

/// Open Dental's 404 text for a path it has no resource for.
pub(crate) const NO_SUCH_RESOURCE: &str = "The specified API resource does not exist.";

/// What a resource handler sees of the request.
pub(crate) struct Call<'a> {
    pub method: &'a Method,
    /// Path segments after `/api/v1/`, without empty ones.
    pub segments: Vec<&'a str>,
    pub params: Params,
    pub body: &'a Bytes,
    /// `http://host:port/api/v1`, for `Location` headers.
    pub base_url: String,
}

/// Routes one authenticated request. Resource names and sub-actions match
/// case-insensitively, as ASP.NET routing does.
pub(crate) fn route(call: &Call<'_>, config: &MockConfig, db: &mut Database) -> Resp {
    let r = Responder { config };
    let seg = |i: usize| call.segments.get(i).map(|s| s.to_ascii_lowercase());
    let m = call.method;
    let result = match (seg(0).as_deref(), seg(1).as_deref(), call.segments.len()) {
        (Some("patients"), None, 1) if m == Method::GET => list_patients(call, config, db),
        (Some("patients"), None, 1) if m == Method::POST => create_patient(call, db),
        (Some("patients"), Some("simple"), 2) if m == Method::GET => {
            simple_patients(call, config, db)
        }
        (Some("patients"), Some(id), 2) if m == Method::GET => get_patient(id, db),
        (Some("patients"), Some(id), 2) if m == Method::PUT => update_patient(id, call, db),
        (Some("appointments"), None, 1) if m == Method::GET => list_appointments(call, config, db),
        (Some("appointments"), Some(id), 2) if m == Method::GET => get_appointment(id, db),
        (Some("providers"), None, 1) if m == Method::GET => list_providers(call, config, db),
        (Some("providers"), Some(id), 2) if m == Method::GET => get_provider(id, db),
        (Some("operatories"), None, 1) if m == Method::GET => list_operatories(call, config, db),
        (Some("operatories"), Some(id), 2) if m == Method::GET => get_operatory(id, db),
        (Some("preferences"), None, 1) if m == Method::GET => list_preferences(call, config, db),
        (Some("queries"), Some("shortquery"), 2) if m == Method::PUT => {
            short_query(call, config, db)
        }
        _ => Err(Problem::new(StatusCode::NOT_FOUND, NO_SUCH_RESOURCE)),
    };
    result.unwrap_or_else(|p| r.error(p))
}

/// An error answer: status and Open Dental-style message.
#[derive(Debug)]
pub(crate) struct Problem {
    status: StatusCode,
    message: String,
}

impl Problem {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Problem {
            status,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    fn not_found(what: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, format!("{what} not found."))
    }
}

impl From<String> for Problem {
    fn from(message: String) -> Self {
        Problem::bad_request(message)
    }
}

struct Responder<'a> {
    config: &'a MockConfig,
}

impl Responder<'_> {
    fn error(&self, p: Problem) -> Resp {
        respond::error(self.config.error_body, p.status, &p.message)
    }
}

type Handled = Result<Resp, Problem>;

fn ok<T: Serialize>(value: &T) -> Handled {
    Ok(respond::json(StatusCode::OK, value))
}

fn id_of(raw: &str, name: &str) -> Result<u64, Problem> {
    raw.parse()
        .map_err(|_| Problem::bad_request(format!("{name} is invalid")))
}

/// A `DateTStamp` filter, with the message Open Dental's providers page
/// documents for a bad one.
fn date_t_stamp(params: &Params) -> Result<Option<String>, Problem> {
    match params.get("DateTStamp") {
        None => Ok(None),
        Some(raw) => clock::parse_datetime(raw)
            .map(|t| Some(clock::format_datetime(t)))
            .ok_or_else(|| Problem::bad_request("DateTStamp format must be yyyy-MM-dd HH:mm:ss")),
    }
}

fn date_param(params: &Params, name: &str) -> Result<Option<String>, Problem> {
    match params.get(name) {
        None => Ok(None),
        Some(raw) => clock::parse_date(raw)
            .map(|d| Some(d.to_string()))
            .ok_or_else(|| Problem::bad_request(format!("{name} format must be yyyy-MM-dd"))),
    }
}

fn is_true(params: &Params, name: &str) -> bool {
    params
        .get(name)
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

// ---- patients ----

/// `GET /patients`: the Patient Select code path. Prefix filters on LName and
/// FName; ordered by name; no `DateTStamp` (a known client mistake).
fn list_patients(call: &Call<'_>, config: &MockConfig, db: &Database) -> Handled {
    let p = &call.params;
    if p.get("DateTStamp").is_some() {
        return Err(Problem::bad_request(
            "DateTStamp is not a valid parameter. Use patients/Simple.",
        ));
    }
    let page = p.page(config.max_page)?;
    let prefix = |name: &str| p.get(name).map(str::to_lowercase);
    let (l, f) = (prefix("LName"), prefix("FName"));
    let hide_inactive = is_true(p, "hideInactive");
    let show_archived = is_true(p, "showArchived");
    let mut rows: Vec<&Patient> = db
        .patients
        .values()
        .filter(|pat| {
            l.as_deref()
                .is_none_or(|l| pat.l_name.to_lowercase().starts_with(l))
                && f.as_deref()
                    .is_none_or(|f| pat.f_name.to_lowercase().starts_with(f))
                && pat.pat_status != "Deleted"
                && (show_archived || pat.pat_status != "Archived")
                && !(hide_inactive && pat.pat_status == "Inactive")
        })
        .collect();
    rows.sort_by(|a, b| {
        (a.l_name.to_lowercase(), a.f_name.to_lowercase(), a.pat_num).cmp(&(
            b.l_name.to_lowercase(),
            b.f_name.to_lowercase(),
            b.pat_num,
        ))
    });
    let abbr = |n| db.prov_abbr(n);
    let out: Vec<_> = page.apply(rows).into_iter().map(|p| p.row(&abbr)).collect();
    ok(&out)
}

/// `GET /patients/Simple`: ordered by PatNum, `DateTStamp` = altered at or
/// after, `serverDateTime` in every element.
fn simple_patients(call: &Call<'_>, config: &MockConfig, db: &Database) -> Handled {
    let page = call.params.page(config.max_page)?;
    let since = date_t_stamp(&call.params)?;
    let now = clock::server_date_time();
    let abbr = |n| db.prov_abbr(n);
    let rows = db.patients.values().filter(|p| {
        since
            .as_deref()
            .is_none_or(|s| p.date_t_stamp.as_str() >= s)
    });
    let out: Vec<_> = page
        .apply(rows)
        .into_iter()
        .map(|p| p.full(&abbr, &now))
        .collect();
    ok(&out)
}

fn get_patient(raw: &str, db: &Database) -> Handled {
    let num = id_of(raw, "PatNum")?;
    let p = db
        .patients
        .get(&num)
        .ok_or_else(|| Problem::not_found("Patient"))?;
    let now = clock::server_date_time();
    ok(&p.full(&|n| db.prov_abbr(n), &now))
}

fn json_object(body: &Bytes) -> Result<Map<String, Value>, Problem> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(Problem::bad_request("Request body must be a JSON object.")),
        Err(_) => Err(Problem::bad_request("Invalid JSON in request body.")),
    }
}

/// `POST /patients`: LName and FName required; 201 with `Location` and the
/// new patient.
fn create_patient(call: &Call<'_>, db: &mut Database) -> Handled {
    let fields = json_object(call.body)?;
    for required in ["LName", "FName"] {
        let present = fields
            .get(required)
            .and_then(Value::as_str)
            .is_some_and(|s| !s.trim().is_empty());
        if !present {
            return Err(Problem::bad_request(format!("{required} is required")));
        }
    }
    let num = db.next_pat_num();
    let mut patient = blank_patient(num, "", "");
    apply_patient_fields(&mut patient, &fields, db)?;
    let now = clock::server_date_time();
    patient.date_t_stamp = now.clone();
    patient.sec_date_entry = now.get(..10).unwrap_or_default().to_owned();
    let body = patient.full(&|n| db.prov_abbr(n), &now);
    let mut resp = respond::json(StatusCode::CREATED, &body);
    let location = format!("{}/patients/{num}", call.base_url);
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    db.patients.insert(num, patient);
    Ok(resp)
}

/// `PUT /patients/{n}`: omitted fields are unchanged; an empty string clears
/// a text field, except LName and FName.
fn update_patient(raw: &str, call: &Call<'_>, db: &mut Database) -> Handled {
    let num = id_of(raw, "PatNum")?;
    let mut patient = db
        .patients
        .get(&num)
        .cloned()
        .ok_or_else(|| Problem::not_found("Patient"))?;
    let fields = json_object(call.body)?;
    apply_patient_fields(&mut patient, &fields, db)?;
    let now = clock::server_date_time();
    patient.date_t_stamp = now.clone();
    let resp = respond::json(StatusCode::OK, &patient.full(&|n| db.prov_abbr(n), &now));
    db.patients.insert(num, patient);
    Ok(resp)
}

/// Applies the writable fields present in `fields`; unknown and read-only
/// fields are ignored. Validates everything before changing anything.
fn apply_patient_fields(
    p: &mut Patient,
    fields: &Map<String, Value>,
    db: &Database,
) -> Result<(), Problem> {
    let mut next = p.clone();
    for (name, value) in fields {
        match name.as_str() {
            "LName" | "FName" => {
                let text = text(name, value)?;
                if text.trim().is_empty() {
                    return Err(Problem::bad_request(format!("{name} cannot be blank")));
                }
                *if name == "LName" {
                    &mut next.l_name
                } else {
                    &mut next.f_name
                } = text;
            }
            "MiddleI" => next.middle_i = text(name, value)?,
            "Preferred" => next.preferred = text(name, value)?,
            "SSN" => next.ssn = text(name, value)?,
            "Address" => next.address = text(name, value)?,
            "Address2" => next.address2 = text(name, value)?,
            "City" => next.city = text(name, value)?,
            "State" => next.state = text(name, value)?,
            "Zip" => next.zip = text(name, value)?,
            "HmPhone" => next.hm_phone = text(name, value)?,
            "WkPhone" => next.wk_phone = text(name, value)?,
            "WirelessPhone" => next.wireless_phone = text(name, value)?,
            "Email" => next.email = text(name, value)?,
            "ChartNumber" => next.chart_number = text(name, value)?,
            "PatStatus" => next.pat_status = one_of(name, value, PAT_STATUSES)?,
            "Gender" => next.gender = one_of(name, value, GENDERS)?,
            "Position" => next.position = one_of(name, value, POSITIONS)?,
            "TxtMsgOk" => next.txt_msg_ok = one_of(name, value, TXT_MSG_OK)?,
            "Birthdate" => next.birthdate = date(name, value)?,
            "DateFirstVisit" => next.date_first_visit = date(name, value)?,
            "PriProv" => {
                let n = number(name, value)?;
                if db.prov_abbr(n).is_empty() {
                    return Err(Problem::bad_request(format!("{name} is invalid")));
                }
                next.pri_prov = n;
            }
            "SecProv" => {
                let n = number(name, value)?;
                if n != 0 && db.prov_abbr(n).is_empty() {
                    return Err(Problem::bad_request(format!("{name} is invalid")));
                }
                next.sec_prov = n;
            }
            "Guarantor" => {
                let n = number(name, value)?;
                if n != next.pat_num && !db.patients.contains_key(&n) {
                    return Err(Problem::bad_request(format!("{name} is invalid")));
                }
                next.guarantor = n;
            }
            "ClinicNum" => next.clinic_num = number(name, value)?,
            _ => {}
        }
    }
    *p = next;
    Ok(())
}

/// A text field; Open Dental's serializer turns `\r\n` into spaces.
fn text(name: &str, value: &Value) -> Result<String, Problem> {
    value
        .as_str()
        .map(|s| s.replace("\r\n", " "))
        .ok_or_else(|| Problem::bad_request(format!("{name} must be a string")))
}

fn one_of(name: &str, value: &Value, allowed: &[&str]) -> Result<String, Problem> {
    let s = text(name, value)?;
    allowed
        .iter()
        .find(|a| a.eq_ignore_ascii_case(&s))
        .map(|a| (*a).to_owned())
        .ok_or_else(|| Problem::bad_request(format!("{name} is invalid")))
}

fn date(name: &str, value: &Value) -> Result<String, Problem> {
    let s = text(name, value)?;
    clock::parse_date(&s)
        .map(|d| d.to_string())
        .ok_or_else(|| Problem::bad_request(format!("{name} format must be yyyy-MM-dd")))
}

/// A number, or a string holding one (clients send both).
fn number(name: &str, value: &Value) -> Result<u64, Problem> {
    value
        .as_u64()
        .or_else(|| value.as_str().and_then(|s| s.trim().parse().ok()))
        .ok_or_else(|| Problem::bad_request(format!("{name} is invalid")))
}

// ---- appointments ----

fn list_appointments(call: &Call<'_>, config: &MockConfig, db: &Database) -> Handled {
    let p = &call.params;
    let page = p.page(config.max_page)?;
    let pat_num = p.number("PatNum")?;
    let op = p.number("Op")?;
    let clinic = p.number("ClinicNum")?;
    let apt_type = p.number("AppointmentTypeNum")?;
    let status = match p.get("AptStatus") {
        None => None,
        Some(s) => Some(
            APT_STATUSES
                .iter()
                .find(|a| a.eq_ignore_ascii_case(s))
                .copied()
                .ok_or_else(|| Problem::bad_request("AptStatus is invalid"))?,
        ),
    };
    let on = date_param(p, "date")?;
    let start = date_param(p, "dateStart")?;
    let end = date_param(p, "dateEnd")?;
    let since = date_t_stamp(p)?;
    let now = clock::server_date_time();
    let rows = db.appointments.iter().filter(|a| {
        let day = a.apt_date_time.get(..10).unwrap_or_default();
        pat_num.is_none_or(|n| a.pat_num == n)
            && op.is_none_or(|n| a.op == n)
            && clinic.is_none_or(|n| a.clinic_num == n)
            && apt_type.is_none_or(|n| a.appointment_type_num == n)
            && status.is_none_or(|s| a.apt_status == s)
            && on.as_deref().is_none_or(|d| day == d)
            && start.as_deref().is_none_or(|d| day >= d)
            && end.as_deref().is_none_or(|d| day <= d)
            && since.as_deref().is_none_or(|s| a.date_t_stamp >= s)
    });
    let mut rows: Vec<_> = rows.collect();
    rows.sort_by_key(|a| a.apt_num);
    let out: Vec<_> = page
        .apply(rows)
        .into_iter()
        .map(|a| WithServerTime {
            server_date_time: &now,
            inner: a,
        })
        .collect();
    ok(&out)
}

fn get_appointment(raw: &str, db: &Database) -> Handled {
    let num = id_of(raw, "AptNum")?;
    let apt = db
        .appointments
        .iter()
        .find(|a| a.apt_num == num)
        .ok_or_else(|| Problem::not_found("Appointment"))?;
    let now = clock::server_date_time();
    ok(&WithServerTime {
        server_date_time: &now,
        inner: apt,
    })
}

// ---- providers, operatories ----

fn list_providers(call: &Call<'_>, config: &MockConfig, db: &Database) -> Handled {
    let page = call.params.page(config.max_page)?;
    let since = date_t_stamp(&call.params)?;
    let now = clock::server_date_time();
    let rows = db
        .providers
        .iter()
        .filter(|p| since.as_deref().is_none_or(|s| p.date_t_stamp >= s));
    let out: Vec<_> = page
        .apply(rows)
        .into_iter()
        .map(|p| ServerTimeLast {
            inner: p,
            server_date_time: &now,
        })
        .collect();
    ok(&out)
}

fn get_provider(raw: &str, db: &Database) -> Handled {
    let num = id_of(raw, "ProvNum")?;
    let prov = db
        .providers
        .iter()
        .find(|p| p.prov_num == num)
        .ok_or_else(|| Problem::not_found("Provider"))?;
    let now = clock::server_date_time();
    ok(&ServerTimeLast {
        inner: prov,
        server_date_time: &now,
    })
}

fn list_operatories(call: &Call<'_>, config: &MockConfig, db: &Database) -> Handled {
    let page = call.params.page(config.max_page)?;
    let clinic = call.params.number("ClinicNum")?;
    let rows = db
        .operatories
        .iter()
        .filter(|o| clinic.is_none_or(|c| o.clinic_num == c));
    ok(&page.apply(rows))
}

fn get_operatory(raw: &str, db: &Database) -> Handled {
    let num = id_of(raw, "OperatoryNum")?;
    let op = db
        .operatories
        .iter()
        .find(|o| o.operatory_num == num)
        .ok_or_else(|| Problem::not_found("Operatory"))?;
    ok(op)
}

// ---- preferences ----

/// `GET /preferences`: always an array; `PrefName` matches exactly.
fn list_preferences(call: &Call<'_>, config: &MockConfig, db: &Database) -> Handled {
    let page = call.params.page(config.max_page)?;
    let name = call.params.get("PrefName");
    let rows: Vec<_> = db
        .preferences
        .iter()
        .filter(|p| name.is_none_or(|n| p.pref_name == n))
        .collect();
    if rows.is_empty() && name.is_some() && config.unknown_pref == UnknownPrefAnswer::NotFound {
        return Err(Problem::not_found("Preference"));
    }
    ok(&page.apply(rows))
}

// ---- queries ----

/// Open Dental's 401 text for ShortQuery SQL that fails the read-only screen.
pub const NOT_READ_ONLY: &str = "Query is not read-only or is not executing on temporary tables";

/// `PUT /queries/ShortQuery`: body `{"SqlCommand": "..."}`; at most one page
/// of rows, `Offset` paging.
fn short_query(call: &Call<'_>, config: &MockConfig, db: &Database) -> Handled {
    let fields = json_object(call.body)?;
    let sql = match fields.get("SqlCommand") {
        Some(Value::String(s)) if !s.trim().is_empty() => s,
        Some(Value::String(_)) | None => {
            return Err(Problem::bad_request("SqlCommand is required"));
        }
        Some(_) => return Err(Problem::bad_request("SqlCommand must be a string")),
    };
    if !sql::is_read_only(sql) {
        return Err(Problem::new(StatusCode::UNAUTHORIZED, NOT_READ_ONLY));
    }
    let page = call.params.page(config.max_page)?;
    ok(&page.apply(sql::run(sql, db)))
}
