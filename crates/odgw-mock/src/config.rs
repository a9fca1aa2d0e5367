//! How a mock behaves: accepted keys, throttling, and the choices Open Dental
//! does not document (marked UNCONFIRMED in `opendental-api.md`).

use std::fmt;
use std::time::Duration;

/// Open Dental's public test developer key (from its `apisetup` page).
pub const TEST_DEVELOPER_KEY: &str = "NFF6i0KrXrxDkZHt";
/// Open Dental's public test customer key (from its `apisetup` page).
pub const TEST_CUSTOMER_KEY: &str = "VzkmZEaUWOjnQX2z";

/// Open Dental's documented PUT/POST limit: "16.8M characters".
pub const MAX_BODY_CHARS: usize = 16_800_000;

/// Everything a [`crate::MockUpstream`] needs to know at construction.
///
/// Keys and throttling can be changed later through the mock handle; the rest
/// is fixed for the life of the mock.
#[derive(Clone, Debug)]
pub struct MockConfig {
    /// Accepted `ODFHIR {developer}/{customer}` pairs.
    pub keys: Vec<KeyPair>,
    /// Per-customer-key throttling.
    pub throttle: ThrottleMode,
    /// Status for a request without an `Authorization` header. Open Dental
    /// documents both 400 ("Missing request headers") and 401 (invalid
    /// credentials); which one applies is UNCONFIRMED. Default 401.
    pub missing_auth_status: u16,
    /// Refuse (400) any request whose `Content-Type` is not `application/json`,
    /// GETs included. Documented as required; enforcement is UNCONFIRMED.
    /// Default false.
    pub require_json_content_type: bool,
    /// Body shape of mock-made errors (UNCONFIRMED upstream).
    pub error_body: ErrorBodyStyle,
    /// Default and maximum page size for `Offset`/`Limit` paging and ShortQuery.
    pub max_page: usize,
    /// Added to every response, errors included.
    pub latency: Duration,
    /// What `GET /preferences?PrefName=<unknown>` answers (UNCONFIRMED).
    pub unknown_pref: UnknownPrefAnswer,
    /// Match query parameter names case-insensitively (`offset` = `Offset`).
    /// UNCONFIRMED upstream; ASP.NET binds them case-insensitively, so the
    /// default is true.
    pub case_insensitive_params: bool,
}

impl MockConfig {
    /// Accepts Open Dental's public test pair; no throttling, no latency, the
    /// documented 100-item page.
    pub fn test_defaults() -> Self {
        MockConfig {
            keys: vec![KeyPair::new(TEST_DEVELOPER_KEY, TEST_CUSTOMER_KEY)],
            throttle: ThrottleMode::Off,
            missing_auth_status: 401,
            require_json_content_type: false,
            error_body: ErrorBodyStyle::JsonString,
            max_page: 100,
            latency: Duration::ZERO,
            unknown_pref: UnknownPrefAnswer::EmptyArray,
            case_insensitive_params: true,
        }
    }

    /// [`MockConfig::test_defaults`] plus Open Dental's paid-tier throttle
    /// (one request per second per customer key, answered with 429 and
    /// `Retry-After: 1`): what `odgw mock-upstream` runs by default.
    pub fn cli_defaults() -> Self {
        MockConfig {
            throttle: ThrottleMode::Reject {
                interval: Duration::from_secs(1),
                retry_after_secs: 1,
            },
            ..Self::test_defaults()
        }
    }
}

impl Default for MockConfig {
    fn default() -> Self {
        Self::test_defaults()
    }
}

/// One developer/customer key pair.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyPair {
    /// Per developer, from the Developer Portal.
    pub developer_key: String,
    /// Per office and developer; Open Dental throttles on this one.
    pub customer_key: String,
}

impl KeyPair {
    /// A pair from its two halves.
    pub fn new(developer_key: impl Into<String>, customer_key: impl Into<String>) -> Self {
        KeyPair {
            developer_key: developer_key.into(),
            customer_key: customer_key.into(),
        }
    }

    /// The `Authorization` header value Open Dental expects for this pair.
    pub fn authorization(&self) -> String {
        format!("ODFHIR {}/{}", self.developer_key, self.customer_key)
    }
}

impl fmt::Debug for KeyPair {
    // Even fake keys stay out of logs: tests often use real-looking ones.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyPair").finish_non_exhaustive()
    }
}

/// How the mock reacts to a customer key calling faster than allowed.
///
/// Open Dental throttles per customer key, "one request per five seconds"
/// (Read All), one per second (paid), 500 ms (Enterprise), none locally.
/// What happens on excess is undocumented, hence both behaviours.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ThrottleMode {
    /// No throttling (Local and API Service modes).
    Off,
    /// A call within `interval` of the key's previous accepted call gets 429
    /// with `Retry-After: {retry_after_secs}`; it does not move the window.
    Reject {
        /// Minimum spacing between accepted calls of one customer key.
        interval: Duration,
        /// Value of the `Retry-After` header, in seconds.
        retry_after_secs: u64,
    },
    /// Calls are held until their slot, `interval` after the previous one.
    Delay {
        /// Minimum spacing between calls of one customer key.
        interval: Duration,
    },
}

/// Body shape of the errors the mock makes itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorBodyStyle {
    /// A JSON string, `"Patient not found."`, as `application/json`.
    JsonString,
    /// The bare message as `text/plain`.
    PlainText,
}

/// Answer to `GET /preferences?PrefName=` naming no preference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnknownPrefAnswer {
    /// 200 with `[]`.
    EmptyArray,
    /// 404 "Preference not found."
    NotFound,
}
