//! Settings shared by the echo examples, from the environment.

use std::time::Duration;

use lameduck::{Config, IdlePolicy};

/// A duration in milliseconds from `name`; exits with code 2 if it is not a number.
pub fn env_ms(name: &str) -> Option<Duration> {
    let value = std::env::var(name).ok()?;
    match value.parse() {
        Ok(ms) => Some(Duration::from_millis(ms)),
        Err(_) => {
            eprintln!("{name}={value:?} is not a number of milliseconds");
            std::process::exit(2);
        }
    }
}

/// The lifecycle configuration: the defaults, tuned by `LAMEDUCK_STALE_NEW_MS`,
/// `LAMEDUCK_GRACE_MS` (0 = close idle connections at once) and `LAMEDUCK_DEADLINE_MS`.
pub fn config() -> Config {
    let mut config = Config::default();
    if let Some(d) = env_ms("LAMEDUCK_STALE_NEW_MS") {
        config = config.with_stale_new(d);
    }
    if let Some(grace) = env_ms("LAMEDUCK_GRACE_MS") {
        config = config.with_idle_policy(if grace.is_zero() {
            IdlePolicy::CloseImmediately
        } else {
            IdlePolicy::AwaitNextRequest { grace }
        });
    }
    if let Some(d) = env_ms("LAMEDUCK_DEADLINE_MS") {
        config = config.with_deadline(Some(d));
    }
    config
}

/// `ECHO_VERBOSE` prints every request line (the end-to-end tests wait on it).
pub fn verbose() -> bool {
    std::env::var_os("ECHO_VERBOSE").is_some()
}
