//! The `route` kind: a controller over the control plane's ingress. Create and update hand the
//! rule to the ingress (through [`RouteSink`], so this crate does not depend on the proxy) and
//! complete once the new route table is live.

use std::sync::Arc;

use kiln_engine::provider::{
    Applied, Attributes, Observation, Provider, ProviderContext, ProviderError, ProviderFuture,
    Recorded,
};
use serde_json::Value;

/// One route as the ingress needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteSpec {
    /// The route's address, e.g. `routes.shop-localhost-api`.
    pub address: String,
    /// Host pattern.
    pub host: String,
    /// Path prefix.
    pub path: String,
    /// The supervisor's name of the service that serves it.
    pub service: String,
    /// Remove the prefix before forwarding.
    pub strip_prefix: bool,
    /// Time to the upstream's response headers, in milliseconds.
    pub timeout_ms: Option<u64>,
    /// Longest silence between two reads of the request body, in milliseconds.
    pub body_timeout_ms: Option<u64>,
    /// Longest silence of the upstream in a response body, in milliseconds.
    pub idle_timeout_ms: Option<u64>,
    /// Longest silence on a WebSocket tunnel, in milliseconds.
    pub tunnel_timeout_ms: Option<u64>,
    /// Largest request body.
    pub max_body: Option<u64>,
    /// Headers set towards the service.
    pub request_headers: Vec<(String, String)>,
    /// Headers set towards the client.
    pub response_headers: Vec<(String, String)>,
}

/// Where routes go: the control plane's ingress.
pub trait RouteSink: Send + Sync {
    /// Adds or replaces a route; returns once the table that holds it is live, with the URL
    /// clients reach it at.
    fn set(&self, route: RouteSpec) -> ProviderFuture<'_, String>;
    /// Removes a route.
    fn remove(&self, address: &str) -> ProviderFuture<'_, ()>;
    /// Whether the ingress serves this route now.
    fn contains(&self, address: &str) -> bool;
}

/// Provider of `route` resources.
#[derive(Clone)]
pub struct RouteProvider {
    sink: Option<Arc<dyn RouteSink>>,
}

impl std::fmt::Debug for RouteProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteProvider")
            .field("served", &self.sink.is_some())
            .finish()
    }
}

impl RouteProvider {
    /// A provider; without a sink it can plan but not serve.
    pub fn new(sink: Option<Arc<dyn RouteSink>>) -> RouteProvider {
        RouteProvider { sink }
    }

    fn sink(&self) -> Result<&Arc<dyn RouteSink>, ProviderError> {
        self.sink.as_ref().ok_or_else(|| ProviderError::Failed {
            message: "routes are served by the control plane's ingress: start it with `kiln up` (or `kiln up -d`)".into(),
        })
    }
}

fn headers(v: Option<&Value>) -> Vec<(String, String)> {
    v.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.as_str().map_or_else(|| v.to_string(), str::to_owned),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The ingress's view of a route's evaluated attributes.
pub fn route_spec(address: &str, attrs: &Attributes) -> RouteSpec {
    let text = |k: &str| attrs.get(k).and_then(Value::as_str).map(str::to_owned);
    RouteSpec {
        address: address.to_owned(),
        host: text("host").unwrap_or_else(|| "*".into()),
        path: text("path").unwrap_or_else(|| "/".into()),
        service: crate::service::supervisor_name(&format!(
            "{}services.{}",
            crate::service::environment_prefix(address),
            text("service").unwrap_or_default()
        )),
        strip_prefix: attrs
            .get("strip_prefix")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        timeout_ms: attrs.get("timeout").and_then(Value::as_u64),
        body_timeout_ms: attrs.get("body_timeout").and_then(Value::as_u64),
        idle_timeout_ms: attrs.get("idle_timeout").and_then(Value::as_u64),
        tunnel_timeout_ms: attrs.get("tunnel_timeout").and_then(Value::as_u64),
        max_body: attrs.get("max_body").and_then(Value::as_u64),
        request_headers: headers(attrs.get("request_headers")),
        response_headers: headers(attrs.get("response_headers")),
    }
}

impl RouteProvider {
    async fn put(&self, address: &str, desired: &Attributes) -> Result<Applied, ProviderError> {
        let url = self.sink()?.set(route_spec(address, desired)).await?;
        let mut outputs = Attributes::new();
        outputs.insert("url".into(), Value::String(url));
        Ok(Applied {
            outputs,
            private: Value::Null,
        })
    }
}

impl Provider for RouteProvider {
    fn kinds(&self) -> &'static [&'static str] {
        &["route"]
    }

    fn observe<'a>(
        &'a self,
        _ctx: &'a ProviderContext,
        recorded: &'a Recorded,
    ) -> ProviderFuture<'a, Observation> {
        // The ingress holds only what the control plane gave it: a fresh control plane starts
        // empty, so its routes are absent until its first apply creates them again. Outside the
        // control plane nothing can be seen; report no drift.
        Box::pin(async move {
            match &self.sink {
                Some(sink) if !sink.contains(&recorded.address) => Ok(Observation::Absent),
                _ => Ok(Observation::Present { drift: Vec::new() }),
            }
        })
    }

    fn create<'a>(
        &'a self,
        _ctx: &'a ProviderContext,
        _kind: &'a str,
        address: &'a str,
        desired: &'a Attributes,
    ) -> ProviderFuture<'a, Applied> {
        Box::pin(self.put(address, desired))
    }

    fn update<'a>(
        &'a self,
        _ctx: &'a ProviderContext,
        previous: &'a Recorded,
        desired: &'a Attributes,
    ) -> ProviderFuture<'a, Applied> {
        Box::pin(self.put(&previous.address, desired))
    }

    fn delete<'a>(
        &'a self,
        _ctx: &'a ProviderContext,
        recorded: &'a Recorded,
    ) -> ProviderFuture<'a, ()> {
        Box::pin(async move { self.sink()?.remove(&recorded.address).await })
    }
}
