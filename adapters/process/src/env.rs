//! Shutdown settings from the environment: `LAMEDUCK_*` variables, so an operator tunes a
//! drain (a Kubernetes manifest, a systemd unit) without a rebuild.
//!
//! ```
//! use lameduck_core::{Config, IdlePolicy};
//! use lameduck_process::env::ConfigFromEnv;
//! use std::time::Duration;
//!
//! let vars = [("LAMEDUCK_DEADLINE", "10s"), ("LAMEDUCK_IDLE_GRACE", "close")];
//! let config = Config::from_vars(vars)?;
//! assert_eq!(config.deadline, Some(Duration::from_secs(10)));
//! assert_eq!(config.idle_policy, IdlePolicy::CloseImmediately);
//!
//! // A malformed value is an error that names the variable and the value.
//! let err = Config::from_vars([("LAMEDUCK_LAME_DUCK", "5 parsecs")]).unwrap_err();
//! assert!(err.to_string().starts_with("LAMEDUCK_LAME_DUCK=\"5 parsecs\": "));
//! # Ok::<(), lameduck_process::env::EnvError>(())
//! ```
//!
//! | variable | sets | value |
//! |---|---|---|
//! | `LAMEDUCK_DEADLINE` | [`Config::deadline`] | a duration, or `off` for no deadline |
//! | `LAMEDUCK_LAME_DUCK` | [`Config::lame_duck`] | a duration (`0s` for none) |
//! | `LAMEDUCK_STALE_NEW` | [`Config::stale_new`] | a duration |
//! | `LAMEDUCK_IDLE_GRACE` | [`Config::idle_policy`] | a duration ([`IdlePolicy::AwaitNextRequest`]), or `close` ([`IdlePolicy::CloseImmediately`]) |
//! | `LAMEDUCK_LINGER` | [`Config::linger`] | a duration (`0s`: close without lingering) |
//! | `LAMEDUCK_HANDSHAKE_TIMEOUT` | [`Config::handshake_timeout`] | a duration |
//! | `LAMEDUCK_SPREAD` | [`Config::spread`] | a duration (`0s`: every ask at once) |
//!
//! Durations are humantime's: `500ms`, `2s`, `1m 30s`, `1h`. A variable that is not set
//! keeps the default, or whatever the program set before. Any other variable whose name
//! starts with `LAMEDUCK_` is an error: a misspelt `LAMEDUCK_DEADLNE=5s` silently ignored
//! would leave the 30 s default in force, which an operator learns only when a pod is killed.

use std::fmt;
use std::time::Duration;

use lameduck_core::{Config, IdlePolicy};
use lameduck_os::handover;

/// `LAMEDUCK_DEADLINE`: [`Config::deadline`]; `off` for none.
pub const DEADLINE: &str = "LAMEDUCK_DEADLINE";
/// `LAMEDUCK_LAME_DUCK`: [`Config::lame_duck`].
pub const LAME_DUCK: &str = "LAMEDUCK_LAME_DUCK";
/// `LAMEDUCK_STALE_NEW`: [`Config::stale_new`].
pub const STALE_NEW: &str = "LAMEDUCK_STALE_NEW";
/// `LAMEDUCK_IDLE_GRACE`: [`Config::idle_policy`]; `close` for
/// [`IdlePolicy::CloseImmediately`].
pub const IDLE_GRACE: &str = "LAMEDUCK_IDLE_GRACE";
/// `LAMEDUCK_LINGER`: [`Config::linger`].
pub const LINGER: &str = "LAMEDUCK_LINGER";
/// `LAMEDUCK_HANDSHAKE_TIMEOUT`: [`Config::handshake_timeout`].
pub const HANDSHAKE_TIMEOUT: &str = "LAMEDUCK_HANDSHAKE_TIMEOUT";
/// `LAMEDUCK_SPREAD`: [`Config::spread`].
pub const SPREAD: &str = "LAMEDUCK_SPREAD";

/// Every variable this module reads.
pub const VARIABLES: [&str; 7] = [
    DEADLINE,
    LAME_DUCK,
    STALE_NEW,
    IDLE_GRACE,
    LINGER,
    HANDSHAKE_TIMEOUT,
    SPREAD,
];

/// Names starting with this are lameduck's; one that is not in [`VARIABLES`] is an error.
pub const PREFIX: &str = "LAMEDUCK_";

/// A `LAMEDUCK_*` variable that could not be used: the variable, its value as set, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvError {
    /// The variable's name.
    pub variable: String,
    /// Its value, as set (lossily decoded if it was not UTF-8).
    pub value: String,
    /// What is wrong with it.
    pub reason: EnvReason,
}

/// Why a `LAMEDUCK_*` variable could not be used: a program can match on it; its message
/// (`Display`) says it to a person.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EnvReason {
    /// Empty where a duration belongs.
    EmptyDuration,
    /// Not a duration; humantime's word on why.
    NotADuration(String),
    /// `LAMEDUCK_HANDSHAKE_TIMEOUT` of zero: no handshake completes in no time.
    ZeroHandshakeTimeout,
    /// A `LAMEDUCK_` name that is no setting of this version (a typo, or a newer setting).
    UnknownVariable,
}

impl fmt::Display for EnvReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EnvReason::EmptyDuration => {
                f.write_str("empty; expected a duration such as 500ms, 2s or 1m")
            }
            EnvReason::NotADuration(why) => {
                write!(f, "not a duration ({why}); expected e.g. 500ms, 2s or 1m")
            }
            EnvReason::ZeroHandshakeTimeout => {
                f.write_str("zero; no client completes a handshake in no time")
            }
            EnvReason::UnknownVariable => write!(
                f,
                "not a lameduck setting (known: {})",
                VARIABLES.join(", ")
            ),
        }
    }
}

impl fmt::Display for EnvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={:?}: {}", self.variable, self.value, self.reason)
    }
}

impl std::error::Error for EnvError {}

impl From<EnvError> for std::io::Error {
    fn from(e: EnvError) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, e)
    }
}

/// [`Config`] from `LAMEDUCK_*` variables. A trait because `Config` lives in the `no_std`
/// core, which reads no environment; import it and call `Config::from_env()`.
pub trait ConfigFromEnv: Sized {
    /// The defaults, changed by every `LAMEDUCK_*` variable set in the process environment.
    fn from_env() -> Result<Self, EnvError>;

    /// The defaults, changed by `vars` (name, value pairs; any others are ignored unless
    /// they start with `LAMEDUCK_`). For tests, and for settings from somewhere else.
    fn from_vars<K, V>(vars: impl IntoIterator<Item = (K, V)>) -> Result<Self, EnvError>
    where
        K: AsRef<str>,
        V: AsRef<str>;

    /// Changes `self` by every `LAMEDUCK_*` variable in the process environment, keeping
    /// what the program set for the ones that are not set.
    fn overridden_by_env(self) -> Result<Self, EnvError>;
}

impl ConfigFromEnv for Config {
    fn from_env() -> Result<Config, EnvError> {
        Config::default().overridden_by_env()
    }

    fn from_vars<K, V>(vars: impl IntoIterator<Item = (K, V)>) -> Result<Config, EnvError>
    where
        K: AsRef<str>,
        V: AsRef<str>,
    {
        apply(Config::default(), vars)
    }

    fn overridden_by_env(self) -> Result<Config, EnvError> {
        let vars = std::env::vars_os().filter_map(|(name, value)| {
            // A name that is not UTF-8 cannot be one of ours.
            let name = name.into_string().ok()?;
            Some((name, value.to_string_lossy().into_owned()))
        });
        apply(self, vars)
    }
}

/// Applies each `LAMEDUCK_*` variable in `vars` to `config`.
pub fn apply<K, V>(
    mut config: Config,
    vars: impl IntoIterator<Item = (K, V)>,
) -> Result<Config, EnvError>
where
    K: AsRef<str>,
    V: AsRef<str>,
{
    for (name, value) in vars {
        let (name, value) = (name.as_ref(), value.as_ref());
        if !name.starts_with(PREFIX) {
            continue;
        }
        let error = |reason: EnvReason| EnvError {
            variable: name.to_owned(),
            value: value.to_owned(),
            reason,
        };
        let trimmed = value.trim();
        match name {
            DEADLINE => {
                config.deadline = match trimmed {
                    "off" => None,
                    _ => Some(duration(trimmed).map_err(error)?),
                }
            }
            LAME_DUCK => config.lame_duck = duration(trimmed).map_err(error)?,
            STALE_NEW => config.stale_new = duration(trimmed).map_err(error)?,
            LINGER => config.linger = duration(trimmed).map_err(error)?,
            SPREAD => config.spread = duration(trimmed).map_err(error)?,
            HANDSHAKE_TIMEOUT => {
                let timeout = duration(trimmed).map_err(error)?;
                if timeout.is_zero() {
                    return Err(error(EnvReason::ZeroHandshakeTimeout));
                }
                config.handshake_timeout = timeout;
            }
            IDLE_GRACE => {
                config.idle_policy = match trimmed {
                    "close" => IdlePolicy::CloseImmediately,
                    _ => IdlePolicy::AwaitNextRequest {
                        grace: duration(trimmed).map_err(error)?,
                    },
                }
            }
            // The handover's own variables, read by `lameduck-os`'s handover.
            handover::LAMEDUCK_HANDOVER
            | handover::LAMEDUCK_READY_FD
            | handover::LAMEDUCK_DRAINING => {}
            _ => {
                return Err(error(EnvReason::UnknownVariable));
            }
        }
    }
    Ok(config)
}

/// A humantime duration; the reason, when it is not one.
fn duration(value: &str) -> Result<Duration, EnvReason> {
    if value.is_empty() {
        return Err(EnvReason::EmptyDuration);
    }
    humantime::parse_duration(value).map_err(|e| EnvReason::NotADuration(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(vars: &[(&str, &str)]) -> Result<Config, EnvError> {
        Config::from_vars(vars.iter().copied())
    }

    #[test]
    fn values_that_parse() {
        fn s(n: u64) -> Duration {
            Duration::from_secs(n)
        }
        fn ms(n: u64) -> Duration {
            Duration::from_millis(n)
        }
        type Check = fn(&Config) -> bool;
        let cases: &[(&str, &str, Check)] = &[
            (DEADLINE, "10s", |c| c.deadline == Some(s(10))),
            (LINGER, "250ms", |c| c.linger == ms(250)),
            (LINGER, "0s", |c| c.linger.is_zero()),
            (SPREAD, "2s", |c| c.spread == s(2)),
            (SPREAD, "0s", |c| c.spread.is_zero()),
            (HANDSHAKE_TIMEOUT, "3s", |c| c.handshake_timeout == s(3)),
            (DEADLINE, "500ms", |c| c.deadline == Some(ms(500))),
            (DEADLINE, "1m 30s", |c| c.deadline == Some(s(90))),
            (DEADLINE, "off", |c| c.deadline.is_none()),
            (DEADLINE, " 2s ", |c| c.deadline == Some(s(2))),
            (DEADLINE, "0s", |c| c.deadline == Some(s(0))),
            (LAME_DUCK, "5s", |c| c.lame_duck == s(5)),
            (LAME_DUCK, "0s", |c| c.lame_duck == s(0)),
            (STALE_NEW, "300ms", |c| c.stale_new == ms(300)),
            (IDLE_GRACE, "close", |c| {
                c.idle_policy == IdlePolicy::CloseImmediately
            }),
            (IDLE_GRACE, "250ms", |c| {
                c.idle_policy == IdlePolicy::AwaitNextRequest { grace: ms(250) }
            }),
        ];
        for (name, value, check) in cases {
            let config = from(&[(name, value)]).unwrap_or_else(|e| panic!("{name}={value}: {e}"));
            assert!(check(&config), "{name}={value:?} gave {config:?}");
        }
    }

    #[test]
    fn unset_keeps_what_was_there() {
        assert_eq!(from(&[]).unwrap(), Config::default());
        assert_eq!(
            from(&[("PATH", "/bin"), ("HOME", "x")]).unwrap(),
            Config::default()
        );
        let mine = Config::default().with_deadline(None);
        assert_eq!(apply(mine, [(STALE_NEW, "1s")]).unwrap().deadline, None);
    }

    #[test]
    fn malformed_values_name_the_variable_and_the_value() {
        let cases = [
            (DEADLINE, "5 parsecs"),
            (DEADLINE, "10"),
            (DEADLINE, ""),
            (DEADLINE, "-1s"),
            (DEADLINE, "never"),
            (LAME_DUCK, "off"),
            (LAME_DUCK, "1.5.0s"),
            (STALE_NEW, "close"),
            (IDLE_GRACE, "off"),
            (IDLE_GRACE, "99999999999999999999999s"),
            (LINGER, "forever"),
            (LINGER, "close"),
            (SPREAD, "wide"),
            (SPREAD, "-1s"),
            (HANDSHAKE_TIMEOUT, "0s"),
            (HANDSHAKE_TIMEOUT, "off"),
            ("LAMEDUCK_DEADLNE", "5s"),
            ("LAMEDUCK_", ""),
        ];
        for (name, value) in cases {
            let err = from(&[(name, value)]).expect_err(&format!("{name}={value:?} accepted"));
            assert_eq!((err.variable.as_str(), err.value.as_str()), (name, value));
            let text = err.to_string();
            assert!(
                text.starts_with(&format!("{name}={value:?}: ")),
                "message {text:?}"
            );
        }
    }

    #[test]
    fn the_first_bad_variable_fails_and_nothing_is_half_applied() {
        let err = from(&[(DEADLINE, "1s"), (LAME_DUCK, "x")]).unwrap_err();
        assert_eq!(err.variable, LAME_DUCK);
    }
}
