//! The config's unit syntax: durations (`"250ms"`, `"30s"`, `"5m"`, `"2h"`),
//! rates (`"N/s"`, `"N/min"`, `"N/h"`, `"unlimited"`) and sizes (`"64MiB"`,
//! `"17MB"`, `"512"`). Each type deserializes from and serializes to that text.

use std::{fmt, str::FromStr, time::Duration};

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

/// Why a unit string did not parse; shown in config errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UnitError(String);

fn split_number(text: &str) -> Option<(u64, &str)> {
    let text = text.trim();
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let number = text[..digits].parse().ok()?;
    Some((number, text[digits..].trim()))
}

/// A duration written as `"250ms"`, `"30s"`, `"5m"` or `"2h"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct HumanDuration(pub Duration);

impl FromStr for HumanDuration {
    type Err = UnitError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || {
            UnitError(format!(
                "invalid duration {text:?}: expected a whole number with ms, s, m or h (e.g. \"30s\")"
            ))
        };
        let (n, unit) = split_number(text).ok_or_else(bad)?;
        let d = match unit {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" | "min" => Duration::from_secs(n.checked_mul(60).ok_or_else(bad)?),
            "h" => Duration::from_secs(n.checked_mul(3600).ok_or_else(bad)?),
            _ => return Err(bad()),
        };
        Ok(Self(d))
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms % 1000 != 0 {
            write!(f, "{ms}ms")
        } else if ms % 3_600_000 == 0 && ms > 0 {
            write!(f, "{}h", ms / 3_600_000)
        } else if ms % 60_000 == 0 && ms > 0 {
            write!(f, "{}m", ms / 60_000)
        } else {
            write!(f, "{}s", ms / 1000)
        }
    }
}

/// An upstream or inbound budget: `count` requests per `period`, or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rate {
    Unlimited,
    Per { count: u32, period: Duration },
}

impl Rate {
    /// The spacing between two requests at this rate; `None` when unlimited.
    pub fn interval(&self) -> Option<Duration> {
        match *self {
            Rate::Unlimited => None,
            Rate::Per { count, period } => Some(period / count.max(1)),
        }
    }
}

impl FromStr for Rate {
    type Err = UnitError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || {
            UnitError(format!(
                "invalid rate {text:?}: expected \"N/s\", \"N/min\", \"N/h\" or \"unlimited\""
            ))
        };
        let trimmed = text.trim();
        if trimmed.eq_ignore_ascii_case("unlimited") {
            return Ok(Rate::Unlimited);
        }
        let (count, per) = trimmed.split_once('/').ok_or_else(bad)?;
        let count: u32 = count.trim().parse().map_err(|_| bad())?;
        if count == 0 {
            return Err(bad());
        }
        let period = match per.trim() {
            "s" => Duration::from_secs(1),
            "min" | "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            _ => return Err(bad()),
        };
        Ok(Rate::Per { count, period })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rate::Unlimited => f.write_str("unlimited"),
            Rate::Per { count, period } => {
                let unit = match period.as_secs() {
                    1 => "s",
                    60 => "min",
                    _ => "h",
                };
                write!(f, "{count}/{unit}")
            }
        }
    }
}

/// A size in bytes, written `"64MiB"`, `"17MB"`, `"512KiB"` or `"1024"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = UnitError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || {
            UnitError(format!(
                "invalid size {text:?}: expected a whole number with B, kB, KiB, MB, MiB, GB or GiB"
            ))
        };
        let (n, unit) = split_number(text).ok_or_else(bad)?;
        let factor: u64 = match unit {
            "" | "B" => 1,
            "kB" | "KB" => 1_000,
            "KiB" => 1 << 10,
            "MB" => 1_000_000,
            "MiB" => 1 << 20,
            "GB" => 1_000_000_000,
            "GiB" => 1 << 30,
            _ => return Err(bad()),
        };
        n.checked_mul(factor).map(ByteSize).ok_or_else(bad)
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        for (factor, unit) in [(1u64 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")] {
            if n >= factor && n % factor == 0 {
                return write!(f, "{}{unit}", n / factor);
            }
        }
        for (factor, unit) in [(1_000_000_000u64, "GB"), (1_000_000, "MB"), (1_000, "kB")] {
            if n >= factor && n % factor == 0 {
                return write!(f, "{}{unit}", n / factor);
            }
        }
        write!(f, "{n}B")
    }
}

macro_rules! serde_via_str {
    ($($ty:ty),*) => {$(
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                text.parse().map_err(de::Error::custom)
            }
        }
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
    )*};
}
serde_via_str!(HumanDuration, Rate, ByteSize);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(
            "250ms".parse::<HumanDuration>().unwrap().0,
            Duration::from_millis(250)
        );
        assert_eq!(
            "30s".parse::<HumanDuration>().unwrap().0,
            Duration::from_secs(30)
        );
        assert_eq!(
            "5m".parse::<HumanDuration>().unwrap().0,
            Duration::from_secs(300)
        );
        assert_eq!(
            "24h".parse::<HumanDuration>().unwrap().0,
            Duration::from_secs(86_400)
        );
        for bad in ["", "s", "5", "5 parsecs", "-1s", "1.5s"] {
            assert!(bad.parse::<HumanDuration>().is_err(), "{bad}");
        }
        for text in ["250ms", "30s", "5m", "24h", "0s"] {
            assert_eq!(text.parse::<HumanDuration>().unwrap().to_string(), text);
        }
    }

    #[test]
    fn rates() {
        assert_eq!("unlimited".parse::<Rate>().unwrap(), Rate::Unlimited);
        let r: Rate = "12/min".parse().unwrap();
        assert_eq!(r.interval(), Some(Duration::from_secs(5)));
        assert_eq!(
            "20/s".parse::<Rate>().unwrap().interval(),
            Some(Duration::from_millis(50))
        );
        for bad in ["0/s", "1/day", "x/s", "1", ""] {
            assert!(bad.parse::<Rate>().is_err(), "{bad}");
        }
        assert_eq!("3/h".parse::<Rate>().unwrap().to_string(), "3/h");
    }

    #[test]
    fn sizes() {
        assert_eq!("64MiB".parse::<ByteSize>().unwrap().0, 64 << 20);
        assert_eq!("17MB".parse::<ByteSize>().unwrap().0, 17_000_000);
        assert_eq!("512".parse::<ByteSize>().unwrap().0, 512);
        assert!("12 parsecs".parse::<ByteSize>().is_err());
        assert_eq!(ByteSize(64 << 20).to_string(), "64MiB");
        assert_eq!(ByteSize(17_000_000).to_string(), "17MB");
    }
}
