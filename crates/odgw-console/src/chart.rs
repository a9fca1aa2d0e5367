//! The requests-per-hour chart: stacked bars by outcome, drawn as SVG on
//! the server (no script, no third-party library).

use std::{collections::BTreeMap, fmt::Write as _};

use crate::{filter::OUTCOMES, html::esc};

/// Hours shown at most: the newest week that has records.
pub const MAX_HOURS: usize = 168;

const WIDTH: f64 = 960.0;
const HEIGHT: f64 = 260.0;
const LEFT: f64 = 48.0;
const RIGHT: f64 = 150.0;
const TOP: f64 = 16.0;
const BOTTOM: f64 = 40.0;
const COLORS: [&str; 8] = [
    "#2a9d8f", "#8ab17d", "#e9c46a", "#f4a261", "#e76f51", "#9b2226", "#6d597a", "#999999",
];

/// Counts per hour (seconds since the epoch of the hour's start) and outcome.
#[derive(Debug, Default)]
pub struct Hourly {
    counts: BTreeMap<i64, [u64; OUTCOMES.len() + 1]>,
}

impl Hourly {
    /// Counts one record at `ts` (RFC 3339) with `outcome` (admin and intent
    /// records have none: they count as "other").
    pub fn add(&mut self, ts: &str, outcome: Option<&str>) {
        let Ok(t) = odgw_audit::parse_timestamp(ts) else {
            return;
        };
        let hour = t.unix_timestamp().div_euclid(3600) * 3600;
        let index = outcome
            .and_then(|o| OUTCOMES.iter().position(|known| *known == o))
            .unwrap_or(OUTCOMES.len());
        self.counts.entry(hour).or_default()[index] += 1;
        // Keep the newest hours only, so memory stays bounded on any trail.
        while self.counts.len() > MAX_HOURS {
            self.counts.pop_first();
        }
    }

    /// The chart as an SVG document.
    pub fn svg(&self) -> String {
        let mut out = format!(
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="11">"#
        );
        out.push_str(r##"<rect width="100%" height="100%" fill="#ffffff"/>"##);
        let (Some((&first, _)), Some((&last, _))) =
            (self.counts.first_key_value(), self.counts.last_key_value())
        else {
            out.push_str(r#"<text x="20" y="40">No records match this filter.</text></svg>"#);
            return out;
        };
        let hours = ((last - first) / 3600 + 1).clamp(1, MAX_HOURS as i64);
        let first = last - (hours - 1) * 3600;
        let max = self
            .counts
            .values()
            .map(|c| c.iter().sum::<u64>())
            .max()
            .unwrap_or(1)
            .max(1);
        let plot_w = WIDTH - LEFT - RIGHT;
        let plot_h = HEIGHT - TOP - BOTTOM;
        let bar_w = plot_w / hours as f64;
        for (&hour, counts) in self.counts.range(first..) {
            let x = LEFT + ((hour - first) / 3600) as f64 * bar_w;
            let mut y = TOP + plot_h;
            for (i, &n) in counts.iter().enumerate() {
                if n == 0 {
                    continue;
                }
                let h = plot_h * n as f64 / max as f64;
                y -= h;
                let _ = write!(
                    out,
                    r#"<rect x="{x:.1}" y="{y:.1}" width="{:.1}" height="{h:.1}" fill="{}"><title>{} {}: {n}</title></rect>"#,
                    (bar_w - 1.0).max(1.0),
                    COLORS[i],
                    esc(&hour_label(hour)),
                    label(i),
                );
            }
        }
        // Axes and labels.
        let _ = write!(
            out,
            r##"<line x1="{LEFT}" y1="{y0}" x2="{x1}" y2="{y0}" stroke="#333"/><line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{y0}" stroke="#333"/><text x="{lx}" y="{ty}" text-anchor="end">{max}</text><text x="{lx}" y="{y0}" text-anchor="end">0</text><text x="{LEFT}" y="{by}">{}</text><text x="{x1}" y="{by}" text-anchor="end">{}</text>"##,
            esc(&hour_label(first)),
            esc(&hour_label(last)),
            y0 = TOP + plot_h,
            x1 = LEFT + plot_w,
            lx = LEFT - 4.0,
            ty = TOP + 8.0,
            by = HEIGHT - BOTTOM + 16.0,
        );
        for (i, color) in COLORS.iter().enumerate().take(OUTCOMES.len() + 1) {
            let y = TOP + 14.0 * i as f64;
            let x = WIDTH - RIGHT + 12.0;
            let _ = write!(
                out,
                r#"<rect x="{x}" y="{y}" width="10" height="10" fill="{}"/><text x="{}" y="{}">{}</text>"#,
                color,
                x + 14.0,
                y + 9.0,
                label(i)
            );
        }
        out.push_str("</svg>");
        out
    }
}

fn label(index: usize) -> &'static str {
    OUTCOMES.get(index).copied().unwrap_or("other")
}

fn hour_label(hour: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(hour)
        .map(|t| {
            format!(
                "{:04}-{:02}-{:02} {:02}:00Z",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour()
            )
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_stack_by_outcome_and_hour() {
        let mut h = Hourly::default();
        h.add("2026-12-04T10:05:00.000Z", Some("forwarded"));
        h.add("2026-12-04T10:55:00.000Z", Some("denied"));
        h.add("2026-12-04T12:00:00.000Z", None);
        let svg = h.svg();
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("2026-12-04 10:00Z forwarded: 1"));
        assert!(svg.contains("2026-12-04 10:00Z denied: 1"));
        assert!(svg.contains("2026-12-04 12:00Z other: 1"));
        assert_eq!(svg.matches("<title>").count(), 3);
    }

    #[test]
    fn only_the_newest_week_is_kept() {
        let mut h = Hourly::default();
        for i in 0..200 {
            let t = time::OffsetDateTime::from_unix_timestamp(1_800_000_000 + i * 3600)
                .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
            h.add(&odgw_audit::format_ts(t), Some("forwarded"));
        }
        assert_eq!(h.counts.len(), MAX_HOURS);
        assert!(Hourly::default().svg().contains("No records match"));
    }
}
