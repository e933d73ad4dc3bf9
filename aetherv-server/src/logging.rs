//! Log output: `tracing` events to stderr, as text or JSON lines.
//!
//! Our crates log at the configured level; everything else (hyper, rustls, reqwest...) only
//! at `warn` and above.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// The crates whose level `LOG_LEVEL` sets (as `tracing` targets).
pub const OUR_CRATES: &[&str] = &[
    "aetherv",
    "aetherv_server",
    "aetherv_winrm",
    "aetherv_hyperv",
    "aetherv_provision",
    "aetherv_inventory",
];

/// The level used when the configured one does not make a valid filter.
const FALLBACK_LEVEL: &str = "info";

/// The filter directives for `level`: `warn,aetherv=<level>,aetherv_server=<level>,...`.
#[must_use]
pub fn directives(level: &str) -> String {
    let mut out = String::from("warn");
    for krate in OUR_CRATES {
        out.push(',');
        out.push_str(krate);
        out.push('=');
        out.push_str(level);
    }
    out
}

/// The filter for `level`; `None` when `level` is not a valid level.
fn filter(level: &str) -> Option<EnvFilter> {
    let level = level.trim();
    if level.is_empty() || level.contains([',', '=', '[', ']', '{', '}']) {
        return None;
    }
    EnvFilter::try_new(directives(level)).ok()
}

/// Installs the global subscriber writing to stderr in `format`, with our crates at `level`
/// (error, warn, info, debug or trace). An invalid `level` falls back to `info` with a warning.
/// Does nothing when a global subscriber is already installed (e.g. in tests).
pub fn init(format: LogFormat, level: &str) {
    let (env_filter, fell_back) = match filter(level) {
        Some(f) => (f, false),
        None => (EnvFilter::new(directives(FALLBACK_LEVEL)), true),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(env_filter)
        .with_writer(std::io::stderr);
    let installed = match format {
        LogFormat::Text => builder.try_init().is_ok(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .flatten_event(true)
            .try_init()
            .is_ok(),
    };
    if installed && fell_back {
        tracing::warn!(
            level = %level.escape_debug(),
            fallback = FALLBACK_LEVEL,
            "invalid log level, using the fallback"
        );
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn directives_cover_every_crate() {
        let d = directives("debug");
        assert!(d.starts_with("warn,"));
        for krate in OUR_CRATES {
            assert!(
                d.contains(&format!("{krate}=debug")),
                "{krate} missing in {d}"
            );
        }
    }

    #[test]
    fn valid_levels_make_filters() {
        for level in ["error", "warn", "info", "debug", "trace"] {
            assert!(filter(level).is_some(), "{level}");
        }
    }

    #[test]
    fn bad_levels_are_rejected_not_spliced() {
        for level in ["", "loud", "info,hyper=trace", "debug[x]", "a=b"] {
            assert!(filter(level).is_none(), "{level:?} accepted");
        }
    }

    #[test]
    fn init_twice_and_with_a_bad_level_does_not_panic() {
        init(LogFormat::Json, "nonsense");
        init(LogFormat::Text, "debug");
    }
}
