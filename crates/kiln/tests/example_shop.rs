//! The README's first command on the example stack: the shop comes up (api ×2, web, worker),
//! the front page lists products from the api, an order placed through the web is fulfilled
//! by the worker, and `kiln down` stops everything.

// Tests panic on purpose: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::{Scratch, example_shop, wait_until};

fn http(port: u16, request: &str) -> String {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    text
}

#[test]
fn the_example_shop_comes_up_serves_orders_and_goes_down() {
    let s = example_shop();
    s.ok(&["validate"]);
    s.ok(&["up", "-d", "--interval", "2"]);
    let ps = || -> Vec<serde_json::Value> {
        serde_json::from_slice::<serde_json::Value>(&s.run(&["ps", "--json"]).stdout)
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
    };
    let stop = scopeguard(&s);
    assert!(
        wait_until(Duration::from_secs(30), || {
            let l = ps();
            l.len() == 4 && l.iter().all(|i| i["state"] == "ready")
        }),
        "{:?}",
        ps()
    );

    let motd = std::fs::read_to_string(s.file("out/motd")).unwrap();
    assert!(motd.contains("Shop: http://shop.localhost:"), "{motd}");
    // Through the ingress: the front page from web, the products from api.
    let status: serde_json::Value = serde_json::from_str(&s.ok(&["status", "--json"])).unwrap();
    let ingress: u16 = status["ingress"]
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let page = http(ingress, "GET / HTTP/1.0\r\nHost: shop.localhost\r\n\r\n");
    assert!(
        page.split(' ').nth(1) == Some("200") && page.contains("<html"),
        "{page}"
    );
    let via_route = http(
        ingress,
        "GET /api/products HTTP/1.0\r\nHost: shop.localhost\r\n\r\n",
    );
    assert_eq!(via_route.split(' ').nth(1), Some("200"), "{via_route}");

    // An order through the api is fulfilled by the worker.
    let api = ps().into_iter().find(|i| i["service"] == "api").unwrap()["port"]
        .as_u64()
        .unwrap() as u16;
    let products = http(api, "GET /api/products HTTP/1.0\r\nHost: shop\r\n\r\n");
    let body = products.split("\r\n\r\n").nth(1).unwrap();
    let list: serde_json::Value = serde_json::from_str(body).unwrap();
    let first = list
        .as_array()
        .map(|a| a[0].clone())
        .or_else(|| list["products"].as_array().map(|a| a[0].clone()))
        .unwrap();
    let order = format!("{{\"productId\": {}, \"quantity\": 1}}", first["id"]);
    let placed = http(
        api,
        &format!(
            "POST /api/orders HTTP/1.0\r\nHost: shop\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{order}",
            order.len()
        ),
    );
    assert!(placed.starts_with("HTTP/1.1 201"), "{placed}");
    assert!(
        wait_until(Duration::from_secs(20), || std::fs::read_to_string(
            s.file("out/data/worker/fulfilled.log")
        )
        .is_ok_and(|l| !l.is_empty())),
        "the worker did not fulfil the order"
    );
    drop(stop);
    assert!(s.ok(&["status"]).contains("not running"));
}

struct Stop<'a>(&'a Scratch);

impl Drop for Stop<'_> {
    fn drop(&mut self) {
        let _ = self.0.run(&["down"]);
    }
}

fn scopeguard(s: &Scratch) -> Stop<'_> {
    Stop(s)
}
