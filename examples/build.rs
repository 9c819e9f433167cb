//! Generates the `grpc` example's gRPC code from `proto/helloworld.proto` with the protoc
//! that `protoc-bin-vendored` ships, so a fresh machine needs no protoc installed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/helloworld.proto");
    // Named in prost-build's config rather than through `PROTOC`: a build script does not
    // write the process environment either.
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        .build_transport(true)
        .compile_with_config(config, &["proto/helloworld.proto"], &["proto"])?;
    Ok(())
}
