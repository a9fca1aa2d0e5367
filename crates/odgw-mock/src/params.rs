//! Query-string parameters and `Offset`/`Limit` paging.

use percent_encoding::percent_decode_str;

/// Decoded query parameters, in order.
#[derive(Debug, Default)]
pub(crate) struct Params {
    pairs: Vec<(String, String)>,
    case_insensitive: bool,
}

impl Params {
    /// Parses a raw query; `+` is a space, as form encoding has it.
    pub fn parse(query: Option<&str>, case_insensitive: bool) -> Self {
        let decode = |s: &str| {
            let s = s.replace('+', " ");
            percent_decode_str(&s).decode_utf8_lossy().into_owned()
        };
        let pairs = query
            .unwrap_or_default()
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| match p.split_once('=') {
                Some((k, v)) => (decode(k), decode(v)),
                None => (decode(p), String::new()),
            })
            .collect();
        Params {
            pairs,
            case_insensitive,
        }
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| {
                if self.case_insensitive {
                    k.eq_ignore_ascii_case(name)
                } else {
                    k == name
                }
            })
            .map(|(_, v)| v.as_str())
    }

    /// An optional non-negative integer parameter; `Err` carries the 400 text.
    pub fn number(&self, name: &str) -> Result<Option<u64>, String> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v
                .trim()
                .parse::<u64>()
                .map(Some)
                .map_err(|_| format!("{name} is invalid")),
        }
    }

    /// `Offset` and `Limit`: `Limit` absent or 0 means `max_page`, above it is
    /// capped to it (Open Dental caps rather than refuses).
    pub fn page(&self, max_page: usize) -> Result<Page, String> {
        let offset = self.number("Offset")?.unwrap_or(0);
        let limit = match self.number("Limit")? {
            None | Some(0) => max_page,
            Some(n) => usize::try_from(n).unwrap_or(usize::MAX).min(max_page),
        };
        Ok(Page {
            offset: usize::try_from(offset).unwrap_or(usize::MAX),
            limit,
        })
    }
}

/// One page of a list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Page {
    pub offset: usize,
    pub limit: usize,
}

impl Page {
    pub fn apply<T>(self, items: impl IntoIterator<Item = T>) -> Vec<T> {
        items
            .into_iter()
            .skip(self.offset)
            .take(self.limit)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_and_matches_names() {
        let p = Params::parse(Some("LName=De%20Angelo&offset=5&x&FName=a+b"), true);
        assert_eq!(p.get("LName"), Some("De Angelo"));
        assert_eq!(p.get("lname"), Some("De Angelo"));
        assert_eq!(p.get("FName"), Some("a b"));
        assert_eq!(p.get("x"), Some(""));
        assert_eq!(
            p.page(100).unwrap(),
            Page {
                offset: 5,
                limit: 100
            }
        );
        let strict = Params::parse(Some("offset=5"), false);
        assert_eq!(
            strict.page(100).unwrap(),
            Page {
                offset: 0,
                limit: 100
            }
        );
    }

    #[test]
    fn paging_caps_and_validates() {
        let page = |q| Params::parse(Some(q), true).page(100);
        assert_eq!(page("Limit=500").unwrap().limit, 100);
        assert_eq!(
            page("Limit=50&Offset=50").unwrap(),
            Page {
                offset: 50,
                limit: 50
            }
        );
        assert_eq!(page("Limit=0").unwrap().limit, 100);
        assert_eq!(page("Offset=-1").unwrap_err(), "Offset is invalid");
        assert_eq!(page("Limit=abc").unwrap_err(), "Limit is invalid");
        let p = Page {
            offset: 3,
            limit: 2,
        };
        assert_eq!(p.apply(0..10), vec![3, 4]);
        assert_eq!(
            Page {
                offset: 20,
                limit: 2
            }
            .apply(0..10),
            Vec::<i32>::new()
        );
    }
}
