//! When a job runs: `every: 15m` or a five-field cron expression (UTC).

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Datelike, Duration as ChronoDuration, Timelike, Utc};

/// A job's schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    /// A fixed interval, counted from the end of the previous wait.
    Every(Duration),
    /// `minute hour day-of-month month day-of-week`, in UTC.
    Cron(Cron),
}

impl Schedule {
    /// The next time at or after `after` (exclusive) the job is due.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Self::Every(d) => ChronoDuration::from_std(*d).ok().map(|d| after + d),
            Self::Cron(c) => c.next_after(after),
        }
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Every(d) => write!(f, "every {}s", d.as_secs()),
            Self::Cron(c) => write!(f, "cron {}", c.source),
        }
    }
}

/// A parsed cron expression. Fields accept `*`, numbers, ranges `a-b`, steps `*/n` and
/// `a-b/n`, and lists `a,b`; day-of-week 0 and 7 are Sunday. As in cron, when both
/// day-of-month and day-of-week are restricted, a day matching either is due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    source: String,
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
    days_restricted: bool,
    weekdays_restricted: bool,
}

/// A cron expression that does not parse; the message says which field and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cron '{expr}': {message}")]
pub struct CronError {
    pub expr: String,
    pub message: String,
}

impl dataport_common::HasKind for CronError {
    fn kind(&self) -> dataport_common::ErrorKind {
        dataport_common::ErrorKind::InvalidArgument
    }
}

impl Cron {
    pub fn parse(expr: &str) -> Result<Self, CronError> {
        let err = |message: String| CronError {
            expr: expr.to_string(),
            message,
        };
        let fields: Vec<&str> = expr.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(err(format!(
                "expected 5 fields (minute hour day-of-month month day-of-week), found {}",
                fields.len()
            )));
        }
        let names = ["minute", "hour", "day-of-month", "month", "day-of-week"];
        let ranges = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)];
        let mut sets = [0u64; 5];
        for i in 0..5 {
            sets[i] = parse_field(fields[i], ranges[i].0, ranges[i].1)
                .map_err(|m| err(format!("{} field '{}': {m}", names[i], fields[i])))?;
        }
        // Sunday is 0 and 7.
        if sets[4] & (1 << 7) != 0 {
            sets[4] |= 1;
        }
        Ok(Self {
            source: expr.to_string(),
            minutes: sets[0],
            hours: sets[1],
            days: sets[2],
            months: sets[3],
            weekdays: sets[4],
            days_restricted: fields[2] != "*",
            weekdays_restricted: fields[4] != "*",
        })
    }

    fn day_matches(&self, t: &DateTime<Utc>) -> bool {
        let dom = self.days & (1 << t.day()) != 0;
        let dow = self.weekdays & (1 << t.weekday().num_days_from_sunday()) != 0;
        match (self.days_restricted, self.weekdays_restricted) {
            (true, true) => dom || dow,
            (true, false) => dom,
            (false, true) => dow,
            (false, false) => true,
        }
    }

    /// The first due minute after `after`; `None` if none within five years (e.g. `0 0 31 2 *`).
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut t = after.with_second(0)?.with_nanosecond(0)? + ChronoDuration::minutes(1);
        let limit = after + ChronoDuration::days(366 * 5);
        while t < limit {
            if self.months & (1 << t.month()) == 0 {
                // Jump to the first day of the next month.
                let (y, m) = if t.month() == 12 {
                    (t.year() + 1, 1)
                } else {
                    (t.year(), t.month() + 1)
                };
                t = t
                    .with_day(1)?
                    .with_hour(0)?
                    .with_minute(0)?
                    .with_month(m)?
                    .with_year(y)?;
                continue;
            }
            if !self.day_matches(&t) {
                t = (t + ChronoDuration::days(1)).with_hour(0)?.with_minute(0)?;
                continue;
            }
            if self.hours & (1 << t.hour()) == 0 {
                t = (t + ChronoDuration::hours(1)).with_minute(0)?;
                continue;
            }
            if self.minutes & (1 << t.minute()) == 0 {
                t += ChronoDuration::minutes(1);
                continue;
            }
            return Some(t);
        }
        None
    }
}

fn parse_field(field: &str, min: u32, max: u32) -> Result<u64, String> {
    let mut set = 0u64;
    for part in field.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                let step: u32 = s
                    .parse()
                    .map_err(|_| format!("step '{s}' is not a number"))?;
                if step == 0 {
                    return Err("a step of 0 never fires".into());
                }
                (r, step)
            }
            None => (part, 1),
        };
        let (lo, hi) = if range == "*" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            (number(a, min, max)?, number(b, min, max)?)
        } else {
            let n = number(range, min, max)?;
            // `5/10` means from 5 to the end in steps of 10.
            (n, if step > 1 { max } else { n })
        };
        if lo > hi {
            return Err(format!("range {lo}-{hi} is backwards"));
        }
        let mut v = lo;
        while v <= hi {
            set |= 1 << v;
            v += step;
        }
    }
    Ok(set)
}

fn number(s: &str, min: u32, max: u32) -> Result<u32, String> {
    let n: u32 = s.parse().map_err(|_| format!("'{s}' is not a number"))?;
    if n < min || n > max {
        return Err(format!("{n} is outside {min}-{max}"));
    }
    Ok(n)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }

    #[test]
    fn every_fifteen_minutes() {
        let c = Cron::parse("*/15 * * * *").unwrap();
        assert_eq!(
            c.next_after(at(2026, 1, 1, 10, 7)),
            Some(at(2026, 1, 1, 10, 15))
        );
        assert_eq!(
            c.next_after(at(2026, 1, 1, 10, 45)),
            Some(at(2026, 1, 1, 11, 0))
        );
    }

    #[test]
    fn daily_and_weekly() {
        let daily = Cron::parse("30 2 * * *").unwrap();
        assert_eq!(
            daily.next_after(at(2026, 1, 1, 3, 0)),
            Some(at(2026, 1, 2, 2, 30))
        );
        // Mondays at 06:00; 2026-01-01 is a Thursday.
        let monday = Cron::parse("0 6 * * 1").unwrap();
        assert_eq!(
            monday.next_after(at(2026, 1, 1, 0, 0)),
            Some(at(2026, 1, 5, 6, 0))
        );
        let sunday = Cron::parse("0 0 * * 7").unwrap();
        assert_eq!(
            sunday.next_after(at(2026, 1, 1, 0, 0)),
            Some(at(2026, 1, 4, 0, 0))
        );
    }

    #[test]
    fn months_lists_ranges_and_year_end() {
        let c = Cron::parse("0 0 1 1,7 *").unwrap();
        assert_eq!(
            c.next_after(at(2026, 2, 1, 0, 0)),
            Some(at(2026, 7, 1, 0, 0))
        );
        assert_eq!(
            c.next_after(at(2026, 8, 1, 0, 0)),
            Some(at(2027, 1, 1, 0, 0))
        );
        let r = Cron::parse("0 9-17/4 * * 1-5").unwrap();
        assert_eq!(
            r.next_after(at(2026, 1, 2, 14, 0)),
            Some(at(2026, 1, 2, 17, 0))
        );
        assert_eq!(
            r.next_after(at(2026, 1, 2, 17, 0)),
            Some(at(2026, 1, 5, 9, 0))
        );
    }

    #[test]
    fn impossible_dates_end() {
        let c = Cron::parse("0 0 31 2 *").unwrap();
        assert_eq!(c.next_after(at(2026, 1, 1, 0, 0)), None);
    }

    #[test]
    fn errors_name_the_field() {
        for (expr, needle) in [
            ("* * * *", "5 fields"),
            ("61 * * * *", "minute"),
            ("* 24 * * *", "hour"),
            ("* * 0 * *", "day-of-month"),
            ("*/0 * * * *", "step"),
            ("5-1 * * * *", "backwards"),
            ("x * * * *", "not a number"),
        ] {
            let e = Cron::parse(expr).unwrap_err().to_string();
            assert!(e.contains(needle), "{expr}: {e}");
        }
    }
}
