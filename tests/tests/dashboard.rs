//! The dashboard at `/ui/` in a real browser (Debian's `chromium`, driven
//! through `chromedriver` over WebDriver), against a real `flotilla server`
//! and three real agents, each in a network namespace of its own: log in;
//! the fleet page lists the devices; `kill -9` of an agent turns its tile
//! unreachable and its replicas reappear on the other devices, with no
//! reload; the pod's logs are fetched from its device; a rollout restarted
//! from the Workloads page completes; a bad manifest pasted into Apply shows
//! the field path of the error. Served over HTTPS, as by default: the
//! browser trusts the server's browser CA (P-256) imported into its
//! certificate store, the agents pin the fleet CA. A screenshot of every
//! page is written to `target/artefacts/dashboard/`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use flotilla_e2e::ControllerProcess;
use flotilla_e2e::fleet::{
    AgentProcess, apply, pods, push_busybox, shell_deployment, wait_for_ready_nodes, wait_until,
};
use flotilla_e2e::netns::Network;

/// A tablet in landscape: the size the pages must read well at.
const WINDOW: (u32, u32) = (1180, 820);

/// Where the screenshots go.
fn artefacts() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/artefacts/dashboard");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `chromedriver` and a headless `chromium` session, driven synchronously
/// (the rest of the test is blocking code).
struct Browser {
    runtime: tokio::runtime::Runtime,
    client: Option<Client>,
    driver: Child,
    /// Its home, where its certificate store is.
    _home: tempfile::TempDir,
}

impl Browser {
    /// A browser that trusts the CA in `ca_pem`, as an operator's does once
    /// the CA is imported: in the NSS store of its (scratch) home.
    fn start(ca_pem: &std::path::Path) -> Browser {
        let home = tempfile::tempdir().unwrap();
        let store = home.path().join(".pki/nssdb");
        std::fs::create_dir_all(&store).unwrap();
        let store = format!("sql:{}", store.display());
        let certutil = |args: &[&str]| {
            let output = Command::new("certutil").args(args).output().expect("certutil (libnss3-tools, scripts/setup)");
            assert!(output.status.success(), "certutil {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        };
        certutil(&["-N", "-d", &store, "--empty-password"]);
        certutil(&["-A", "-d", &store, "-t", "C,,", "-n", "flotilla browser CA", "-i", ca_pem.to_str().unwrap()]);
        let port = flotilla_e2e::free_port().unwrap();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .env("HOME", home.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian's chromium-driver, installed by scripts/setup)");
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": "/usr/bin/chromium",
                // --no-sandbox: the tests run as root, where chromium's sandbox will not start.
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         format!("--window-size={},{}", WINDOW.0, WINDOW.1)],
            }),
        );
        let started = Instant::now();
        let url = format!("http://127.0.0.1:{port}");
        let mut builder = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new());
        builder.capabilities(capabilities);
        let client = loop {
            // chromedriver takes a moment to listen.
            match runtime.block_on(builder.connect(&url)) {
                Ok(client) => break client,
                Err(_) if started.elapsed() < Duration::from_secs(20) => std::thread::sleep(Duration::from_millis(200)),
                Err(e) => panic!("no WebDriver session with chromium in 20 s: {e}"),
            }
        };
        Browser { runtime, client: Some(client), driver, _home: home }
    }

    fn client(&self) -> &Client {
        self.client.as_ref().unwrap()
    }

    fn goto(&self, url: &str) {
        self.runtime.block_on(self.client().goto(url)).unwrap();
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page.
    fn run(&self, script: &str, args: Vec<serde_json::Value>) -> serde_json::Value {
        self.runtime.block_on(self.client().execute(script, args)).unwrap()
    }

    fn count(&self, css: &str) -> usize {
        self.run("return document.querySelectorAll(arguments[0]).length", vec![css.into()]).as_u64().unwrap() as usize
    }

    fn text(&self, css: &str) -> String {
        let script = "const e = document.querySelector(arguments[0]); return e ? e.innerText : null";
        self.run(script, vec![css.into()]).as_str().unwrap_or_default().to_owned()
    }

    /// Waits until `css` matches at least `count` elements.
    fn wait_for(&self, what: &str, css: &str, count: usize, timeout: Duration) -> Duration {
        let started = Instant::now();
        loop {
            if self.count(css) >= count {
                return started.elapsed();
            }
            if started.elapsed() > timeout {
                self.screenshot("failure");
                panic!("{what}: no {count} of {css} in {timeout:?}; the page says:\n{}", self.text("body"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn click(&self, css: &str) {
        let element = self.runtime.block_on(self.client().find(Locator::Css(css))).unwrap();
        self.runtime.block_on(element.click()).unwrap();
    }

    fn type_into(&self, css: &str, text: &str) {
        let element = self.runtime.block_on(self.client().find(Locator::Css(css))).unwrap();
        self.runtime.block_on(element.clear()).unwrap();
        self.runtime.block_on(element.send_keys(text)).unwrap();
    }

    /// A textarea's value set as a paste would, then the input event the page listens to.
    fn paste_into(&self, css: &str, text: &str) {
        let script = "const e = document.querySelector(arguments[0]); e.value = arguments[1]; \
                      e.dispatchEvent(new Event('input', {bubbles: true}));";
        self.run(script, vec![css.into(), text.into()]);
    }

    fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.runtime.block_on(self.client().screenshot()).unwrap();
        let path = artefacts().join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        eprintln!("screenshot: {}", path.display());
        path
    }

    /// Whether the page is still the one loaded at login (a reload would
    /// have dropped this mark).
    fn mark_page(&self) {
        self.run("window.flotillaTestMark = 'not reloaded'", vec![]);
    }

    fn not_reloaded(&self) -> bool {
        self.run("return window.flotillaTestMark === 'not reloaded'", vec![]).as_bool().unwrap_or(false)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            let _ = self.runtime.block_on(client.close());
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

const TICKER: &str = "trap 'exit 0' TERM; while true; do echo tick; sleep 1; done";

#[test]
fn an_operator_watches_the_fleet_moves_replicas_rolls_out_and_applies_in_a_browser() {
    let network = Network::create(3).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Over HTTPS, as served by default: the browser trusts the server's
    // browser CA (P-256), the agents pin the fleet CA (Ed25519).
    let controller = ControllerProcess::start_tls_on_host(&dir.path().join("controller"), network.host_ip()).unwrap();
    let image = push_busybox(&controller, dir.path());
    let names = ["ui-a", "ui-b", "ui-c"];
    let mut agents: Vec<AgentProcess> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            AgentProcess::start_in(&controller, name, &dir.path().join(name), Some(network.namespace(i).unwrap()))
        })
        .collect();
    wait_for_ready_nodes(&controller, 3, Duration::from_secs(60));
    apply(&controller, &shell_deployment("ticker", &image, 3, TICKER));
    wait_until("three replicas Running", Duration::from_secs(90), || {
        (pods(&controller).iter().filter(|(_, phase, _)| phase == "Running").count() == 3).then_some(())
    });

    let browser = Browser::start(&dir.path().join("controller/tls/browser-ca.pem"));
    let page = format!("{}/ui/", controller.url);
    assert!(page.starts_with("https://"), "{page}");

    // Log in: a wrong token is refused in words, the right one opens the fleet.
    browser.goto(&page);
    browser.wait_for("the login form", "#token", 1, Duration::from_secs(10));
    browser.screenshot("login");
    browser.type_into("#token", "not-the-token");
    browser.click("form button[type=submit]");
    browser.wait_for("a refused token", ".login .error", 1, Duration::from_secs(10));
    assert!(browser.text(".login .error").contains("not the server's API token"), "{}", browser.text("body"));
    browser.type_into("#token", &controller.token().unwrap());
    browser.click("form button[type=submit]");
    browser.wait_for("three devices online", "article.tile[data-state=online]", 3, Duration::from_secs(20));
    for name in names {
        assert_eq!(browser.count(&format!("article.tile[data-node='{name}']")), 1, "{name} has a tile");
    }
    assert!(
        !browser.run("return sessionStorage.getItem('flotilla.apiToken')", vec![]).is_null(),
        "the token is kept in the tab's session storage"
    );
    assert!(!browser.run("return location.href", vec![]).as_str().unwrap().contains(&controller.token().unwrap()));
    browser.wait_for(
        "replicas counted on the tiles",
        "[data-replicas='1'],[data-replicas='2'],[data-replicas='3']",
        1,
        Duration::from_secs(10),
    );
    browser.wait_for("usage bars", "article.tile .bar", 6, Duration::from_secs(10));
    browser.screenshot("fleet");

    // The first load's transfer size (the page, its script and its style, gzip).
    let transferred = browser.run(
        "return performance.getEntriesByType('navigation').concat(performance.getEntriesByType('resource'))\
         .filter(e => new URL(e.name).pathname.startsWith('/ui/')).reduce((sum, e) => sum + e.transferSize, 0)",
        vec![],
    );
    let transferred = transferred.as_u64().unwrap();
    // Its watch comes gzipped (flushed per event) to a client that takes it.
    let watch = controller
        .http()
        .unwrap()
        .get(format!("{}/api/v1/watch?resources=nodes&summary=true", controller.url))
        .header("Authorization", format!("Bearer {}", controller.token().unwrap()))
        .header("Accept-Encoding", "gzip")
        .call()
        .unwrap();
    assert_eq!(watch.headers().get("content-encoding").and_then(|v| v.to_str().ok()), Some("gzip"));
    drop(watch);
    eprintln!("dashboard first load: {transferred} bytes transferred");
    assert!(transferred > 0 && transferred < 300 * 1024, "first load {transferred} bytes");

    // kill -9 the agent with the most replicas: unreachable on screen, no reload.
    let placed = pods(&controller);
    let victim =
        names.iter().copied().max_by_key(|name| placed.iter().filter(|(_, _, node)| node == name).count()).unwrap();
    let victim_index = names.iter().position(|n| *n == victim).unwrap();
    browser.mark_page();
    agents[victim_index].kill9();
    let shown_after = browser.wait_for(
        "the killed agent's tile unreachable",
        &format!("article.tile[data-node='{victim}'][data-state=unreachable]"),
        1,
        Duration::from_secs(15),
    );
    eprintln!("kill -9 of {victim} shown as unreachable after {shown_after:?}");
    browser.screenshot("fleet-device-lost");
    assert!(browser.not_reloaded(), "the page reloaded");

    // Its replicas on the other devices, on the Pods page (a link, not a reload).
    browser.click("nav a[href='#/pods']");
    let survivors: Vec<&str> = names.iter().copied().filter(|n| *n != victim).collect();
    let running_elsewhere =
        survivors.iter().map(|n| format!("tr[data-phase=Running][data-node='{n}']")).collect::<Vec<_>>().join(",");
    browser.wait_for("three replicas running on the other devices", &running_elsewhere, 3, Duration::from_secs(60));
    assert!(browser.not_reloaded(), "the page reloaded");
    browser.screenshot("pods");

    // The logs of one, fetched from its device, following.
    browser.click(&format!("tr[data-phase=Running][data-node='{}'] td a", survivors[0]));
    browser.wait_for("the logs panel", "[data-logs] pre", 1, Duration::from_secs(10));
    let started = Instant::now();
    while browser.text("[data-logs] pre").matches("tick").count() < 3 {
        assert!(started.elapsed() < Duration::from_secs(30), "no ticks in the logs: {}", browser.text("[data-logs]"));
        std::thread::sleep(Duration::from_millis(200));
    }
    browser.screenshot("pods-logs");

    // A rollout restarted from the Workloads page completes (revision 2).
    browser.click("nav a[href='#/workloads']");
    browser.wait_for(
        "the deployment's row",
        "tr[data-deployment=ticker][data-revision='1']",
        1,
        Duration::from_secs(10),
    );
    let restart = browser.run(
        "const b = [...document.querySelectorAll('tr[data-deployment=ticker] button')]\
         .find(b => b.innerText === 'Restart'); b.click(); return true",
        vec![],
    );
    assert_eq!(restart, serde_json::Value::Bool(true));
    browser.wait_for(
        "the restarted rollout complete",
        "tr[data-deployment=ticker][data-revision='2'][data-rollout=complete]",
        1,
        Duration::from_secs(120),
    );
    browser.screenshot("workloads");
    let revisions = controller.cli().unwrap().args(["rollout", "history", "deployment/ticker"]).output().unwrap();
    let history = String::from_utf8_lossy(&revisions.stdout);
    assert!(history.lines().any(|l| l.starts_with('2') && l.contains("Complete (current)")), "{history}");

    // The device loss is on the Events page, and where its replicas went.
    browser.click("nav a[href='#/events']");
    browser.wait_for("the NodeNotReady event", "tr[data-event=NodeNotReady]", 1, Duration::from_secs(10));
    browser.wait_for("the ReplicasMoved event", "tr[data-event=ReplicasMoved]", 1, Duration::from_secs(10));
    let moved = browser.text("tr[data-event=ReplicasMoved]");
    assert!(moved.contains(&format!("node {victim} lost")) && moved.contains("deployment/ticker"), "{moved}");
    assert!(survivors.iter().any(|n| moved.contains(&format!(" to {n}"))), "{moved}");
    // A replica over its memory limit: OOMKilled, then backing off, as Warnings.
    apply(&controller, &shell_deployment("hog", &image, 1, "exec dd if=/dev/zero of=/dev/null bs=256M count=1"));
    browser.wait_for("the OOMKilled event", "tr[data-event=OOMKilled]", 1, Duration::from_secs(60));
    browser.wait_for("the BackOff event", "tr[data-event=BackOff]", 1, Duration::from_secs(60));
    assert!(browser.text("tr[data-event=OOMKilled]").contains("pod/hog-"), "{}", browser.text("table"));
    browser.screenshot("events");

    // A bad manifest pasted into Apply: refused with the field's path; nothing stored.
    browser.click("nav a[href='#/apply']");
    browser.wait_for("the apply form", "textarea", 1, Duration::from_secs(10));
    let broken = shell_deployment("broken", &image, 1, "sleep 1").replace("replicas: 1", "replicas: three");
    browser.paste_into("textarea", &broken);
    browser.click("form.apply button[type=submit]");
    browser.wait_for("the refusal", "[data-apply=refused]", 1, Duration::from_secs(10));
    let refusal = browser.text("[data-apply=refused]");
    assert!(refusal.contains("spec.replicas"), "{refusal}");
    assert!(refusal.contains("document 1"), "{refusal}");
    browser.screenshot("apply-refused");
    // The same manifest mended applies, and its deployment shows on Workloads.
    browser.paste_into("textarea", &broken.replace("replicas: three", "replicas: 1"));
    browser.click("form.apply button[type=submit]");
    browser.wait_for("the applied answer", "[data-apply=applied]", 1, Duration::from_secs(10));
    assert!(browser.text("[data-apply=applied]").contains("deployment/broken created"), "{}", browser.text("body"));
    browser.screenshot("apply");
    browser.click("nav a[href='#/workloads']");
    browser.wait_for("the applied deployment", "tr[data-deployment=broken]", 1, Duration::from_secs(10));
    assert!(browser.not_reloaded(), "the page reloaded");
}
