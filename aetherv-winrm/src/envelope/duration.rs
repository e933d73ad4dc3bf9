//! `xs:duration` as used by WS-Management (`PT60S`, `PT20.000S`, `P0DT0H0M0S`).

use std::time::Duration;

use super::EnvelopeError;

/// Formats a duration as `xs:duration`: `PT60S`, or `PT1.500S` when it has a fractional part.
///
/// Precision is the millisecond; anything finer is truncated.
pub fn format_duration(d: Duration) -> String {
    let secs = d.as_secs();
    let millis = d.subsec_millis();
    if millis == 0 {
        format!("PT{secs}S")
    } else {
        format!("PT{secs}.{millis:03}S")
    }
}

/// Parses an `xs:duration` such as `PT60S`, `PT20.000S`, `PT1H30M`, `P1DT2H` or `P0DT0H0M0S`.
///
/// Days, hours, minutes and (fractional) seconds are exact; a year counts as 365 days and a
/// month as 30 days (WS-Management never sends them). Fractions finer than a nanosecond are
/// ignored. Negative durations and values that overflow are errors. Surrounding whitespace is
/// allowed.
pub fn parse_duration(text: &str) -> Result<Duration, EnvelopeError> {
    parse(text.trim()).map_err(|detail| EnvelopeError::Invalid {
        field: "duration",
        detail: format!("{detail} in {:?}", truncate(text, 64)),
    })
}

pub(crate) fn truncate(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

fn parse(s: &str) -> Result<Duration, &'static str> {
    if s.starts_with('-') {
        return Err("negative duration");
    }
    let rest = s
        .strip_prefix('P')
        .ok_or("duration does not start with P")?;
    if rest.is_empty() {
        return Err("empty duration");
    }
    let (date, time) = match rest.split_once('T') {
        Some((_, "")) => return Err("empty time part"),
        Some((d, t)) => (d, Some(t)),
        None => (rest, None),
    };

    let mut total = Duration::ZERO;
    let mut components = 0;
    let mut add = |value: Duration| -> Result<(), &'static str> {
        total = total.checked_add(value).ok_or("duration overflows")?;
        Ok(())
    };

    // Date part: nY nM nD, in this order.
    let mut order = 0;
    let mut d = date;
    while !d.is_empty() {
        let (number, unit, next) = split_number(d)?;
        if number.contains('.') {
            return Err("fraction outside seconds");
        }
        let n: u64 = number.parse().map_err(|_| "number too large")?;
        let (rank, unit_secs) = match unit {
            'Y' => (1, 365 * 86_400),
            'M' => (2, 30 * 86_400),
            'D' => (3, 86_400),
            _ => return Err("unknown date unit"),
        };
        if rank <= order {
            return Err("date units out of order");
        }
        order = rank;
        add(Duration::from_secs(
            n.checked_mul(unit_secs).ok_or("duration overflows")?,
        ))?;
        components += 1;
        d = next;
    }

    if let Some(time) = time {
        let mut order = 0;
        let mut t = time;
        while !t.is_empty() {
            let (number, unit, next) = split_number(t)?;
            let (rank, unit_secs) = match unit {
                'H' => (1, 3_600),
                'M' => (2, 60),
                'S' => (3, 1),
                _ => return Err("unknown time unit"),
            };
            if rank <= order {
                return Err("time units out of order");
            }
            order = rank;
            let (whole, fraction) = match number.split_once('.') {
                Some(_) if unit != 'S' => return Err("fraction outside seconds"),
                Some((w, f)) => (w, f),
                None => (number, ""),
            };
            if whole.is_empty() && fraction.is_empty() {
                return Err("missing number");
            }
            let n: u64 = if whole.is_empty() {
                0
            } else {
                whole.parse().map_err(|_| "number too large")?
            };
            add(Duration::from_secs(
                n.checked_mul(unit_secs).ok_or("duration overflows")?,
            ))?;
            if !fraction.is_empty() {
                if !fraction.bytes().all(|b| b.is_ascii_digit()) {
                    return Err("invalid fraction");
                }
                let mut nanos: u32 = 0;
                for (i, b) in fraction.bytes().take(9).enumerate() {
                    nanos += u32::from(b - b'0') * 10u32.pow(8 - i as u32);
                }
                add(Duration::from_nanos(u64::from(nanos)))?;
            }
            components += 1;
            t = next;
        }
    }

    if components == 0 {
        return Err("no duration components");
    }
    Ok(total)
}

/// Splits `12.5S...` into (`12.5`, `S`, `...`).
fn split_number(s: &str) -> Result<(&str, char, &str), &'static str> {
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or("number without unit")?;
    if end == 0 {
        return Err("unit without number");
    }
    let number = &s[..end];
    if number.matches('.').count() > 1 {
        return Err("invalid number");
    }
    let mut chars = s[end..].chars();
    let unit = chars.next().ok_or("number without unit")?;
    Ok((number, unit, chars.as_str()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_windows_forms() {
        let cases = [
            ("PT60S", Duration::from_secs(60)),
            ("PT20.000S", Duration::from_secs(20)),
            ("PT7200.000S", Duration::from_secs(7200)),
            ("PT0.5S", Duration::from_millis(500)),
            ("PT.25S", Duration::from_millis(250)),
            ("PT1.123456789123S", Duration::new(1, 123_456_789)),
            ("PT5M", Duration::from_secs(300)),
            ("PT1H30M15.5S", Duration::from_millis(5_415_500)),
            ("P0DT0H0M0S", Duration::ZERO),
            ("P1DT2H", Duration::from_secs(93_600)),
            ("P2D", Duration::from_secs(172_800)),
            ("  PT3S \n", Duration::from_secs(3)),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_duration(text).unwrap(), expected, "{text}");
        }
    }

    #[test]
    fn rejects_garbage() {
        for text in [
            "",
            "P",
            "PT",
            "60",
            "PT60",
            "-PT5S",
            "PTS",
            "PT1.2.3S",
            "PT5X",
            "PT1.5M",
            "P1.5D",
            "PT5S3M",
            "P1DT",
            "PT99999999999999999999S",
            "P99999999999999999Y",
            "PT1H2H",
        ] {
            assert!(parse_duration(text).is_err(), "{text:?} accepted");
        }
    }

    #[test]
    fn formats() {
        assert_eq!(format_duration(Duration::from_secs(60)), "PT60S");
        assert_eq!(format_duration(Duration::from_millis(20_005)), "PT20.005S");
        assert_eq!(
            format_duration(Duration::from_micros(1_500_900)),
            "PT1.500S"
        );
        assert_eq!(format_duration(Duration::ZERO), "PT0S");
    }
}
