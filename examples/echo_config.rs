//! Settings shared by the echo examples, from the environment.

use std::time::Duration;

use lameduck::core::Config;
use lameduck::env::ConfigFromEnv;

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

/// The lifecycle configuration: the defaults, tuned by the `LAMEDUCK_*` variables
/// (`LAMEDUCK_DEADLINE=10s`, `LAMEDUCK_IDLE_GRACE=close`, ...; see
/// `lameduck::env::ConfigFromEnv`). Exits with code 2, naming the variable, on a bad value.
pub fn config() -> Config {
    Config::from_env().unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(2);
    })
}

/// `ECHO_VERBOSE` prints every request line (the end-to-end tests wait on it).
pub fn verbose() -> bool {
    std::env::var_os("ECHO_VERBOSE").is_some()
}
