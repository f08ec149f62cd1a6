//! `basalt-server`: Basalt as a standalone server.
//!
//! The pieces follow the Options -> Service -> Handle shape: [`config`]
//! says how to run, [`server`] starts the engine with the Durable Task
//! sidecar gRPC service ([`sidecar`]) and the HTTP management API
//! ([`http`]), and hands back a [`server::ServerHandle`] that stops it
//! cleanly. [`proto`] is the wire contract, compiled from the vendored
//! `proto/orchestrator_service.proto`; [`convert`] maps it onto the
//! runtime's types without loss.

pub mod proto {
    //! The Durable Task sidecar protocol (`TaskHubSidecarService`), generated
    //! by tonic/prost from `proto/orchestrator_service.proto` (MIT, Microsoft).
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("_");
    pub use crate::history_wire::OrchestratorRequest;
}

pub mod auth;
pub mod browser;
pub mod config;
pub mod convert;
pub mod dashboard;
pub mod dispatch;
pub mod history_cache;
pub mod history_wire;
pub mod http;
pub mod http_serve;
pub mod incident;
pub mod server;
pub mod sidecar;
pub mod time;
pub mod tls;
pub mod wire_limits;
