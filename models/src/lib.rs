//! Loom models of shmval's pipe ring, compiled from the library's own source files
//! (`tests/ring.rs` includes `src/pipe/ring/*.rs` against a loom version of the
//! ring's `env` seam). Nothing here outside `cfg(loom)`:
//!
//! ```sh
//! RUSTFLAGS="--cfg loom" cargo test -p shmval-models --test ring --release
//! ```
