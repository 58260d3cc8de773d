//! Runbooks' Markdown documentation as HTML for the dashboard. The text comes from the user's
//! `kiln.yaml`, so nothing in it may reach the page as markup of its own: raw HTML (blocks
//! and inline) is shown as text, links keep only `http`, `https`, `mailto` and relative
//! addresses (a `javascript:` link becomes its plain text), and images become links to the
//! image, so the page never loads anything it was not built with. What remains is what
//! CommonMark makes of headings, paragraphs, emphasis, lists, code, quotes, tables and links.

use pulldown_cmark::{CowStr, Event, Options, Parser, Tag, TagEnd};

/// The schemes a link may use; anything without a scheme is relative and stays on the page.
const SAFE_SCHEMES: [&str; 3] = ["http", "https", "mailto"];

/// `markdown` as HTML safe to put inside the dashboard's page.
pub fn to_html(markdown: &str) -> String {
    let options = Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH;
    // Whether each open link or image was kept, so its end matches.
    let mut kept: Vec<bool> = Vec::new();
    let events = Parser::new_ext(markdown, options).filter_map(|event| match event {
        Event::Html(text) | Event::InlineHtml(text) => Some(Event::Text(text)),
        Event::Start(Tag::HtmlBlock) => Some(Event::Start(Tag::Paragraph)),
        Event::End(TagEnd::HtmlBlock) => Some(Event::End(TagEnd::Paragraph)),
        Event::Start(Tag::Link {
            link_type,
            dest_url,
            title,
            id,
        })
        | Event::Start(Tag::Image {
            link_type,
            dest_url,
            title,
            id,
        }) => {
            let safe = is_safe_url(&dest_url);
            kept.push(safe);
            safe.then_some(Event::Start(Tag::Link {
                link_type,
                dest_url,
                title,
                id,
            }))
        }
        Event::End(TagEnd::Link | TagEnd::Image) => kept
            .pop()
            .unwrap_or(false)
            .then_some(Event::End(TagEnd::Link)),
        other => Some(other),
    });
    let mut html = String::with_capacity(markdown.len() * 3 / 2);
    pulldown_cmark::html::push_html(&mut html, events);
    html
}

/// Whether a link to `url` may be followed from the dashboard: relative, or one of
/// [`SAFE_SCHEMES`]. Browsers ignore whitespace and control characters inside a scheme
/// (`java\tscript:`), so those are left out before looking for it.
fn is_safe_url(url: &CowStr<'_>) -> bool {
    let squeezed: String = url
        .chars()
        .filter(|c| !c.is_ascii_whitespace() && !c.is_control())
        .collect();
    let scheme_end = squeezed.find(':');
    let path_start = squeezed.find(['/', '?', '#']);
    match (scheme_end, path_start) {
        // A colon after the path starts (`/a:b`, `#x:y`) is no scheme.
        (Some(colon), Some(path)) if path < colon => true,
        (Some(colon), _) => {
            let scheme = squeezed[..colon].to_ascii_lowercase();
            SAFE_SCHEMES.contains(&scheme.as_str())
        }
        (None, _) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headings_paragraphs_lists_code_and_links_are_rendered() {
        let html = to_html(
            "# Recover the api\n\nRestart it, then **check**:\n\n- the `/health` page\n- [the logs](https://example.invalid/logs)\n\n```\nkiln restart api\n```\n",
        );
        assert!(html.contains("<h1>Recover the api</h1>"), "{html}");
        assert!(html.contains("<strong>check</strong>"), "{html}");
        assert!(
            html.contains("<li>the <code>/health</code> page</li>"),
            "{html}"
        );
        assert!(
            html.contains("<a href=\"https://example.invalid/logs\">the logs</a>"),
            "{html}"
        );
        assert!(
            html.contains("<pre><code>kiln restart api\n</code></pre>"),
            "{html}"
        );
    }

    #[test]
    fn raw_html_is_shown_as_text() {
        let html = to_html(
            "<script>alert(1)</script>\n\nText with <img src=x onerror=alert(2)> inline.\n\n<div onclick=\"x()\">block</div>\n",
        );
        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains("<img"), "{html}");
        assert!(!html.contains("<div"), "{html}");
        assert!(
            html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{html}"
        );
        assert!(
            html.contains("&lt;img src=x onerror=alert(2)&gt;"),
            "{html}"
        );
        assert!(html.contains("&lt;div onclick=\"x()\"&gt;block"), "{html}");
    }

    #[test]
    fn unsafe_links_become_text_and_images_links() {
        for link in [
            "[click](javascript:alert(1))",
            "[click](JavaScript:alert(1))",
            "[click](&#106;avascript:alert(1))",
            "<javascript:alert(1)>",
            "[click](<java\tscript:alert(1)>)",
            "[click](data:text/html,<script>alert(1)</script>)",
            "[click](vbscript:msgbox)",
        ] {
            let html = to_html(link);
            assert!(!html.contains("<a"), "{link}: {html}");
            assert!(
                !html.to_ascii_lowercase().contains("href"),
                "{link}: {html}"
            );
        }
        let html = to_html("![the graph](https://example.invalid/g.png)");
        assert_eq!(
            html,
            "<p><a href=\"https://example.invalid/g.png\">the graph</a></p>\n"
        );
        let html = to_html("![x](javascript:alert(1)) and [ok](/#/incidents) [mail](mailto:a@b.c)");
        assert!(!html.contains("javascript"), "{html}");
        assert!(html.contains("<a href=\"/#/incidents\">ok</a>"), "{html}");
        assert!(html.contains("<a href=\"mailto:a@b.c\">mail</a>"), "{html}");
    }

    #[test]
    fn relative_addresses_are_safe_and_schemes_are_checked() {
        let safe = |u: &str| is_safe_url(&CowStr::from(u.to_owned()));
        assert!(safe("runbooks.md"));
        assert!(safe("/a:b"));
        assert!(safe("#x:y"));
        assert!(safe("HTTPS://example.invalid"));
        assert!(!safe(" javascript:x"));
        assert!(!safe("file:///etc/passwd"));
    }
}
