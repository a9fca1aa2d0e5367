//! SPEC §4 "Paths": the checks a request path passes before anything is sent
//! upstream.
//!
//! The checks run on the raw, still percent-encoded path, because that is what
//! odgw forwards: Open Dental (or any server in between) may decode it, and a
//! `%2F` or `%2E%2E` that looks harmless here could become a separator or a
//! dot segment there. Anything that could change meaning on decoding is
//! refused rather than normalised.

use crate::error::PathError;

/// Checks a raw request path (no query) against SPEC §4 "Paths".
///
/// Refused: a `.` or `..` segment (also as `..;params`, which some servers
/// read as `..`), an empty segment (`//`), a literal `\`, the encodings `%2F`
/// `%5C` `%2E` `%00` in any case, any encoded control byte, an encoded `%`
/// (double encoding), a malformed escape, and any raw control, space or
/// non-ASCII byte. A single trailing `/` is allowed: it cannot climb or hide
/// a separator. Length is left to the HTTP server's own limits.
pub fn check_path(raw_path: &str) -> Result<(), PathError> {
    check_path_bytes(raw_path.as_bytes())
}

/// [`check_path`] on bytes, for callers that hold a path that may not be UTF-8.
pub fn check_path_bytes(raw_path: &[u8]) -> Result<(), PathError> {
    let rest = raw_path.strip_prefix(b"/").ok_or(PathError::NotAbsolute)?;
    check_bytes(raw_path)?;
    let mut segments = rest.split(|b| *b == b'/').peekable();
    while let Some(segment) = segments.next() {
        let is_last = segments.peek().is_none();
        if segment.is_empty() && !is_last {
            return Err(PathError::EmptySegment);
        }
        // `/..;x/` is `..` to servlet-style routers; treat the part before
        // the first `;` as the segment name.
        let name = segment.split(|b| *b == b';').next().unwrap_or(segment);
        if name == b"." || name == b".." {
            return Err(PathError::DotSegment);
        }
    }
    Ok(())
}

fn check_bytes(raw: &[u8]) -> Result<(), PathError> {
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'\\' => return Err(PathError::Backslash),
            b'%' => {
                let decoded = match (raw.get(i + 1), raw.get(i + 2)) {
                    (Some(&hi), Some(&lo)) => hex_pair(hi, lo).ok_or(PathError::MalformedEscape)?,
                    _ => return Err(PathError::MalformedEscape),
                };
                match decoded {
                    b'/' | b'\\' => return Err(PathError::EncodedSeparator),
                    b'.' => return Err(PathError::EncodedDot),
                    b'%' => return Err(PathError::DoubleEncoding),
                    0x00..=0x1f | 0x7f => return Err(PathError::EncodedControl),
                    _ => {}
                }
                i += 3;
            }
            0x21..=0x7e => i += 1,
            _ => return Err(PathError::InvalidByte),
        }
    }
    Ok(())
}

fn hex_pair(hi: u8, lo: u8) -> Option<u8> {
    fn nibble(b: u8) -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            b'A'..=b'F' => Some(b - b'A' + 10),
            _ => None,
        }
    }
    Some(nibble(hi)? << 4 | nibble(lo)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_api_paths() {
        for ok in [
            "/api/v1/patients/11",
            "/api/v1/patients",
            "/api/v1/patients/",
            "/api/v1/queries/ShortQuery",
            "/api/v1/patients/Simple",
            "/api/v1/a-b_c~d.json",
            "/api/v1/files/na%C3%AFve",
            "/api/v1/x/..a/a..",
            "/api/v1/x/.hidden",
            "/api/v1/x;y=1",
            "/",
        ] {
            assert_eq!(check_path(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn refuses_every_bypass_form() {
        use PathError::*;
        let cases: &[(&str, PathError)] = &[
            ("api/v1/x", NotAbsolute),
            ("", NotAbsolute),
            ("/api/v1/../admin", DotSegment),
            ("/api/v1/..", DotSegment),
            ("/api/v1/./patients", DotSegment),
            ("/api/v1/patients/.", DotSegment),
            ("/api/v1/patients/..", DotSegment),
            ("/api/v1/..;/admin", DotSegment),
            ("/api/v1/.;x/patients", DotSegment),
            ("/api/v1/%2e%2E/admin", EncodedDot),
            ("/api/v1/%2E", EncodedDot),
            ("/api/v1/a%2eb", EncodedDot),
            ("/api/v1/.%2e/admin", EncodedDot),
            ("/api/v1/patients%2F11", EncodedSeparator),
            ("/api/v1/patients%2f11", EncodedSeparator),
            ("/api/v1/patients%5C11", EncodedSeparator),
            ("/api/v1/patients%5c11", EncodedSeparator),
            ("/api/v1/patients%0011", EncodedControl),
            ("/api/v1/patients%0d%0aX:1", EncodedControl),
            ("/api/v1/patients%7F", EncodedControl),
            ("/api/v1/%252e%252e/admin", DoubleEncoding),
            ("/api/v1/%252F", DoubleEncoding),
            ("/api/v1/patients\\11", Backslash),
            ("/api/v1/..\\admin", Backslash),
            ("/api/v1//patients", EmptySegment),
            ("//api/v1/patients", EmptySegment),
            ("/api/v1/patients//", EmptySegment),
            ("/api/v1/%", MalformedEscape),
            ("/api/v1/%2", MalformedEscape),
            ("/api/v1/%zz", MalformedEscape),
            ("/api/v1/%%2F", MalformedEscape),
            ("/api/v1/pat ients", InvalidByte),
            ("/api/v1/pat\tients", InvalidByte),
            ("/api/v1/pat\0ients", InvalidByte),
            ("/api/v1/pat\x7fients", InvalidByte),
            ("/api/v1/naïve", InvalidByte),
        ];
        for (path, want) in cases {
            assert_eq!(check_path(path), Err(*want), "{path:?}");
        }
    }

    #[test]
    fn refuses_non_utf8_bytes() {
        assert_eq!(
            check_path_bytes(b"/api/v1/patients/\xff\xfe"),
            Err(PathError::InvalidByte)
        );
        assert_eq!(
            check_path_bytes(b"/api/v1/\xc0\xae\xc0\xae/admin"),
            Err(PathError::InvalidByte)
        );
    }

    #[test]
    fn errors_read_as_client_details() {
        assert_eq!(
            PathError::DotSegment.to_string(),
            "path contains a '.' or '..' segment"
        );
    }
}
