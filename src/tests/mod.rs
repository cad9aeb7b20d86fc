//! loom models of the admission core, one invariant each (run with `make loom`).

mod loom_acquisition;
mod loom_governor;
mod loom_queue;
mod loom_session;
