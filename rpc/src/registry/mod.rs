//! Registering a server where clients look for it ([`Registry`]), as Kitex's registry
//! does. [`etcd`] implements it (and the matching resolver) with Kitex's key layout.
//!
//! A server registers once it listens and deregisters first when it stops gracefully,
//! before it stops accepting: see [`ServerBuilder::registry`](crate::server::ServerBuilder::registry).

pub mod etcd;

use std::net::SocketAddr;

pub use etcd::{EtcdRegistry, EtcdResolver};

use crate::Cause;

/// What a server registers: its service name, the address clients should call, its
/// weight and tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// The service name clients look up (`hello-service`).
    pub service: String,
    /// The address to advertise (the bound one, or another: `--advertise`).
    pub addr: SocketAddr,
    /// Share of the load relative to other instances (Kitex's default is 10).
    pub weight: u32,
    /// Key/value tags.
    pub tags: Vec<(String, String)>,
}

/// Why a registration failed.
#[derive(Debug, Clone)]
pub struct RegistryError {
    /// The service.
    pub service: String,
    /// What went wrong.
    pub cause: Cause,
}

impl RegistryError {
    pub(crate) fn new(service: &str, cause: Cause) -> Self {
        RegistryError {
            service: service.to_owned(),
            cause,
        }
    }
}

impl std::fmt::Display for RegistryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot (de)register {}: {}", self.service, self.cause)
    }
}

impl std::error::Error for RegistryError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.cause)
    }
}

/// Where servers make themselves known.
pub trait Registry: Send + Sync + 'static {
    /// Lists the server (and keeps it listed until [`deregister`](Registry::deregister)).
    fn register(&self, r: &Registration) -> Result<(), RegistryError>;
    /// Removes the server from the list.
    fn deregister(&self, r: &Registration) -> Result<(), RegistryError>;
}
