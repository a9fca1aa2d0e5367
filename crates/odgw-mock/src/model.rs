//! Open Dental's JSON shapes. Field order follows the API's output (DB column
//! order, derived lowercase fields next to their source), which is why these
//! are structs and not `serde_json::Value` maps (those sort their keys).
//!
//! Type quirks reproduced: booleans are `"true"`/`"false"` strings
//! ([`OdBool`]), dates and datetimes are strings, enums are their text, FK ids
//! and money are numbers.

use serde::{Serialize, Serializer};

/// A boolean as Open Dental emits it: the string `"true"` or `"false"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct OdBool(pub bool);

impl Serialize for OdBool {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(if self.0 { "true" } else { "false" })
    }
}

/// Empty date and datetime, as Open Dental writes them.
pub(crate) const EMPTY_DATE: &str = "0001-01-01";
pub(crate) const EMPTY_DATETIME: &str = "0001-01-01 00:00:00";

/// `PatStatus` values.
pub(crate) const PAT_STATUSES: &[&str] = &[
    "Patient",
    "NonPatient",
    "Inactive",
    "Archived",
    "Deleted",
    "Deceased",
    "Prospective",
];
/// `Gender` values.
pub(crate) const GENDERS: &[&str] = &["Male", "Female", "Unknown", "Other"];
/// `Position` (marital status) values.
pub(crate) const POSITIONS: &[&str] = &["Single", "Married", "Child", "Widowed", "Divorced"];
/// `TxtMsgOk` values.
pub(crate) const TXT_MSG_OK: &[&str] = &["Unknown", "Yes", "No"];
/// `AptStatus` values accepted by `GET /appointments`.
pub(crate) const APT_STATUSES: &[&str] = &[
    "Scheduled",
    "Complete",
    "UnschedList",
    "ASAP",
    "Broken",
    "Planned",
    "PtNote",
    "PtNoteCompleted",
];

/// A patient as stored; serialized through [`PatientRow`] or [`PatientFull`].
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Patient {
    pub pat_num: u64,
    pub l_name: String,
    pub f_name: String,
    pub middle_i: String,
    pub preferred: String,
    pub pat_status: String,
    pub gender: String,
    pub position: String,
    pub birthdate: String,
    pub ssn: String,
    pub address: String,
    pub address2: String,
    pub city: String,
    pub state: String,
    pub zip: String,
    pub hm_phone: String,
    pub wk_phone: String,
    pub wireless_phone: String,
    pub guarantor: u64,
    pub email: String,
    pub est_balance: f64,
    pub pri_prov: u64,
    pub sec_prov: u64,
    pub billing_type: String,
    pub chart_number: String,
    pub clinic_num: u64,
    pub txt_msg_ok: String,
    pub date_first_visit: String,
    pub date_t_stamp: String,
    pub sec_date_entry: String,
    /// Aging buckets, only visible through ShortQuery on `patient`.
    pub aging: Aging,
}

/// The `bal_*` columns of the `patient` table.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Aging {
    pub bal_0_30: f64,
    pub bal_31_60: f64,
    pub bal_61_90: f64,
    pub bal_over_90: f64,
    pub ins_est: f64,
}

impl Aging {
    pub fn total(&self) -> f64 {
        self.bal_0_30 + self.bal_31_60 + self.bal_61_90 + self.bal_over_90
    }
}

/// A `GET /patients` (Patient Select) row: exactly the fields of the real
/// test-database row in `opendental-api.md` §4.5, no `serverDateTime`.
#[derive(Serialize)]
pub(crate) struct PatientRow<'a> {
    #[serde(rename = "PatNum")]
    pat_num: u64,
    #[serde(rename = "LName")]
    l_name: &'a str,
    #[serde(rename = "FName")]
    f_name: &'a str,
    #[serde(rename = "MiddleI")]
    middle_i: &'a str,
    #[serde(rename = "Preferred")]
    preferred: &'a str,
    #[serde(rename = "PatStatus")]
    pat_status: &'a str,
    #[serde(rename = "Birthdate")]
    birthdate: &'a str,
    #[serde(rename = "SSN")]
    ssn: &'a str,
    #[serde(rename = "Address")]
    address: &'a str,
    #[serde(rename = "Address2")]
    address2: &'a str,
    #[serde(rename = "City")]
    city: &'a str,
    #[serde(rename = "State")]
    state: &'a str,
    #[serde(rename = "Zip")]
    zip: &'a str,
    #[serde(rename = "HmPhone")]
    hm_phone: &'a str,
    #[serde(rename = "WkPhone")]
    wk_phone: &'a str,
    #[serde(rename = "WirelessPhone")]
    wireless_phone: &'a str,
    #[serde(rename = "Email")]
    email: &'a str,
    #[serde(rename = "priProvAbbr")]
    pri_prov_abbr: &'a str,
    #[serde(rename = "secProvAbbr")]
    sec_prov_abbr: &'a str,
    #[serde(rename = "BillingType")]
    billing_type: &'a str,
    #[serde(rename = "ChartNumber")]
    chart_number: &'a str,
    #[serde(rename = "ClinicNum")]
    clinic_num: u64,
    #[serde(rename = "clinicAbbr")]
    clinic_abbr: &'a str,
    #[serde(rename = "siteDesc")]
    site_desc: &'a str,
    #[serde(rename = "TxtMsgOk")]
    txt_msg_ok: &'a str,
}

/// The single-patient shape (`GET /patients/{n}`, `/patients/Simple`, POST,
/// PUT): the §4.5 row plus the stored ids, balance, stamps and, last,
/// `serverDateTime`. The extra fields follow Open Dental's docs but, unlike
/// the row, were not checked against a live response.
#[derive(Serialize)]
pub(crate) struct PatientFull<'a> {
    #[serde(rename = "PatNum")]
    pat_num: u64,
    #[serde(rename = "LName")]
    l_name: &'a str,
    #[serde(rename = "FName")]
    f_name: &'a str,
    #[serde(rename = "MiddleI")]
    middle_i: &'a str,
    #[serde(rename = "Preferred")]
    preferred: &'a str,
    #[serde(rename = "PatStatus")]
    pat_status: &'a str,
    #[serde(rename = "Gender")]
    gender: &'a str,
    #[serde(rename = "Position")]
    position: &'a str,
    #[serde(rename = "Birthdate")]
    birthdate: &'a str,
    #[serde(rename = "SSN")]
    ssn: &'a str,
    #[serde(rename = "Address")]
    address: &'a str,
    #[serde(rename = "Address2")]
    address2: &'a str,
    #[serde(rename = "City")]
    city: &'a str,
    #[serde(rename = "State")]
    state: &'a str,
    #[serde(rename = "Zip")]
    zip: &'a str,
    #[serde(rename = "HmPhone")]
    hm_phone: &'a str,
    #[serde(rename = "WkPhone")]
    wk_phone: &'a str,
    #[serde(rename = "WirelessPhone")]
    wireless_phone: &'a str,
    #[serde(rename = "Guarantor")]
    guarantor: u64,
    #[serde(rename = "Email")]
    email: &'a str,
    #[serde(rename = "EstBalance")]
    est_balance: f64,
    #[serde(rename = "PriProv")]
    pri_prov: u64,
    #[serde(rename = "priProvAbbr")]
    pri_prov_abbr: &'a str,
    #[serde(rename = "SecProv")]
    sec_prov: u64,
    #[serde(rename = "secProvAbbr")]
    sec_prov_abbr: &'a str,
    #[serde(rename = "BillingType")]
    billing_type: &'a str,
    #[serde(rename = "ChartNumber")]
    chart_number: &'a str,
    #[serde(rename = "ClinicNum")]
    clinic_num: u64,
    #[serde(rename = "clinicAbbr")]
    clinic_abbr: &'a str,
    #[serde(rename = "siteDesc")]
    site_desc: &'a str,
    #[serde(rename = "DateFirstVisit")]
    date_first_visit: &'a str,
    #[serde(rename = "TxtMsgOk")]
    txt_msg_ok: &'a str,
    #[serde(rename = "DateTStamp")]
    date_t_stamp: &'a str,
    #[serde(rename = "SecDateEntry")]
    sec_date_entry: &'a str,
    #[serde(rename = "serverDateTime")]
    server_date_time: &'a str,
}

impl Patient {
    /// The Patient Select row; `abbr` maps a ProvNum to its abbreviation.
    pub fn row<'a>(&'a self, abbr: &dyn Fn(u64) -> &'a str) -> PatientRow<'a> {
        PatientRow {
            pat_num: self.pat_num,
            l_name: &self.l_name,
            f_name: &self.f_name,
            middle_i: &self.middle_i,
            preferred: &self.preferred,
            pat_status: &self.pat_status,
            birthdate: &self.birthdate,
            ssn: &self.ssn,
            address: &self.address,
            address2: &self.address2,
            city: &self.city,
            state: &self.state,
            zip: &self.zip,
            hm_phone: &self.hm_phone,
            wk_phone: &self.wk_phone,
            wireless_phone: &self.wireless_phone,
            email: &self.email,
            pri_prov_abbr: abbr(self.pri_prov),
            sec_prov_abbr: abbr(self.sec_prov),
            billing_type: &self.billing_type,
            chart_number: &self.chart_number,
            clinic_num: self.clinic_num,
            clinic_abbr: "",
            site_desc: "",
            txt_msg_ok: &self.txt_msg_ok,
        }
    }

    /// The full single-patient object.
    pub fn full<'a>(
        &'a self,
        abbr: &dyn Fn(u64) -> &'a str,
        server_date_time: &'a str,
    ) -> PatientFull<'a> {
        PatientFull {
            pat_num: self.pat_num,
            l_name: &self.l_name,
            f_name: &self.f_name,
            middle_i: &self.middle_i,
            preferred: &self.preferred,
            pat_status: &self.pat_status,
            gender: &self.gender,
            position: &self.position,
            birthdate: &self.birthdate,
            ssn: &self.ssn,
            address: &self.address,
            address2: &self.address2,
            city: &self.city,
            state: &self.state,
            zip: &self.zip,
            hm_phone: &self.hm_phone,
            wk_phone: &self.wk_phone,
            wireless_phone: &self.wireless_phone,
            guarantor: self.guarantor,
            email: &self.email,
            est_balance: self.est_balance,
            pri_prov: self.pri_prov,
            pri_prov_abbr: abbr(self.pri_prov),
            sec_prov: self.sec_prov,
            sec_prov_abbr: abbr(self.sec_prov),
            billing_type: &self.billing_type,
            chart_number: &self.chart_number,
            clinic_num: self.clinic_num,
            clinic_abbr: "",
            site_desc: "",
            date_first_visit: &self.date_first_visit,
            txt_msg_ok: &self.txt_msg_ok,
            date_t_stamp: &self.date_t_stamp,
            sec_date_entry: &self.sec_date_entry,
            server_date_time,
        }
    }
}

/// An appointment, in the exact field order of the real `GET /appointments/53`
/// (§4.5); `serverDateTime` is prepended on output by [`WithServerTime`].
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Appointment {
    #[serde(rename = "AptNum")]
    pub apt_num: u64,
    #[serde(rename = "PatNum")]
    pub pat_num: u64,
    #[serde(rename = "AptStatus")]
    pub apt_status: &'static str,
    #[serde(rename = "Pattern")]
    pub pattern: &'static str,
    #[serde(rename = "Confirmed")]
    pub confirmed: u64,
    #[serde(rename = "confirmed")]
    pub confirmed_text: &'static str,
    #[serde(rename = "TimeLocked")]
    pub time_locked: OdBool,
    #[serde(rename = "Op")]
    pub op: u64,
    #[serde(rename = "Note")]
    pub note: &'static str,
    #[serde(rename = "ProvNum")]
    pub prov_num: u64,
    #[serde(rename = "provAbbr")]
    pub prov_abbr: &'static str,
    #[serde(rename = "ProvHyg")]
    pub prov_hyg: u64,
    #[serde(rename = "AptDateTime")]
    pub apt_date_time: &'static str,
    #[serde(rename = "NextAptNum")]
    pub next_apt_num: u64,
    #[serde(rename = "UnschedStatus")]
    pub unsched_status: u64,
    #[serde(rename = "unschedStatus")]
    pub unsched_status_text: &'static str,
    #[serde(rename = "IsNewPatient")]
    pub is_new_patient: OdBool,
    #[serde(rename = "ProcDescript")]
    pub proc_descript: &'static str,
    #[serde(rename = "ClinicNum")]
    pub clinic_num: u64,
    #[serde(rename = "IsHygiene")]
    pub is_hygiene: OdBool,
    #[serde(rename = "DateTStamp")]
    pub date_t_stamp: &'static str,
    #[serde(rename = "DateTimeArrived")]
    pub date_time_arrived: &'static str,
    #[serde(rename = "DateTimeSeated")]
    pub date_time_seated: &'static str,
    #[serde(rename = "DateTimeDismissed")]
    pub date_time_dismissed: &'static str,
    #[serde(rename = "InsPlan1")]
    pub ins_plan1: u64,
    #[serde(rename = "InsPlan2")]
    pub ins_plan2: u64,
    #[serde(rename = "DateTimeAskedToArrive")]
    pub date_time_asked_to_arrive: &'static str,
    #[serde(rename = "colorOverride")]
    pub color_override: &'static str,
    #[serde(rename = "AppointmentTypeNum")]
    pub appointment_type_num: u64,
    #[serde(rename = "SecUserNumEntry")]
    pub sec_user_num_entry: u64,
    #[serde(rename = "SecDateTEntry")]
    pub sec_date_t_entry: &'static str,
    #[serde(rename = "Priority")]
    pub priority: &'static str,
    #[serde(rename = "PatternSecondary")]
    pub pattern_secondary: &'static str,
    #[serde(rename = "ItemOrderPlanned")]
    pub item_order_planned: u64,
}

/// A provider (`GET /providers`).
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Provider {
    #[serde(rename = "ProvNum")]
    pub prov_num: u64,
    #[serde(rename = "Abbr")]
    pub abbr: &'static str,
    #[serde(rename = "LName")]
    pub l_name: &'static str,
    #[serde(rename = "FName")]
    pub f_name: &'static str,
    #[serde(rename = "MI")]
    pub mi: &'static str,
    #[serde(rename = "Suffix")]
    pub suffix: &'static str,
    #[serde(rename = "FeeSched")]
    pub fee_sched: u64,
    #[serde(rename = "Specialty")]
    pub specialty: u64,
    #[serde(rename = "specialty")]
    pub specialty_text: &'static str,
    #[serde(rename = "SSN")]
    pub ssn: &'static str,
    #[serde(rename = "StateLicense")]
    pub state_license: &'static str,
    #[serde(rename = "DEANum")]
    pub dea_num: &'static str,
    #[serde(rename = "IsSecondary")]
    pub is_secondary: OdBool,
    #[serde(rename = "IsHidden")]
    pub is_hidden: OdBool,
    #[serde(rename = "UsingTIN")]
    pub using_tin: OdBool,
    #[serde(rename = "SigOnFile")]
    pub sig_on_file: OdBool,
    #[serde(rename = "NationalProvID")]
    pub national_prov_id: &'static str,
    #[serde(rename = "IsNotPerson")]
    pub is_not_person: OdBool,
    #[serde(rename = "ProvStatus")]
    pub prov_status: &'static str,
    #[serde(rename = "IsHiddenReport")]
    pub is_hidden_report: OdBool,
    #[serde(rename = "Birthdate")]
    pub birthdate: &'static str,
    #[serde(rename = "SchedNote")]
    pub sched_note: &'static str,
    #[serde(rename = "PreferredName")]
    pub preferred_name: &'static str,
    #[serde(rename = "DateTStamp")]
    pub date_t_stamp: &'static str,
}

/// An operatory, in the field order of the real row in §4.5.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Operatory {
    #[serde(rename = "OperatoryNum")]
    pub operatory_num: u64,
    #[serde(rename = "OpName")]
    pub op_name: &'static str,
    #[serde(rename = "Abbrev")]
    pub abbrev: &'static str,
    #[serde(rename = "ItemOrder")]
    pub item_order: u64,
    #[serde(rename = "IsHidden")]
    pub is_hidden: OdBool,
    #[serde(rename = "ProvDentist")]
    pub prov_dentist: u64,
    #[serde(rename = "ProvHygienist")]
    pub prov_hygienist: u64,
    #[serde(rename = "IsHygiene")]
    pub is_hygiene: OdBool,
    #[serde(rename = "ClinicNum")]
    pub clinic_num: u64,
    #[serde(rename = "SetProspective")]
    pub set_prospective: OdBool,
    #[serde(rename = "IsWebSched")]
    pub is_web_sched: OdBool,
    #[serde(rename = "OperatoryType")]
    pub operatory_type: u64,
    #[serde(rename = "operatoryType")]
    pub operatory_type_text: &'static str,
}

/// A preference: every value is a string, numbers included.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Preference {
    #[serde(rename = "PrefNum")]
    pub pref_num: u64,
    #[serde(rename = "PrefName")]
    pub pref_name: String,
    #[serde(rename = "ValueString")]
    pub value_string: String,
}

/// An object with `serverDateTime` as its first field (appointments).
#[derive(Serialize)]
pub(crate) struct WithServerTime<'a, T: Serialize> {
    #[serde(rename = "serverDateTime")]
    pub server_date_time: &'a str,
    #[serde(flatten)]
    pub inner: &'a T,
}

/// An object with `serverDateTime` as its last field (providers).
#[derive(Serialize)]
pub(crate) struct ServerTimeLast<'a, T: Serialize> {
    #[serde(flatten)]
    pub inner: &'a T,
    #[serde(rename = "serverDateTime")]
    pub server_date_time: &'a str,
}

/// A ShortQuery result row: column names in select order, any JSON values.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct QueryRow(pub Vec<(String, serde_json::Value)>);

impl Serialize for QueryRow {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booleans_are_strings_and_order_is_kept() {
        let op = Operatory {
            operatory_num: 1,
            op_name: "OP-1",
            abbrev: "OP1",
            item_order: 0,
            is_hidden: OdBool(false),
            prov_dentist: 1,
            prov_hygienist: 0,
            is_hygiene: OdBool(true),
            clinic_num: 0,
            set_prospective: OdBool(false),
            is_web_sched: OdBool(false),
            operatory_type: 0,
            operatory_type_text: "",
        };
        let json = serde_json::to_string(&op).unwrap();
        assert!(json.starts_with(r#"{"OperatoryNum":1,"OpName":"OP-1","Abbrev":"OP1""#));
        assert!(json.contains(r#""IsHidden":"false""#));
        assert!(json.contains(r#""IsHygiene":"true""#));
        let wrapped = serde_json::to_string(&WithServerTime {
            server_date_time: "2025-10-26 10:19:31",
            inner: &op,
        })
        .unwrap();
        assert!(wrapped.starts_with(r#"{"serverDateTime":"2025-10-26 10:19:31","OperatoryNum":1"#));
    }

    #[test]
    fn query_rows_keep_column_order() {
        let row = QueryRow(vec![
            ("patnum".into(), serde_json::json!(11)),
            ("estbalance".into(), serde_json::json!(370.0)),
            ("bal_0_30".into(), serde_json::json!(0.0)),
        ]);
        assert_eq!(
            serde_json::to_string(&row).unwrap(),
            r#"{"patnum":11,"estbalance":370.0,"bal_0_30":0.0}"#
        );
    }
}
