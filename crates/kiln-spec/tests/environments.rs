//! `environments:`: services and routes instantiated per environment, per-environment vars and
//! secrets, promoted releases read through the `FileSystem`, and every mistake at once.

use std::collections::BTreeMap;
use std::path::Path;

use kiln_spec::eval::{Context, Known, evaluate_resource};
use kiln_spec::{Code, FileSystem, MemoryFs, Stack, load};

/// An in-memory tree whose state store knows some promotions.
struct Promoted {
    files: MemoryFs,
    releases: BTreeMap<String, String>,
    /// The state store cannot be read.
    broken: bool,
}

impl FileSystem for Promoted {
    fn read_to_string(&self, path: &Path) -> std::io::Result<String> {
        self.files.read_to_string(path)
    }
    fn is_dir(&self, path: &Path) -> bool {
        self.files.is_dir(path)
    }
    fn tree_digest(&self, _dir: &Path) -> Option<std::io::Result<String>> {
        Some(Ok("sha256:tree".into()))
    }
    fn promoted_release(
        &self,
        _stack_dir: &Path,
        _environment: &str,
        address: &str,
    ) -> Option<std::io::Result<Option<String>>> {
        if self.broken {
            return Some(Err(std::io::Error::other(
                "database disk image is malformed",
            )));
        }
        Some(Ok(self.releases.get(address).cloned()))
    }
}

const SHOP: &str = r#"name: shop
vars: { greeting: Hello }
secrets: { token: { env: TOKEN } }
services:
  api:
    path: api
    run: ./serve
    env: { GREETING: "${{ vars.greeting }}", TOKEN: "${{ secrets.token }}" }
  web:
    run: ./web
    env: { API: "${{ services.api.url }}" }
routes:
  - { host: shop.localhost, path: /, service: web }
environments:
  staging:
    vars: { greeting: Hi staging }
    secrets: { token: { env: STAGING_TOKEN } }
    routes: [ { host: staging.shop.localhost, path: /, service: web } ]
    deploy: { auto: true }
  production:
    promote: { from: staging, soak: 10s, approval: true, pipeline: ci, windows: [ "Mon-Fri 08:00-18:00 UTC" ], freeze: [ { from: "2026-12-24T00:00:00Z", to: "2026-12-27T00:00:00Z" } ] }
"#;

fn shop_fs(releases: &[(&str, &str)], broken: bool) -> Promoted {
    let mut files = MemoryFs::new();
    files.add("stack/kiln.yaml", SHOP);
    files.add("stack/api/serve", "");
    Promoted {
        files,
        releases: releases
            .iter()
            .map(|(a, d)| ((*a).to_owned(), (*d).to_owned()))
            .collect(),
        broken,
    }
}

fn shop(releases: &[(&str, &str)]) -> Stack {
    load(&shop_fs(releases, false), "stack/kiln.yaml".as_ref())
        .unwrap_or_else(|f| panic!("{:#?}", f.diagnostics))
}

#[test]
fn an_unreadable_promotion_record_is_a_mistake_with_its_place() {
    let Err(failure) = load(&shop_fs(&[], true), "stack/kiln.yaml".as_ref()) else {
        panic!("loaded with an unreadable state store");
    };
    let found: Vec<(Code, &str)> = failure
        .diagnostics
        .iter()
        .map(|d| (d.code, d.key_path.as_str()))
        .collect();
    assert_eq!(
        found,
        [(Code::BadSource, "environments.production.services.api")]
    );
    assert!(failure.diagnostics[0].message.contains("malformed"));
}

struct Inputs;

impl Context for Inputs {
    fn var(&self, name: &str) -> Option<serde_json::Value> {
        (name == "greeting").then(|| "Hello".into())
    }
    fn secret(&self, name: &str) -> Option<String> {
        Some(format!("value of {name}"))
    }
    fn env(&self, _name: &str) -> Option<String> {
        None
    }
    fn resource(&self, address: &str) -> Known {
        let mut outputs = serde_json::Map::new();
        outputs.insert("url".into(), format!("http://{address}").into());
        Known::Known {
            attributes: serde_json::Map::new(),
            outputs,
            sensitive: false,
        }
    }
}

#[test]
fn services_and_routes_are_instantiated_per_environment() {
    let stack = shop(&[("environments.production.services.api", "sha256:staged")]);
    let addresses: Vec<&str> = stack.resources.keys().map(String::as_str).collect();
    assert_eq!(
        addresses,
        [
            "environments.staging.services.api",
            "environments.staging.services.web",
            "environments.staging.routes.staging-shop-localhost",
            "environments.production.services.api",
            "environments.production.services.web",
            "environments.production.routes.shop-localhost",
        ]
    );
    let names: Vec<&str> = stack.environments.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["staging", "production"]);
    assert!(stack.environments[0].auto_deploy);
    let promote = stack.environments[1]
        .promote
        .as_ref()
        .unwrap_or_else(|| panic!("no promote"));
    assert_eq!(
        (promote.from.as_str(), promote.soak_ms, promote.approval),
        ("staging", 10_000, true)
    );
    assert_eq!(promote.pipeline.as_deref(), Some("ci"));
    assert_eq!((promote.windows.len(), promote.freezes.len()), (1, 1));

    let web = &stack.resources["environments.production.services.web"];
    assert!(
        web.depends_on
            .contains_key("environments.production.services.api")
    );
    let route = &stack.resources["environments.staging.routes.staging-shop-localhost"];
    assert!(
        route
            .depends_on
            .contains_key("environments.staging.services.web")
    );
}

#[test]
fn vars_and_secrets_are_overridden_per_environment() {
    let stack = shop(&[("environments.production.services.api", "sha256:staged")]);
    let env_of = |address: &str| {
        let evaluated = evaluate_resource(&stack, &stack.resources[address], &Inputs)
            .unwrap_or_else(|f| panic!("{f:?}"));
        evaluated.attrs["env"].clone()
    };
    let staging = env_of("environments.staging.services.api");
    assert_eq!(staging["GREETING"], "Hi staging");
    assert_eq!(
        staging["TOKEN"],
        "value of environments.staging.secrets.token"
    );
    let production = env_of("environments.production.services.api");
    assert_eq!(production["GREETING"], "Hello");
    assert_eq!(production["TOKEN"], "value of token");
    let web = env_of("environments.staging.services.web");
    assert_eq!(web["API"], "http://environments.staging.services.api");
}

#[test]
fn the_first_environment_builds_and_the_next_runs_the_promoted_digest() {
    let stack = shop(&[("environments.production.services.api", "sha256:staged")]);
    let release = |address: &str| {
        stack.resources[address]
            .rendered
            .get("release_id")
            .map(|v| format!("{:?}", v.kind))
    };
    assert!(
        release("environments.staging.services.api").is_some_and(|r| r.contains("sha256:tree"))
    );
    assert!(
        release("environments.production.services.api")
            .is_some_and(|r| r.contains("sha256:staged"))
    );
    assert!(stack.awaiting_promotion.is_empty());
}

#[test]
fn before_any_promotion_the_environment_runs_nothing_that_needs_a_release() {
    let stack = shop(&[]);
    assert_eq!(
        stack.awaiting_promotion,
        [
            "environments.production.services.api",
            "environments.production.services.web",
            "environments.production.routes.shop-localhost",
        ]
    );
    assert!(
        stack
            .resources
            .keys()
            .all(|a| a.starts_with("environments.staging."))
    );
}

#[test]
fn a_stack_without_environments_is_unchanged() {
    let mut files = MemoryFs::new();
    files.add(
        "stack/kiln.yaml",
        "name: shop\nservices:\n  web: { run: ./web }\nroutes:\n  - { host: shop.localhost, service: web }\n",
    );
    let stack =
        load(&files, "stack/kiln.yaml".as_ref()).unwrap_or_else(|f| panic!("{:#?}", f.diagnostics));
    let addresses: Vec<&str> = stack.resources.keys().map(String::as_str).collect();
    assert_eq!(addresses, ["services.web", "routes.shop-localhost"]);
    assert!(stack.environments.is_empty());
}

fn codes(yaml: &str) -> Vec<(Code, String)> {
    let mut files = MemoryFs::new();
    files.add("stack/kiln.yaml", yaml);
    match load(&files, "stack/kiln.yaml".as_ref()) {
        Ok(_) => panic!("the stack loaded"),
        Err(f) => f
            .diagnostics
            .iter()
            .map(|d| (d.code, d.key_path.clone()))
            .collect(),
    }
}

#[test]
fn every_mistake_in_environments_is_reported_at_once() {
    let found = codes(
        r#"name: shop
vars: { greeting: Hi }
services:
  web: { run: ./web, bogus: 1 }
environments:
  staging:
    vars: { greting: x }
    promote: { from: production }
  qa: { promote: { from: qa } }
  production:
    promote:
      from: stagin
      soak: 10
      freeze: [ { from: "2026-12-24", to: "2026-12-20T00:00:00Z" }, { from: "2026-12-24T00:00:00Z", to: "2026-12-20T00:00:00Z" } ]
      windows: [ "Mon-Fri 18:00-08:00 UTC" ]
  canary: {}
"#,
    );
    let paths: Vec<&str> = found.iter().map(|(_, p)| p.as_str()).collect();
    for expected in [
        "services.web.bogus",
        "environments.staging.vars.greting",
        "environments.staging.promote.from",
        "environments.qa.promote.from",
        "environments.production.promote.from",
        "environments.production.promote.soak",
        "environments.production.promote.freeze[0].from",
        "environments.production.promote.freeze[1].to",
        "environments.production.promote.windows[0]",
        "environments.canary.promote",
    ] {
        assert!(
            paths.contains(&expected),
            "{expected} missing from {paths:#?}"
        );
    }
    // The service's own mistake is reported once, not once per environment.
    assert_eq!(paths.iter().filter(|p| p.ends_with(".bogus")).count(), 1);
}

#[test]
fn only_auto_deployed_environments_take_new_releases_by_themselves() {
    let stack = shop(&[("environments.production.services.api", "sha256:staged")]);
    assert!(stack.deploys_new_releases("environments.staging.services.api"));
    assert!(!stack.deploys_new_releases("environments.production.services.api"));
    assert_eq!(
        stack
            .environment_of("environments.production.routes.shop-localhost")
            .map(|e| e.name.as_str()),
        Some("production")
    );
}

const OVERRIDDEN: &str = r#"name: shop
services:
  api:
    run: ./serve
    replicas: 2
    env: { LOG_LEVEL: info, HOST: 127.0.0.1 }
    health: { http: /healthz }
  web: { run: ./web }
environments:
  staging:
    services:
      api: { replicas: 1, env: { LOG_LEVEL: debug } }
    deploy: { auto: true }
  production:
    services:
      api: { replicas: 3, health: { http: /ready } }
    promote: { from: staging }
"#;

#[test]
fn an_environment_overrides_how_a_service_runs_there() {
    let mut files = MemoryFs::new();
    files.add("stack/kiln.yaml", OVERRIDDEN);
    let stack =
        load(&files, "stack/kiln.yaml".as_ref()).unwrap_or_else(|f| panic!("{:#?}", f.diagnostics));
    let attrs = |address: &str| {
        evaluate_resource(&stack, &stack.resources[address], &Inputs)
            .unwrap_or_else(|f| panic!("{f:?}"))
            .attrs
    };
    let staging = attrs("environments.staging.services.api");
    assert_eq!(staging["replicas"], 1);
    // `env` is merged key by key: the root's HOST stays, LOG_LEVEL is the environment's.
    assert_eq!(
        staging["env"],
        serde_json::json!({ "LOG_LEVEL": "debug", "HOST": "127.0.0.1" })
    );
    assert_eq!(staging["health"]["http"], "/healthz");
    let production = attrs("environments.production.services.api");
    assert_eq!(production["replicas"], 3);
    assert_eq!(production["env"]["LOG_LEVEL"], "info");
    // Any other key is replaced whole.
    assert_eq!(production["health"]["http"], "/ready");
    // A service the environment does not override is the root's.
    assert_eq!(attrs("environments.staging.services.web")["run"], "./web");
}

#[test]
fn every_mistake_in_service_overrides_is_reported_once_with_its_reason() {
    let mut files = MemoryFs::new();
    files.add(
        "stack/kiln.yaml",
        r#"name: shop
services:
  api: { run: ./serve, replicas: many }
environments:
  staging:
    services:
      apii: { replicas: 1 }
      api: { run: ./other, replicas: -1, depends_on: [], replicaz: 2 }
  production:
    services:
      api: { replicas: 5000, path: elsewhere }
    promote: { from: staging }
"#,
    );
    let Err(failure) = load(&files, "stack/kiln.yaml".as_ref()) else {
        panic!("the stack loaded");
    };
    let found: Vec<(Code, &str)> = failure
        .diagnostics
        .iter()
        .map(|d| (d.code, d.key_path.as_str()))
        .collect();
    assert_eq!(
        found,
        [
            (Code::WrongType, "services.api.replicas"),
            (Code::UnknownReference, "environments.staging.services.apii"),
            (Code::InvalidValue, "environments.staging.services.api.run"),
            (
                Code::InvalidValue,
                "environments.staging.services.api.replicas"
            ),
            (
                Code::InvalidValue,
                "environments.staging.services.api.depends_on"
            ),
            (
                Code::UnknownKey,
                "environments.staging.services.api.replicaz"
            ),
            (
                Code::InvalidValue,
                "environments.production.services.api.replicas"
            ),
            (
                Code::InvalidValue,
                "environments.production.services.api.path"
            ),
        ],
        "{:#?}",
        failure.diagnostics
    );
    let run = &failure.diagnostics[2];
    assert!(run.message.contains("build once, deploy many"), "{run:?}");
    assert!(
        run.help
            .as_deref()
            .is_some_and(|h| h.contains("replicas, env")),
        "{run:?}"
    );
}
