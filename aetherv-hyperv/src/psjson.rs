//! Parsing what Windows PowerShell 5.1's `ConvertTo-Json` emits.
//!
//! The host scripts emit flat, explicit shapes (see [`crate::ops`]), but values still pass
//! through `ConvertTo-Json`, and captured output of plain cmdlets (`Get-VM | ConvertTo-Json`)
//! is parsed in tests and tools. Every quirk is absorbed here, once:
//!
//! | Quirk | Helper |
//! |---|---|
//! | enums written as numbers (`"State": 2`) or, after `ToString()`, names (`"Running"`) | [`PsEnum`] + [`enum_code_or_name`] |
//! | `DateTime` as `"/Date(1748736000000)/"` (5.1), ISO 8601 (7.x, or `ToString('o')`), or a `{value, DisplayHint, DateTime}` object (`Get-Date \| ConvertTo-Json`) | [`Timestamp`] |
//! | a one-element array written as the bare element, an empty pipeline as `null`, an array wrapped as `{"value":[...],"Count":n}` (5.1 with extended `System.Array` type data) | [`one_or_many`] |
//! | `null` versus a missing property | [`Presence`], [`null_as_default`] |
//! | `TimeSpan` as an object (`{Ticks, Days, ..., TotalSeconds}`) or a `"d.hh:mm:ss.fffffff"` string or plain seconds | [`duration`] |
//! | `Version` as an object (`{Major, Minor, Build, Revision}`, `-1` for unset parts) or a string | [`PsVersion`] |
//!
//! Depth truncation (`ConvertTo-Json` writes objects below `-Depth` as their `ToString()`) is
//! avoided by the scripts (`-Depth 8` and flat shapes); a truncated value shows up as a string
//! where an object was expected and is reported as a type error by serde.

use std::fmt;
use std::time::Duration;

use serde::de::{self, DeserializeOwned, Deserializer};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

/// Deserializes a list that PowerShell may have written as `null` (empty pipeline), a single
/// bare element (one-element pipeline), an array, or an array wrapped as
/// `{"value":[...],"Count":n}`.
///
/// Use with `#[serde(default, deserialize_with = "psjson::one_or_many")]` so that a missing
/// property is an empty list too.
pub fn one_or_many<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned,
{
    // An array, the common case, is read element by element straight from the input: a host's
    // inventory is a large array, and a JSON tree of it first cost more time than reading the
    // VMs and left the heap fragmented. Only an object (one element, or the 5.1 wrapper) and
    // scalars go through a `Value`.
    deserializer.deserialize_any(OneOrMany(std::marker::PhantomData))
}

/// The visitor of [`one_or_many`].
struct OneOrMany<T>(std::marker::PhantomData<T>);

impl<T: DeserializeOwned> OneOrMany<T> {
    fn from_value<E: de::Error>(value: Value) -> Result<Vec<T>, E> {
        match unwrap_array_object(value) {
            Value::Null => Ok(Vec::new()),
            Value::Array(items) => items
                .into_iter()
                .map(|v| serde_json::from_value(v).map_err(de::Error::custom))
                .collect(),
            single => serde_json::from_value(single)
                .map(|v| vec![v])
                .map_err(de::Error::custom),
        }
    }
}

impl<'de, T: DeserializeOwned> de::Visitor<'de> for OneOrMany<T> {
    type Value = Vec<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("null, one element or an array")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Vec<T>, E> {
        Ok(Vec::new())
    }

    fn visit_none<E: de::Error>(self) -> Result<Vec<T>, E> {
        Ok(Vec::new())
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Vec<T>, D::Error> {
        one_or_many(deserializer)
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        // JSON gives no length up front, so the vector grew in steps (at least four slots for
        // one element); an inventory keeps these lists for as long as the VM exists, and the
        // unused slots were a third of every VM record.
        items.shrink_to_fit();
        Ok(items)
    }

    fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Vec<T>, A::Error> {
        Self::from_value(Value::deserialize(de::value::MapAccessDeserializer::new(
            map,
        ))?)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Vec<T>, E> {
        Self::from_value(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Vec<T>, E> {
        Self::from_value(Value::from(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Vec<T>, E> {
        Self::from_value(Value::from(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Vec<T>, E> {
        Self::from_value(Value::from(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<T>, E> {
        Self::from_value(Value::from(v))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Vec<T>, E> {
        Self::from_value(Value::String(v))
    }
}

/// `{"value":[...],"Count":n}` is how Windows PowerShell 5.1 writes an array when `System.Array`
/// has extended type data (some modules add a `Count` script property): the array itself.
fn unwrap_array_object(value: Value) -> Value {
    match value {
        Value::Object(mut map)
            if map.len() == 2
                && map.contains_key("Count")
                && map.get("value").is_some_and(Value::is_array) =>
        {
            map.remove("value").unwrap_or(Value::Null)
        }
        other => other,
    }
}

/// Deserializes `T`, treating an explicit `null` like a missing value (`T::default()`).
///
/// Use with `#[serde(default, deserialize_with = "psjson::null_as_default")]`.
pub fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// A property that may be missing, explicitly `null`, or set.
///
/// Use with `#[serde(default)]`: a missing property gives [`Presence::Missing`], `null` gives
/// [`Presence::Null`]. Scripts use the difference for "not collected" versus "collected, none".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Presence<T> {
    /// The property was not in the document.
    #[default]
    Missing,
    /// The property was `null`.
    Null,
    /// The property had a value.
    Value(T),
}

impl<T> Presence<T> {
    /// The value, if set.
    pub fn value(&self) -> Option<&T> {
        match self {
            Self::Value(v) => Some(v),
            _ => None,
        }
    }

    /// The value, if set (consuming).
    pub fn into_option(self) -> Option<T> {
        match self {
            Self::Value(v) => Some(v),
            _ => None,
        }
    }

    /// Whether the property was absent from the document.
    pub fn is_missing(&self) -> bool {
        matches!(self, Self::Missing)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Presence<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(match Option::<T>::deserialize(deserializer)? {
            None => Self::Null,
            Some(v) => Self::Value(v),
        })
    }
}

impl<T: Serialize> Serialize for Presence<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Value(v) => v.serialize(serializer),
            _ => serializer.serialize_none(),
        }
    }
}

/// An enum PowerShell may write as its number or its name.
pub trait PsEnum: Sized {
    /// The value for a numeric code (any code must map; use an `Other` variant).
    fn from_code(code: i64) -> Option<Self>;
    /// The value for a name, compared case-insensitively.
    fn from_name(name: &str) -> Option<Self>;
}

/// Deserializes a [`PsEnum`] from a number, a numeric string or a name.
pub fn enum_code_or_name<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: PsEnum,
{
    let value = Value::deserialize(deserializer)?;
    enum_from_value(&value).map_err(de::Error::custom)
}

/// A [`PsEnum`] from a JSON value (number, numeric string or name).
pub fn enum_from_value<T: PsEnum>(value: &Value) -> Result<T, String> {
    match value {
        Value::Number(n) => n
            .as_i64()
            .and_then(T::from_code)
            .ok_or_else(|| format!("unknown enum code {n}")),
        Value::String(s) => {
            let s = s.trim();
            match s.parse::<i64>() {
                Ok(code) => T::from_code(code).ok_or_else(|| format!("unknown enum code {code}")),
                Err(_) => T::from_name(s).ok_or_else(|| format!("unknown enum name {s:?}")),
            }
        }
        other => Err(format!("expected an enum number or name, found {other}")),
    }
}

/// A point in time with millisecond precision, as PowerShell writes `DateTime` values.
///
/// Parses `"/Date(ms)/"` and `"/Date(ms+hhmm)/"` (milliseconds since the Unix epoch, UTC; the
/// offset is informational), ISO 8601 / RFC 3339 strings (`2025-06-01T10:00:00Z`, with
/// fractions or an offset; without an offset the time counts as UTC), and the
/// `{"value": ..., "DisplayHint": ..., "DateTime": ...}` object `Get-Date | ConvertTo-Json`
/// writes. Serializes as RFC 3339 UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    unix_millis: i64,
}

impl Timestamp {
    /// The time `unix_millis` milliseconds after 1970-01-01T00:00:00Z.
    pub fn from_unix_millis(unix_millis: i64) -> Self {
        Self { unix_millis }
    }

    /// Milliseconds since 1970-01-01T00:00:00Z.
    pub fn unix_millis(self) -> i64 {
        self.unix_millis
    }

    /// Parses any of the forms listed on the type.
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        if let Some(inner) = text
            .strip_prefix("/Date(")
            .and_then(|t| t.strip_suffix(")/"))
        {
            // The number may be negative and may be followed by an offset (+hhmm / -hhmm).
            let split = inner
                .char_indices()
                .skip(1)
                .find(|(_, c)| *c == '+' || *c == '-')
                .map_or(inner.len(), |(i, _)| i);
            let millis = inner.get(..split)?.parse::<i64>().ok()?;
            return Some(Self::from_unix_millis(millis));
        }
        parse_iso8601(text).map(Self::from_unix_millis)
    }

    fn from_value(value: &Value) -> Result<Self, String> {
        match value {
            Value::String(s) => Self::parse(s).ok_or_else(|| format!("not a date: {s:?}")),
            Value::Object(map) => map
                .get("value")
                .ok_or_else(|| "date object without a value property".to_owned())
                .and_then(Self::from_value),
            Value::Number(n) => n
                .as_i64()
                .map(Self::from_unix_millis)
                .ok_or_else(|| format!("not a date: {n}")),
            other => Err(format!("expected a date, found {other}")),
        }
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.unix_millis.div_euclid(1000);
        let millis = self.unix_millis.rem_euclid(1000);
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
            rem / 3600,
            (rem % 3600) / 60,
            rem % 60
        )?;
        if millis != 0 {
            write!(f, ".{millis:03}")?;
        }
        f.write_str("Z")
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        Self::from_value(&value).map_err(de::Error::custom)
    }
}

fn parse_iso8601(text: &str) -> Option<i64> {
    let (date, time) = text.split_once(['T', ' '])?;
    let mut parts = date.splitn(3, '-');
    let year: i64 = parts.next()?.parse().ok()?;
    let month: u32 = parts.next()?.parse().ok()?;
    let day: u32 = parts.next()?.parse().ok()?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    // Split off the zone: Z, +hh:mm, -hh:mm, +hhmm or none.
    let (clock, offset_minutes) = if let Some(c) = time.strip_suffix(['Z', 'z']) {
        (c, 0i64)
    } else if let Some(pos) = time.rfind(['+', '-']) {
        let (c, zone) = time.split_at(pos);
        let sign = if zone.starts_with('-') { -1 } else { 1 };
        let digits: String = zone.chars().filter(char::is_ascii_digit).collect();
        if digits.len() != 4 {
            return None;
        }
        let hours: i64 = digits.get(..2)?.parse().ok()?;
        let minutes: i64 = digits.get(2..)?.parse().ok()?;
        (c, sign * (hours * 60 + minutes))
    } else {
        (time, 0)
    };
    let (hms, fraction) = match clock.split_once(['.', ',']) {
        Some((hms, f)) => (hms, f),
        None => (clock, ""),
    };
    let mut hms = hms.splitn(3, ':');
    let hour: i64 = hms.next()?.parse().ok()?;
    let minute: i64 = hms.next()?.parse().ok()?;
    let second: i64 = hms.next().unwrap_or("0").parse().ok()?;
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let millis = if fraction.is_empty() {
        0
    } else {
        if !fraction.chars().all(|c| c.is_ascii_digit()) {
            return None;
        }
        let padded = format!("{fraction:0<3}");
        padded.get(..3)?.parse::<i64>().ok()?
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_minutes * 60;
    Some(secs * 1000 + millis)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Proleptic Gregorian date of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// `TimeSpan` values as [`std::time::Duration`].
///
/// Accepts plain seconds (integer or fractional), a `TimeSpan` object (`Ticks`, else
/// `TotalMilliseconds`/`TotalSeconds`, else `Days`/`Hours`/`Minutes`/`Seconds`/`Milliseconds`),
/// or the .NET string form `[-][d.]hh:mm:ss[.fffffff]`. Negative spans are rejected. Use with
/// `#[serde(with = "psjson::duration")]`; serializes as whole seconds.
pub mod duration {
    use super::*;

    /// 100-nanosecond ticks per second.
    const TICKS_PER_SECOND: u64 = 10_000_000;

    /// Parses a `TimeSpan` from a JSON value.
    pub fn from_value(value: &Value) -> Result<Duration, String> {
        match value {
            Value::Number(n) => {
                if let Some(secs) = n.as_u64() {
                    Ok(Duration::from_secs(secs))
                } else {
                    n.as_f64()
                        .filter(|s| s.is_finite() && *s >= 0.0)
                        .map(Duration::from_secs_f64)
                        .ok_or_else(|| format!("not a non-negative number of seconds: {n}"))
                }
            }
            Value::String(s) => parse(s).ok_or_else(|| format!("not a time span: {s:?}")),
            Value::Object(map) => {
                if let Some(ticks) = map.get("Ticks").and_then(Value::as_i64) {
                    let ticks = u64::try_from(ticks)
                        .map_err(|_| format!("negative time span of {ticks} ticks"))?;
                    return Ok(Duration::from_secs(ticks / TICKS_PER_SECOND)
                        + Duration::from_nanos((ticks % TICKS_PER_SECOND) * 100));
                }
                if let Some(ms) = map.get("TotalMilliseconds").and_then(Value::as_f64) {
                    return from_value(&Value::from(ms / 1000.0));
                }
                if let Some(s) = map.get("TotalSeconds") {
                    return from_value(s);
                }
                let part = |k: &str| map.get(k).and_then(Value::as_u64).unwrap_or(0);
                if ["Days", "Hours", "Minutes", "Seconds"]
                    .iter()
                    .any(|k| map.contains_key(*k))
                {
                    let secs = part("Days") * 86_400
                        + part("Hours") * 3600
                        + part("Minutes") * 60
                        + part("Seconds");
                    return Ok(
                        Duration::from_secs(secs) + Duration::from_millis(part("Milliseconds"))
                    );
                }
                Err("time span object without Ticks, TotalSeconds or parts".to_owned())
            }
            other => Err(format!("expected a time span, found {other}")),
        }
    }

    /// Parses the .NET `TimeSpan` string form `[d.]hh:mm:ss[.fffffff]`.
    pub fn parse(text: &str) -> Option<Duration> {
        let text = text.trim();
        if text.starts_with('-') {
            return None;
        }
        let (days, rest) = match text.split_once(':') {
            Some((head, _)) if head.contains('.') => {
                let (d, r) = text.split_once('.')?;
                (d.parse::<u64>().ok()?, r)
            }
            Some(_) => (0, text),
            None => return None,
        };
        let mut parts = rest.splitn(3, ':');
        let hours: u64 = parts.next()?.parse().ok()?;
        let minutes: u64 = parts.next()?.parse().ok()?;
        let seconds = parts.next()?;
        let (whole, fraction) = seconds.split_once('.').unwrap_or((seconds, ""));
        let whole: u64 = whole.parse().ok()?;
        if hours > 23 || minutes > 59 || whole > 59 {
            return None;
        }
        let nanos = if fraction.is_empty() {
            0
        } else {
            if fraction.len() > 9 || !fraction.chars().all(|c| c.is_ascii_digit()) {
                return None;
            }
            format!("{fraction:0<9}").parse::<u32>().ok()?
        };
        Some(
            Duration::from_secs(days * 86_400 + hours * 3600 + minutes * 60 + whole)
                + Duration::from_nanos(u64::from(nanos)),
        )
    }

    /// Serde `serialize_with`: whole seconds.
    pub fn serialize<S: Serializer>(d: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(d.as_secs())
    }

    /// Serde `deserialize_with`: any form listed on the module.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let value = Value::deserialize(deserializer)?;
        from_value(&value).map_err(de::Error::custom)
    }
}

/// A .NET `System.Version`: `Major.Minor[.Build[.Revision]]`.
///
/// Parses `{"Major":10,"Minor":0,"Build":20348,"Revision":-1,...}` objects (`-1` means unset)
/// and `"10.0.20348"` strings; serializes as the string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PsVersion {
    /// Major part.
    pub major: u32,
    /// Minor part.
    pub minor: u32,
    /// Build part, if set.
    pub build: Option<u32>,
    /// Revision part, if set.
    pub revision: Option<u32>,
}

impl PsVersion {
    /// Parses `Major.Minor[.Build[.Revision]]`.
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.trim().split('.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        let build = parts.next().map(str::parse).transpose().ok()?;
        let revision = parts.next().map(str::parse).transpose().ok()?;
        if parts.next().is_some() || (revision.is_some() && build.is_none()) {
            return None;
        }
        Some(Self {
            major,
            minor,
            build,
            revision,
        })
    }

    fn from_value(value: &Value) -> Result<Self, String> {
        match value {
            Value::String(s) => Self::parse(s).ok_or_else(|| format!("not a version: {s:?}")),
            Value::Object(map) => {
                let part = |k: &str| -> Result<Option<u32>, String> {
                    match map.get(k).and_then(Value::as_i64) {
                        None | Some(-1) => Ok(None),
                        Some(n) => u32::try_from(n)
                            .map(Some)
                            .map_err(|_| format!("version part {k} out of range: {n}")),
                    }
                };
                let major = part("Major")?.ok_or("version object without Major")?;
                let minor = part("Minor")?.unwrap_or(0);
                Ok(Self {
                    major,
                    minor,
                    build: part("Build")?,
                    revision: part("Revision")?,
                })
            }
            other => Err(format!("expected a version, found {other}")),
        }
    }
}

impl fmt::Display for PsVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)?;
        if let Some(b) = self.build {
            write!(f, ".{b}")?;
            if let Some(r) = self.revision {
                write!(f, ".{r}")?;
            }
        }
        Ok(())
    }
}

impl Serialize for PsVersion {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PsVersion {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        Self::from_value(&value).map_err(de::Error::custom)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip() {
        for text in [
            "2025-06-01T00:00:00Z",
            "2000-02-29T01:01:01.250Z",
            "1969-12-31T23:59:59Z",
        ] {
            assert_eq!(Timestamp::parse(text).unwrap().to_string(), text);
        }
        assert_eq!(
            Timestamp::parse("/Date(-1000)/").unwrap().to_string(),
            "1969-12-31T23:59:59Z"
        );
        assert!(Timestamp::parse("2025-13-01T00:00:00Z").is_none());
        assert!(Timestamp::parse("yesterday").is_none());
    }

    #[test]
    fn spans_and_versions() {
        assert_eq!(duration::parse("00:00:05"), Some(Duration::from_secs(5)));
        assert_eq!(
            duration::parse("1.02:03:04.5"),
            Some(Duration::from_millis(93_784_500))
        );
        assert_eq!(duration::parse("-00:00:01"), None);
        assert_eq!(duration::parse("25:00:00"), None);
        assert_eq!(PsVersion::parse("10.0").unwrap().to_string(), "10.0");
        assert!(PsVersion::parse("10").is_none());
        assert!(PsVersion::parse("1.2.3.4.5").is_none());
    }
}
