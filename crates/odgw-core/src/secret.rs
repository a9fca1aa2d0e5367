use std::fmt;
use zeroize::Zeroizing;

/// Text that must never be printed, logged or serialized: keys, tokens.
///
/// The buffer is zeroed when dropped; `Debug` and `Display` print `[redacted]`.
/// Reading it takes an explicit [`SecretString::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(Zeroizing<String>);

impl SecretString {
    pub fn new(value: impl Into<String>) -> Self {
        Self(Zeroizing::new(value.into()))
    }

    /// The secret text. Call sites are the places to audit for leaks.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The last four characters, for recognising a key without revealing it.
    /// Keys shorter than eight characters reveal nothing.
    pub fn hint(&self) -> String {
        let chars: Vec<char> = self.0.chars().collect();
        if chars.len() < 8 {
            return "****".to_owned();
        }
        chars[chars.len() - 4..].iter().collect()
    }
}

impl From<String> for SecretString {
    fn from(value: String) -> Self {
        Self::new(value)
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_its_value() {
        let s = SecretString::new("VzkmZEaUWOjnQX2z");
        assert_eq!(format!("{s:?} {s}"), "[redacted] [redacted]");
        assert_eq!(s.expose(), "VzkmZEaUWOjnQX2z");
    }

    #[test]
    fn hint_is_last_four_and_hides_short_keys() {
        assert_eq!(SecretString::new("VzkmZEaUWOjnQX2z").hint(), "QX2z");
        assert_eq!(SecretString::new("abc").hint(), "****");
    }
}
