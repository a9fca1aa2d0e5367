//! Route templates for metrics: a bounded label for "which part of the Open
//! Dental API" a request was for, without ids (cardinality) or arbitrary
//! client-chosen text (a label set an attacker could grow without bound).

use std::sync::OnceLock;

use odgw_core::ApiPath;

/// Open Dental's resources (opendental-api.md §4.2), lowercase.
const RESOURCES: &[&str] = &[
    "accountmodules",
    "adjustments",
    "allergies",
    "allergydefs",
    "apikeys",
    "appointments",
    "appointmenttypes",
    "apptfielddefs",
    "apptfields",
    "asapcomms",
    "autonotecontrols",
    "autonotes",
    "benefits",
    "carriers",
    "chartmodules",
    "claimpayments",
    "claimprocs",
    "claims",
    "claimtrackings",
    "clinics",
    "clockevents",
    "codegroups",
    "commlogs",
    "computers",
    "covcats",
    "covspans",
    "definitions",
    "discountplans",
    "discountplansubs",
    "diseasedefs",
    "diseases",
    "documents",
    "ehrpatients",
    "employees",
    "employers",
    "eobattaches",
    "etrans",
    "etransmessagetexts",
    "etranss",
    "familymodules",
    "fees",
    "feescheds",
    "histappointments",
    "insplans",
    "inssubs",
    "insverifies",
    "labcases",
    "laboratories",
    "labturnarounds",
    "medicationpats",
    "medications",
    "operatories",
    "patfielddefs",
    "patfields",
    "patientnotes",
    "patientraces",
    "patients",
    "patplans",
    "payments",
    "payplancharges",
    "payplanlinks",
    "payplans",
    "paysplits",
    "perioexams",
    "periomeasures",
    "pharmacies",
    "popups",
    "preferences",
    "procedurecodes",
    "procedurelogs",
    "procnotes",
    "proctps",
    "providers",
    "queries",
    "quickpastecats",
    "quickpastenotes",
    "recalls",
    "recalltypes",
    "refattaches",
    "referrals",
    "reports",
    "rxpats",
    "scheduleops",
    "schedules",
    "securitylogs",
    "securityperms",
    "sheetdefs",
    "sheetfields",
    "sheets",
    "signalods",
    "statements",
    "subscriptions",
    "substitutionlinks",
    "tasklists",
    "tasknotes",
    "tasks",
    "toothinitials",
    "treatplanattaches",
    "treatplans",
    "usergroupattaches",
    "usergroups",
    "userods",
];

/// `/api/v1/patients/11` → `/api/v1/patients/{id}`; `/api/v1/patients/Simple`
/// → `/api/v1/patients/…`; unknown resources and paths outside the API fold
/// into `other`. The templates are built once, so labelling a request's
/// metrics allocates nothing.
pub fn route_template(path: &str) -> &'static str {
    const OTHER: &str = "other";
    let Some(rest) = ApiPath::rest_of(path) else {
        return OTHER;
    };
    let mut segments = rest.split('/');
    let resource = segments.next().unwrap_or("");
    let Some(index) = RESOURCES
        .iter()
        .position(|known| known.eq_ignore_ascii_case(resource))
    else {
        return OTHER;
    };
    let templates = &resource_templates()[index];
    match (segments.next(), segments.next()) {
        (None | Some(""), _) => &templates.collection,
        (Some(id), None) if !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) => {
            &templates.item
        }
        _ => &templates.action,
    }
}

/// The three route templates of one resource.
struct ResourceTemplates {
    collection: String,
    item: String,
    action: String,
}

/// One entry per [`RESOURCES`] entry, in the same order.
fn resource_templates() -> &'static [ResourceTemplates] {
    static TEMPLATES: OnceLock<Vec<ResourceTemplates>> = OnceLock::new();
    TEMPLATES.get_or_init(|| {
        RESOURCES
            .iter()
            .map(|resource| ResourceTemplates {
                collection: format!("/api/v1/{resource}"),
                item: format!("/api/v1/{resource}/{{id}}"),
                action: format!("/api/v1/{resource}/…"),
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_are_bounded() {
        assert_eq!(
            route_template("/api/v1/patients/11"),
            "/api/v1/patients/{id}"
        );
        assert_eq!(route_template("/api/v1/patients"), "/api/v1/patients");
        assert_eq!(route_template("/api/v1/Patients/"), "/api/v1/patients");
        assert_eq!(
            route_template("/api/v1/patients/Simple"),
            "/api/v1/patients/…"
        );
        assert_eq!(
            route_template("/api/v1/appointments/53/Break"),
            "/api/v1/appointments/…"
        );
        assert_eq!(
            route_template("/api/v1/queries/ShortQuery"),
            "/api/v1/queries/…"
        );
        assert_eq!(route_template("/api/v1/x9f8e7"), "other");
        assert_eq!(route_template("/admin/v1/tenants"), "other");
        assert_eq!(route_template("/"), "other");
    }
}
