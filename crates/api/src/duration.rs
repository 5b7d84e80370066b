use std::{borrow::Cow, fmt, time};

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// The duration syntax Gateway API uses: up to four `<number><unit>` parts, units `h`, `m`,
/// `s`, `ms`. Kept as the string the user wrote so a round trip through the API server never
/// rewrites a GitOps-owned field.
pub(crate) const PATTERN: &str = "^([0-9]{1,5}(h|m|s|ms)){1,4}$";

/// A duration such as `250ms`, `5s` or `1h30m`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Duration(pub String);

impl Duration {
    /// Parses the duration, or says why it is not one.
    pub fn parse(&self) -> Result<time::Duration, String> {
        parse(&self.0)
    }
}

impl From<&str> for Duration {
    fn from(s: &str) -> Self {
        Duration(s.to_owned())
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": PATTERN,
            "description": "A duration: up to four <number><unit> parts with units h, m, s or ms, e.g. 250ms, 5s, 1m30s.",
        })
    }
}

fn parse(s: &str) -> Result<time::Duration, String> {
    let bad = || format!("{s:?} is not a duration; write it like 250ms, 5s or 1m30s");
    if s.is_empty() {
        return Err(bad());
    }
    let mut total = time::Duration::ZERO;
    let mut parts = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 5 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (time::Duration::from_millis(n), 2)
        } else if rest.starts_with('h') {
            (time::Duration::from_secs(n * 3600), 1)
        } else if rest.starts_with('m') {
            (time::Duration::from_secs(n * 60), 1)
        } else if rest.starts_with('s') {
            (time::Duration::from_secs(n), 1)
        } else {
            return Err(bad());
        };
        total += unit;
        rest = &rest[len..];
        parts += 1;
    }
    if parts > 4 {
        return Err(bad());
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_gateway_api_durations() {
        let ms = time::Duration::from_millis;
        assert_eq!(parse("250ms"), Ok(ms(250)));
        assert_eq!(parse("5s"), Ok(ms(5_000)));
        assert_eq!(parse("1m30s"), Ok(ms(90_000)));
        assert_eq!(parse("1h0m0s500ms"), Ok(ms(3_600_500)));
    }

    #[test]
    fn rejects_what_the_schema_pattern_rejects() {
        let pattern = regex::Regex::new(PATTERN).expect("pattern compiles");
        for bad in [
            "",
            "5",
            "s",
            "1.5s",
            "-1s",
            "1d",
            "123456s",
            "1h1m1s1ms1s",
            "5 s",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
            assert!(!pattern.is_match(bad), "{bad:?} matched the schema pattern");
        }
        for good in ["0s", "99999ms", "1h2m3s4ms"] {
            assert!(parse(good).is_ok(), "{good:?} rejected");
            assert!(
                pattern.is_match(good),
                "{good:?} not matched by the schema pattern"
            );
        }
    }
}
