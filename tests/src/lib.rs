//! Workspace-level integration tests live in `tests/tests/`: the paths that
//! cross crates (train -> checkpoint -> quantize -> run -> PNG).
