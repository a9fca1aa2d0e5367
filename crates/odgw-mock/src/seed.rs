//! The mock's starting database: what Open Dental's public test database was
//! seen to hold (patients 11, 13, 22, appointment 53, providers DOC1..HYG2,
//! operatories OP-1..Hyg2) plus a few invented rows so filters and paging
//! have something to work on.

use std::collections::BTreeMap;

use crate::model::{
    Aging, Appointment, OdBool, Operatory, Patient, Preference, Provider, EMPTY_DATE,
    EMPTY_DATETIME,
};

/// Number of rows in the `preference` table, so `Offset` paging spans pages.
pub(crate) const PREFERENCE_COUNT: u64 = 270;
/// Invented patients (PatNum 101..) added to the named ones, so patient lists
/// span more than one 100-item page.
pub(crate) const FILLER_PATIENTS: u64 = 130;
/// First PatNum of the invented patients.
pub(crate) const FILLER_FIRST_PAT_NUM: u64 = 101;

/// The mutable and reference data of one mock instance.
#[derive(Clone, Debug)]
pub(crate) struct Database {
    pub patients: BTreeMap<u64, Patient>,
    pub appointments: Vec<Appointment>,
    pub providers: Vec<Provider>,
    pub operatories: Vec<Operatory>,
    pub preferences: Vec<Preference>,
}

impl Database {
    pub fn seed() -> Self {
        Database {
            patients: patients()
                .into_iter()
                .chain(filler_patients())
                .map(|p| (p.pat_num, p))
                .collect(),
            appointments: appointments(),
            providers: providers(),
            operatories: operatories(),
            preferences: preferences(),
        }
    }

    /// A provider's abbreviation, `""` for 0 or an unknown ProvNum.
    pub fn prov_abbr(&self, prov_num: u64) -> &str {
        self.providers
            .iter()
            .find(|p| p.prov_num == prov_num)
            .map_or("", |p| p.abbr)
    }

    pub fn next_pat_num(&self) -> u64 {
        self.patients.keys().next_back().map_or(1, |n| n + 1)
    }
}

/// A patient with the test database's defaults; callers set what differs.
pub(crate) fn blank_patient(pat_num: u64, l_name: &str, f_name: &str) -> Patient {
    Patient {
        pat_num,
        l_name: l_name.to_owned(),
        f_name: f_name.to_owned(),
        middle_i: String::new(),
        preferred: String::new(),
        pat_status: "Patient".to_owned(),
        gender: "Unknown".to_owned(),
        position: "Single".to_owned(),
        birthdate: EMPTY_DATE.to_owned(),
        ssn: String::new(),
        address: String::new(),
        address2: String::new(),
        city: String::new(),
        state: String::new(),
        zip: String::new(),
        hm_phone: String::new(),
        wk_phone: String::new(),
        wireless_phone: String::new(),
        guarantor: pat_num,
        email: String::new(),
        est_balance: 0.0,
        pri_prov: 1,
        sec_prov: 0,
        billing_type: "Standard Account".to_owned(),
        chart_number: String::new(),
        clinic_num: 0,
        txt_msg_ok: "Unknown".to_owned(),
        date_first_visit: EMPTY_DATE.to_owned(),
        date_t_stamp: EMPTY_DATETIME.to_owned(),
        sec_date_entry: EMPTY_DATE.to_owned(),
        aging: Aging::default(),
    }
}

fn patients() -> Vec<Patient> {
    vec![
        // The real row from the test database (§4.5), aging from §4.6.
        Patient {
            gender: "Male".to_owned(),
            birthdate: "1980-06-05".to_owned(),
            address: "266 Jamaica Street".to_owned(),
            city: "Forbes".to_owned(),
            state: "CT".to_owned(),
            zip: "21598".to_owned(),
            hm_phone: "(253)687-9654".to_owned(),
            est_balance: 370.0,
            date_first_visit: "2020-02-11".to_owned(),
            date_t_stamp: "2025-09-10 08:00:00".to_owned(),
            sec_date_entry: "2020-02-11".to_owned(),
            aging: Aging {
                bal_over_90: 370.0,
                ins_est: 265.0,
                ..Aging::default()
            },
            ..blank_patient(11, "Allowed", "Allen")
        },
        Patient {
            gender: "Female".to_owned(),
            position: "Married".to_owned(),
            birthdate: "1976-03-22".to_owned(),
            address: "52 Harbor Road".to_owned(),
            city: "Forbes".to_owned(),
            state: "CT".to_owned(),
            zip: "21598".to_owned(),
            wireless_phone: "(253)555-0113".to_owned(),
            est_balance: 45.5,
            pri_prov: 3,
            sec_prov: 2,
            txt_msg_ok: "Yes".to_owned(),
            date_first_visit: "2021-05-03".to_owned(),
            date_t_stamp: "2025-09-15 12:30:00".to_owned(),
            sec_date_entry: "2021-05-03".to_owned(),
            aging: Aging {
                bal_0_30: 45.5,
                ..Aging::default()
            },
            ..blank_patient(13, "Copay", "Candi")
        },
        Patient {
            gender: "Female".to_owned(),
            birthdate: "2012-08-30".to_owned(),
            guarantor: 13,
            position: "Child".to_owned(),
            pri_prov: 3,
            date_t_stamp: "2025-09-15 12:31:10".to_owned(),
            sec_date_entry: "2021-05-03".to_owned(),
            ..blank_patient(14, "Copay", "Cody")
        },
        Patient {
            gender: "Female".to_owned(),
            preferred: "Katie".to_owned(),
            birthdate: "1950-07-14".to_owned(),
            address: "1200 SW Park Ave".to_owned(),
            city: "Portland".to_owned(),
            state: "OR".to_owned(),
            zip: "97201".to_owned(),
            wireless_phone: "(503)555-0115".to_owned(),
            email: "katie.hoover@example.com".to_owned(),
            est_balance: 120.0,
            pri_prov: 1,
            sec_prov: 4,
            date_first_visit: "2019-11-20".to_owned(),
            date_t_stamp: "2025-10-01 16:45:00".to_owned(),
            sec_date_entry: "2019-11-20".to_owned(),
            aging: Aging {
                bal_31_60: 80.0,
                bal_61_90: 40.0,
                ins_est: 30.0,
                ..Aging::default()
            },
            ..blank_patient(15, "Hoover", "Kaitlyn")
        },
        Patient {
            pat_status: "Inactive".to_owned(),
            gender: "Male".to_owned(),
            birthdate: "1968-12-01".to_owned(),
            city: "Salem".to_owned(),
            state: "OR".to_owned(),
            date_t_stamp: "2025-06-02 09:00:00".to_owned(),
            sec_date_entry: "2018-01-09".to_owned(),
            ..blank_patient(16, "Inactive", "Ivan")
        },
        Patient {
            pat_status: "NonPatient".to_owned(),
            gender: "Other".to_owned(),
            birthdate: "1990-01-17".to_owned(),
            date_t_stamp: "2025-10-20 11:11:11".to_owned(),
            sec_date_entry: "2025-10-20".to_owned(),
            ..blank_patient(17, "Smith", "Jordan")
        },
        // Created on the shared test database by a third party (§2).
        Patient {
            gender: "Male".to_owned(),
            birthdate: "1995-04-12".to_owned(),
            wireless_phone: "(415)555-0122".to_owned(),
            txt_msg_ok: "Yes".to_owned(),
            date_t_stamp: "2025-10-26 09:18:02".to_owned(),
            sec_date_entry: "2025-10-26".to_owned(),
            ..blank_patient(22, "Lateef", "Sam")
        },
    ]
}

fn filler_patients() -> Vec<Patient> {
    const SURNAMES: &[&str] = &[
        "Adams", "Brooks", "Carter", "Dawson", "Ellis", "Foster", "Garcia", "Hughes", "Iverson",
        "Jensen",
    ];
    (0..FILLER_PATIENTS)
        .map(|i| {
            let pat_num = FILLER_FIRST_PAT_NUM + i;
            let surname = SURNAMES[(i as usize) % SURNAMES.len()];
            Patient {
                gender: if i % 2 == 0 { "Female" } else { "Male" }.to_owned(),
                birthdate: format!("{}-{:02}-{:02}", 1940 + i % 70, 1 + i % 12, 1 + i % 28),
                city: "Portland".to_owned(),
                state: "OR".to_owned(),
                pri_prov: 1 + i % 4 / 2 * 2,
                // One change a day from 2025-01-01, so DateTStamp filters
                // split this list.
                date_t_stamp: filler_stamp(i),
                sec_date_entry: "2024-12-31".to_owned(),
                ..blank_patient(pat_num, surname, &format!("Pat{pat_num}"))
            }
        })
        .collect()
}

fn filler_stamp(i: u64) -> String {
    let day = time::macros::date!(2025 - 01 - 01) + time::Duration::days(i as i64);
    format!("{} 07:30:00", day)
}

/// Appointment 53 as returned by the test database; the others share its
/// shape with other values.
fn appointment_53() -> Appointment {
    Appointment {
        apt_num: 53,
        pat_num: 22,
        apt_status: "Scheduled",
        pattern: "/XX/",
        confirmed: 19,
        confirmed_text: "Unconfirmed",
        time_locked: OdBool(false),
        op: 1,
        note: "Requested appointment around 3 PM.",
        prov_num: 1,
        prov_abbr: "DOC1",
        prov_hyg: 0,
        apt_date_time: "2025-11-01 15:00:00",
        next_apt_num: 0,
        unsched_status: 0,
        unsched_status_text: "",
        is_new_patient: OdBool(false),
        proc_descript: "",
        clinic_num: 0,
        is_hygiene: OdBool(false),
        date_t_stamp: "2025-10-26 09:19:25",
        date_time_arrived: "2025-11-01 00:00:00",
        date_time_seated: "2025-11-01 00:00:00",
        date_time_dismissed: "2025-11-01 00:00:00",
        ins_plan1: 0,
        ins_plan2: 0,
        date_time_asked_to_arrive: EMPTY_DATETIME,
        color_override: "0,0,0",
        appointment_type_num: 0,
        sec_user_num_entry: 0,
        sec_date_t_entry: "2025-10-26 09:19:25",
        priority: "Normal",
        pattern_secondary: "////",
        item_order_planned: 0,
    }
}

fn appointments() -> Vec<Appointment> {
    let base = appointment_53();
    vec![
        Appointment {
            apt_num: 40,
            pat_num: 11,
            apt_status: "Complete",
            pattern: "/XXXX/",
            confirmed: 21,
            confirmed_text: "Confirmed",
            op: 1,
            note: "",
            apt_date_time: "2025-09-10 09:00:00",
            proc_descript: "PerEx, Pano",
            date_t_stamp: "2025-09-10 10:05:00",
            date_time_arrived: "2025-09-10 08:55:00",
            date_time_seated: "2025-09-10 09:02:00",
            date_time_dismissed: "2025-09-10 09:48:00",
            sec_date_t_entry: "2025-08-28 13:00:00",
            pattern_secondary: "//////",
            ..base.clone()
        },
        Appointment {
            apt_num: 41,
            pat_num: 11,
            pattern: "/XXX/",
            op: 5,
            note: "Six-month recall.",
            prov_hyg: 2,
            apt_date_time: "2025-11-03 10:00:00",
            proc_descript: "Pro, 4BW",
            is_hygiene: OdBool(true),
            date_t_stamp: "2025-09-10 10:06:00",
            date_time_arrived: "2025-11-03 00:00:00",
            date_time_seated: "2025-11-03 00:00:00",
            date_time_dismissed: "2025-11-03 00:00:00",
            sec_date_t_entry: "2025-09-10 10:06:00",
            pattern_secondary: "/////",
            ..base.clone()
        },
        Appointment {
            apt_num: 45,
            pat_num: 13,
            apt_status: "Broken",
            op: 2,
            note: "Called to cancel.",
            prov_num: 3,
            prov_abbr: "DOC2",
            apt_date_time: "2025-10-01 14:00:00",
            proc_descript: "Fill",
            date_t_stamp: "2025-10-01 08:12:00",
            date_time_arrived: "2025-10-01 00:00:00",
            date_time_seated: "2025-10-01 00:00:00",
            date_time_dismissed: "2025-10-01 00:00:00",
            sec_date_t_entry: "2025-09-15 12:32:00",
            ..base.clone()
        },
        Appointment {
            apt_num: 48,
            pat_num: 13,
            op: 2,
            note: "",
            prov_num: 3,
            prov_abbr: "DOC2",
            apt_date_time: "2025-11-01 08:00:00",
            proc_descript: "Fill",
            date_t_stamp: "2025-10-01 08:15:00",
            sec_date_t_entry: "2025-10-01 08:15:00",
            ..base.clone()
        },
        Appointment {
            apt_num: 50,
            pat_num: 15,
            apt_status: "UnschedList",
            op: 0,
            note: "Wants a call when Dr. Albert has an opening.",
            apt_date_time: EMPTY_DATETIME,
            unsched_status: 0,
            proc_descript: "Crn",
            date_t_stamp: "2025-10-02 09:30:00",
            date_time_arrived: EMPTY_DATETIME,
            date_time_seated: EMPTY_DATETIME,
            date_time_dismissed: EMPTY_DATETIME,
            sec_date_t_entry: "2025-10-02 09:30:00",
            ..base.clone()
        },
        Appointment {
            apt_num: 51,
            pat_num: 15,
            apt_status: "Planned",
            op: 0,
            note: "",
            apt_date_time: EMPTY_DATETIME,
            proc_descript: "RCT",
            date_t_stamp: "2025-10-02 09:31:00",
            date_time_arrived: EMPTY_DATETIME,
            date_time_seated: EMPTY_DATETIME,
            date_time_dismissed: EMPTY_DATETIME,
            sec_date_t_entry: "2025-10-02 09:31:00",
            item_order_planned: 1,
            ..base.clone()
        },
        base,
    ]
}

fn provider(prov_num: u64, abbr: &'static str, l: &'static str, f: &'static str) -> Provider {
    let hygienist = abbr.starts_with("HYG");
    Provider {
        prov_num,
        abbr,
        l_name: l,
        f_name: f,
        mi: "",
        suffix: if hygienist { "RDH" } else { "DDS" },
        fee_sched: 53,
        specialty: if hygienist { 258 } else { 255 },
        specialty_text: if hygienist { "Hygienist" } else { "General" },
        ssn: "",
        state_license: "",
        dea_num: "",
        is_secondary: OdBool(hygienist),
        is_hidden: OdBool(false),
        using_tin: OdBool(false),
        sig_on_file: OdBool(true),
        national_prov_id: "",
        is_not_person: OdBool(false),
        prov_status: "Active",
        is_hidden_report: OdBool(false),
        birthdate: EMPTY_DATE,
        sched_note: "",
        preferred_name: "",
        date_t_stamp: "2024-01-15 08:00:00",
    }
}

fn providers() -> Vec<Provider> {
    vec![
        provider(1, "DOC1", "Albert", "Brian"),
        provider(2, "HYG1", "Baker", "Heather"),
        provider(3, "DOC2", "Chen", "David"),
        Provider {
            date_t_stamp: "2025-07-01 12:00:00",
            ..provider(4, "HYG2", "Diaz", "Helen")
        },
    ]
}

fn operatory(num: u64, name: &'static str, dentist: u64, hygienist: u64) -> Operatory {
    Operatory {
        operatory_num: num,
        op_name: name,
        abbrev: name,
        item_order: num - 1,
        is_hidden: OdBool(false),
        prov_dentist: dentist,
        prov_hygienist: hygienist,
        is_hygiene: OdBool(hygienist != 0),
        clinic_num: 0,
        set_prospective: OdBool(false),
        is_web_sched: OdBool(false),
        operatory_type: 0,
        operatory_type_text: "",
    }
}

fn operatories() -> Vec<Operatory> {
    vec![
        operatory(1, "OP-1", 1, 0),
        operatory(2, "OP-2", 3, 0),
        operatory(3, "OP-3", 1, 0),
        operatory(4, "OP-4", 3, 0),
        operatory(5, "Hyg1", 0, 2),
        operatory(6, "Hyg2", 0, 4),
    ]
}

/// Named preferences clients read; PrefNums 14–16 are the documented ones.
const NAMED_PREFS: &[(u64, &str, &str)] = &[
    (1, "AccountingDepositAccounts", ""),
    (5, "AgingCalculatedMonthlyInsteadOfDaily", "0"),
    (6, "AgingIsEnterprise", "0"),
    (7, "AgingServiceTimeDue", "0001-01-01 03:00:00"),
    (9, "BillingAgeOfAccount", ""),
    (11, "DateLastAging", "2025-10-25"),
    (12, "DefaultProv", "1"),
    (14, "PracticeDefaultBillType", "40"),
    (15, "RecallDaysPast", "365"),
    (16, "RecallDaysFuture", "7"),
    (20, "LanguagesUsedByPatients", "eng,spa"),
    (30, "PracticeTitle", "Mock Dental Practice"),
    (31, "PracticeAddress", "1200 SW Park Ave"),
    (32, "PracticeAddress2", "Suite 100"),
    (33, "PracticeCity", "Portland"),
    (34, "PracticeST", "OR"),
    (35, "PracticeZip", "97201"),
    (36, "PracticePhone", "5035550100"),
    (37, "PracticeFax", ""),
    (38, "PracticeBillingType", "0"),
    (40, "ProgramVersion", "24.3.36.0"),
    (41, "DataBaseVersion", "24.3.36.0"),
    (50, "TimeCardOvertimeFirstDayOfWeek", "0"),
    (60, "EasyNoClinics", "1"),
    (61, "EasyHideDentalSchools", "1"),
    (70, "WebSchedRecallAllowProvSelection", "0"),
    (80, "ApptBubbleDelay", "1"),
    (90, "ConfirmStatusEmailed", "20"),
    (100, "RecallStatusMailed", "1"),
];

fn preferences() -> Vec<Preference> {
    (1..=PREFERENCE_COUNT)
        .map(|num| match NAMED_PREFS.iter().find(|(n, _, _)| *n == num) {
            Some((_, name, value)) => Preference {
                pref_num: num,
                pref_name: (*name).to_owned(),
                value_string: (*value).to_owned(),
            },
            // Invented names, so nobody mistakes them for real preferences.
            None => Preference {
                pref_num: num,
                pref_name: format!("MockFillerPref{num:03}"),
                value_string: (num % 2).to_string(),
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_has_the_documented_rows() {
        let db = Database::seed();
        assert_eq!(db.patients[&11].l_name, "Allowed");
        assert_eq!(db.patients[&13].f_name, "Candi");
        assert_eq!(db.patients[&22].l_name, "Lateef");
        assert!(db.appointments.iter().any(|a| a.apt_num == 53));
        let abbrs: Vec<_> = db.providers.iter().map(|p| (p.prov_num, p.abbr)).collect();
        assert_eq!(abbrs, [(1, "DOC1"), (2, "HYG1"), (3, "DOC2"), (4, "HYG2")]);
        assert_eq!(db.preferences.len(), PREFERENCE_COUNT as usize);
        let mut names: Vec<_> = db.preferences.iter().map(|p| &p.pref_name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), PREFERENCE_COUNT as usize, "names are unique");
        assert_eq!(db.patients.len(), 7 + FILLER_PATIENTS as usize);
        assert_eq!(db.next_pat_num(), FILLER_FIRST_PAT_NUM + FILLER_PATIENTS);
        let last = &db.patients[&(FILLER_FIRST_PAT_NUM + FILLER_PATIENTS - 1)];
        assert_eq!(last.date_t_stamp, "2025-05-10 07:30:00");
        assert!(db
            .patients
            .values()
            .all(|p| !db.prov_abbr(p.pri_prov).is_empty()));
    }

    #[test]
    fn appointment_53_serializes_like_the_test_database() {
        let apt = appointment_53();
        let json = serde_json::to_value(&apt).unwrap();
        let expected: serde_json::Value = serde_json::from_str(
            r#"{"AptNum": 53, "PatNum": 22, "AptStatus": "Scheduled", "Pattern": "/XX/",
   "Confirmed": 19, "confirmed": "Unconfirmed", "TimeLocked": "false", "Op": 1, "Note": "Requested appointment around 3 PM.",
   "ProvNum": 1, "provAbbr": "DOC1", "ProvHyg": 0, "AptDateTime": "2025-11-01 15:00:00", "NextAptNum": 0,
   "UnschedStatus": 0, "unschedStatus": "", "IsNewPatient": "false", "ProcDescript": "", "ClinicNum": 0,
   "IsHygiene": "false", "DateTStamp": "2025-10-26 09:19:25", "DateTimeArrived": "2025-11-01 00:00:00",
   "DateTimeSeated": "2025-11-01 00:00:00", "DateTimeDismissed": "2025-11-01 00:00:00", "InsPlan1": 0, "InsPlan2": 0,
   "DateTimeAskedToArrive": "0001-01-01 00:00:00", "colorOverride": "0,0,0", "AppointmentTypeNum": 0,
   "SecUserNumEntry": 0, "SecDateTEntry": "2025-10-26 09:19:25", "Priority": "Normal", "PatternSecondary": "////",
   "ItemOrderPlanned": 0}"#,
        )
        .unwrap();
        assert_eq!(json, expected);
    }

    #[test]
    fn patient_11_row_matches_the_test_database() {
        let db = Database::seed();
        let p = &db.patients[&11];
        let row = serde_json::to_string(&p.row(&|n| db.prov_abbr(n))).unwrap();
        let expected = r#"{"PatNum":11,"LName":"Allowed","FName":"Allen","MiddleI":"","Preferred":"","PatStatus":"Patient","Birthdate":"1980-06-05","SSN":"","Address":"266 Jamaica Street","Address2":"","City":"Forbes","State":"CT","Zip":"21598","HmPhone":"(253)687-9654","WkPhone":"","WirelessPhone":"","Email":"","priProvAbbr":"DOC1","secProvAbbr":"","BillingType":"Standard Account","ChartNumber":"","ClinicNum":0,"clinicAbbr":"","siteDesc":"","TxtMsgOk":"Unknown"}"#;
        assert_eq!(row, expected);
    }
}
