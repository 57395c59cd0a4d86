//! testkit against the real services it starts: PostgreSQL clusters, moto
//! servers and the fault-injection proxies in front of them. Needs the
//! PostgreSQL server binaries and the venv: run `scripts/install-deps.sh`
//! first. One test binary.

mod proxy;
mod stack;
