//! Generates the `grpc` example's gRPC code from `proto/helloworld.proto` with the protoc
//! that `protoc-bin-vendored` ships, so a fresh machine needs no protoc installed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/helloworld.proto");
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // tonic-prost-build finds protoc through PROTOC.
    std::env::set_var("PROTOC", protoc);
    tonic_prost_build::configure()
        .build_transport(true)
        .compile_protos(&["proto/helloworld.proto"], &["proto"])?;
    Ok(())
}
