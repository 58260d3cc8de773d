//! One proxied request, from route lookup to the relayed response.
//!
//! Expected flow: match a route (404) → its maintenance page while it has one → choose a backend set (503 when the route has none) →
//! check the declared body size (413) → rewrite headers → read a small body already at hand →
//! try an endpoint (503 when none is available) → on a connect failure, or a 502/503/504 to an
//! idempotent request without a body or with one read whole, try
//! another endpoint while attempts and the retry budget last → relay the response (502 for an
//! upstream error, 504 for a timeout). Every outcome feeds the endpoint's passive health and
//! the set's metrics. Nothing here holds a lock across an await, and no input panics.

use std::sync::Arc;
use std::time::Instant;

use hyper::body::{Body as _, Bytes, Incoming};
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::http::request::Parts;
use hyper::http::uri::PathAndQuery;
use hyper::{Method, Request, Response, StatusCode, Uri, Version};

use crate::balance::{Tried, choose_endpoint, choose_set};
use crate::body::{self, AtHand, BodyFlags, ProxyBody, UpstreamBody, UpstreamIncoming};
use crate::client_io::IoWatch;
use crate::error::ProxyError;
use crate::h1;
use crate::headers;
use crate::health::{Clock, InFlight};
use crate::metrics::{InFlightRequest, MetricsRegistry};
use crate::pool::{self, PoolSettings, Pooled};
use crate::table::{CompiledRoute, CompiledSet, CompiledTable, normalise_host, strip};
use crate::upgrade;

/// What the request path needs from the ingress.
pub(crate) struct Context<'a> {
    pub(crate) table: Arc<CompiledTable>,
    pub(crate) clock: &'a Clock,
    pub(crate) registry: &'a MetricsRegistry,
    pub(crate) pool: PoolSettings,
    /// The client's address as X-Forwarded-For shows it, rendered once per connection.
    pub(crate) client_ip: &'a HeaderValue,
    pub(crate) scheme: &'static str,
    /// The client connection's activity (`None` for requests that did not come over one).
    pub(crate) watch: Option<&'a Arc<IoWatch>>,
}

/// Handles one request; always produces a response.
pub(crate) async fn handle(ctx: Context<'_>, req: Request<Incoming>) -> Response<ProxyBody> {
    let host = request_host(&req);
    let table = ctx.table.clone();
    let Some(route) = table.find(&normalise_host(host_str(&host)), req.uri().path()) else {
        ctx.registry.add_unmatched();
        let path = req.uri().path().to_owned();
        let host = host_str(&host).to_owned();
        return local_error(&ProxyError::NoRoute { host, path });
    };
    let started = Instant::now();
    if let Some(page) = &route.maintenance
        && let Some(response) = page.answer(req.headers(), std::time::SystemTime::now())
    {
        route
            .route_metrics
            .record(response.status().as_u16(), started.elapsed());
        return response;
    }
    let Some((set_index, issue_cookie)) = choose_set(route, req.headers()) else {
        let response = local_error(&ProxyError::NoEndpoint {
            route: route.name.clone(),
        });
        route
            .route_metrics
            .record(response.status().as_u16(), started.elapsed());
        return response;
    };
    let set = &route.sets[set_index];
    let guard = set.metrics.start();
    let (mut response, served) = forward(&ctx, route, set_index, &host, req, guard, started).await;
    let served = &route.sets[served];
    served
        .metrics
        .record(response.status().as_u16(), started.elapsed());
    finish_response(route, served, issue_cookie, &mut response);
    response
}

/// The host the client asked for: the URI's authority (HTTP/2, absolute-form) or `Host`
/// (shared with the header, not copied).
fn request_host(req: &Request<Incoming>) -> HeaderValue {
    if let Some(authority) = req.uri().authority() {
        // An authority that parsed is a valid header value; "" would only fail to route.
        return HeaderValue::from_str(authority.as_str())
            .unwrap_or_else(|_| HeaderValue::from_static(""));
    }
    req.headers()
        .get(header::HOST)
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_static(""))
}

/// The host as text; a `Host` that is not UTF-8 counts as none.
fn host_str(host: &HeaderValue) -> &str {
    host.to_str().unwrap_or_default()
}

/// One request's upstream template, rebuilt into a fresh `Request` for each attempt (the
/// headers travel beside it: see [`attempts`]).
struct Outgoing {
    method: Method,
    path_and_query: PathAndQuery,
    request_id: HeaderValue,
    websocket: bool,
    bodiless: bool,
    /// The body, when it was read whole before the first attempt: each attempt can send it.
    whole_body: Option<Bytes>,
}

impl Outgoing {
    /// Whether every attempt can send the whole request (no body, or one read whole).
    fn resendable_body(&self) -> bool {
        self.bodiless || self.whole_body.is_some()
    }

    /// The body of an attempt after the first.
    fn body_again(&self) -> UpstreamBody {
        self.whole_body
            .clone()
            .map_or_else(UpstreamBody::empty, UpstreamBody::whole)
    }
}

/// Forwards the request; returns the response and the set that served it (a retry may have
/// moved it to another set).
async fn forward(
    ctx: &Context<'_>,
    route: &CompiledRoute,
    set_index: usize,
    host: &HeaderValue,
    req: Request<Incoming>,
    guard: InFlightRequest,
    started: Instant,
) -> (Response<ProxyBody>, usize) {
    let set = &route.sets[set_index];
    let (mut parts, body) = req.into_parts();
    let bodiless = body.is_end_stream();
    let declared = if bodiless {
        None
    } else {
        declared_length(&parts)
    };
    if let Some(limit) = route.max_body_bytes
        && declared.is_some_and(|len| len > limit)
    {
        return (local_error(&ProxyError::BodyTooLarge { limit }), set_index);
    }
    let client_upgrade = upgrade::take_client_upgrade(&mut parts);
    // A small body of an HTTP/1 request, framed by its length (so without trailers: hyper
    // knows its exact size, which a chunked body has not), may have come whole with its head:
    // then it is sent with the head in one write, on our own exchange, and can be sent again
    // by a retry.
    let small_body = !bodiless
        && client_upgrade.is_none()
        && parts.version <= Version::HTTP_11
        && body
            .size_hint()
            .exact()
            .is_some_and(|len| len <= body::MAX_AT_HAND);
    let (mut outgoing, mut headers) = prepare(ctx, route, host, &mut parts, bodiless);
    // A bodiless request (most of them) needs no byte counting and no flags.
    let mut flags = (!bodiless).then(|| Arc::new(BodyFlags::default()));
    let mut first_body = match &flags {
        Some(flags) => UpstreamBody::new(
            body,
            route.max_body_bytes,
            route.timeouts.body,
            flags.clone(),
            set.metrics.clone(),
        )
        .watched_by(ctx.watch),
        None => UpstreamBody::empty(),
    };
    if small_body && !outgoing.websocket {
        // Boxed: only requests with a body pay for its state, not every request's future.
        match Box::pin(first_body.take_at_hand()).await {
            AtHand::Whole(bytes) => {
                // The length sent is the length read (the client's, which hyper enforced).
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
                outgoing.whole_body = Some(bytes.clone());
                first_body = UpstreamBody::whole(bytes);
                flags = None;
            }
            AtHand::Streaming(body) => first_body = body,
            AtHand::Failed => {
                let error = if flags.as_deref().is_some_and(BodyFlags::over_limit) {
                    ProxyError::BodyTooLarge {
                        limit: route.max_body_bytes.unwrap_or(0),
                    }
                } else {
                    ProxyError::ClientBody
                };
                return (local_error(&error), set_index);
            }
        }
    }
    let mut served = set_index;
    let result = attempts(
        ctx,
        route,
        &mut served,
        &outgoing,
        headers,
        first_body,
        flags.as_deref(),
        started,
    )
    .await;
    let request_id = outgoing.request_id.clone();
    let mut response = match result {
        Ok(attempted) => relay(
            route,
            &route.sets[served],
            attempted,
            guard,
            client_upgrade,
            outgoing.websocket,
        ),
        Err(error) => local_error(&error),
    };
    response
        .headers_mut()
        .entry(&headers::X_REQUEST_ID)
        .or_insert(request_id);
    (response, served)
}

/// The body length the client declared, if any.
fn declared_length(parts: &Parts) -> Option<u64> {
    parts
        .headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn prepare(
    ctx: &Context<'_>,
    route: &CompiledRoute,
    host: &HeaderValue,
    parts: &mut Parts,
    bodiless: bool,
) -> (Outgoing, hyper::HeaderMap) {
    let path_and_query = upstream_path(route, &parts.uri);
    let websocket =
        parts.version == Version::HTTP_11 && headers::is_websocket_upgrade(&parts.headers);
    // The inbound headers are not needed after this; take them instead of copying.
    let mut out = std::mem::take(&mut parts.headers);
    headers::strip_hop_by_hop(&mut out);
    // Room for what is added below, so the map grows (and rehashes) once, not per insert.
    out.reserve(5 + route.request_headers.len());
    if websocket {
        headers::restore_websocket_upgrade(&mut out);
    }
    // Only what reads as text is passed on (as before: a non-UTF-8 host reads as "").
    let host = if host.to_str().is_ok() {
        host.clone()
    } else {
        HeaderValue::from_static("")
    };
    if !out.contains_key(header::HOST) {
        // HTTP/2 carries the host as :authority; an HTTP/1.1 upstream needs it as Host.
        out.insert(header::HOST, host.clone());
    }
    headers::add_forwarded(&mut out, ctx.client_ip, ctx.scheme, host);
    let request_id = headers::ensure_request_id(&mut out);
    headers::set_all(&mut out, &route.request_headers);
    let outgoing = Outgoing {
        method: parts.method.clone(),
        path_and_query,
        request_id,
        websocket,
        bodiless,
        whole_body: None,
    };
    (outgoing, out)
}

/// The path and query the upstream sees; shared with the inbound URI when unchanged.
fn upstream_path(route: &CompiledRoute, uri: &Uri) -> PathAndQuery {
    if !route.strip_prefix
        && let Some(unchanged) = uri.path_and_query()
    {
        return unchanged.clone();
    }
    let path = strip(&route.path_prefix, uri.path());
    let path_and_query = match uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path,
    };
    // The inbound URI parsed, so its pieces re-parse; "/" is a harmless fallback.
    PathAndQuery::try_from(path_and_query).unwrap_or_else(|_| PathAndQuery::from_static("/"))
}

/// The upstream's answer, the connection it came on, and the endpoint's in-flight guard.
struct Attempted {
    response: Response<UpstreamIncoming>,
    /// hyper's connection (`None` for our own exchange, whose body holds it).
    connection: Option<Pooled>,
    endpoint: InFlight,
}

/// Tries endpoints until one answers acceptably or retries run out. A retry goes to another
/// endpoint of the same set while one is left untried, then to another set of the route (a
/// broken canary's failures are retried on the stable side); `set_index` ends as the set of
/// the last attempt, and each abandoned set counts the failure it gave.
///
/// The headers are built once and moved into the request of an attempt. Our own exchange
/// (a request without a body, the common case) gives them back whether or not it reached the
/// upstream; for hyper's client, which keeps them, they are copied first (into a
/// [`RetryCopy`], once) only when a later attempt could need them after this one was sent (a
/// bodiless idempotent request that may still be retried). A request nothing was sent of
/// comes back whole, so every other retry takes its headers back from it.
#[expect(
    clippy::too_many_arguments,
    reason = "one request's pieces, each moved or borrowed differently"
)]
async fn attempts(
    ctx: &Context<'_>,
    route: &CompiledRoute,
    set_index: &mut usize,
    outgoing: &Outgoing,
    headers: hyper::HeaderMap,
    first_body: UpstreamBody,
    flags: Option<&BodyFlags>,
    started: Instant,
) -> Result<Attempted, ProxyError> {
    let mut tried = Tried::default();
    let mut body = Some(first_body);
    let mut headers = Some(headers);
    let mut copy: Option<RetryCopy> = None;
    // Whether an attempt that reached the upstream may be repeated (a 5xx or a connection
    // broken after sending): such attempts must leave a copy of the headers behind.
    let resendable = is_idempotent(&outgoing.method)
        && outgoing.resendable_body()
        && (route.retry.on_5xx_for_idempotent || route.retry.on_connect_failure);
    let mut attempt = 0u32;
    let mut failed_status = 0u16;
    loop {
        let now = ctx.clock.now_ms();
        if attempt > 0
            && !has_untried(&route.sets[*set_index], now, tried)
            && let Some(other) = fallback_set(route, *set_index, now)
        {
            route.sets[*set_index]
                .metrics
                .record(failed_status, started.elapsed());
            *set_index = other;
            tried = Tried::default();
        }
        let mut set = &route.sets[*set_index];
        let mut chosen = choose_endpoint(set, route.balance, now, tried);
        if chosen.is_none()
            && let Some(other) = fallback_set(route, *set_index, now)
        {
            // The set has nothing available (its endpoints ejected or draining): nothing was
            // sent yet, so moving to another set costs no retry.
            *set_index = other;
            set = &route.sets[other];
            tried = Tried::default();
            chosen = choose_endpoint(set, route.balance, now, tried);
        }
        let Some(index) = chosen else {
            return Err(ProxyError::NoEndpoint {
                route: route.name.clone(),
            });
        };
        tried.add(index);
        let endpoint = &set.endpoints[index];
        let in_flight = endpoint.runtime.start();
        let may_retry = attempt < route.retry.attempts;
        attempt += 1;
        // Every retry below requires `headers` back or a copy (checked there), so this
        // holds them.
        let Some(sent_headers) = headers
            .take()
            .or_else(|| copy.as_ref().map(RetryCopy::to_map))
        else {
            return Err(ProxyError::Upstream);
        };
        let request = build_request(
            outgoing,
            sent_headers,
            body.take().unwrap_or_else(|| outgoing.body_again()),
        );
        // Our own exchange gives the headers back after sending; hyper's client keeps them,
        // so they are copied first when a retry could need them.
        if may_retry && resendable && copy.is_none() && !pool::takes_own_exchange(&request) {
            copy = Some(RetryCopy::of(request.headers()));
        }
        let outcome = pool::send(endpoint.addr, route.timeouts, ctx.pool, request).await;
        match outcome {
            Err(failure) if failure.is_timeout() => {
                report_failure(ctx, route, set, index);
                return Err(ProxyError::Timeout);
            }
            Err(failure) if failure.is_connect() => {
                report_failure(ctx, route, set, index);
                failed_status = StatusCode::BAD_GATEWAY.as_u16();
                tracing::debug!(endpoint = %endpoint.id, error = %failure.error, "upstream connect failed");
                // Nothing was sent, so the request (its headers, its unread body) came back.
                body = failure.unsent.map(|unsent| {
                    let (parts, unsent_body) = unsent.into_parts();
                    headers.get_or_insert(parts.headers);
                    unsent_body
                });
                let body_ready = outgoing.resendable_body() || body.is_some();
                if !(may_retry
                    && route.retry.on_connect_failure
                    && body_ready
                    && (headers.is_some() || copy.is_some())
                    && withdraw(route, set))
                {
                    return Err(ProxyError::Upstream);
                }
            }
            Err(mut failure) => {
                if let Some(sent) = failure.sent_headers.take() {
                    headers.get_or_insert(sent);
                }
                if flags.is_some_and(BodyFlags::over_limit) {
                    return Err(ProxyError::BodyTooLarge {
                        limit: route.max_body_bytes.unwrap_or(0),
                    });
                }
                if flags.is_some_and(BodyFlags::timed_out) {
                    tracing::info!(route = %route.name, timeout = ?route.timeouts.body, "client request body stalled: 408");
                    return Err(ProxyError::ClientTimeout(route.timeouts.body));
                }
                if flags.is_some_and(BodyFlags::client_failed) {
                    return Err(ProxyError::ClientBody);
                }
                report_failure(ctx, route, set, index);
                failed_status = StatusCode::BAD_GATEWAY.as_u16();
                tracing::debug!(endpoint = %endpoint.id, error = %failure.error, "upstream request failed");
                // The connection broke after the request may have been sent (an instance killed
                // mid-request, a pooled connection it closed): safe to repeat only when the
                // method is idempotent and no body was streamed.
                let retryable = may_retry
                    && route.retry.on_connect_failure
                    && is_idempotent(&outgoing.method)
                    && outgoing.resendable_body()
                    && (headers.is_some() || copy.is_some());
                if !(retryable && withdraw(route, set)) {
                    return Err(ProxyError::Upstream);
                }
            }
            Ok(pool::Sent {
                response,
                connection,
                headers: sent,
            }) => {
                if let Some(sent) = sent {
                    headers.get_or_insert(sent);
                }
                let status = response.status();
                if status.is_server_error() {
                    report_failure(ctx, route, set, index);
                    failed_status = status.as_u16();
                } else {
                    endpoint.runtime.record_success(&route.outlier);
                    route.budget.deposit();
                }
                let retryable = may_retry
                    && route.retry.on_5xx_for_idempotent
                    && is_idempotent(&outgoing.method)
                    && outgoing.resendable_body()
                    && (headers.is_some() || copy.is_some())
                    && matches!(
                        status,
                        StatusCode::BAD_GATEWAY
                            | StatusCode::SERVICE_UNAVAILABLE
                            | StatusCode::GATEWAY_TIMEOUT
                    );
                if !(retryable && withdraw(route, set)) {
                    // Headers given back and not needed again are the next response head's.
                    if let Some(spare) = headers.take() {
                        h1::recycle_headers(spare);
                    }
                    return Ok(Attempted {
                        response,
                        connection,
                        endpoint: in_flight,
                    });
                }
                // A retried answer that had nothing more to read leaves a reusable connection
                // (our own exchange's body checks its connection in when dropped).
                if response.body().is_end_stream()
                    && let Some(connection) = connection
                {
                    connection.check_in();
                }
            }
        }
    }
}

/// Whether `set` has an available endpoint this request has not tried.
fn has_untried(set: &CompiledSet, now_ms: u64, tried: Tried) -> bool {
    set.endpoints
        .iter()
        .enumerate()
        .any(|(i, e)| !tried.contains(i) && e.runtime.is_available(now_ms))
}

/// Another set of the route with traffic and an available endpoint: the heaviest one.
fn fallback_set(route: &CompiledRoute, current: usize, now_ms: u64) -> Option<usize> {
    route
        .sets
        .iter()
        .enumerate()
        .filter(|(i, s)| {
            *i != current
                && s.weight > 0
                && s.endpoints.iter().any(|e| e.runtime.is_available(now_ms))
        })
        .max_by_key(|(_, s)| s.weight)
        .map(|(i, _)| i)
}

/// Spends a retry token; counts the retry when there was one.
fn withdraw(route: &CompiledRoute, set: &CompiledSet) -> bool {
    let granted = route.budget.try_withdraw();
    if granted {
        set.metrics.add_retry();
    }
    granted
}

fn report_failure(ctx: &Context<'_>, route: &CompiledRoute, set: &CompiledSet, index: usize) {
    let now = ctx.clock.now_ms();
    let endpoint = &set.endpoints[index];
    let others_available = || {
        set.endpoints
            .iter()
            .enumerate()
            .any(|(i, e)| i != index && e.runtime.is_available(now))
    };
    if endpoint
        .runtime
        .record_failure(&route.outlier, now, &set.eject_lock, others_available)
    {
        set.metrics.add_ejection();
        tracing::info!(route = %route.name, set = %set.name, endpoint = %endpoint.id, "endpoint ejected");
    }
}

/// A copy of a request's upstream headers kept for a retry: a list whose allocation is
/// reused from request to request on a thread (cloning the `HeaderMap` allocated and freed
/// its two tables every time: ≈800 instructions per request, docs/benchmarks.md), turned
/// back into a map only for a retry.
struct RetryCopy(Vec<(HeaderName, HeaderValue)>);

thread_local! {
    static SPARE_COPY: std::cell::Cell<Vec<(HeaderName, HeaderValue)>> =
        const { std::cell::Cell::new(Vec::new()) };
}

impl RetryCopy {
    fn of(headers: &hyper::HeaderMap) -> Self {
        let mut list = SPARE_COPY
            .try_with(std::cell::Cell::take)
            .unwrap_or_default();
        list.extend(headers.iter().map(|(n, v)| (n.clone(), v.clone())));
        Self(list)
    }

    /// The headers again, in their order (repeated names appended in turn).
    fn to_map(&self) -> hyper::HeaderMap {
        let mut map = hyper::HeaderMap::with_capacity(self.0.len());
        for (name, value) in &self.0 {
            map.append(name.clone(), value.clone());
        }
        map
    }
}

impl Drop for RetryCopy {
    fn drop(&mut self) {
        let mut list = std::mem::take(&mut self.0);
        list.clear();
        // `try_with`: a copy dropped while the thread's locals are destroyed is just freed.
        let _ = SPARE_COPY.try_with(|spare| spare.set(list));
    }
}

fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE
    )
}

fn build_request(
    outgoing: &Outgoing,
    headers: hyper::HeaderMap,
    body: UpstreamBody,
) -> Request<UpstreamBody> {
    let mut request = Request::new(body);
    *request.method_mut() = outgoing.method.clone();
    // Origin form (`/path?query`): what an HTTP/1.1 server expects from a client; the
    // authority travels in `Host`.
    *request.uri_mut() = Uri::from(outgoing.path_and_query.clone());
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = headers;
    request
}

fn relay(
    route: &CompiledRoute,
    set: &CompiledSet,
    attempted: Attempted,
    guard: InFlightRequest,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    websocket: bool,
) -> Response<ProxyBody> {
    let Attempted {
        response: upstream,
        connection,
        endpoint,
    } = attempted;
    let switching = upstream.status() == StatusCode::SWITCHING_PROTOCOLS;
    if switching {
        let (parts, body) = upstream.into_parts();
        if let (true, Some(client), UpstreamIncoming::Hyper(body)) =
            (websocket, client_upgrade, body)
        {
            let upstream = Response::from_parts(parts, body);
            return upgrade::tunnel(upstream, client, route.timeouts.tunnel, set.metrics.clone());
        }
        // A 101 we did not ask for cannot be relayed as a normal response.
        return local_error(&ProxyError::Upstream);
    }
    let (mut parts, body) = upstream.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers);
    let body = ProxyBody::relay(
        body,
        connection,
        route.timeouts.idle,
        set.metrics.clone(),
        guard,
        Some(endpoint),
    );
    Response::from_parts(parts, body)
}

fn finish_response(
    route: &CompiledRoute,
    set: &CompiledSet,
    issue_cookie: bool,
    response: &mut Response<ProxyBody>,
) {
    headers::set_all(response.headers_mut(), &route.response_headers);
    if let (true, Some(cookie)) = (issue_cookie, &route.sticky_cookie) {
        let value = format!("{cookie}={}; Path=/; HttpOnly; SameSite=Lax", set.name);
        if let Ok(value) = HeaderValue::try_from(value) {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
}

/// A short text response written by the proxy itself.
pub(crate) fn local_error(error: &ProxyError) -> Response<ProxyBody> {
    let mut text = error.to_string();
    // Echoed request parts are capped so a huge path cannot make a huge error page.
    if text.len() > 512 {
        let mut cut = 512;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text.push('\n');
    let mut response = Response::new(ProxyBody::text(text));
    *response.status_mut() = error.status();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Used by `upgrade` for the client-facing 101 and by tests of the body type.
pub(crate) fn empty_response(status: StatusCode) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::empty());
    *response.status_mut() = status;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retry_copy_gives_the_headers_back_in_order() {
        let mut headers = hyper::HeaderMap::new();
        headers.append("x-a", HeaderValue::from_static("1"));
        headers.append("x-b", HeaderValue::from_static("2"));
        headers.append("x-a", HeaderValue::from_static("3"));
        for _ in 0..2 {
            // The second time on the list the first one left behind.
            let copy = RetryCopy::of(&headers);
            assert_eq!(copy.to_map(), headers);
            let again: Vec<_> = copy.to_map().get_all("x-a").iter().cloned().collect();
            assert_eq!(again, ["1", "3"]);
        }
    }

    #[test]
    fn error_pages_are_short_text() {
        let long = "x".repeat(10_000);
        let response = local_error(&ProxyError::NoRoute {
            host: "h".into(),
            path: long,
        });
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        let ProxyBody::Local(_) = response.body() else {
            panic!("not local")
        };
    }
}
