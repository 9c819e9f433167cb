//! Helpers for the end-to-end tests in `tests/`: building and running the workspace's
//! examples the way a user does, through cargo.

use std::path::PathBuf;
use std::process::{Command, Output};

/// The workspace root.
pub fn root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn cargo() -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.current_dir(root());
    command
}

/// Builds `examples` (in release if `release`) and returns the directory holding them.
pub fn build_examples(examples: &[&str], release: bool) -> PathBuf {
    let mut command = cargo();
    command.args(["build", "--quiet"]);
    if release {
        command.arg("--release");
    }
    for example in examples {
        command.args(["--example", example]);
    }
    let status = command.status().expect("cargo runs");
    assert!(status.success(), "building {examples:?} failed");
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root().join("target"));
    target
        .join(if release { "release" } else { "debug" })
        .join("examples")
}

/// `cargo run --quiet [--release] --example NAME -- ARGS`, as the README says to.
pub fn run_example(name: &str, release: bool, args: &[&str]) -> Output {
    let mut command = cargo();
    command.args(["run", "--quiet"]);
    if release {
        command.arg("--release");
    }
    command.args(["--example", name, "--"]).args(args);
    command.output().expect("cargo runs")
}
