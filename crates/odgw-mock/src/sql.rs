//! `PUT /queries/ShortQuery`: the read-only screen and the canned tables.

use serde_json::{json, Value};

use crate::model::QueryRow;
use crate::seed::Database;

/// Rows in the table answered for any table the mock does not model.
pub(crate) const GENERIC_ROWS: u64 = 250;

/// Words that make a command "not read-only" wherever they appear (string
/// literals included: the screen is deliberately conservative).
const FORBIDDEN: &[&str] = &[
    "INSERT", "UPDATE", "DELETE", "DROP", "ALTER", "TRUNCATE", "GRANT", "REVOKE", "RENAME",
];

/// Open Dental's screen: "Query is not read-only or is not executing on
/// temporary tables". The command must start with `SELECT`, and contain no
/// write keyword as a word; `CREATE` is allowed only as `CREATE TEMPORARY`,
/// `REPLACE` only as the string function `REPLACE(`, and `INTO OUTFILE` /
/// `INTO DUMPFILE` are refused.
pub(crate) fn is_read_only(sql: &str) -> bool {
    let words = words(sql);
    if !words
        .first()
        .is_some_and(|w| w.text.eq_ignore_ascii_case("SELECT"))
    {
        return false;
    }
    words.iter().enumerate().all(|(i, w)| {
        let upper = w.text.to_ascii_uppercase();
        let next = words.get(i + 1).map(|n| n.text.to_ascii_uppercase());
        match upper.as_str() {
            "CREATE" => next.as_deref() == Some("TEMPORARY"),
            "REPLACE" => w.followed_by_paren,
            "INTO" => !matches!(next.as_deref(), Some("OUTFILE" | "DUMPFILE")),
            other => !FORBIDDEN.contains(&other),
        }
    })
}

struct Word<'a> {
    text: &'a str,
    followed_by_paren: bool,
}

/// Identifier-like words (`[A-Za-z0-9_]+`) in order.
fn words(sql: &str) -> Vec<Word<'_>> {
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in sql.char_indices().chain(std::iter::once((sql.len(), ' '))) {
        match (start, is_word(c)) {
            (None, true) => start = Some(i),
            (Some(s), false) => {
                let followed_by_paren = sql[i..].trim_start().starts_with('(');
                out.push(Word {
                    text: &sql[s..i],
                    followed_by_paren,
                });
                start = None;
            }
            _ => {}
        }
    }
    out
}

/// The canned result of a read-only query, before paging.
///
/// - `FROM patient`: the aging columns of OD's recipe (§4.6) for every patient;
/// - `FROM preference`: the preference table;
/// - `FROM payperiod`: the documented example, DATETIMEs with a `T`;
/// - no `FROM`: one row, the select expression as the column name (`SELECT 1`
///   gives `[{"1": 1}]`);
/// - any other table: [`GENERIC_ROWS`] rows `{"RowNum": n}`.
pub(crate) fn run(sql: &str, db: &Database) -> Vec<QueryRow> {
    let words = words(sql);
    let table = words
        .iter()
        .position(|w| w.text.eq_ignore_ascii_case("FROM"))
        .and_then(|i| words.get(i + 1))
        .map(|w| w.text.to_ascii_lowercase());
    match table.as_deref() {
        Some("patient") => db
            .patients
            .values()
            .map(|p| {
                let a = p.aging;
                QueryRow(vec![
                    ("patnum".into(), json!(p.pat_num)),
                    ("estbalance".into(), json!(p.est_balance)),
                    ("bal_0_30".into(), json!(a.bal_0_30)),
                    ("bal_31_60".into(), json!(a.bal_31_60)),
                    ("bal_61_90".into(), json!(a.bal_61_90)),
                    ("balover90".into(), json!(a.bal_over_90)),
                    ("insest".into(), json!(a.ins_est)),
                    ("baltotal".into(), json!(a.total())),
                ])
            })
            .collect(),
        Some("preference") => db
            .preferences
            .iter()
            .map(|p| {
                QueryRow(vec![
                    ("PrefNum".into(), json!(p.pref_num)),
                    ("PrefName".into(), json!(p.pref_name)),
                    ("ValueString".into(), json!(p.value_string)),
                ])
            })
            .collect(),
        Some("payperiod") => [
            (200, "2021-05-01", "2021-05-31", "2021-06-04"),
            (201, "2021-06-01", "2021-06-30", "2021-07-05"),
        ]
        .iter()
        .map(|(num, start, stop, paycheck)| {
            QueryRow(vec![
                ("PayPeriodNum".into(), json!(num)),
                ("DateStart".into(), json!(format!("{start}T00:00:00"))),
                ("DateStop".into(), json!(format!("{stop}T00:00:00"))),
                ("DatePaycheck".into(), json!(format!("{paycheck}T00:00:00"))),
            ])
        })
        .collect(),
        Some(_) => (1..=GENERIC_ROWS)
            .map(|n| QueryRow(vec![("RowNum".into(), json!(n))]))
            .collect(),
        None => {
            let expr = sql
                .trim()
                .get("SELECT".len()..)
                .unwrap_or_default()
                .split(';')
                .next()
                .unwrap_or_default()
                .trim();
            let value = expr
                .parse::<i64>()
                .map(Value::from)
                .unwrap_or_else(|_| Value::from(expr.trim_matches('\'')));
            vec![QueryRow(vec![(expr.to_owned(), value)])]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selects_pass() {
        for sql in [
            "SELECT * FROM patient",
            "  select patnum, estbalance FROM patient WHERE patnum=guarantor",
            "SELECT REPLACE(LName,'a','b') FROM patient",
            "SELECT 1; CREATE TEMPORARY TABLE t (x INT)",
            "SELECT DateTStamp, updated_at FROM patient",
            "SELECT * FROM procedurelog INTO_X",
        ] {
            assert!(is_read_only(sql), "{sql}");
        }
    }

    #[test]
    fn writes_fail() {
        for sql in [
            "UPDATE patient SET LName='x'",
            "DELETE FROM patient",
            "DROP TABLE patient",
            "select * from patient; delete from patient",
            "SELECT 1; DROP TABLE patient",
            "SELECT 1; CREATE TABLE t (x INT)",
            "SELECT 1; REPLACE INTO patient VALUES (1)",
            "SELECT * FROM patient INTO OUTFILE '/tmp/x'",
            "WITH x AS (SELECT 1) SELECT * FROM x",
            "INSERT INTO patient (LName) SELECT 'x'",
            "SELECT 1; TRUNCATE patient",
            "SELECT 1; GRANT ALL ON *.* TO x",
            "SELECT 1; ALTER TABLE patient ADD y INT",
            "",
            "   ",
            "SELECTX * FROM patient",
        ] {
            assert!(!is_read_only(sql), "{sql}");
        }
    }

    #[test]
    fn canned_tables() {
        let db = Database::seed();
        let rows = run("SELECT patnum FROM patient", &db);
        assert_eq!(rows.len(), db.patients.len());
        assert_eq!(rows[0].0[0], ("patnum".to_owned(), json!(11)));
        assert_eq!(rows[0].0[7], ("baltotal".to_owned(), json!(370.0)));
        assert_eq!(
            run("SELECT * FROM Preference", &db).len(),
            db.preferences.len()
        );
        assert_eq!(
            run("SELECT * FROM carrier", &db).len(),
            GENERIC_ROWS as usize
        );
        let one = run("SELECT 1", &db);
        assert_eq!(one, vec![QueryRow(vec![("1".to_owned(), json!(1))])]);
        let pay = run("SELECT * FROM payperiod", &db);
        assert_eq!(pay[0].0[1].1, json!("2021-05-01T00:00:00"));
    }
}
