//! `path`: [`odgw_proxy::check_path_bytes`] on arbitrary bytes (the raw,
//! still percent-encoded request path).
//!
//! Properties, for every input:
//! - `check_path` on the same text agrees with `check_path_bytes`;
//! - an accepted path is absolute printable ASCII without `\`, every `%` is a
//!   well-formed escape, and percent-decoding it once adds no separator, no
//!   `\`, no `%` (so a second decoding changes nothing), no control byte,
//!   no empty segment and no `.`/`..` segment (also as `..;params`) — what
//!   Open Dental or a server in between sees cannot climb;
//! - appending any classic traversal suffix to an accepted path makes it
//!   refused, and appending a plain segment keeps it accepted;
//! - a path made only of plain segments (`[A-Za-z0-9_-]+`) is accepted.

use odgw_proxy::{check_path, check_path_bytes};

/// Suffixes that must turn any accepted path into a refused one.
const ATTACKS: &[&[u8]] = &[
    b"/..",
    b"/.",
    b"/../admin",
    b"/..;x/admin",
    b"/.;x",
    b"/%2e%2e/admin",
    b"/%2E%2e",
    b"/.%2e",
    b"%2e",
    b"%2F..",
    b"%2f",
    b"%5C",
    b"%5c..",
    b"\\..",
    b"//x",
    b"//",
    b"%00",
    b"%0d%0aX:1",
    b"%7f",
    b"%252e%252e",
    b"%25",
    b"%",
    b"%2",
    b"%zz",
    b" x",
    b"\t",
    b"\x7f",
    b"\xc0\xae\xc0\xae",
    b"\xff",
];

pub fn check(data: &[u8]) {
    let verdict = check_path_bytes(data);
    if let Ok(text) = std::str::from_utf8(data) {
        assert_eq!(
            check_path(text),
            verdict,
            "check_path disagrees on {text:?}"
        );
    }
    if is_plain(data) {
        assert_eq!(verdict, Ok(()), "plain path refused: {:?}", show(data));
    }
    if verdict.is_ok() {
        accepted(data);
    }
}

/// `/` followed by `[A-Za-z0-9_-]+` segments joined by single `/`, with an
/// optional trailing `/`.
fn is_plain(path: &[u8]) -> bool {
    let Some(rest) = path.strip_prefix(b"/") else {
        return false;
    };
    if rest.is_empty() {
        return true;
    }
    let rest = rest.strip_suffix(b"/").unwrap_or(rest);
    rest.split(|b| *b == b'/').all(|segment| {
        !segment.is_empty()
            && segment
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
    })
}

fn accepted(path: &[u8]) {
    let shown = show(path);
    assert!(path.starts_with(b"/"), "not absolute: {shown}");
    assert!(
        path.iter()
            .all(|b| (0x21..=0x7e).contains(b) && *b != b'\\'),
        "raw byte outside printable ASCII, or a backslash: {shown}"
    );
    let decoded = decode_once(path);
    assert!(
        !decoded.contains(&b'%'),
        "decodes to a '%' (double encoding): {shown}"
    );
    assert!(!decoded.contains(&b'\\'), "decodes to a backslash: {shown}");
    assert!(
        !decoded.iter().any(|b| *b < 0x20 || *b == 0x7f),
        "decodes to a control byte: {shown}"
    );
    let raw_slashes = path.iter().filter(|b| **b == b'/').count();
    let decoded_slashes = decoded.iter().filter(|b| **b == b'/').count();
    assert_eq!(
        raw_slashes, decoded_slashes,
        "decoding adds a separator: {shown}"
    );
    let segments: Vec<&[u8]> = decoded[1..].split(|b| *b == b'/').collect();
    let last = segments.len() - 1;
    for (index, segment) in segments.iter().enumerate() {
        assert!(
            !segment.is_empty() || index == last,
            "empty segment after decoding: {shown}"
        );
        let name = segment.split(|b| *b == b';').next().unwrap_or(segment);
        assert!(
            name != b"." && name != b"..",
            "dot segment after decoding: {shown}"
        );
    }

    let base = path.strip_suffix(b"/").unwrap_or(path);
    for attack in ATTACKS {
        let attacked = [base, attack].concat();
        assert!(
            check_path_bytes(&attacked).is_err(),
            "accepted {} (accepted path {shown} + attack suffix)",
            show(&attacked)
        );
    }
    let extended = [base, b"/x"].concat();
    assert_eq!(
        check_path_bytes(&extended),
        Ok(()),
        "appending a plain segment to accepted {shown} made it refused"
    );
}

/// Percent-decodes once; panics on a malformed escape, which an accepted
/// path must not contain.
fn decode_once(path: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(path.len());
    let mut i = 0;
    while i < path.len() {
        if path[i] == b'%' {
            let hex = path
                .get(i + 1..i + 3)
                .and_then(|pair| std::str::from_utf8(pair).ok())
                .filter(|pair| pair.bytes().all(|b| b.is_ascii_hexdigit()))
                .and_then(|pair| u8::from_str_radix(pair, 16).ok());
            let Some(byte) = hex else {
                panic!("malformed escape accepted: {}", show(path));
            };
            out.push(byte);
            i += 3;
        } else {
            out.push(path[i]);
            i += 1;
        }
    }
    out
}

fn show(bytes: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(bytes))
}
