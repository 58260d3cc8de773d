//! Issue 7's acceptance on the example stack: `examples/shop` with `kiln.delivery.yaml` in a
//! scratch git repository. Its real `.github/workflows/ci.yml` (npm ci + eslint, `node --test`
//! per service, one artifact per service directory) runs on every push; a green run's releases
//! reach staging by themselves and production by promotion, under constant load on
//! production's route; a commit that breaks a test deploys nowhere; one whose api fails health
//! in staging is rolled back there and never promoted; a forged webhook is refused.

// Tests panic on purpose: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use common::{
    Down, Scratch, deliver, git, push_and_wait, push_payload, push_without_hook, wait_for_push,
    wait_until,
};

const SECRET: &str = "shop webhook secret";
/// One push: the shop's pipeline (npm ci and eslint, then three test jobs, then packaging).
/// About 20 s on a quiet machine; more than 75 s was seen at a load average of 20.
const PIPELINE: Duration = Duration::from_secs(180);
/// A deploy or an automatic promotion (gates checked every 2 s, then a rolling deploy of two
/// api instances, each started, ready, healthy for 1 s and its predecessor drained): seconds
/// on a quiet machine, several times that on a loaded one. Only a failure waits this long.
const DEPLOY: Duration = Duration::from_secs(120);

/// `kiln` with the webhook's secret, and npm kept offline: the pipeline's `npm ci` installs
/// from the npm cache (`.ci/run` fills it with its own `npm ci` of the shop), never the network.
fn kiln(s: &Scratch, args: &[&str]) -> Output {
    s.command(args)
        .env("SHOP_WEBHOOK_SECRET", SECRET)
        .env("npm_config_offline", "true")
        .output()
        .unwrap()
}

/// The release `service` runs in `environment` (its digest), if any.
fn current(s: &Scratch, service: &str, environment: &str) -> serde_json::Value {
    s.json(&["releases", &format!("{service}.{environment}"), "--json"])["current"].clone()
}

/// The digest of `service`'s release built from `commit`, once there is one.
fn release_of(s: &Scratch, service: &str, commit: &str) -> Option<serde_json::Value> {
    let releases = s.json(&["releases", &format!("{service}.staging"), "--json"]);
    releases["releases"]
        .as_array()?
        .iter()
        .find(|r| r["commit"] == commit)
        .map(|r| r["digest"].clone())
}

/// Rewrites `from` to `to` in the file `rel` of the clone `dev` and commits it.
fn commit_edit(dev: &Path, rel: &str, from: &str, to: &str, message: &str) {
    let path = dev.join(rel);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "{rel} has no `{from}`");
    std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
    git(dev, &["commit", "-qam", message]);
}

/// The promotions recorded (their releases' digests).
fn promoted(s: &Scratch) -> Vec<serde_json::Value> {
    s.json(&["events", "--json", "--limit", "500"])
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "promotion.recorded")
        .map(|e| e["data"]["release"].clone())
        .collect()
}

#[test]
fn the_example_shop_goes_from_push_to_production_through_staging() {
    let origin = tempfile::tempdir().unwrap();
    let bare = origin.path().join("shop.git");
    git(origin.path(), &["init", "-q", "--bare", "shop.git"]);
    let s = common::example_shop_delivered(&bare, "1s");
    let dev = origin.path().join("dev");
    git(origin.path(), &["clone", "-q", "shop.git", "dev"]);

    // The first releases are built by hand; from then on, pushes deliver.
    let first = kiln(&s, &["ci", "run", "ci.yml"]);
    assert!(first.status.success(), "{first:?}");
    let up = kiln(
        &s,
        &[
            "up",
            "-d",
            "--interval",
            "30",
            "--hooks-listen",
            "127.0.0.1:0",
        ],
    );
    assert!(up.status.success(), "{up:?}");
    let _down = Down(&s);
    // Staging runs what its environment overrides: one api.
    let status = s.json(&["status", "--json"]);
    let addr = status["ingress"].as_str().unwrap().to_owned();
    assert!(
        wait_until(DEPLOY, || !current(&s, "api", "production").is_null()),
        "the first release reaches production by promotion: {}",
        s.ok(&["events", "--limit", "40"])
    );
    let plan = s.ok(&[
        "state",
        "show",
        "environments.staging.services.api",
        "--json",
    ]);
    assert!(plan.contains("\"replicas\": 1"), "{plan}");
    let production_api = s.ok(&[
        "state",
        "show",
        "environments.production.services.api",
        "--json",
    ]);
    assert!(
        production_api.contains("\"replicas\": 2"),
        "{production_api}"
    );
    // The web reaches production by its own promotion, which may come after the api's.
    assert!(
        wait_until(DEPLOY, || common::get_body(&addr, "shop.localhost")
            .contains("Kiln Shop")),
        "production's web answers through the ingress: {}",
        s.ok(&["events", "--limit", "40"])
    );
    let load = common::Load::start(&addr, "shop.localhost", "/api/products", 2);

    // Green, through a signed webhook (pushed with the repository's hook switched off): built
    // once, deployed to staging, promoted to production. A forged signature is refused.
    commit_edit(
        &dev,
        "api/server.js",
        "const MAX_BODY_BYTES",
        "// Orders larger than this are refused.\nconst MAX_BODY_BYTES",
        "api: say why the body limit exists",
    );
    let green = git(&dev, &["rev-parse", "HEAD"]);
    let before = git(&dev, &["rev-parse", "HEAD~1"]);
    push_without_hook(&dev);
    let body = push_payload(&before, &green, &["api/server.js"]);
    let hooks_addr = std::fs::read_to_string(s.file(".kiln/hooks.addr")).unwrap();
    let forged = kiln_delivery::webhook::sign(b"not the secret", body.as_bytes());
    assert_eq!(
        deliver(&hooks_addr, "push", "shop-1", &body, Some(&forged)),
        401
    );
    let signature = kiln_delivery::webhook::sign(SECRET.as_bytes(), body.as_bytes());
    assert_eq!(
        deliver(&hooks_addr, "push", "shop-1", &body, Some(&signature)),
        202
    );
    let event = wait_for_push(&s, &green, PIPELINE);
    assert_eq!(event["data"]["source"], "webhook", "{event:#}");
    assert_eq!(
        event["data"]["runs"][0]["status"],
        "success",
        "{event:#}\n{}",
        newest_run_logs(&s)
    );
    let v2 = release_of(&s, "api", &green)
        .unwrap_or_else(|| panic!("the green commit made an api release: {event:#}"));
    assert_eq!(current(&s, "api", "staging"), v2);
    assert!(
        wait_until(DEPLOY, || current(&s, "api", "production") == v2),
        "production runs the digest staging was deployed: {}",
        s.ok(&["events", "--limit", "40"])
    );

    // Red, through the hook: the change breaks `node --test test/api.test.js`; nothing deploys.
    commit_edit(
        &dev,
        "api/server.js",
        "does not exist`",
        "is unknown`",
        "api: reword the unknown product error",
    );
    let (red, event) = push_and_wait(&s, &dev, PIPELINE);
    assert_eq!(event["data"]["source"], "hook", "{event:#}");
    assert_eq!(event["data"]["runs"][0]["status"], "failure", "{event:#}");
    assert_eq!(
        event["data"]["deployed"],
        serde_json::json!([]),
        "{event:#}"
    );
    assert!(release_of(&s, "api", &red).is_none());

    // Sick: the tests pass, but the api dies wherever kiln runs a release of it. Staging rolls
    // it back; production never gets it.
    commit_edit(
        &dev,
        "api/server.js",
        "is unknown`",
        "does not exist`",
        "api: put the error back",
    );
    commit_edit(
        &dev,
        "api/server.js",
        "const port = requirePort();",
        "if (process.env.KILN_INSTANCE) fatal('a release that only breaks where kiln runs it');\nconst port = requirePort();",
        "api: break only when deployed",
    );
    let (sick, event) = push_and_wait(&s, &dev, PIPELINE);
    assert_eq!(
        event["data"]["runs"][0]["status"],
        "success",
        "{event:#}\n{}",
        newest_run_logs(&s)
    );
    let api_deploy = event["data"]["deployed"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| {
            d["service"]
                .as_str()
                .is_some_and(|a| a.ends_with("services.api"))
        })
        .cloned()
        .unwrap_or_else(|| panic!("the sick api was deployed to staging: {event:#}"));
    assert_ne!(api_deploy["result"], "deployed", "{event:#}");
    let sick_release = release_of(&s, "api", &sick).unwrap();
    assert_eq!(current(&s, "api", "staging"), v2);
    let promotions = promoted(&s);
    assert!(promotions.contains(&v2), "{promotions:?}");
    assert!(!promotions.contains(&sick_release), "{promotions:?}");
    assert_eq!(current(&s, "api", "production"), v2);

    let tally = load.finish();
    tally.assert_none_failed();
    assert!(tally.ok > 100, "the load ran: {tally:?}");
}

/// The newest pipeline run's logs, for a failure message: a run that fails in CI under load
/// must say which step failed and what it printed.
fn newest_run_logs(s: &Scratch) -> String {
    let runs = s.json(&["ci", "list", "--json"]);
    let Some(id) = runs[0]["id"].as_u64() else {
        return format!("no run listed: {runs}");
    };
    let logs = s.run(&["ci", "logs", &id.to_string()]);
    format!(
        "logs of run {id}:\n{}{}",
        String::from_utf8_lossy(&logs.stdout),
        String::from_utf8_lossy(&logs.stderr)
    )
}
