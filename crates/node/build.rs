//! Generates the admin service from `proto/admin.proto`.
//!
//! protoc is found through the `PROTOC` environment variable; `cargo xtask`
//! sets it to the vendored binary of `protoc-bin-vendored`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/admin.proto");
    println!("cargo:rerun-if-env-changed=PROTOC");
    if std::env::var_os("PROTOC").is_none() {
        return Err(
            "PROTOC is not set: build through `cargo xtask` (which points it at the \
                    vendored protoc) or set PROTOC to a protoc binary"
                .into(),
        );
    }
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_protos(&["proto/admin.proto"], &["proto"])?;
    Ok(())
}
