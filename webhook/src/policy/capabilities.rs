//! The engine's host capabilities over this process's cluster context: one
//! [`Access`] per call of a context-aware policy, behind the engine's
//! [`Host`] trait (the engine knows nothing of the context, the context
//! nothing of the engine); and namespace labels for the matcher.

use std::collections::BTreeMap;
use std::time::Instant;

use futures::future::BoxFuture;

use super::matcher::NamespaceLabels;
use crate::context::{self, Access, Context, Kind, ledger};
use crate::engine::host::{Claim, Decision, Host, Refusal, Usage};

impl From<context::Error> for Refusal {
    fn from(error: context::Error) -> Self {
        match error {
            context::Error::Ledger(ledger::Error::DeadlinePassed) => Refusal::DeadlinePassed,
            other => Refusal::Refused(Box::new(other)),
        }
    }
}

impl Host for Access {
    fn get(
        &mut self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
        _deadline: Instant,
    ) -> Result<Option<String>, Refusal> {
        Ok(Access::get(self, api_version, kind, namespace, name)?)
    }

    fn list(
        &mut self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        selector: &str,
        max_bytes: usize,
        _deadline: Instant,
    ) -> Result<String, Refusal> {
        Ok(Access::list(
            self,
            api_version,
            kind,
            namespace,
            selector,
            max_bytes,
        )?)
    }

    fn usage(&mut self, keys: &[String]) -> Result<Vec<Usage>, Refusal> {
        Ok(Access::usage(self, keys)?)
    }

    fn reserve(
        &mut self,
        claims: Vec<Claim>,
        deadline: Instant,
    ) -> BoxFuture<'_, Result<Decision, Refusal>> {
        Box::pin(async move { Ok(Access::reserve(self, &claims, deadline).await?) })
    }
}

/// The labels of cached Namespaces, for namespace selectors.
impl NamespaceLabels for Context {
    fn labels(&self, namespace: &str) -> Option<BTreeMap<String, String>> {
        self.store().labels(&Kind::namespace(), "", namespace)
    }
}
