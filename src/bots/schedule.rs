//! Schedules in a community's local time: weekly (every N weeks), monthly on the nth weekday,
//! or once. Occurrences are computed in the time zone (chrono-tz), so 19:00 stays 19:00 across
//! daylight-saving changes, and compared in UTC against the bots' clock.

use chrono::{
    DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc, Weekday,
};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

/// When something happens, in local time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "every", rename_all = "lowercase")]
pub enum Schedule {
    /// On `weekday` every `weeks` weeks, counting from the week of `anchor`.
    Weekly {
        weekday: Weekday,
        time: NaiveTime,
        weeks: u32,
        anchor: NaiveDate,
    },
    /// On the `nth` (1..=4, or -1 for the last) `weekday` of every month.
    Monthly {
        nth: i8,
        weekday: Weekday,
        time: NaiveTime,
    },
    /// Once.
    Once { date: NaiveDate, time: NaiveTime },
}

/// A local date and time in `tz`, as UTC (a time skipped by a DST change moves one hour on).
pub fn local_to_utc(tz: Tz, date: NaiveDate, time: NaiveTime) -> DateTime<Utc> {
    let ndt = NaiveDateTime::new(date, time);
    tz.from_local_datetime(&ndt)
        .earliest()
        .or_else(|| {
            tz.from_local_datetime(&(ndt + Duration::hours(1)))
                .earliest()
        })
        .map(|d| d.with_timezone(&Utc))
        .unwrap_or_else(|| Utc.from_utc_datetime(&ndt))
}

fn nth_weekday(year: i32, month: u32, nth: i8, weekday: Weekday) -> Option<NaiveDate> {
    if nth > 0 {
        NaiveDate::from_weekday_of_month_opt(year, month, weekday, nth as u8)
    } else {
        let (ny, nm) = if month == 12 {
            (year + 1, 1)
        } else {
            (year, month + 1)
        };
        let mut d = NaiveDate::from_ymd_opt(ny, nm, 1)?.pred_opt()?;
        while d.weekday() != weekday {
            d = d.pred_opt()?;
        }
        Some(d)
    }
}

impl Schedule {
    /// The first occurrence strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        let local = after.with_timezone(&tz).date_naive();
        match self {
            Schedule::Once { date, time } => {
                Some(local_to_utc(tz, *date, *time)).filter(|t| *t > after)
            }
            Schedule::Weekly {
                weekday,
                time,
                weeks,
                anchor,
            } => {
                let weeks = i64::from((*weeks).max(1));
                let anchor_monday =
                    *anchor - Duration::days(anchor.weekday().num_days_from_monday() as i64);
                let mut d = local - Duration::days(1);
                for _ in 0..(7 * weeks + 9) {
                    if d.weekday() == *weekday {
                        let monday = d - Duration::days(d.weekday().num_days_from_monday() as i64);
                        let week = (monday - anchor_monday).num_days().div_euclid(7);
                        if week >= 0 && week % weeks == 0 {
                            let t = local_to_utc(tz, d, *time);
                            if t > after {
                                return Some(t);
                            }
                        }
                    }
                    d += Duration::days(1);
                }
                None
            }
            Schedule::Monthly { nth, weekday, time } => {
                let (mut y, mut m) = (local.year(), local.month());
                for _ in 0..14 {
                    if let Some(d) = nth_weekday(y, m, *nth, *weekday) {
                        let t = local_to_utc(tz, d, *time);
                        if t > after {
                            return Some(t);
                        }
                    }
                    (y, m) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                }
                None
            }
        }
    }

    /// Reads `every 2nd thursday 19:00`, `every thursday 19:00`, `every other friday 18:30`,
    /// `every 3 weeks monday 12:00`, `every last friday 17:00`, `on 2026-12-03 19:00`.
    /// `today` (local) anchors the weeks of a weekly schedule.
    pub fn parse(text: &str, today: NaiveDate) -> Result<Self, String> {
        let words: Vec<String> = text
            .split_whitespace()
            .map(|w| w.to_lowercase())
            .filter(|w| !matches!(w.as_str(), "at" | "of" | "the" | "month" | "on_"))
            .collect();
        let time = words
            .last()
            .and_then(|w| NaiveTime::parse_from_str(w, "%H:%M").ok())
            .ok_or("end with a time like 19:00")?;
        let words = &words[..words.len() - 1];
        match words.first().map(String::as_str) {
            Some("on") => {
                let date = words
                    .get(1)
                    .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
                    .ok_or("give the date as YYYY-MM-DD, e.g. `on 2026-12-03 19:00`")?;
                Ok(Schedule::Once { date, time })
            }
            Some("every") => {
                let rest = &words[1..];
                let weekday = rest
                    .last()
                    .and_then(|w| w.trim_end_matches('s').parse::<Weekday>().ok())
                    .ok_or("name a weekday, e.g. `every thursday 19:00`")?;
                let qual: Vec<&str> = rest[..rest.len() - 1].iter().map(String::as_str).collect();
                let nth = |w: &str| -> Option<i8> {
                    Some(match w {
                        "1st" | "first" => 1,
                        "2nd" | "second" => 2,
                        "3rd" | "third" => 3,
                        "4th" | "fourth" => 4,
                        "last" => -1,
                        _ => return None,
                    })
                };
                let weekly = |weeks: u32| Schedule::Weekly {
                    weekday,
                    time,
                    weeks,
                    anchor: today,
                };
                match qual.as_slice() {
                    [] | ["week"] => Ok(weekly(1)),
                    ["other"] => Ok(weekly(2)),
                    [n, "weeks"] => n
                        .parse::<u32>()
                        .ok()
                        .filter(|n| (1..=12).contains(n))
                        .map(weekly)
                        .ok_or_else(|| "say `every 2 weeks thursday 19:00`".to_owned()),
                    [w] if nth(w).is_some() => Ok(Schedule::Monthly {
                        nth: nth(w).unwrap_or(1),
                        weekday,
                        time,
                    }),
                    _ => Err("try `every 2nd thursday 19:00`, `every other friday 18:30` or `every thursday 19:00`".into()),
                }
            }
            _ => Err("start with `every` or `on`".into()),
        }
    }

    /// In words, for messages.
    pub fn describe(&self) -> String {
        let day = |w: &Weekday| {
            let s = format!("{w:?}");
            match s.as_str() {
                "Mon" => "Monday",
                "Tue" => "Tuesday",
                "Wed" => "Wednesday",
                "Thu" => "Thursday",
                "Fri" => "Friday",
                "Sat" => "Saturday",
                _ => "Sunday",
            }
        };
        match self {
            Schedule::Once { date, time } => format!("on {date} at {}", time.format("%H:%M")),
            Schedule::Weekly {
                weekday,
                time,
                weeks,
                ..
            } => match weeks {
                1 => format!("every {} at {}", day(weekday), time.format("%H:%M")),
                2 => format!("every other {} at {}", day(weekday), time.format("%H:%M")),
                n => format!(
                    "every {n} weeks on {} at {}",
                    day(weekday),
                    time.format("%H:%M")
                ),
            },
            Schedule::Monthly { nth, weekday, time } => {
                let n = match nth {
                    1 => "1st",
                    2 => "2nd",
                    3 => "3rd",
                    4 => "4th",
                    _ => "last",
                };
                format!(
                    "every {n} {} of the month at {}",
                    day(weekday),
                    time.format("%H:%M")
                )
            }
        }
    }
}

/// Parses a time zone name (`Europe/Berlin`, `UTC`).
pub fn parse_tz(name: &str) -> Result<Tz, String> {
    name.parse::<Tz>()
        .map_err(|_| format!("`{name}` is not a time zone name; use one like Europe/Berlin or UTC"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn monthly_nth_weekday() {
        let today = NaiveDate::from_ymd_opt(2026, 11, 1).unwrap();
        let s = Schedule::parse("every 2nd thursday 19:00", today).unwrap();
        let tz: Tz = "Europe/Berlin".parse().unwrap();
        let n = s.next_after(utc("2026-11-01T00:00:00Z"), tz).unwrap();
        assert_eq!(n, utc("2026-11-12T18:00:00Z"));
        let n = s.next_after(n, tz).unwrap();
        assert_eq!(n, utc("2026-12-10T18:00:00Z"));
        let last = Schedule::parse("every last friday 17:00", today).unwrap();
        assert_eq!(
            last.next_after(utc("2026-11-01T00:00:00Z"), chrono_tz::UTC),
            Some(utc("2026-11-27T17:00:00Z"))
        );
    }

    #[test]
    fn weekly_biweekly_and_once() {
        let today = NaiveDate::from_ymd_opt(2026, 11, 2).unwrap(); // a Monday
        let s = Schedule::parse("every other thursday at 19:00", today).unwrap();
        let a = s
            .next_after(utc("2026-11-02T00:00:00Z"), chrono_tz::UTC)
            .unwrap();
        assert_eq!(a, utc("2026-11-05T19:00:00Z"));
        let b = s.next_after(a, chrono_tz::UTC).unwrap();
        assert_eq!(b, utc("2026-11-19T19:00:00Z"));
        let w = Schedule::parse("every thursday 19:00", today).unwrap();
        assert_eq!(
            w.next_after(a, chrono_tz::UTC),
            Some(utc("2026-11-12T19:00:00Z"))
        );
        let o = Schedule::parse("on 2026-12-03 19:00", today).unwrap();
        let t = o.next_after(utc("2026-11-02T00:00:00Z"), chrono_tz::UTC);
        assert_eq!(t, Some(utc("2026-12-03T19:00:00Z")));
        assert_eq!(o.next_after(t.unwrap(), chrono_tz::UTC), None);
        assert!(Schedule::parse("every blursday 19:00", today).is_err());
        assert!(Schedule::parse("every thursday", today).is_err());
    }
}
