//! Everything the server remembers, behind one mutex.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use serde::Serialize;

use crate::access::{Access, Viewer};
use crate::faults::FaultRule;
use crate::rate_limit::{Limits, RateLimiter};
use crate::records::{Data, Overrides};
use crate::tokens::Tokens;
use crate::webhooks::Webhooks;
use crate::world::{Resource, World};

/// A record served in a complete 200 response: (resource, company_id, id).
pub type ServedKey = (Resource, u64, u64);

#[derive(Debug, Default, Clone, Serialize)]
pub struct Stats {
    pub requests: u64,
    pub api_requests: u64,
    pub by_status: BTreeMap<String, u64>,
    pub by_resource: BTreeMap<String, u64>,
    pub token_grants: u64,
    pub refreshes: u64,
    pub rate_limited: u64,
    pub faults_fired: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct LogEntry {
    pub seq: u64,
    pub method: String,
    pub path: String,
    pub query: String,
    pub login: Option<String>,
    pub status: u16,
    pub resource: Option<&'static str>,
    pub company_id: Option<u64>,
    pub project_id: Option<u64>,
    pub ts: String,
}

#[derive(Debug, Default)]
pub struct State {
    pub world: World,
    pub overrides: Overrides,
    pub access: Access,
    pub tokens: Tokens,
    pub limiter: RateLimiter,
    pub faults: Vec<FaultRule>,
    pub stats: Stats,
    pub log: Vec<LogEntry>,
    pub next_seq: u64,
    pub served: HashSet<ServedKey>,
    pub webhooks: Webhooks,
}

impl State {
    /// `world` has passed `World::validate`, which already built its access once.
    pub fn new(world: World) -> State {
        State {
            access: Access::from_world(&world).unwrap_or_default(),
            world,
            next_seq: 1,
            ..State::default()
        }
    }

    /// A new world starts from nothing, except that issued secrets stay known.
    pub fn reset(&mut self, world: World) {
        let mut tokens = std::mem::take(&mut self.tokens);
        tokens.forget_all();
        *self = State {
            tokens,
            ..State::new(world)
        };
    }

    pub fn data(&self) -> Data<'_> {
        Data::new(&self.world, &self.overrides)
    }

    /// The data as `user` sees it through the API.
    pub fn viewer(&self, user: u64) -> Viewer<'_> {
        Viewer::new(self.data(), &self.access, user)
    }

    pub fn limits(&self) -> Limits {
        Limits {
            spike: self.world.rate_limit_spike,
            hour: self.world.rate_limit_hour,
        }
    }

    pub fn record_log(&mut self, mut entry: LogEntry) {
        entry.seq = self.next_seq;
        self.next_seq += 1;
        self.stats.requests += 1;
        *self
            .stats
            .by_status
            .entry(entry.status.to_string())
            .or_default() += 1;
        if entry.path.starts_with("/rest/") {
            self.stats.api_requests += 1;
            if let Some(resource) = entry.resource {
                *self
                    .stats
                    .by_resource
                    .entry(resource.to_string())
                    .or_default() += 1;
            }
        }
        self.log.push(entry);
    }
}

/// State shared by every connection thread.
pub struct Shared {
    state: Mutex<State>,
    /// Wakes the webhook delivery thread, which waits on `state`'s mutex.
    changed: Condvar,
    pub scheme: &'static str,
    pub local_addr: SocketAddr,
}

impl Shared {
    pub fn new(world: World, scheme: &'static str, local_addr: SocketAddr) -> Shared {
        Shared {
            state: Mutex::new(State::new(world)),
            changed: Condvar::new(),
            scheme,
            local_addr,
        }
    }

    /// A panic in one connection thread must not wedge the others, so a poisoned lock
    /// is taken over rather than propagated.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Releases the lock until `notify` or the timeout, then takes it again.
    pub fn wait<'a>(
        &self,
        guard: MutexGuard<'a, State>,
        timeout: Duration,
    ) -> MutexGuard<'a, State> {
        match self.changed.wait_timeout(guard, timeout) {
            Ok((guard, _)) => guard,
            Err(poisoned) => poisoned.into_inner().0,
        }
    }

    /// Something the delivery thread waits for happened (an event, a result, a config).
    pub fn notify(&self) {
        self.changed.notify_all();
    }
}
