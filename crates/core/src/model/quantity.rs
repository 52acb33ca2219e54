//! Values with a text form in the document: `Memory`, `Cpus`, durations and `Timestamp`, each
//! with its parser, canonical printer, serde and hand-written JSON schema.
//!
//! Each value has exactly one printed form, so two documents that mean the same print the
//! same (`rtctl diff` shows no change for `1024Mi` vs `1Gi`), and every printed form parses
//! back to the value it came from.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::validate::Quoted;

/// A quantity (memory, CPUs) that does not parse or is out of range; the message names the
/// input and says what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct QuantityError(String);

/// Memory in bytes. Written as an integer with an optional unit: decimal `k`, `M`, `G` or
/// binary `Ki`, `Mi`, `Gi`, with decimals allowed when the result is a whole number of bytes
/// (`1.5Gi`). Printed in the largest unit that divides it exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Memory(u64);

/// Units from largest to smallest, so the printer picks the largest exact one.
const MEMORY_UNITS: [(&str, u64); 6] = [
    ("Gi", 1 << 30),
    ("G", 1_000_000_000),
    ("Mi", 1 << 20),
    ("M", 1_000_000),
    ("Ki", 1 << 10),
    ("k", 1_000),
];

const MEMORY_PATTERN: &str = r"^[0-9]+(\.[0-9]+)?(k|M|G|Ki|Mi|Gi)?$";

impl Memory {
    /// Docker takes the limit as an i64, so larger values are refused when parsing.
    pub(crate) const MAX_BYTES: u64 = i64::MAX as u64;

    /// A limit of `bytes`; values above [`Memory::MAX_BYTES`] are clamped to it.
    pub const fn from_bytes(bytes: u64) -> Memory {
        if bytes > Memory::MAX_BYTES {
            Memory(Memory::MAX_BYTES)
        } else {
            Memory(bytes)
        }
    }

    /// The limit in bytes (Docker's `Memory`).
    pub const fn bytes(self) -> u64 {
        self.0
    }
}

impl FromStr for Memory {
    type Err = QuantityError;

    fn from_str(text: &str) -> Result<Memory, QuantityError> {
        let quoted = Quoted(text);
        let expected = || {
            QuantityError(format!(
                "{quoted:?} is not a memory quantity: expected a number with an optional unit \
                 k, M, G, Ki, Mi or Gi, such as 512Mi"
            ))
        };
        let number_end = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(number_end);
        let decimal = Decimal::parse(number).ok_or_else(expected)?;
        let multiplier = match unit {
            "" => 1,
            _ => MEMORY_UNITS
                .iter()
                .find(|(suffix, _)| *suffix == unit)
                .map(|(_, multiplier)| *multiplier)
                .ok_or_else(|| {
                    QuantityError(format!(
                        "{quoted:?} has unknown unit {:?}: use k, M, G (powers of 1000) \
                         or Ki, Mi, Gi (powers of 1024)",
                        Quoted(unit)
                    ))
                })?,
        };
        let bytes = match decimal.times(u128::from(multiplier)) {
            Scaled::Exact(bytes) => bytes,
            Scaled::Fractional => {
                return Err(QuantityError(format!(
                    "{quoted:?} is not a whole number of bytes"
                )));
            }
            Scaled::TooLarge => u128::MAX,
        };
        u64::try_from(bytes)
            .ok()
            .filter(|bytes| *bytes <= Memory::MAX_BYTES)
            .map(Memory)
            .ok_or_else(|| QuantityError(format!("{quoted:?} is too large for a memory limit")))
    }
}

impl fmt::Display for Memory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 != 0 {
            for (suffix, multiplier) in MEMORY_UNITS {
                if self.0 % multiplier == 0 {
                    return write!(f, "{}{suffix}", self.0 / multiplier);
                }
            }
        }
        write!(f, "{}", self.0)
    }
}

/// A CPU limit, kept as nano-CPUs (Docker's `NanoCpus`). Written as a decimal number of CPUs
/// (`"1.5"`, or a YAML number `1.5`) or in milli-CPUs (`500m`); printed as decimal CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cpus(i64);

const NANOS_PER_CPU: i64 = 1_000_000_000;
const CPUS_PATTERN: &str = r"^[0-9]+(\.[0-9]+)?m?$";

impl Cpus {
    /// The largest limit accepted. No host here has more CPUs; the bound is there to catch
    /// `500` written where `500m` was meant, which Docker would refuse only at start time.
    pub(crate) const MAX_CPUS: i64 = 1024;

    /// A limit of `nano_cpus` billionths of a CPU; it must be above 0 and at most
    /// [`Cpus::MAX_CPUS`] CPUs.
    pub fn from_nano_cpus(nano_cpus: i64) -> Result<Cpus, QuantityError> {
        if nano_cpus <= 0 {
            return Err(QuantityError(
                "a CPU limit must be greater than 0".to_owned(),
            ));
        }
        if nano_cpus > Cpus::MAX_CPUS * NANOS_PER_CPU {
            return Err(QuantityError(format!(
                "a CPU limit must be at most {} CPUs",
                Cpus::MAX_CPUS
            )));
        }
        Ok(Cpus(nano_cpus))
    }

    /// The limit in billionths of a CPU (Docker's `NanoCpus`).
    pub const fn nano_cpus(self) -> i64 {
        self.0
    }
}

impl FromStr for Cpus {
    type Err = QuantityError;

    fn from_str(text: &str) -> Result<Cpus, QuantityError> {
        let quoted = Quoted(text);
        let (number, nanos_per_unit) = match text.strip_suffix('m') {
            Some(millis) => (millis, NANOS_PER_CPU / 1000),
            None => (text, NANOS_PER_CPU),
        };
        let decimal = Decimal::parse(number).ok_or_else(|| {
            QuantityError(format!(
                "{quoted:?} is not a CPU quantity: expected a number of CPUs such as \"1.5\" or \
                 milli-CPUs such as 500m"
            ))
        })?;
        let nanos = match decimal.times(nanos_per_unit.unsigned_abs().into()) {
            Scaled::Exact(nanos) => i64::try_from(nanos).unwrap_or(i64::MAX),
            Scaled::TooLarge => i64::MAX,
            Scaled::Fractional => {
                return Err(QuantityError(format!(
                    "{quoted:?} is more precise than a billionth of a CPU"
                )));
            }
        };
        Cpus::from_nano_cpus(nanos).map_err(|err| QuantityError(format!("{quoted:?}: {err}")))
    }
}

impl fmt::Display for Cpus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.0 / NANOS_PER_CPU;
        let fraction = (self.0 % NANOS_PER_CPU).abs();
        if fraction == 0 {
            write!(f, "{whole}")
        } else {
            let digits = format!("{fraction:09}");
            write!(f, "{whole}.{}", digits.trim_end_matches('0'))
        }
    }
}

/// A non-negative decimal number as written: integer digits, then optional fraction digits.
/// Kept as digits so `1.1Gi` or `0.1` CPU are computed exactly, with no float rounding.
struct Decimal<'a> {
    integer: &'a str,
    fraction: &'a str,
}

enum Scaled {
    Exact(u128),
    Fractional,
    TooLarge,
}

impl<'a> Decimal<'a> {
    fn parse(text: &'a str) -> Option<Decimal<'a>> {
        let (integer, fraction) = match text.split_once('.') {
            Some((integer, fraction)) if !fraction.is_empty() => (integer, fraction),
            Some(_) => return None,
            None => (text, ""),
        };
        let digits = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
        (!integer.is_empty() && digits(integer) && digits(fraction)).then_some(Decimal {
            integer,
            fraction: fraction.trim_end_matches('0'),
        })
    }

    /// The number times `multiplier`, if that is a whole number that fits in a u128.
    fn times(&self, multiplier: u128) -> Scaled {
        let pow10 = |n: usize| u32::try_from(n).ok().and_then(|n| 10u128.checked_pow(n));
        let value = (|| {
            let integer: u128 = self.integer.parse().ok()?;
            let fraction: u128 = if self.fraction.is_empty() {
                0
            } else {
                self.fraction.parse().ok()?
            };
            let scale = pow10(self.fraction.len())?;
            let numerator = integer
                .checked_mul(scale)?
                .checked_add(fraction)?
                .checked_mul(multiplier)?;
            Some((numerator, scale))
        })();
        match value {
            None => Scaled::TooLarge,
            Some((numerator, scale)) if numerator % scale == 0 => Scaled::Exact(numerator / scale),
            Some(_) => Scaled::Fractional,
        }
    }
}

/// A point in time with whole-second precision, printed as RFC 3339 in UTC
/// (`2024-05-01T12:00:00Z`).
///
/// The field is private so every value is already what it prints as: whole seconds between
/// 1970 and the end of year 9999 (the range RFC 3339 and humantime can print). A timestamp
/// read back from etcd then equals the one written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(SystemTime);

impl Timestamp {
    /// The last second RFC 3339 can print: 9999-12-31T23:59:59Z.
    const MAX_UNIX_SECONDS: u64 = 253_402_300_799;

    /// The current time, truncated to the second.
    pub fn now() -> Timestamp {
        Timestamp::from(SystemTime::now())
    }

    /// `seconds` after the Unix epoch (clamped to year 9999).
    pub fn from_unix_seconds(seconds: u64) -> Timestamp {
        Timestamp(UNIX_EPOCH + Duration::from_secs(seconds.min(Timestamp::MAX_UNIX_SECONDS)))
    }

    /// Seconds since the Unix epoch.
    pub fn unix_seconds(self) -> u64 {
        self.0
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }

    /// The time as a `SystemTime`.
    pub fn system_time(self) -> SystemTime {
        self.0
    }
}

impl From<SystemTime> for Timestamp {
    /// Truncates to the second; times before 1970 become the epoch.
    fn from(time: SystemTime) -> Timestamp {
        let seconds = time
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Timestamp::from_unix_seconds(seconds)
    }
}

impl From<Timestamp> for SystemTime {
    fn from(timestamp: Timestamp) -> SystemTime {
        timestamp.0
    }
}

impl FromStr for Timestamp {
    type Err = humantime::TimestampError;

    /// Parses RFC 3339 in UTC (`Z`), with or without fractional seconds (dropped).
    fn from_str(text: &str) -> Result<Timestamp, Self::Err> {
        humantime::parse_rfc3339_weak(text).map(Timestamp::from)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_rfc3339_seconds(self.0))
    }
}

/// Serde for a `Duration` written the humantime way (`30s`, `1m 30s`), for
/// `#[serde(with = "quantity::duration")]`.
pub(crate) mod duration {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(
        value: &Duration,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&humantime::format_duration(*value))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Duration, D::Error> {
        struct DurationVisitor;

        impl Visitor<'_> for DurationVisitor {
            type Value = Duration;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration with a unit, such as \"30s\" or \"1m 30s\"")
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<Duration, E> {
                humantime::parse_duration(text)
                    .map_err(|err| E::custom(format!("invalid duration {:?}: {err}", Quoted(text))))
            }
        }

        deserializer.deserialize_str(DurationVisitor)
    }
}

/// Serde for an optional humantime duration (absent or `null`: none), for
/// `#[serde(default, with = "quantity::optional_duration")]`.
pub(crate) mod optional_duration {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(
        value: &Option<Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(value) => super::duration::serialize(value, serializer),
            None => serializer.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        #[derive(Deserialize)]
        struct Wrapped(#[serde(with = "super::duration")] Duration);
        Ok(Option::<Wrapped>::deserialize(deserializer)?.map(|Wrapped(duration)| duration))
    }
}

/// The schema of a humantime duration: numbers with units (`30s`, `1m 30s`). ASCII units
/// only: humantime also reads `µs`, but no stop timeout needs microseconds.
pub(crate) fn duration_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "pattern": r"^([0-9]+ *[a-zA-Z]+ *)+$",
    })
}

/// Serde and schema for the three string-like values: printed with `Display`, read with
/// `FromStr`, plus any non-string YAML scalars each one accepts.
macro_rules! string_value {
    ($ty:ident, $expecting:literal, $schema:expr) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl JsonSchema for $ty {
            fn inline_schema() -> bool {
                true
            }

            fn schema_name() -> Cow<'static, str> {
                stringify!($ty).into()
            }

            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                $schema
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<$ty, D::Error> {
                struct ValueVisitor;

                impl Visitor<'_> for ValueVisitor {
                    type Value = $ty;

                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($expecting)
                    }

                    fn visit_str<E: de::Error>(self, text: &str) -> Result<$ty, E> {
                        <$ty as ScalarInput>::from_text(text).map_err(E::custom)
                    }

                    fn visit_u64<E: de::Error>(self, number: u64) -> Result<$ty, E> {
                        <$ty as ScalarInput>::from_number(&number.to_string()).map_err(E::custom)
                    }

                    fn visit_i64<E: de::Error>(self, number: i64) -> Result<$ty, E> {
                        <$ty as ScalarInput>::from_number(&number.to_string()).map_err(E::custom)
                    }

                    fn visit_f64<E: de::Error>(self, number: f64) -> Result<$ty, E> {
                        // Rust prints an f64 as the shortest decimal that reads back the same
                        // (never in exponent form), so `0.1` stays exactly one tenth.
                        <$ty as ScalarInput>::from_number(&number.to_string()).map_err(E::custom)
                    }
                }

                deserializer.deserialize_any(ValueVisitor)
            }
        }
    };
}

/// How a value reads a YAML string, and a bare YAML number (given as its decimal text).
trait ScalarInput: Sized {
    fn from_text(text: &str) -> Result<Self, String>;
    fn from_number(text: &str) -> Result<Self, String>;
}

impl ScalarInput for Memory {
    fn from_text(text: &str) -> Result<Memory, String> {
        text.parse().map_err(|err: QuantityError| err.to_string())
    }

    /// A bare number is bytes, as in `memory: 1048576`; it must be a whole number.
    fn from_number(text: &str) -> Result<Memory, String> {
        Memory::from_text(text)
    }
}

impl ScalarInput for Cpus {
    fn from_text(text: &str) -> Result<Cpus, String> {
        text.parse().map_err(|err: QuantityError| err.to_string())
    }

    /// A bare number is CPUs, as in `cpus: 1.5`.
    fn from_number(text: &str) -> Result<Cpus, String> {
        Cpus::from_text(text)
    }
}

const TIMESTAMP_EXAMPLE: &str = "an RFC 3339 time in UTC such as \"2024-05-01T12:00:00Z\"";

impl ScalarInput for Timestamp {
    fn from_text(text: &str) -> Result<Timestamp, String> {
        text.parse().map_err(|err| {
            format!(
                "invalid timestamp {:?} ({err}): expected {TIMESTAMP_EXAMPLE}",
                Quoted(text)
            )
        })
    }

    fn from_number(text: &str) -> Result<Timestamp, String> {
        Err(format!(
            "expected {TIMESTAMP_EXAMPLE}, got the number {text}"
        ))
    }
}

string_value!(
    Memory,
    "a memory quantity such as \"512Mi\"",
    json_schema!({ "type": "string", "pattern": MEMORY_PATTERN })
);
string_value!(
    Cpus,
    "a CPU quantity such as \"1.5\" or \"500m\"",
    json_schema!({ "type": "string", "pattern": CPUS_PATTERN })
);
string_value!(
    Timestamp,
    "an RFC 3339 timestamp such as \"2024-05-01T12:00:00Z\"",
    json_schema!({ "type": "string", "format": "date-time" })
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_parses_every_documented_form_and_prints_canonically() {
        let cases: &[(&str, u64, &str)] = &[
            ("512Mi", 512 << 20, "512Mi"),
            ("1G", 1_000_000_000, "1G"),
            ("1Gi", 1 << 30, "1Gi"),
            ("500M", 500_000_000, "500M"),
            ("64k", 64_000, "64k"),
            ("64Ki", 64 << 10, "64Ki"),
            ("1048576", 1 << 20, "1Mi"),
            ("1.5Gi", 3 << 29, "1536Mi"),
            ("1024Mi", 1 << 30, "1Gi"),
            ("0.5k", 500, "500"),
            ("2000000000", 2_000_000_000, "2G"),
            ("1024000", 1_024_000, "1000Ki"),
            ("1000001", 1_000_001, "1000001"),
            ("1.50Mi", 3 << 19, "1536Ki"),
            ("0", 0, "0"),
        ];
        for (text, bytes, printed) in cases {
            let memory: Memory = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(memory.bytes(), *bytes, "{text}");
            assert_eq!(memory.to_string(), *printed, "{text}");
            assert_eq!(
                printed.parse::<Memory>().unwrap(),
                memory,
                "{printed} must read back"
            );
        }
    }

    #[test]
    fn memory_rejects_malformed_and_inexact_quantities() {
        let cases: &[(&str, &str)] = &[
            ("", "not a memory quantity"),
            ("64K", "unknown unit \"K\""),
            ("64MB", "unknown unit \"MB\""),
            ("500m", "unknown unit \"m\""),
            ("64 Mi", "unknown unit \" Mi\""),
            ("-1", "not a memory quantity"),
            ("Mi", "not a memory quantity"),
            (".5Mi", "not a memory quantity"),
            ("1.Mi", "not a memory quantity"),
            ("1.2.3", "not a memory quantity"),
            ("1e3", "unknown unit \"e3\""),
            ("1.5", "not a whole number of bytes"),
            ("0.0001k", "not a whole number of bytes"),
            ("99999999999Gi", "too large"),
            ("99999999999999999999999999999999999999999", "too large"),
        ];
        for (text, message) in cases {
            let err = text.parse::<Memory>().expect_err(text).to_string();
            assert!(err.contains(message), "{text:?}: {err}");
        }
    }

    #[test]
    fn cpus_parse_decimals_and_millis_and_print_decimals() {
        let cases: &[(&str, i64, &str)] = &[
            ("1.5", 1_500_000_000, "1.5"),
            ("500m", 500_000_000, "0.5"),
            ("2", 2_000_000_000, "2"),
            ("0.001", 1_000_000, "0.001"),
            ("250.5m", 250_500_000, "0.2505"),
            ("0.000000001", 1, "0.000000001"),
            ("1024", 1024 * NANOS_PER_CPU, "1024"),
            ("1.500", 1_500_000_000, "1.5"),
        ];
        for (text, nanos, printed) in cases {
            let cpus: Cpus = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(cpus.nano_cpus(), *nanos, "{text}");
            assert_eq!(cpus.to_string(), *printed, "{text}");
            assert_eq!(
                printed.parse::<Cpus>().unwrap(),
                cpus,
                "{printed} must read back"
            );
        }
    }

    #[test]
    fn cpus_reject_zero_too_many_and_malformed() {
        let cases: &[(&str, &str)] = &[
            ("0", "greater than 0"),
            ("0m", "greater than 0"),
            ("0.0", "greater than 0"),
            ("1025", "at most 1024"),
            ("1024.5", "at most 1024"),
            ("99999999999999999999999", "at most 1024"),
            ("-1", "not a CPU quantity"),
            ("", "not a CPU quantity"),
            ("m", "not a CPU quantity"),
            ("1,5", "not a CPU quantity"),
            ("1.5x", "not a CPU quantity"),
            ("0.0000000001", "more precise"),
            ("0.0000005m", "more precise"),
        ];
        for (text, message) in cases {
            let err = text.parse::<Cpus>().expect_err(text).to_string();
            assert!(err.contains(message), "{text:?}: {err}");
        }
    }

    #[derive(Debug, Deserialize, Serialize, PartialEq)]
    struct Limits {
        memory: Memory,
        cpus: Cpus,
    }

    #[test]
    fn quantities_accept_bare_yaml_numbers() {
        let limits: Limits = serde_yaml::from_str("memory: 1048576\ncpus: 1.5\n").unwrap();
        assert_eq!(limits.memory.bytes(), 1 << 20);
        assert_eq!(limits.cpus.nano_cpus(), 1_500_000_000);
        let limits: Limits = serde_yaml::from_str("memory: 64Mi\ncpus: 0.1\n").unwrap();
        assert_eq!(
            limits.cpus.nano_cpus(),
            100_000_000,
            "0.1 must not suffer float rounding"
        );
        let limits: Limits = serde_yaml::from_str("memory: 1Gi\ncpus: 2\n").unwrap();
        assert_eq!(limits.cpus.to_string(), "2");
        let err = serde_yaml::from_str::<Limits>("memory: 1.5\ncpus: 1\n").unwrap_err();
        assert!(
            err.to_string().contains("not a whole number of bytes"),
            "{err}"
        );
        let err = serde_yaml::from_str::<Limits>("memory: 1Mi\ncpus: [1]\n").unwrap_err();
        assert!(err.to_string().contains("a CPU quantity"), "{err}");
    }

    #[test]
    fn quantities_serialize_as_strings_that_read_back() {
        let limits = Limits {
            memory: "1.5Gi".parse().unwrap(),
            cpus: "500m".parse().unwrap(),
        };
        let yaml = serde_yaml::to_string(&limits).unwrap();
        assert_eq!(yaml, "memory: 1536Mi\ncpus: '0.5'\n");
        assert_eq!(serde_yaml::from_str::<Limits>(&yaml).unwrap(), limits);
    }

    #[derive(Debug, Deserialize, Serialize, PartialEq)]
    struct Timeout {
        #[serde(with = "duration")]
        timeout: Duration,
    }

    #[test]
    fn durations_use_humantime_both_ways() {
        for (text, seconds, printed) in [
            ("30s", 30, "30s"),
            ("1m30s", 90, "1m 30s"),
            ("10m", 600, "10m"),
            ("0s", 0, "0s"),
        ] {
            let parsed: Timeout = serde_yaml::from_str(&format!("timeout: {text}")).unwrap();
            assert_eq!(parsed.timeout, Duration::from_secs(seconds), "{text}");
            let yaml = serde_yaml::to_string(&parsed).unwrap();
            assert_eq!(yaml, format!("timeout: {printed}\n"));
            assert_eq!(serde_yaml::from_str::<Timeout>(&yaml).unwrap(), parsed);
        }
        for bad in ["30", "abc", "-5s"] {
            let err = serde_yaml::from_str::<Timeout>(&format!("timeout: '{bad}'")).unwrap_err();
            assert!(err.to_string().contains("invalid duration"), "{bad}: {err}");
        }
        // A bare number has no unit (serde_yaml hands it over as text here; through a
        // serde_yaml::Value, as parse.rs reads, it is an "invalid type" instead).
        let err = serde_yaml::from_str::<Timeout>("timeout: 30").unwrap_err();
        assert!(err.to_string().contains("time unit needed"), "{err}");
    }

    #[test]
    fn timestamps_are_whole_seconds_in_rfc3339() {
        let parsed: Timestamp = "2024-01-02T03:04:05Z".parse().unwrap();
        assert_eq!(parsed.to_string(), "2024-01-02T03:04:05Z");
        let fractional: Timestamp = "2024-01-02T03:04:05.987Z".parse().unwrap();
        assert_eq!(
            fractional, parsed,
            "sub-second precision is dropped on the way in"
        );
        let now = SystemTime::now();
        let truncated = Timestamp::from(now);
        assert_eq!(
            truncated.to_string().parse::<Timestamp>().unwrap(),
            truncated
        );
        assert_eq!(
            Timestamp::from(UNIX_EPOCH - Duration::from_secs(5)).unix_seconds(),
            0
        );
        let far = Timestamp::from_unix_seconds(u64::MAX);
        assert_eq!(far.to_string(), "9999-12-31T23:59:59Z");
        assert!("yesterday".parse::<Timestamp>().is_err());
        let yaml = serde_yaml::to_string(&parsed).unwrap();
        assert_eq!(serde_yaml::from_str::<Timestamp>(&yaml).unwrap(), parsed);
        assert!(serde_yaml::from_str::<Timestamp>("12345").is_err());
    }
}
