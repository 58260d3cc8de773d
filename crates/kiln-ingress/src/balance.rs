//! Choosing where a request goes: first a backend set (sticky cookie, else weighted random),
//! then an available endpoint in it (round robin, or the less busy of two random picks).
//! Retries pass the endpoints already tried so they land elsewhere when anything else is up.

use std::sync::atomic::Ordering;

use hyper::HeaderMap;
use hyper::header;

use crate::config::Balance;
use crate::rand::below;
use crate::table::{CompiledEndpoint, CompiledRoute, CompiledSet};

/// Endpoints already tried by this request, by index in the set (the first 64 are tracked).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Tried(u64);

impl Tried {
    pub(crate) fn add(&mut self, index: usize) {
        if index < 64 {
            self.0 |= 1 << index;
        }
    }

    pub(crate) fn contains(self, index: usize) -> bool {
        index < 64 && self.0 & (1 << index) != 0
    }
}

/// The set a request goes to, and whether the sticky cookie must be (re)issued.
pub(crate) fn choose_set(route: &CompiledRoute, headers: &HeaderMap) -> Option<(usize, bool)> {
    if let Some(cookie) = &route.sticky_cookie
        && let Some(pinned) = cookie_value(headers, cookie)
        && let Some(index) = route
            .sets
            .iter()
            .position(|s| s.name == pinned && s.weight > 0)
    {
        return Some((index, false));
    }
    let index = weighted(route)?;
    Some((index, route.sticky_cookie.is_some()))
}

fn weighted(route: &CompiledRoute) -> Option<usize> {
    if route.total_weight == 0 {
        return None;
    }
    let mut ticket = below(route.total_weight);
    for (index, set) in route.sets.iter().enumerate() {
        if ticket < set.weight {
            return Some(index);
        }
        ticket -= set.weight;
    }
    None
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie_value<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"'))
}

/// An available endpoint not yet tried, else any available one, else none (→ 503).
pub(crate) fn choose_endpoint(
    set: &CompiledSet,
    balance: Balance,
    now_ms: u64,
    tried: Tried,
) -> Option<usize> {
    let n = set.endpoints.len();
    if n == 0 {
        return None;
    }
    let fresh = |i: usize| set.endpoints[i].runtime.is_available(now_ms) && !tried.contains(i);
    let picked = match balance {
        Balance::RoundRobin => {
            let start = set.next.fetch_add(1, Ordering::Relaxed);
            (0..n).map(|k| (start + k) % n).find(|&i| fresh(i))
        }
        Balance::LeastRequests => least_of_two(&set.endpoints, &fresh),
    };
    picked.or_else(|| (0..n).find(|&i| set.endpoints[i].runtime.is_available(now_ms)))
}

/// Power of two choices: compare two random endpoints, scan only if neither is usable.
fn least_of_two(endpoints: &[CompiledEndpoint], fresh: &dyn Fn(usize) -> bool) -> Option<usize> {
    let n = endpoints.len();
    let a = below(n as u64) as usize;
    let b = if n > 1 {
        let b = below(n as u64 - 1) as usize;
        if b >= a { b + 1 } else { b }
    } else {
        a
    };
    match (fresh(a), fresh(b)) {
        (true, true) => {
            let busy = |i: usize| endpoints[i].runtime.in_flight();
            Some(if busy(b) < busy(a) { b } else { a })
        }
        (true, false) => Some(a),
        (false, true) => Some(b),
        (false, false) => (0..n).map(|k| (a + k) % n).find(|&i| fresh(i)),
    }
}
