//! A route's maintenance page: while one is set (and its end has not passed), the route
//! answers every request itself, like kamal-proxy's `stop --message` or nginx's `return 503`
//! with an `error_page`: the status, `Retry-After`, `Cache-Control: no-store`, and a small page
//! (HTML with the message escaped, or plain text when the client's `Accept` does not take HTML).
//!
//! The page is rendered once when the table is compiled; a request only picks the variant
//! and computes `Retry-After`.

use std::time::{Duration, SystemTime};

use hyper::body::Bytes;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Response, StatusCode};

use crate::body::ProxyBody;
use crate::config::Maintenance;

/// The longest `Retry-After` derived from the time left (a client is told to come back
/// within the hour even when the window is longer).
pub const MAX_DERIVED_RETRY_AFTER: Duration = Duration::from_secs(3600);
/// `Retry-After` of a page with neither an end nor an explicit value.
pub const OPEN_ENDED_RETRY_AFTER: Duration = Duration::from_secs(60);

/// A maintenance page ready to serve.
#[derive(Debug)]
pub(crate) struct CompiledMaintenance {
    status: StatusCode,
    html: Bytes,
    text: Bytes,
    retry_after: Option<Duration>,
    until: Option<SystemTime>,
}

impl CompiledMaintenance {
    /// `None` when the status is not a valid 4xx/5xx (refused by `RouteTable::new`).
    pub(crate) fn compile(page: &Maintenance) -> Option<Self> {
        let status = StatusCode::from_u16(page.status)
            .ok()
            .filter(|s| s.is_client_error() || s.is_server_error())?;
        Some(Self {
            status,
            html: Bytes::from(render_html(status, &page.message)),
            text: Bytes::from(format!("{}\n", page.message)),
            retry_after: page.retry_after,
            until: page.until,
        })
    }

    /// The page for a request with `headers` at `now`, or `None` once its end has passed
    /// (the route proxies again without waiting for the next table).
    pub(crate) fn answer(
        &self,
        headers: &HeaderMap,
        now: SystemTime,
    ) -> Option<Response<ProxyBody>> {
        let left = match self.until {
            Some(until) => Some(until.duration_since(now).ok().filter(|d| !d.is_zero())?),
            None => None,
        };
        let retry_after = self.retry_after.unwrap_or_else(|| {
            left.map_or(OPEN_ENDED_RETRY_AFTER, |left| {
                left.min(MAX_DERIVED_RETRY_AFTER)
            })
        });
        // Whole seconds, rounded up: "0" would invite an immediate retry.
        let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
        let (body, content_type) = if takes_html(headers) {
            (self.html.clone(), "text/html; charset=utf-8")
        } else {
            (self.text.clone(), "text/plain; charset=utf-8")
        };
        let mut response = Response::new(ProxyBody::bytes(body));
        *response.status_mut() = self.status;
        let out = response.headers_mut();
        out.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        out.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        out.insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        Some(response)
    }
}

fn render_html(status: StatusCode, message: &str) -> String {
    let message = escape_html(message);
    let title = escape_html(status.canonical_reason().unwrap_or("Unavailable"));
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:36rem;margin:20vh auto;padding:0 1rem;color:#222}}</style>\
         </head><body><h1>{title}</h1><p>{message}</p></body></html>\n"
    )
}

/// Escapes text for an HTML element's content or an attribute value.
pub(crate) fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            other => out.push(other),
        }
    }
    out
}

/// Whether the client takes HTML at least as gladly as plain text: no `Accept` takes anything;
/// otherwise the most specific range matching each type gives its quality (RFC 9110 §12.5.1).
pub(crate) fn takes_html(headers: &HeaderMap) -> bool {
    let ranges: Vec<(String, String, f32)> = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(parse_range)
        .collect();
    if ranges.is_empty() {
        return true;
    }
    let quality = |ty: &str, sub: &str| -> f32 {
        ranges
            .iter()
            .filter(|(t, s, _)| (*t == "*" || *t == ty) && (*s == "*" || *s == sub))
            .max_by_key(|(t, s, _)| usize::from(*t != "*") + usize::from(*s != "*"))
            .map_or(0.0, |(_, _, q)| *q)
    };
    // XHTML counts only when named: `*/*` already speaks through `text/html`.
    let xhtml = ranges
        .iter()
        .filter(|(t, s, _)| t == "application" && s == "xhtml+xml")
        .map(|(_, _, q)| *q)
        .fold(0.0, f32::max);
    let html = quality("text", "html").max(xhtml);
    html > 0.0 && html >= quality("text", "plain")
}

/// One media range of `Accept`: type, subtype (lowercased: only pages in maintenance parse
/// it) and quality.
fn parse_range(item: &str) -> Option<(String, String, f32)> {
    let mut parts = item.split(';');
    let (ty, sub) = parts.next()?.trim().split_once('/')?;
    let (ty, sub) = (ty.trim(), sub.trim());
    if ty.is_empty() || sub.is_empty() {
        return None;
    }
    let mut q = 1.0;
    for param in parts {
        if let Some((name, value)) = param.split_once('=')
            && name.trim().eq_ignore_ascii_case("q")
        {
            q = value
                .trim()
                .parse::<f32>()
                .ok()
                .filter(|q| (0.0..=1.0).contains(q))?;
        }
    }
    Some((ty.to_ascii_lowercase(), sub.to_ascii_lowercase(), q))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn page(
        message: &str,
        until: Option<SystemTime>,
        retry_after: Option<Duration>,
    ) -> CompiledMaintenance {
        CompiledMaintenance::compile(&Maintenance {
            status: 503,
            message: message.into(),
            retry_after,
            until,
        })
        .expect("a valid page")
    }

    fn accept(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_str(value).expect("a header"),
        );
        headers
    }

    async fn body_of(response: Response<ProxyBody>) -> String {
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("a local body")
            .to_bytes();
        String::from_utf8(bytes.to_vec()).expect("utf-8")
    }

    #[tokio::test]
    async fn the_page_has_its_status_headers_and_escaped_message() {
        let now = SystemTime::now();
        let p = page(
            "Back <soon> & \"then\" 'some'",
            Some(now + Duration::from_secs(600)),
            None,
        );
        let response = p.answer(&accept("text/html,*/*;q=0.8"), now).expect("on");
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let h = response.headers();
        assert_eq!(h[header::RETRY_AFTER], "600");
        assert_eq!(h[header::CACHE_CONTROL], "no-store");
        assert_eq!(h[header::CONTENT_TYPE], "text/html; charset=utf-8");
        let body = body_of(response).await;
        assert!(
            body.contains("<p>Back &lt;soon&gt; &amp; &quot;then&quot; &#39;some&#39;</p>"),
            "{body}"
        );
        assert!(
            body.contains("<title>Service Unavailable</title>"),
            "{body}"
        );
    }

    #[tokio::test]
    async fn clients_that_do_not_take_html_get_plain_text() {
        let now = SystemTime::now();
        let p = page("Back <soon>", None, None);
        for value in [
            "application/json",
            "text/plain",
            "text/html;q=0, */*",
            "text/plain, text/html;q=0.5",
        ] {
            let response = p.answer(&accept(value), now).expect("on");
            assert_eq!(
                response.headers()[header::CONTENT_TYPE],
                "text/plain; charset=utf-8",
                "{value}"
            );
            assert_eq!(body_of(response).await, "Back <soon>\n", "{value}");
        }
        for value in [
            "*/*",
            "text/*",
            "TEXT/HTML",
            "application/xhtml+xml",
            "text/html;q=0.9, text/plain;q=0.9",
        ] {
            let response = p.answer(&accept(value), now).expect("on");
            assert_eq!(
                response.headers()[header::CONTENT_TYPE],
                "text/html; charset=utf-8",
                "{value}"
            );
        }
        // No Accept takes anything.
        let response = p.answer(&HeaderMap::new(), now).expect("on");
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
    }

    #[test]
    fn retry_after_is_the_time_left_capped_or_as_given() {
        let now = SystemTime::now();
        let short = page("m", Some(now + Duration::from_millis(1_500)), None);
        let r = short.answer(&HeaderMap::new(), now).expect("on");
        assert_eq!(r.headers()[header::RETRY_AFTER], "2");
        let long = page("m", Some(now + Duration::from_secs(86_400)), None);
        let r = long.answer(&HeaderMap::new(), now).expect("on");
        assert_eq!(r.headers()[header::RETRY_AFTER], "3600");
        let given = page(
            "m",
            Some(now + Duration::from_secs(600)),
            Some(Duration::from_secs(30)),
        );
        let r = given.answer(&HeaderMap::new(), now).expect("on");
        assert_eq!(r.headers()[header::RETRY_AFTER], "30");
        let open = page("m", None, None);
        let r = open.answer(&HeaderMap::new(), now).expect("on");
        assert_eq!(r.headers()[header::RETRY_AFTER], "60");
    }

    #[test]
    fn a_page_past_its_end_answers_nothing() {
        let now = SystemTime::now();
        let p = page("m", Some(now), None);
        assert!(p.answer(&HeaderMap::new(), now).is_none());
        assert!(
            p.answer(&HeaderMap::new(), now + Duration::from_secs(1))
                .is_none()
        );
    }

    #[test]
    fn only_4xx_and_5xx_pages_compile() {
        let with = |status| Maintenance {
            status,
            message: "m".into(),
            retry_after: None,
            until: None,
        };
        assert!(CompiledMaintenance::compile(&with(503)).is_some());
        assert!(CompiledMaintenance::compile(&with(410)).is_some());
        assert!(CompiledMaintenance::compile(&with(200)).is_none());
        assert!(CompiledMaintenance::compile(&with(302)).is_none());
        assert!(CompiledMaintenance::compile(&with(999)).is_none());
    }
}
