//! Arbitrary `LAMEDUCK_*` names and values: the settings parser never panics; a value it
//! accepts is what it says (`off` means no deadline, `close` closes idle connections at once,
//! anything else re-parses to the same duration), and every error names its variable and
//! value.
//!
//! `cargo +nightly fuzz run env_config`
#![no_main]

use lameduck_core::{Config, IdlePolicy};
use lameduck_process::env::{VARIABLES, apply};

libfuzzer_sys::fuzz_target!(|input: Vec<(u8, bool, &str)>| {
    // Mostly the real names, sometimes a made-up one under the prefix.
    let vars: Vec<(String, &str)> = input
        .iter()
        .map(|&(which, invented, value)| {
            let name = if invented {
                format!("LAMEDUCK_{which}")
            } else {
                VARIABLES[which as usize % VARIABLES.len()].to_owned()
            };
            (name, value)
        })
        .collect();
    match apply(
        Config::default(),
        vars.iter().map(|(k, v)| (k.as_str(), *v)),
    ) {
        Ok(config) => {
            assert!(vars.iter().all(|(k, _)| VARIABLES.contains(&k.as_str())));
            // The last value of each variable wins; check what it says.
            for name in VARIABLES {
                let Some((_, value)) = vars.iter().rev().find(|(k, _)| k == name) else {
                    continue;
                };
                let value = value.trim();
                let parsed = || humantime::parse_duration(value).unwrap();
                match name {
                    "LAMEDUCK_DEADLINE" if value == "off" => assert_eq!(config.deadline, None),
                    "LAMEDUCK_DEADLINE" => assert_eq!(config.deadline, Some(parsed())),
                    "LAMEDUCK_LAME_DUCK" => assert_eq!(config.lame_duck, parsed()),
                    "LAMEDUCK_STALE_NEW" => assert_eq!(config.stale_new, parsed()),
                    "LAMEDUCK_LINGER" => assert_eq!(config.linger, parsed()),
                    "LAMEDUCK_SPREAD" => assert_eq!(config.spread, parsed()),
                    "LAMEDUCK_HANDSHAKE_TIMEOUT" => {
                        assert!(!parsed().is_zero());
                        assert_eq!(config.handshake_timeout, parsed())
                    }
                    _ if value == "close" => {
                        assert_eq!(config.idle_policy, IdlePolicy::CloseImmediately)
                    }
                    _ => assert_eq!(
                        config.idle_policy,
                        IdlePolicy::AwaitNextRequest { grace: parsed() }
                    ),
                }
            }
        }
        Err(e) => {
            assert!(vars.iter().any(|(k, v)| *k == e.variable && *v == e.value));
            assert!(
                e.to_string()
                    .starts_with(&format!("{}={:?}: ", e.variable, e.value))
            );
        }
    }
});
